package converter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/internal/options"
	"github.com/tokenscale/tokenscale/internal/pipeline"
	"github.com/tokenscale/tokenscale/internal/selfmetrics"
	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// ControllerCommand is `tokenscale-converter controller`: its flags and its wiring (the velocity
// pipeline it reads pool decisions from, leader election, the lease loop).
type ControllerCommand struct {
	Kube           options.Kube
	Pipeline       pipeline.Options
	Options        ControllerOptions
	Leader         LeaderElection
	MetricsAddress string
}

// AddFlags registers the controller's flags in their sections of cmd, and its checks.
func (c *ControllerCommand) AddFlags(cmd *options.Command) {
	fs := cmd.Section("conversion")
	fs.DurationVar(&c.Options.Lease, "lease", 10*time.Second, "how long a conversion lease lasts unless renewed (the longest a pod stays converted after this controller is gone)")
	fs.Float64Var(&c.Options.Plan.MaxFraction, "max-fraction", 0.5, "at most this fraction of a decode pool is converted at once")
	fs.DurationVar(&c.Options.Plan.RefusalBackoff, "refusal-backoff", time.Minute, "a pod that refused is not asked again for this long")
	fs.DurationVar(&c.Options.MaxLease, "max-lease", protocol.DefaultMaxLease, "no lease is written further ahead than this (agents ignore one that is)")
	fs.DurationVar(&c.Options.Plan.MinFlipInterval, "min-flip-interval", 30*time.Second, "the agents' --min-flip-interval: a pod that flipped more recently is not leased")
	c.Pipeline.AddFlags(cmd.Section("pools"))
	c.Leader.AddFlags(cmd.Section("leader election"))
	// Every lease is rewritten each third of --lease: at client-go's 5 writes a second, about 16 leased
	// pods across the cluster kept the client at its limit and more let leases lapse.
	c.Kube.QPS, c.Kube.Burst = ControllerQPS, 2*ControllerQPS
	c.Kube.AddFlags(cmd.Section("kubernetes"))
	cmd.Section("serving").StringVar(&c.MetricsAddress, "metrics-address", ":8080", "address of /metrics and /healthz (empty: off)")
	cmd.Validate(c.Validate, c.Pipeline.Validate, c.Leader.Validate, c.Kube.Validate)
}

// ControllerQPS is the controller's default --client-qps (--client-burst twice it): room for about 60
// leases renewed every third of the default 10 s --lease.
const ControllerQPS = 20

// MinLease is the shortest --lease: a few snapshot rounds, so that an agent sees a lease before it ends.
const MinLease = time.Second

// MaxMaxLease bounds --max-lease on the controller and the agents: a lease is how long a pod stays
// converted once its controller is gone, and the controller's deadlines are multiples of --lease, which
// past a century overflow a Duration and wrap to a time in the past.
const MaxMaxLease = 24 * time.Hour

// Validate reports every conversion flag that cannot work.
func (c *ControllerCommand) Validate() []error {
	var errs []error
	o := c.Options
	if !(o.Plan.MaxFraction >= 0 && o.Plan.MaxFraction <= 1) {
		errs = append(errs, fmt.Errorf("--max-fraction %g: want 0..1", o.Plan.MaxFraction))
	}
	if o.Lease < MinLease || o.MaxLease <= 0 {
		// The controller renews every third of a lease: a lease of nanoseconds panicked its ticker, and one of
		// milliseconds (a typo for seconds) ended before any agent saw it.
		errs = append(errs, fmt.Errorf("--lease %s must be at least %s and --max-lease %s positive", o.Lease, MinLease, o.MaxLease))
	} else if o.Lease > o.MaxLease {
		errs = append(errs, fmt.Errorf("--lease %s is longer than --max-lease %s", o.Lease, o.MaxLease))
	}
	if o.MaxLease > MaxMaxLease {
		errs = append(errs, fmt.Errorf("--max-lease %s must be at most %s", o.MaxLease, MaxMaxLease))
	}
	// Positive, not just non-negative: the agents read a zero --min-flip-interval as their 30s default,
	// so a zero here would lease pods they refuse, and a zero back-off would ask a refusing pod again at once.
	if o.Plan.RefusalBackoff <= 0 || o.Plan.MinFlipInterval <= 0 {
		errs = append(errs, fmt.Errorf("--refusal-backoff %s and --min-flip-interval %s must be positive", o.Plan.RefusalBackoff, o.Plan.MinFlipInterval))
	}
	errs = append(errs, options.CheckAddress("metrics-address", c.MetricsAddress, false)...)
	return errs
}

// Run starts the pipeline and, while leading, writes conversion leases until ctx ends.
func (c *ControllerCommand) Run(ctx context.Context) error {
	cfg, client, err := c.Kube.Clients()
	if err != nil {
		return err
	}
	p, err := pipeline.Start(ctx, cfg, c.Pipeline, selfmetrics.NewScrape(legacyregistry.MustRegister, time.Now))
	if err != nil {
		return err
	}
	// No tokenscale_pool_* gauges here: this endpoint is plain HTTP on the pod network, and the pools'
	// numbers are served only behind the adapter's delegated authorization or on the KEDA scaler's loopback.
	// The controller is healthy while its loop publishes fresh snapshots, as the KEDA scaler is.
	fresh := func() error { return service.Fresh(p.Service.Snapshot(), time.Now(), p.MaxAge()) }
	selfmetrics.NewBuildInfo(legacyregistry.MustRegister, version.Get())
	if err := selfmetrics.Serve(ctx, c.MetricsAddress, "metrics", true, fresh); err != nil {
		return err
	}
	go p.Service.Run(ctx)
	return RunLeading(ctx, client, c.Leader, func(ctx context.Context) error {
		return RunController(ctx, client, NewController(client, c.Options), p.Service, c.Options.Lease/3, p.MaxAge(), c.Pipeline.Namespace, c.Pipeline.PodSelector)
	})
}

// Validate reports leader election settings that cannot work.
func (le *LeaderElection) Validate() []error {
	if !le.Enabled {
		return nil
	}
	var errs []error
	if le.Namespace == "" || le.Name == "" {
		errs = append(errs, errors.New("--leader-elect needs --leader-election-namespace and --leader-election-name"))
	}
	// client-go's own rules (leaderelection.NewLeaderElector): the leader must give up before a standby may
	// take over, and its renewal deadline must outlast a jittered retry; refused here, they failed only once
	// the controller had synced, naming no flag.
	if !(le.RetryPeriod > 0 && le.RetryPeriod < le.RenewDeadline && le.RenewDeadline < le.LeaseDuration) {
		errs = append(errs, fmt.Errorf("leader election wants 0 < --leader-election-retry-period (%s) < --leader-election-renew-deadline (%s) < --leader-election-lease-duration (%s)",
			le.RetryPeriod, le.RenewDeadline, le.LeaseDuration))
	} else if !(float64(le.RenewDeadline) > leaderelection.JitterFactor*float64(le.RetryPeriod)) {
		errs = append(errs, fmt.Errorf("leader election wants --leader-election-renew-deadline (%s) longer than %g × --leader-election-retry-period (%s), client-go's jitter",
			le.RenewDeadline, leaderelection.JitterFactor, le.RetryPeriod))
	}
	return errs
}

// AgentCommand is `tokenscale-converter agent`: its flags and its wiring (actuator, the kubelet's
// PodResources API, NVML, metrics).
type AgentCommand struct {
	Kube    options.Kube
	Options AgentOptions
	// Actuator names how a pod is flipped: llm-d, label or sglang.
	Actuator                              string
	LabelKey, DecodeValue, ConvertedValue string
	SGLangPort                            int
	PodResourcesSocket                    string
	MinFreeGiB                            float64
	MaxUtilisation                        uint
	MetricsAddress                        string
	// OpenGPUs opens the GPU library (NVML in the binary); it is retried with backoff while it fails.
	OpenGPUs func() (GPUSession, error)
}

// AddFlags registers the agent's flags in their sections of cmd, and its checks. nodeName is the
// default of --node ($NODE_NAME in the binary).
func (c *AgentCommand) AddFlags(cmd *options.Command, nodeName string) {
	fs := cmd.Section("agent")
	fs.StringVar(&c.Options.NodeName, "node", nodeName, "this node's name (default $NODE_NAME, from the downward API)")
	fs.StringVar(&c.Options.Selector, "selector", "", "label selector of the decode pods this agent may flip (default: any pod that gets a lease)")
	fs.DurationVar(&c.Options.MinFlipInterval, "min-flip-interval", 30*time.Second, "minimum time between two flips of one pod (reverting is never delayed)")
	fs.DurationVar(&c.Options.MaxLease, "max-lease", protocol.DefaultMaxLease, "a lease ending further ahead than this is invalid and ignored")
	fs.DurationVar(&c.Options.Recheck, "recheck-interval", 30*time.Second, "how often the GPU headroom of a pod kept converted is checked again (reverted when gone)")
	fs = cmd.Section("actuator")
	fs.StringVar(&c.Actuator, "actuator", "llm-d", "how a pod is flipped: llm-d (llm-d.ai/role label), label (--label-key etc.) or sglang (POST /pd_role_switch)")
	fs.StringVar(&c.LabelKey, "label-key", "llm-d.ai/role", "label actuator: the role label")
	fs.StringVar(&c.DecodeValue, "decode-value", "decode", "label actuator: the decode-only value")
	fs.StringVar(&c.ConvertedValue, "converted-value", "prefill-decode", "label actuator: the value that lets the router send prefill work")
	fs.IntVar(&c.SGLangPort, "sglang-port", 30000, "sglang actuator: the engine's HTTP port")
	fs = cmd.Section("gpu headroom")
	fs.StringVar(&c.PodResourcesSocket, "pod-resources-socket", DefaultPodResourcesSocket, "the kubelet's PodResources socket")
	c.addHeadroomFlags(fs)
	c.Kube.AddFlags(cmd.Section("kubernetes"))
	cmd.Section("serving").StringVar(&c.MetricsAddress, "metrics-address", ":8081", "address of /metrics and /healthz (empty: off)")
	cmd.Validate(c.Validate, c.Kube.Validate)
}

// addHeadroomFlags registers the GPU headroom thresholds, which the agent and `gpus` share.
func (c *AgentCommand) addHeadroomFlags(fs *pflag.FlagSet) {
	fs.Float64Var(&c.MinFreeGiB, "min-free-gib", 2, "free GPU memory (GiB) every GPU of a pod needs to take prefill chunks")
	fs.UintVar(&c.MaxUtilisation, "max-utilisation", 90, "GPU utilisation (percent) above which a GPU is too busy to take prefill chunks")
}

// AddGPUFlags registers the flags of `tokenscale-converter gpus`, which prints each GPU's headroom by
// the agent's thresholds, and their checks.
func (c *AgentCommand) AddGPUFlags(cmd *options.Command) {
	c.addHeadroomFlags(cmd.Section("gpu headroom"))
	cmd.Validate(c.validateHeadroom)
}

// validateHeadroom reports headroom thresholds that cannot work.
func (c *AgentCommand) validateHeadroom() []error {
	var errs []error
	if !(c.MinFreeGiB >= 0 && c.MinFreeGiB <= 1<<20) || math.IsInf(c.MinFreeGiB, 0) {
		errs = append(errs, fmt.Errorf("--min-free-gib %g: want 0..1048576", c.MinFreeGiB))
	}
	if c.MaxUtilisation > 100 {
		errs = append(errs, fmt.Errorf("--max-utilisation %d: want 0..100", c.MaxUtilisation))
	}
	return errs
}

// Validate reports every agent flag that cannot work.
func (c *AgentCommand) Validate() []error {
	var errs []error
	o := c.Options
	if o.NodeName == "" {
		errs = append(errs, errors.New("no node name: set NODE_NAME from the downward API (spec.nodeName) or pass --node"))
	}
	if sel, err := labels.Parse(o.Selector); err != nil {
		errs = append(errs, fmt.Errorf("--selector %q: %w", o.Selector, err))
	} else if key, from, to := c.roleLabel(); key != "" {
		// The agent watches only the pods the selector matches; one that does not match the converted
		// role would drop a pod from the watch as it converts it, and no one would revert it.
		reqs, _ := sel.Requirements()
		for _, r := range reqs {
			if r.Key() == key && !(r.Matches(labels.Set{key: from}) && r.Matches(labels.Set{key: to})) {
				errs = append(errs, fmt.Errorf("--selector %q: it must match both %s=%s and %s=%s, as the agent relabels the pods it converts", o.Selector, key, from, key, to))
			}
		}
	}
	if o.MinFlipInterval <= 0 || o.MaxLease <= 0 || o.Recheck <= 0 {
		errs = append(errs, fmt.Errorf("--min-flip-interval %s, --max-lease %s and --recheck-interval %s must be positive", o.MinFlipInterval, o.MaxLease, o.Recheck))
	}
	if o.MaxLease > MaxMaxLease {
		errs = append(errs, fmt.Errorf("--max-lease %s must be at most %s", o.MaxLease, MaxMaxLease))
	}
	switch c.Actuator {
	case "llm-d":
	case "label":
		for _, msg := range validation.IsQualifiedName(c.LabelKey) {
			errs = append(errs, fmt.Errorf("--label-key %q: %s", c.LabelKey, msg))
		}
		for _, v := range []string{c.DecodeValue, c.ConvertedValue} {
			for _, msg := range validation.IsValidLabelValue(v) {
				errs = append(errs, fmt.Errorf("label value %q: %s", v, msg))
			}
		}
		if c.DecodeValue == c.ConvertedValue {
			errs = append(errs, fmt.Errorf("--decode-value and --converted-value are both %q: a flip would change nothing", c.DecodeValue))
		}
	case "sglang":
		if c.SGLangPort < 1 || c.SGLangPort > 65535 {
			errs = append(errs, fmt.Errorf("--sglang-port %d: want 1..65535", c.SGLangPort))
		}
	default:
		errs = append(errs, fmt.Errorf("--actuator %q: want llm-d, label or sglang", c.Actuator))
	}
	if c.PodResourcesSocket == "" {
		errs = append(errs, errors.New("--pod-resources-socket is required: GPU headroom is checked per pod through it"))
	}
	errs = append(errs, c.validateHeadroom()...)
	errs = append(errs, options.CheckAddress("metrics-address", c.MetricsAddress, false)...)
	return errs
}

// roleLabel is the label a label actuator flips and its two values; empty for other actuators.
func (c *AgentCommand) roleLabel() (key, decode, converted string) {
	switch c.Actuator {
	case "llm-d":
		a := LLMD(nil)
		return a.Key, a.Decode, a.ConvertedVal
	case "label":
		return c.LabelKey, c.DecodeValue, c.ConvertedValue
	}
	return "", "", ""
}

// Need is the GPU headroom the flags ask for.
func (c *AgentCommand) Need() Need {
	return Need{MinFreeBytes: uint64(c.MinFreeGiB * (1 << 30)), MaxUtilisation: uint32(c.MaxUtilisation)}
}

// Build wires the agent: the actuator, the kubelet's PodResources client, the GPU library behind
// ReopeningGPUs (without it conversions are refused, nvml-error, while it is retried; converting back
// needs no GPU check) and the metrics. release closes what Build opened.
func (c *AgentCommand) Build(client kubernetes.Interface, register func(...metrics.Registerable)) (a *Agent, release func(), err error) {
	o := c.Options
	switch c.Actuator {
	case "llm-d":
		o.Actuator = LLMD(client)
	case "label":
		o.Actuator = &LabelActuator{Client: client, Key: c.LabelKey, Decode: c.DecodeValue, ConvertedVal: c.ConvertedValue}
	case "sglang":
		o.Actuator = &SGLangActuator{Port: c.SGLangPort}
	default:
		return nil, nil, fmt.Errorf("--actuator %q: want llm-d, label or sglang", c.Actuator)
	}
	if c.OpenGPUs == nil {
		return nil, nil, errors.New("converter agent: no GPU library to open")
	}
	m := NewMetrics(register)
	o.Observer = m
	pr, err := DialPodResources(c.PodResourcesSocket)
	if err != nil {
		return nil, nil, err
	}
	gpus := &ReopeningGPUs{Open: c.OpenGPUs}
	o.GPUs = &Headroom{Devices: pr, GPUs: gpus, Need: c.Need(), Observe: m.GPU, Unknown: m.GPUUnknown}
	o.Kubelet = pr
	return NewAgent(client, o), func() { _ = gpus.Close(); _ = pr.Close() }, nil
}

// Run builds the agent and runs it until ctx ends.
func (c *AgentCommand) Run(ctx context.Context) error {
	_, client, err := c.Kube.Clients()
	if err != nil {
		return err
	}
	a, closeAll, err := c.Build(client, legacyregistry.MustRegister)
	if err != nil {
		return err
	}
	defer closeAll()
	selfmetrics.NewBuildInfo(legacyregistry.MustRegister, version.Get())
	if err := selfmetrics.Serve(ctx, c.MetricsAddress, "metrics", true, nil); err != nil {
		return err
	}
	klog.InfoS("Converter agent starting", "node", c.Options.NodeName, "actuator", a.o.Actuator.Name())
	return a.Run(ctx)
}

// PrintGPUs writes what `tokenscale-converter gpus` shows: each GPU NVML reports and whether it has
// the headroom need asks for.
func PrintGPUs(w io.Writer, driver, nvml string, gpus []GPUReading, need Need) {
	fmt.Fprintf(w, "NVML %s, driver %s: %d GPU(s); need %.1f GiB free and <= %d%% utilisation\n", nvml, driver, len(gpus), gib(need.MinFreeBytes), need.MaxUtilisation)
	for _, g := range gpus {
		util := "n/a"
		if g.UtilisationKnown {
			util = fmt.Sprintf("%d%%", g.Utilisation)
		}
		verdict := "headroom: yes"
		if ok, reason, detail := Decide([]GPUReading{g}, need); !ok {
			verdict = "headroom: no, " + reason + " (" + detail + ")"
		}
		health := "healthy"
		if g.Problem != "" {
			health = g.Problem
		}
		fmt.Fprintf(w, "%s  %s  memory %.1f/%.1f GiB free  util %s  MIG %v  %s  %s\n", g.UUID, g.Name,
			gib(g.MemFree), gib(g.MemTotal), util, g.MIG, health, verdict)
	}
}
