// Command tokenscale-keda-scaler serves tokenscale's pool numbers to KEDA as an external scaler (trigger
// types external and external-push), from its own velocity pipeline (pod informer, scraper, policy).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/logs"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/internal/pipeline"
	"github.com/tokenscale/tokenscale/internal/selfmetrics"
	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/kedascaler"
)

func main() {
	if version.Requested(os.Args[1:]) {
		version.Print(os.Stdout, "tokenscale-keda-scaler")
		return
	}
	var (
		po         pipeline.Options
		so         kedascaler.Options
		kubeconfig string
	)
	fs := flag.NewFlagSet("tokenscale-keda-scaler", flag.ExitOnError)
	po.AddFlags(fs)
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	fs.StringVar(&so.GRPCAddress, "grpc-address", ":9090", "address of the external scaler gRPC server")
	fs.StringVar(&so.MetricsAddress, "metrics-address", "127.0.0.1:8080", "address of the plain-HTTP /metrics and /healthz endpoint, unauthenticated, so loopback by default (empty: off)")
	fs.StringVar(&so.ProbeAddress, "probe-address", "", "address of a plain-HTTP /healthz only, for the kubelet's probes (empty: off)")
	fs.IntVar(&so.MaxStreams, "max-streams", kedascaler.DefaultMaxStreams, "most concurrent StreamIsActive streams; more are refused with ResourceExhausted (negative: no cap)")
	fs.DurationVar(&so.KeepaliveTime, "keepalive-time", 30*time.Second, "ping a client after this long without activity on its connection")
	fs.DurationVar(&so.KeepaliveTimeout, "keepalive-timeout", 10*time.Second, "close a connection whose client does not answer a ping within this long (reaps silent clients' streams)")
	fs.StringVar(&so.TLS.CertFile, "tls-cert-file", "", "serving certificate (PEM); with --tls-private-key-file enables TLS")
	fs.StringVar(&so.TLS.KeyFile, "tls-private-key-file", "", "serving key (PEM)")
	fs.StringVar(&so.TLS.ClientCAFile, "client-ca-file", "", "CA (PEM) that client certificates must chain to; requires TLS")
	klog.InitFlags(fs)
	logs.InitLogs()
	defer logs.FlushLogs()
	_ = fs.Parse(os.Args[1:])
	if err := run(server.SetupSignalContext(), kubeconfig, po, so); err != nil {
		klog.ErrorS(err, "KEDA scaler stopped")
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig string, po pipeline.Options, so kedascaler.Options) error {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("kubernetes client config (set --kubeconfig outside a cluster): %w", err)
	}
	p, err := pipeline.Start(ctx, cfg, po, selfmetrics.NewScrape(legacyregistry.MustRegister, time.Now))
	if err != nil {
		return err
	}
	so.MaxAge = p.MaxAge()
	legacyregistry.CustomMustRegister(selfmetrics.NewPools(p.Service.Snapshot))
	go p.Service.Run(ctx)
	return kedascaler.Serve(ctx, p.Service, so)
}
