// Package kubedemo runs tokenscale on a local Kubernetes control plane (the e2e harness): the adapter
// and the converter (controller binary, node agents on two fake GPU nodes) installed from the manifests,
// llm-d style prefill and decode Deployments of fake engines driven by a replay of the embedded Azure
// trace, the README's example HPAs, and the real HPA controller moving the replica counts. It prints the
// load, tokenscale's metrics read through the aggregator (what `kubectl get --raw` shows), the replicas
// and the conversions, once a second, until the context ends.
package kubedemo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/converter"
	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/internal/fakeengine"
	"github.com/tokenscale/tokenscale/internal/localcluster"
	"github.com/tokenscale/tokenscale/sim/trace"
	"github.com/tokenscale/tokenscale/velocity/config"
)

// Options tune the demo.
type Options struct {
	RepoRoot  string        // the checkout (manifests/, hack/, cmd/); default "."
	Duration  time.Duration // 0: until the trace ends or the context does
	Speedup   float64       // trace seconds per wall second, default 10
	Skip      time.Duration // trace time skipped at the start; the command's default is 500s (the first burst comes ~7 s in)
	ColdStart time.Duration // a new pod's time to Ready, default 5s
	HPASync   time.Duration // the HPA controller's sync period, default 1s (production: 15s)
	Out       io.Writer
	Progress  io.Writer // build and start-up messages
}

// The demo's engines: prefill sized so the trace's bursts need several pods; decode sized so one decoder
// serves the code trace's short outputs (about 10 tokens per request, up to about 900 tok/s here) with
// headroom to spare, which is what lets the policy convert it during a prefill burst.
// nodes are the demo's fake GPU nodes; decode pods are spread over them and each has a converter agent.
var nodes = []string{"gpu-a", "gpu-b"}

const (
	namespace  = "llm-d"
	prefillTPS = 10000.0
	decodeTPS  = 1500.0
)

func (o *Options) defaults() {
	if o.RepoRoot == "" {
		o.RepoRoot = "."
	}
	if o.Speedup <= 0 {
		o.Speedup = 10
	}
	if o.ColdStart <= 0 {
		o.ColdStart = 5 * time.Second
	}
	if o.HPASync <= 0 {
		o.HPASync = time.Second
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Progress == nil {
		o.Progress = os.Stderr
	}
}

// poolConfig is manifests/common's pool config with the demo's engine port, profiles and short windows.
// The policy's cold start is at least config.MinPolicyDuration: pods Ready sooner change nothing there.
func poolConfig(port int, coldStart time.Duration) string {
	coldStart = max(coldStart, config.MinPolicyDuration)
	return fmt.Sprintf(`version: tokenscale.io/v1alpha1
scrape: {interval: 1s, timeout: 800ms, port: %d}
policy: {targetUtilisation: 0.85, coldStart: %s, scaleDownWindow: 20s, releaseHold: 10s}
pools:
- name: prefill
  role: prefill
  selector: {llm-d.ai/role: prefill}
  workload: {kind: Deployment, name: ms-llama-prefill}
  slo: {ttft: 2s}
  profile: {prefillTokensPerSecond: %g}
  maxReplicas: 16
- name: decode
  role: decode
  selector: {llm-d.ai/role: decode}
  workload: {kind: Deployment, name: ms-llama-decode}
  slo: {itl: 100ms}
  profile: {decodeTokensPerSecond: %g}
  ratio: {min: 0.25, max: 8}
  maxReplicas: 16
`, port, coldStart, prefillTPS, decodeTPS)
}

// ControlPlaneBinaries returns the directory of the control-plane binaries: $TOKENSCALE_K8S_BIN, or what
// hack/build-control-plane.sh builds (about 10 minutes the first time, cached after).
func ControlPlaneBinaries(ctx context.Context, root string, progress io.Writer) (string, error) {
	if bin := os.Getenv("TOKENSCALE_K8S_BIN"); bin != "" {
		return bin, nil
	}
	fmt.Fprintln(progress, "building etcd, kube-apiserver, kube-controller-manager and kubectl from the Go module proxy (cached; about 10 minutes the first time)...")
	// Its own process group, sent SIGTERM when ctx ends: a Ctrl-C during the build stops the go commands
	// the script runs, not only the script, and the script's EXIT trap still removes its work directory.
	// Whatever is left after WaitDelay is killed.
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack/build-control-plane.sh"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	// The build's own output is kept for a failure (no network, a full disk, memory short while linking
	// kube-apiserver): an exit status alone would say nothing of why.
	var log tailBuffer
	cmd.Stderr = &log
	// A build that prints nothing for ten minutes cannot be told from a hang: say it is still going.
	done := make(chan struct{})
	defer close(done)
	go func() {
		start := time.Now()
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(progress, "  still building the control plane (%d min so far)...\n", int(time.Since(start).Minutes()))
			}
		}
	}()
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("building the control plane (hack/build-control-plane.sh): %w; its last output:\n%s\nrun `make demo-no-k8s` for the demo without Kubernetes", err, log.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - 4096; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// Run runs the demo until ctx ends, Duration passes or the trace ends, and stops every process it started.
func Run(ctx context.Context, o Options) (err error) {
	o.defaults()
	reqs, err := trace.AzureCode()
	if err != nil {
		return err
	}
	// Before the control plane is built (minutes the first time), not after.
	if err := trace.CheckSkip(reqs, o.Skip); err != nil {
		return err
	}
	bin, err := ControlPlaneBinaries(ctx, o.RepoRoot, o.Progress)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tokenscale-demo-")
	if err != nil {
		return err
	}
	// The logs of every process are kept for a failure, wherever it comes from (a stopped demo, by Ctrl-C
	// or its duration, deletes them).
	defer func() {
		if err != nil && !(ctx.Err() != nil && errors.Is(err, context.Canceled)) {
			err = fmt.Errorf("%w (logs kept in %s)", err, dir)
			return
		}
		_ = os.RemoveAll(dir)
	}()
	fmt.Fprintln(o.Progress, "starting etcd, kube-apiserver and kube-controller-manager on 127.0.0.1, then the tokenscale adapter...")
	enginePort := localcluster.FreePort()
	stack, err := localcluster.StartStack(ctx, localcluster.StackOptions{RepoRoot: o.RepoRoot, BinDir: bin, Dir: dir,
		HPASyncPeriod: o.HPASync, AdapterConfig: poolConfig(enginePort, o.ColdStart)})
	if err != nil {
		return err
	}
	defer stack.Stop()

	client := stack.CP.Client
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	// Convertible decoders: the converter's manifests, its controller binary as its ServiceAccount, and a
	// node agent per fake GPU node, each with a token bound to a pod on its node as the DaemonSet's is.
	fmt.Fprintln(o.Progress, "installing the converter (manifests/overlays/converter) and starting its controller and node agents...")
	convBin, err := stack.InstallConverter(dir)
	if err != nil {
		return err
	}
	agents := map[string]kubernetes.Interface{}
	for _, node := range nodes {
		c, cleanup, err := stack.AgentClient(ctx, dir, node)
		if err != nil {
			return err
		}
		defer cleanup()
		agents[node] = c
	}
	kc, err := stack.ServiceAccountKubeconfig(ctx, dir, "tokenscale", "tokenscale-converter-controller")
	if err != nil {
		return err
	}
	ctrl, err := localcluster.StartProcess(dir, "converter-controller", nil, convBin, "controller", "--kubeconfig", kc,
		"--config", stack.Adapter.Config, "--lease", "3s", "--min-flip-interval", "2s", "--metrics-address", "", "-v=2")
	if err != nil {
		return err
	}
	defer ctrl.Stop()

	kl := localcluster.NewKubelet(client, localcluster.KubeletOptions{Namespace: namespace, Port: enginePort, ColdStart: o.ColdStart, Nodes: nodes,
		Engine: fakeengine.Config{PrefillTokensPerSec: prefillTPS, DecodeTokensPerSec: decodeTPS}})
	kctx, stopKubelet := context.WithCancel(ctx)
	kdone := make(chan struct{})
	go func() {
		_ = kl.Run(kctx) // it returns when the demo stops it; its error then says only that
		close(kdone)
	}()
	defer func() { stopKubelet(); <-kdone }()
	for _, d := range []struct {
		name, role string
		ann        []string
	}{{"ms-llama-prefill", "prefill", nil}, {"ms-llama-decode", "decode", []string{protocol.AnnotationKVProducer, "true"}}} {
		dep := localcluster.Deployment(namespace, d.name, d.role, fakeengine.VLLMV1, 1, d.ann...)
		if _, err := client.AppsV1().Deployments(namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	// The agents run in this process: their klog lines (a line per conversion) go to a file beside the other
	// processes' logs, not into the table on the terminal.
	agentLog, err := os.Create(filepath.Join(dir, "converter-agents.log"))
	if err != nil {
		return err
	}
	defer agentLog.Close()
	klog.LogToStderr(false)
	klog.SetOutput(agentLog)
	defer func() { klog.Flush(); klog.LogToStderr(true) }()
	// The agents run until the demo ends, then convert every pod back (before the control plane stops).
	actx, stopAgents := context.WithCancel(ctx)
	var agentsDone sync.WaitGroup
	for node, c := range agents {
		a := converter.NewAgent(c, converter.AgentOptions{NodeName: node, Actuator: converter.LLMD(c), GPUs: noGPU{},
			MinFlipInterval: 2 * time.Second, Resync: 500 * time.Millisecond})
		agentsDone.Add(1)
		go func() {
			defer agentsDone.Done()
			if err := a.Run(actx); err != nil {
				fmt.Fprintf(o.Progress, "converter agent on %s: %v\n", node, err)
			}
		}()
	}
	defer func() { stopAgents(); agentsDone.Wait() }()
	// The README's example HPAs, applied as a user would.
	if out, err := stack.Kubectl("", "apply", "-k", filepath.Join(o.RepoRoot, "manifests/examples")); err != nil {
		return fmt.Errorf("kubectl apply -k manifests/examples: %w\n%s", err, out)
	}

	fmt.Fprintf(o.Out, "tokenscale on a local Kubernetes %s: adapter from manifests/overlays/e2e, HPAs from manifests/examples, HPA sync %s\n",
		"v1.36", o.HPASync)
	fmt.Fprintf(o.Out, "load: Azure LLM inference trace 2023 (code), from %s at %gx speed; engines: prefill %g tok/s, decode %g tok/s per pod, cold start %s\n",
		o.Skip, o.Speedup, prefillTPS, decodeTPS, o.ColdStart)
	fmt.Fprintf(o.Out, "converter: controller as its ServiceAccount, node agents on %s (no GPU here: their GPU check is skipped; on a GPU node it reads NVML)\n",
		strings.Join(nodes, ", "))
	fmt.Fprintf(o.Out, "try, while it runs:\n  %s --kubeconfig %s get --raw /apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/deployments.apps/ms-llama-prefill/tokenscale_desired_replicas\n  %s --kubeconfig %s get hpa -n %s\n",
		stack.KubectlPath(), stack.CP.AdminKubeconfig, namespace, stack.KubectlPath(), stack.CP.AdminKubeconfig, namespace)
	fmt.Fprintf(o.Out, "%5s | %8s %8s %8s %5s %5s %6s | %6s %6s %5s %6s | %9s\n", "t", "prompt/s", "λ_P", "cap_P", "bp_P", "want", "ready", "out/s", "λ_D", "want", "ready", "convert")
	fmt.Fprintf(o.Out, "%5s | %8s %8s %8s %5s %5s %6s | %6s %6s %5s %6s | %9s\n", "s", "(trace)", "tokenscale metrics via the aggregator", "", "", "P", "/spec", "(trace)", "", "D", "/spec", "want/done")

	var deadline <-chan time.Time
	if o.Duration > 0 {
		deadline = time.After(o.Duration)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	start := time.Now()
	next, traceT := 0, o.Skip
	for next < len(reqs) && reqs[next].Arrival < traceT {
		next++
	}
	step := time.Duration(o.Speedup * float64(time.Second))
	for {
		// Offer the next Speedup trace-seconds at the trace's own rate (tokens per trace second).
		traceT += step
		var in, out, n float64
		for next < len(reqs) && reqs[next].Arrival < traceT {
			in += float64(reqs[next].PromptTokens)
			out += float64(reqs[next].OutputTokens)
			n++
			next++
		}
		if next >= len(reqs) {
			fmt.Fprintln(o.Out, "trace finished; stopping.")
			return nil
		}
		in, out, n = in/o.Speedup, out/o.Speedup, n/o.Speedup
		// A prefill pod produces each request's first token; decode produces the rest.
		kl.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: in, OutputTokensPerSec: n})
		kl.SetLoad("decode", fakeengine.Load{OutputTokensPerSec: out})
		fmt.Fprintln(o.Out, row(ctx, stack, time.Since(start), in, out))
		select {
		case <-ctx.Done():
			fmt.Fprintln(o.Out, "stopping: fake engines, adapter, kube-controller-manager, kube-apiserver, etcd.")
			return nil
		case <-deadline:
			fmt.Fprintln(o.Out, "demo duration reached; stopping.")
			return nil
		case <-tick.C:
		}
	}
}

// row reads tokenscale's Object metrics through the aggregator and the Deployments' replicas.
func row(ctx context.Context, s *localcluster.Stack, t time.Duration, in, out float64) string {
	get := func(dep, metric string) string {
		v, err := objectMetric(ctx, s, dep, metric)
		if err != nil {
			return "-" // unknown (warming up, or no Ready pod): tokenscale answers 503, never 0
		}
		if v >= 100 {
			return fmt.Sprintf("%.0f", v)
		}
		return fmt.Sprintf("%.2g", v)
	}
	reps := func(dep string) string {
		d, err := s.CP.Client.AppsV1().Deployments(namespace).Get(ctx, dep, metav1.GetOptions{})
		if err != nil || d.Spec.Replicas == nil {
			return "?"
		}
		return fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, *d.Spec.Replicas)
	}
	converted := func() string {
		l, err := s.CP.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "llm-d.ai/role=prefill-decode"})
		if err != nil {
			return "?"
		}
		return fmt.Sprint(len(l.Items))
	}
	const p, d = "ms-llama-prefill", "ms-llama-decode"
	return fmt.Sprintf("%5.0f | %8.0f %8s %8s %5s %5s %6s | %6.0f %6s %5s %6s | %9s", t.Seconds(), in,
		get(p, "tokenscale_arrival_tokens_per_second"), get(p, "tokenscale_capacity_tokens_per_second"),
		get(p, "tokenscale_predicted_backpressure"), get(p, "tokenscale_desired_replicas"), reps(p),
		out, get(d, "tokenscale_arrival_tokens_per_second"), get(d, "tokenscale_desired_replicas"), reps(d),
		get(d, "tokenscale_conversions_wanted")+"/"+converted())
}

// noGPU passes the agents' GPU check: the demo machine has no GPU (on a GPU node the agent reads NVML).
type noGPU struct{}

func (noGPU) Check(context.Context, *corev1.Pod) (bool, string, string) { return true, "", "" }

// objectMetric is `kubectl get --raw` of a Deployment's Object metric.
func objectMetric(ctx context.Context, s *localcluster.Stack, dep, metric string) (float64, error) {
	body, err := s.CP.Client.Discovery().RESTClient().Get().
		AbsPath(fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/deployments.apps/%s/%s", namespace, dep, metric)).DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	var list struct{ Items []struct{ Value string } }
	if err := json.Unmarshal(body, &list); err != nil {
		return 0, err
	}
	if len(list.Items) != 1 {
		return 0, errors.New("not one value")
	}
	q, err := resource.ParseQuantity(list.Items[0].Value)
	if err != nil {
		return 0, err
	}
	return q.AsApproximateFloat64(), nil
}
