// Command version prints the version of the libimv it is linked with: the smallest Go
// program that uses the cgo bindings. It builds with nothing set but PKG_CONFIG_PATH (see
// the README's "Building and linking"); scripts/test builds and runs it that way.
package main

import (
	"fmt"
	"os"

	imv "github.com/imv-project/imv/go-bindings"
)

func main() {
	major, minor := imv.ABIVersion()
	if _, err := fmt.Printf("libimv %s (ABI %d.%d)\n", imv.Version(), major, minor); err != nil {
		os.Exit(1)
	}
}
