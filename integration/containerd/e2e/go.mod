module github.com/imv-project/imv/integration/containerd/e2e

go 1.26.0
