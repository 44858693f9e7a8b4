// Command tokenscale-converter runs convertible decoders: `controller` (one per cluster) leases decode
// pods for prefill work as the policy asks, `agent` (a DaemonSet) verifies GPU headroom with NVML and
// flips its node's leased pods, and `gpus` prints what NVML says about this node's GPUs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/logs"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/converter"
	"github.com/tokenscale/tokenscale/converter/nvmlgpu"
	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/internal/pipeline"
	"github.com/tokenscale/tokenscale/internal/selfmetrics"
	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/velocity/service"
)

const usage = `usage: tokenscale-converter controller|agent|gpus [flags]  (-h after a command lists its flags)
`

func main() {
	if version.Requested(os.Args[1:]) {
		version.Print(os.Stdout, "tokenscale-converter")
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "controller":
		err = controllerCmd(os.Args[2:])
	case "agent":
		err = agentCmd(os.Args[2:])
	case "gpus":
		err = gpusCmd(os.Args[2:])
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		klog.ErrorS(err, "tokenscale-converter stopped", "command", os.Args[1])
		os.Exit(1)
	}
}

// clients returns the REST config (from --kubeconfig, else in-cluster) and a clientset for it.
func clients(kubeconfig string) (*rest.Config, kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else if cfg, err = rest.InClusterConfig(); err != nil {
		err = fmt.Errorf("kubernetes client config (set --kubeconfig outside a cluster): %w", err)
	}
	if err != nil {
		return nil, nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	return cfg, client, err
}

// serveMetrics serves /metrics and /healthz (selfmetrics.Healthz of check) on addr until ctx ends ("" disables it).
func serveMetrics(ctx context.Context, addr string, check func() error) {
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", legacyregistry.Handler())
	mux.Handle("/healthz", selfmetrics.Healthz(check))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Metrics endpoint stopped")
		}
	}()
	go func() { <-ctx.Done(); _ = srv.Close() }()
}

func controllerCmd(args []string) error {
	var (
		po                pipeline.Options
		kubeconfig, mAddr string
		o                 converter.ControllerOptions
		le                converter.LeaderElection
	)
	fs := flag.NewFlagSet("controller", flag.ExitOnError)
	po.AddFlags(fs)
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	fs.StringVar(&mAddr, "metrics-address", ":8080", "address of /metrics and /healthz (empty: off)")
	fs.DurationVar(&o.Lease, "lease", 10*time.Second, "how long a conversion lease lasts unless renewed (the longest a pod stays converted after this controller is gone)")
	fs.Float64Var(&o.Plan.MaxFraction, "max-fraction", 0.5, "at most this fraction of a decode pool is converted at once")
	fs.DurationVar(&o.Plan.RefusalBackoff, "refusal-backoff", time.Minute, "a pod that refused is not asked again for this long")
	fs.DurationVar(&o.MaxLease, "max-lease", protocol.DefaultMaxLease, "no lease is written further ahead than this (agents ignore one that is)")
	le.AddFlags(fs)
	fs.DurationVar(&o.Plan.MinFlipInterval, "min-flip-interval", 30*time.Second, "the agents' --min-flip-interval: a pod that flipped more recently is not leased")
	klog.InitFlags(fs)
	logs.InitLogs()
	defer logs.FlushLogs()
	_ = fs.Parse(args)
	if !(o.Plan.MaxFraction >= 0 && o.Plan.MaxFraction <= 1) {
		return fmt.Errorf("--max-fraction %g: want 0..1", o.Plan.MaxFraction)
	}
	if o.Lease > o.MaxLease {
		return fmt.Errorf("--lease %s is longer than --max-lease %s", o.Lease, o.MaxLease)
	}
	ctx := server.SetupSignalContext()
	cfg, client, err := clients(kubeconfig)
	if err != nil {
		return err
	}
	p, err := pipeline.Start(ctx, cfg, po, selfmetrics.NewScrape(legacyregistry.MustRegister, time.Now))
	if err != nil {
		return err
	}
	legacyregistry.CustomMustRegister(selfmetrics.NewPools(p.Service.Snapshot))
	// The controller is healthy while its loop publishes fresh snapshots, as the KEDA scaler is.
	serveMetrics(ctx, mAddr, func() error { return service.Fresh(p.Service.Snapshot(), time.Now(), p.MaxAge()) })
	go p.Service.Run(ctx)
	return converter.RunLeading(ctx, client, le, func(ctx context.Context) error {
		return converter.RunController(ctx, client, converter.NewController(client, o), p.Service, o.Lease/3, p.MaxAge())
	})
}

func agentCmd(args []string) error {
	var (
		o                               converter.AgentOptions
		kubeconfig, mAddr, socket, kind string
		labelKey, decodeVal, convVal    string
		sglangPort                      int
		minFreeGiB                      float64
		maxUtil                         uint
	)
	fs := flag.NewFlagSet("agent", flag.ExitOnError)
	fs.StringVar(&o.NodeName, "node", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME, from the downward API)")
	fs.StringVar(&o.Selector, "selector", "", "label selector of the decode pods this agent may flip (default: any pod that gets a lease)")
	fs.StringVar(&kind, "actuator", "llm-d", "how a pod is flipped: llm-d (llm-d.ai/role label), label (--label-key etc.) or sglang (POST /pd_role_switch)")
	fs.StringVar(&labelKey, "label-key", "llm-d.ai/role", "label actuator: the role label")
	fs.StringVar(&decodeVal, "decode-value", "decode", "label actuator: the decode-only value")
	fs.StringVar(&convVal, "converted-value", "prefill-decode", "label actuator: the value that lets the router send prefill work")
	fs.IntVar(&sglangPort, "sglang-port", 30000, "sglang actuator: the engine's HTTP port")
	fs.StringVar(&socket, "pod-resources-socket", converter.DefaultPodResourcesSocket, "the kubelet's PodResources socket")
	fs.Float64Var(&minFreeGiB, "min-free-gib", 2, "free GPU memory (GiB) every GPU of a pod needs to take prefill chunks")
	fs.UintVar(&maxUtil, "max-utilisation", 90, "GPU utilisation (percent) above which a pod is too busy to convert")
	fs.DurationVar(&o.MinFlipInterval, "min-flip-interval", 30*time.Second, "minimum time between two flips of one pod (reverting is never delayed)")
	fs.DurationVar(&o.MaxLease, "max-lease", protocol.DefaultMaxLease, "a lease ending further ahead than this is invalid and ignored")
	fs.DurationVar(&o.Recheck, "recheck-interval", 30*time.Second, "how often the GPU headroom of a pod kept converted is checked again (reverted when gone)")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	fs.StringVar(&mAddr, "metrics-address", ":8081", "address of /metrics and /healthz (empty: off)")
	klog.InitFlags(fs)
	logs.InitLogs()
	defer logs.FlushLogs()
	_ = fs.Parse(args)
	if o.NodeName == "" {
		return errors.New("no node name: set NODE_NAME from the downward API (spec.nodeName) or pass --node")
	}
	ctx := server.SetupSignalContext()
	_, client, err := clients(kubeconfig)
	if err != nil {
		return err
	}
	switch kind {
	case "llm-d":
		o.Actuator = converter.LLMD(client)
	case "label":
		o.Actuator = &converter.LabelActuator{Client: client, Key: labelKey, Decode: decodeVal, ConvertedVal: convVal}
	case "sglang":
		o.Actuator = &converter.SGLangActuator{Port: sglangPort}
	default:
		return fmt.Errorf("--actuator %q: want llm-d, label or sglang", kind)
	}
	m := converter.NewMetrics(legacyregistry.MustRegister)
	o.Observer = m
	pr, err := converter.DialPodResources(socket)
	if err != nil {
		return err
	}
	defer pr.Close()
	h := &converter.Headroom{Devices: pr, Need: converter.Need{MinFreeBytes: uint64(minFreeGiB * (1 << 30)), MaxUtilisation: uint32(maxUtil)}, Observe: m.GPU}
	// Without NVML nothing can be verified: conversions are refused (nvml-error) while it is retried with
	// backoff; converting back needs no GPU check.
	gpus := &converter.ReopeningGPUs{Open: func() (converter.GPUSession, error) {
		r, err := nvmlgpu.Open()
		if err != nil {
			return nil, err
		}
		return r, nil
	}}
	defer gpus.Close()
	h.GPUs = gpus
	o.GPUs = h
	serveMetrics(ctx, mAddr, nil)
	klog.InfoS("Converter agent starting", "node", o.NodeName, "actuator", o.Actuator.Name())
	return converter.NewAgent(client, o).Run(ctx)
}

func gpusCmd(args []string) error {
	fs := flag.NewFlagSet("gpus", flag.ExitOnError)
	minFreeGiB := fs.Float64("min-free-gib", 2, "free GPU memory (GiB) a GPU needs to take prefill chunks")
	maxUtil := fs.Uint("max-utilisation", 90, "GPU utilisation (percent) above which a GPU is too busy")
	_ = fs.Parse(args)
	r, err := nvmlgpu.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	driver, nv := r.Driver()
	gpus, err := r.All()
	if err != nil {
		return err
	}
	need := converter.Need{MinFreeBytes: uint64(*minFreeGiB * (1 << 30)), MaxUtilisation: uint32(*maxUtil)}
	fmt.Printf("NVML %s, driver %s: %d GPU(s); need %.1f GiB free and <= %d%% utilisation\n", nv, driver, len(gpus), *minFreeGiB, *maxUtil)
	for _, g := range gpus {
		util := "n/a"
		if g.UtilisationKnown {
			util = fmt.Sprintf("%d%%", g.Utilisation)
		}
		verdict := "headroom: yes"
		if ok, reason, detail := converter.Decide([]converter.GPUReading{g}, need); !ok {
			verdict = "headroom: no, " + reason + " (" + detail + ")"
		}
		health := "healthy"
		if g.Problem != "" {
			health = g.Problem
		}
		fmt.Printf("%s  %s  memory %.1f/%.1f GiB free  util %s  MIG %v  %s  %s\n", g.UUID, g.Name,
			float64(g.MemFree)/(1<<30), float64(g.MemTotal)/(1<<30), util, g.MIG, health, verdict)
	}
	return nil
}
