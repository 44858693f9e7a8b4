package adapter

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	cmoptions "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd/options"

	"github.com/tokenscale/tokenscale/internal/options"
)

// Command is the adapter's command line: its own flags and custom-metrics-apiserver's, each library
// option group in its own --help section.
type Command struct {
	Base    *basecmd.AdapterBase
	Options Options
}

// minDiscoveryInterval is the shortest --discovery-interval but 0: a new CRD is seldom urgent, and every
// refresh lists every API group the cluster serves.
const minDiscoveryInterval = 10 * time.Second

// NewCommand registers the adapter's flags in cmd and its checks.
func NewCommand(cmd *options.Command) *Command {
	base := &basecmd.AdapterBase{
		Name:                              "tokenscale-adapter",
		CustomMetricsAdapterServerOptions: cmoptions.NewCustomMetricsAdapterServerOptions(),
		// The library registers its flags once, into this set, which is never parsed: the same
		// options are registered again below, grouped in sections.
		FlagSet: pflag.NewFlagSet("custom-metrics-apiserver", pflag.ContinueOnError),
	}
	base.InstallFlags()
	// 443 (the library's default) needs privileges; the manifests run as non-root on 6443.
	base.SecureServing.BindPort = 6443
	// The library leaves it 0, which would re-read discovery without pause; prometheus-adapter's default.
	base.DiscoveryInterval = 10 * time.Minute
	c := &Command{Base: base}

	fs := cmd.Section("metrics")
	c.Options.AddFlags(fs)
	fs.BoolVar(&c.Options.ExternalMetrics, "external-metrics", false, "also serve pool metrics through external.metrics.k8s.io (off by default: KEDA usually owns that API group)")

	fs = cmd.Section("kubernetes")
	fs.StringVar(&base.RemoteKubeConfigFile, "kubeconfig", "", "kubeconfig file of the cluster whose pods are scraped (default: the in-cluster configuration of the pod's ServiceAccount)")
	fs.StringVar(&base.RemoteKubeConfigFile, "lister-kubeconfig", "", "the same as --kubeconfig")
	_ = fs.MarkDeprecated("lister-kubeconfig", "use --kubeconfig, as every tokenscale binary does")
	fs.DurationVar(&base.DiscoveryInterval, "discovery-interval", base.DiscoveryInterval, "how often API discovery is read again (a LeaderWorkerSet CRD installed later becomes known); 0: never, else at least 10s")
	fs.Float32Var(&base.ClientQPS, "client-qps", rest.DefaultQPS, "most queries per second to the Kubernetes API")
	fs.IntVar(&base.ClientBurst, "client-burst", rest.DefaultBurst, "burst of queries to the Kubernetes API")

	so := base.CustomMetricsAdapterServerOptions
	so.SecureServing.AddFlags(cmd.Section("secure serving"))
	so.Authentication.AddFlags(cmd.Section("authentication"))
	so.Authorization.AddFlags(cmd.Section("authorization"))
	so.Audit.AddFlags(cmd.Section("audit"))
	so.Features.AddFlags(cmd.Section("features"))
	// The library applies --client-qps and --client-burst only when positive and reads a negative
	// --discovery-interval as never, so a typo would fall back silently: refused as the other binaries do.
	cmd.Validate(c.Options.Validate, so.Validate, func() []error {
		errs := (&options.Kube{QPS: base.ClientQPS, Burst: base.ClientBurst}).Validate()
		// Each refresh reads the whole API discovery: at 1ms it ran back to back for the process's life.
		if base.DiscoveryInterval < 0 || base.DiscoveryInterval > 0 && base.DiscoveryInterval < minDiscoveryInterval {
			errs = append(errs, fmt.Errorf("--discovery-interval %s must be 0 (never) or at least %s", base.DiscoveryInterval, minDiscoveryInterval))
		}
		return errs
	})
	return c
}

// Run serves until ctx ends.
func (c *Command) Run(ctx context.Context) error { return Run(ctx, c.Base, c.Options) }
