// Command tokenscale-adapter serves tokenscale's token-velocity metrics through the Kubernetes custom
// metrics API (custom.metrics.k8s.io v1beta1 and v1beta2). `tokenscale-adapter inspect ...` runs the
// metrics-page inspector.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apiserver/pkg/server"
	"k8s.io/component-base/logs"
	"k8s.io/klog/v2"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/cmd/options"

	"github.com/tokenscale/tokenscale/adapter"
	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/velocity/engine"
)

func main() {
	if version.Requested(os.Args[1:]) {
		version.Print(os.Stdout, "tokenscale-adapter")
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "inspect" {
		os.Exit(inspect(os.Args[2:]))
	}
	logs.InitLogs()
	defer logs.FlushLogs()
	base := &basecmd.AdapterBase{Name: "tokenscale-adapter", CustomMetricsAdapterServerOptions: options.NewCustomMetricsAdapterServerOptions()}
	// 443 (the library's default) needs privileges; the manifests run as non-root on 6443.
	base.SecureServing.BindPort = 6443
	var o adapter.Options
	fs := base.Flags()
	o.AddFlags(fs)
	fs.BoolVar(&o.ExternalMetrics, "external-metrics", false, "also serve pool metrics through external.metrics.k8s.io (off by default: KEDA usually owns that API group)")
	logs.AddFlags(fs)
	if err := fs.Parse(os.Args); err != nil {
		klog.ErrorS(err, "Bad flags")
		os.Exit(2)
	}
	if err := adapter.Run(server.SetupSignalContext(), base, o); err != nil {
		klog.ErrorS(err, "Adapter stopped")
		os.Exit(1)
	}
}

// inspect reads a saved page (a file or - for stdin) and prints what tokenscale gets from it. The full
// CLI (`tokenscale inspect`) also fetches URLs.
func inspect(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: tokenscale-adapter inspect FILE|-")
		return 2
	}
	var page []byte
	var err error
	if args[0] == "-" {
		page, err = io.ReadAll(io.LimitReader(os.Stdin, 16<<20))
	} else {
		page, err = os.ReadFile(args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if engine.Report(os.Stdout, page, engine.Auto) != nil {
		return 1
	}
	return 0
}
