module github.com/imv-project/imv/tools/go-tarframe

go 1.22
