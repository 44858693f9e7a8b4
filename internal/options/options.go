// Package options is the command line every Kubernetes front shares (the adapter, the KEDA scaler and
// the converter's commands): flags in named sections that --help prints grouped, --kubeconfig and the
// REST config it selects, component-base logging (text or JSON), --version, and validation that reports
// every bad flag at once before anything starts.
package options

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strings"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/logs"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/internal/version"
)

// Command is one front's command line.
type Command struct {
	// Name is what usage and --version print, e.g. "tokenscale-converter agent".
	Name string
	// Use is the usage line's arguments, e.g. "[flags]".
	Use string
	// Sets holds the flags by section, in the order sections were first asked for.
	Sets cliflag.NamedFlagSets
	// Logs is the logging configuration (--logging-format, -v, --vmodule, ...): checked by Parse, applied
	// by Main.
	Logs *logsapi.LoggingConfiguration

	validators  []func() []error
	showVersion bool
}

// New returns a command with no flags yet. The caller adds its own sections; Parse appends the
// "logging" and "generic" sections after them, so the front's own flags come first in --help.
func New(name string) *Command {
	return &Command{Name: name, Use: "[flags]", Logs: logsapi.NewLoggingConfiguration()}
}

// Section returns the flag set of a section, created on first use.
func (c *Command) Section(name string) *pflag.FlagSet { return c.Sets.FlagSet(name) }

// Validate adds checks that Parse runs after parsing; each returns every problem it finds.
func (c *Command) Validate(checks ...func() []error) { c.validators = append(c.validators, checks...) }

// ErrHelp is returned by Parse when --help or --version was asked for and answered.
var ErrHelp = errors.New("help requested")

// Parse parses args (without the program name), answers --help and --version on out, runs every
// validator and checks the logging configuration (Main applies it). The error lists all problems found.
// A Command is parsed once: Parse registers the logging and generic flags.
func (c *Command) Parse(args []string, out io.Writer) error {
	logsapi.AddFlags(c.Logs, c.Section("logging"))
	c.Section("generic").BoolVar(&c.showVersion, "version", false, "print the version and exit")
	fs := pflag.NewFlagSet(c.Name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, usage printed below
	for _, name := range c.Sets.Order {
		fs.AddFlagSet(c.Sets.FlagSets[name])
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			c.Usage(out)
			return ErrHelp
		}
		return fmt.Errorf("%w (see %s --help)", err, c.Name)
	}
	if c.showVersion {
		version.Print(out, c.Name)
		return ErrHelp
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see %s --help)", fs.Args(), c.Name)
	}
	var errs []error
	for _, check := range c.validators {
		errs = append(errs, check()...)
	}
	for _, e := range logsapi.Validate(c.Logs, nil, field.NewPath("logging")) {
		errs = append(errs, e)
	}
	return utilerrors.NewAggregate(errs)
}

// Usage prints the usage line and every section's flags.
func (c *Command) Usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s %s\n", c.Name, c.Use)
	cliflag.PrintSections(w, c.Sets, 0)
}

// Main parses os.Args[first:], then runs run until it returns or a signal arrives: exit 0 after help,
// 2 for a bad command line, 1 when run fails, 0 when it returns after a signal whatever it returns.
func (c *Command) Main(first int, run func(context.Context) error) {
	logs.InitLogs()
	if err := c.Parse(os.Args[first:], os.Stdout); err != nil {
		if errors.Is(err, ErrHelp) {
			os.Exit(0)
		}
		PrintErrors(os.Stderr, c.Name, err)
		os.Exit(2)
	}
	if err := logsapi.ValidateAndApply(c.Logs, nil); err != nil {
		fmt.Fprintf(os.Stderr, "%s: logging: %s\n", c.Name, err)
		os.Exit(2)
	}
	ctx := server.SetupSignalContext()
	err := run(ctx)
	if err != nil && ctx.Err() != nil {
		// A stop asked for (SIGTERM in a rollout, Ctrl-C) ends whatever run was waiting on, a start-up wait
		// included: no failure, and its error ("pod informer did not sync (can the ServiceAccount list and
		// watch pods?)") sent whoever read the log looking for a fault that was not there.
		klog.InfoS("Stopped on a signal", "command", c.Name, "interrupted", err)
		err = nil
	}
	if err != nil {
		klog.ErrorS(err, "Stopped", "command", c.Name)
	}
	logs.FlushLogs()
	if err != nil {
		os.Exit(1)
	}
}

// PrintErrors writes each of err's problems on its own line (an aggregate lists several).
func PrintErrors(w io.Writer, name string, err error) {
	var agg utilerrors.Aggregate
	if !errors.As(err, &agg) {
		fmt.Fprintf(w, "%s: %v\n", name, err)
		return
	}
	fmt.Fprintf(w, "%s: %d problems with the command line:\n", name, len(agg.Errors()))
	for _, e := range agg.Errors() {
		fmt.Fprintf(w, "  %v\n", e)
	}
}

// CheckAddress reports a listen address flag that is not host:port with a valid port; "" is allowed
// unless required. A front with several listen flags checks them together with CheckListen.
func CheckAddress(flag, v string, required bool) []error {
	return CheckListen(Listen{Flag: flag, Value: v, Required: required})
}

// Listen is one listen address flag, for CheckListen.
type Listen struct {
	Flag, Value string // the flag's name without dashes, and its value
	Required    bool   // "" is refused, not read as off
}

// CheckListen reports every listen address flag that cannot work, so that a command stops before it
// starts anything rather than when it first listens: a missing required one, one that is not host:port,
// a port that is neither a number 0-65535 nor a known service name (what net.Listen accepts), and two
// flags on the same non-zero port where both would take it (the same host, or a host that is empty or
// unspecified, which listens on every address).
func CheckListen(flags ...Listen) []error {
	type bound struct {
		Listen
		host string
		port int
	}
	var errs []error
	var ok []bound
	for _, f := range flags {
		if f.Value == "" {
			if f.Required {
				errs = append(errs, fmt.Errorf("--%s is required", f.Flag))
			}
			continue
		}
		host, port, err := net.SplitHostPort(f.Value)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", f.Flag, f.Value, err))
			continue
		}
		n, err := net.LookupPort("tcp", port)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: the port must be a number 0-65535 or a service name: %w", f.Flag, f.Value, err))
			continue
		}
		for _, b := range ok {
			if n != 0 && n == b.port && sameListenHost(host, b.host) {
				errs = append(errs, fmt.Errorf("--%s %q and --%s %q listen on the same port", b.Flag, b.Value, f.Flag, f.Value))
			}
		}
		ok = append(ok, bound{f, host, n})
	}
	return errs
}

// sameListenHost says whether listeners on two hosts with one port would collide: an empty or unspecified
// host (0.0.0.0, ::) takes the port on every address.
func sameListenHost(a, b string) bool {
	wildcard := func(h string) bool { ip := net.ParseIP(h); return h == "" || ip != nil && ip.IsUnspecified() }
	if wildcard(a) || wildcard(b) || strings.EqualFold(a, b) {
		return true
	}
	ipa, ipb := net.ParseIP(a), net.ParseIP(b)
	return ipa != nil && ipa.Equal(ipb)
}

// Kube selects the cluster (--kubeconfig, else the in-cluster configuration) and how fast its client may
// call it (--client-qps, --client-burst: client-go's token bucket, which every call waits on).
type Kube struct {
	Kubeconfig string
	// QPS and Burst set before AddFlags are their flags' defaults; else client-go's (5 and 10).
	QPS   float32
	Burst int
}

// AddFlags registers --kubeconfig, --client-qps and --client-burst.
func (k *Kube) AddFlags(fs *pflag.FlagSet) {
	if k.QPS == 0 {
		k.QPS = rest.DefaultQPS
	}
	if k.Burst == 0 {
		k.Burst = rest.DefaultBurst
	}
	fs.StringVar(&k.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: the in-cluster configuration of the pod's ServiceAccount)")
	fs.Float32Var(&k.QPS, "client-qps", k.QPS, "most requests per second to the Kubernetes API (every call waits its turn)")
	fs.IntVar(&k.Burst, "client-burst", k.Burst, "requests to the Kubernetes API allowed at once above --client-qps")
}

// Validate reports client rates that cannot work: client-go reads a zero QPS as its default and a
// negative one as no limit, neither of which the flag says. Each bad flag gets its own error, naming
// only that flag, so the message points at the one to change.
func (k *Kube) Validate() []error {
	var errs []error
	if !(k.QPS > 0) || math.IsInf(float64(k.QPS), 0) {
		errs = append(errs, fmt.Errorf("--client-qps %g must be positive and finite", k.QPS))
	}
	if k.Burst < 1 {
		errs = append(errs, fmt.Errorf("--client-burst %d must be at least 1", k.Burst))
	}
	return errs
}

// RESTConfig loads the configuration --kubeconfig names, else the in-cluster one.
func (k *Kube) RESTConfig() (*rest.Config, error) {
	if k.Kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", k.Kubeconfig, err)
		}
		k.limit(cfg)
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config (set --kubeconfig outside a cluster): %w", err)
	}
	k.limit(cfg)
	return cfg, nil
}

// limit applies the client rates, when AddFlags or the caller set them.
func (k *Kube) limit(cfg *rest.Config) {
	if k.QPS > 0 {
		cfg.QPS, cfg.Burst = k.QPS, k.Burst
	}
}

// Clients returns the REST config and a clientset for it.
func (k *Kube) Clients() (*rest.Config, kubernetes.Interface, error) {
	cfg, err := k.RESTConfig()
	if err != nil {
		return nil, nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cfg, client, nil
}
