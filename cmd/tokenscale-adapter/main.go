// Command tokenscale-adapter serves tokenscale's token-velocity metrics through the Kubernetes custom
// metrics API (custom.metrics.k8s.io v1beta1 and v1beta2). `tokenscale-adapter inspect ...` runs the
// metrics-page inspector.
package main

import (
	"fmt"
	"os"

	"github.com/tokenscale/tokenscale/adapter"
	"github.com/tokenscale/tokenscale/internal/options"
	"github.com/tokenscale/tokenscale/velocity/engine"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "inspect" {
		os.Exit(inspect(os.Args[2:]))
	}
	cmd := options.New("tokenscale-adapter")
	cmd.Main(1, adapter.NewCommand(cmd).Run)
}

// inspect reads a saved page (a file or - for stdin) and prints what tokenscale gets from it. The full
// CLI (`tokenscale inspect`) also fetches URLs.
func inspect(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: tokenscale-adapter inspect FILE|-")
		return 2
	}
	page, err := engine.ReadPageFile(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if engine.Report(os.Stdout, page, engine.Auto) != nil {
		return 1
	}
	return 0
}
