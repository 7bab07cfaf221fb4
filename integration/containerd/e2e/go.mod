module github.com/imv-project/imv/integration/containerd/e2e

go 1.26.0

require golang.org/x/sys v0.49.0
