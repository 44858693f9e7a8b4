//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tokenscale/tokenscale/converter"
	"github.com/tokenscale/tokenscale/converter/nvmlgpu"
	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

// Convertible decoders end to end: the tokenscale-converter controller binary (its ServiceAccount, the
// manifests' RBAC and admission policies) leases decode pods when the policy wants conversions during a
// prefill burst; the node agents (run here in-process with tokens bound to pods on two nodes, as the
// DaemonSet's are) flip them. gpu-a's agent passes its GPU check (fake: no GPU here); gpu-b's has no NVML,
// refuses and records why, so the leases move to gpu-a. Never more than the policy asked for; back to
// decode after the burst; the admission policy keeps each agent to its own node and its own label.
func TestConverter(t *testing.T) {
	const ns = "conv"
	ctx := suite.ctx
	dir := t.TempDir()
	bin, err := suite.stack.InstallConverter(dir)
	if err != nil {
		t.Fatal(err)
	}
	agents := map[string]kubernetes.Interface{}
	for _, node := range []string{"gpu-a", "gpu-b"} {
		agents[node] = agentClient(t, dir, node)
	}

	k := namespace(t, ns, "gpu-a", "gpu-b")
	deployment(t, ns, "llama-prefill", "prefill", fakeengine.VLLMV1, 1)
	deployment(t, ns, "llama-decode", "decode", fakeengine.SGLang, 8, protocol.AnnotationKVProducer, "true")
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 5000, OutputTokensPerSec: 10})
	k.SetLoad("decode", fakeengine.Load{OutputTokensPerSec: 500})

	// The controller binary, as its ServiceAccount.
	kc, err := serviceAccountKubeconfig(ctx, dir, "tokenscale", "tokenscale-converter-controller")
	if err != nil {
		t.Fatal(err)
	}
	startProcess(t, dir, "converter-controller", nil, bin, "controller", "--kubeconfig", kc, "--config", suite.adapter.Config,
		"--lease", "3s", "--refusal-backoff", "5s", "--min-flip-interval", "2s", "--metrics-address", "", "-v=2")

	// The agents. gpu-b reads its GPUs through the real NVML path, which has no driver here.
	_, nvmlErr := nvmlgpu.Open()
	if nvmlErr == nil {
		t.Skip("this machine has an NVIDIA driver, so NVML cannot be made to fail here; run `make e2e` on a machine without the driver (CI has none)")
	}
	checks := map[string]converter.Checker{
		"gpu-a": gpuOK{},
		"gpu-b": &converter.Headroom{Devices: staticDevices{"GPU-b"}, GPUs: failingNVML{nvmlErr}},
	}
	actx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for node, c := range agents {
		a := converter.NewAgent(c, converter.AgentOptions{NodeName: node, Actuator: converter.LLMD(c), GPUs: checks[node],
			MinFlipInterval: 2 * time.Second, Resync: 200 * time.Millisecond})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(actx); err != nil {
				t.Errorf("agent %s: %v", node, err)
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()

	decode := func() []corev1.Pod {
		l, err := suite.cp.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=llama-decode"})
		if err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	converted := func(pods []corev1.Pod) (names []string) {
		for _, p := range pods {
			if p.Labels["llm-d.ai/role"] == "prefill-decode" {
				names = append(names, p.Name+"@"+p.Spec.NodeName)
			}
		}
		sort.Strings(names)
		return names
	}
	wanted := func() int {
		v, err := objectValue(ns, "llama-decode", "tokenscale_conversions_wanted")
		if err != nil {
			return -1
		}
		return int(v)
	}
	eventually(t, 60*time.Second, "8 decode pods Ready on gpu-a and gpu-b, conversions wanted 0", func() error {
		pods := decode()
		ready := 0
		for _, p := range pods {
			if p.Status.PodIP != "" && p.Spec.NodeName != "" {
				ready++
			}
		}
		if ready != 8 || wanted() != 0 {
			return fmt.Errorf("%d of 8 decode pods bound and running; conversions wanted %d", ready, wanted())
		}
		return nil
	})

	// The burst: 3× the prefill pool's capacity. The policy wants conversions (at most 25% of 8 = 2).
	burst := time.Now()
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 30000, OutputTokensPerSec: 60})
	var decided, flipped time.Duration
	var most int
	sampleUntil := func(limit time.Duration, what string, done func(pods []corev1.Pod, w int) bool) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for {
			pods, w := decode(), wanted()
			c := converted(pods)
			most = max(most, len(c))
			if len(c) > 2 {
				t.Fatalf("%d pods converted (%v); the policy's limit is 2", len(c), c)
			}
			if decided == 0 && w > 0 {
				decided = time.Since(burst)
			}
			if flipped == 0 && len(c) > 0 {
				flipped = time.Since(burst)
			}
			if done(pods, w) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s (wanted %d, converted %v)", what, limit, w, c)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	sampleUntil(30*time.Second, "two decoders on gpu-a converted", func(pods []corev1.Pod, w int) bool {
		c := converted(pods)
		return len(c) == 2 && strings.HasSuffix(c[0], "@gpu-a") && strings.HasSuffix(c[1], "@gpu-a")
	})
	t.Logf("burst -> policy wants conversions after %s (adapter's view); first pod relabelled after %s; 2 on gpu-a after %s",
		decided.Round(10*time.Millisecond), flipped.Round(10*time.Millisecond), time.Since(burst).Round(10*time.Millisecond))
	if flipped-decided > 2500*time.Millisecond {
		t.Errorf("first relabel %s after the decision showed; want about a second (the controller runs its own 1 s pipeline)", flipped-decided)
	}
	// gpu-b's agent refused and said why; those pods kept decode.
	refusals := 0
	for _, p := range decode() {
		if p.Spec.NodeName == "gpu-b" && strings.HasPrefix(p.Annotations[protocol.AnnotationStatus], "refused: nvml-error") {
			refusals++
			if p.Labels["llm-d.ai/role"] != "decode" {
				t.Errorf("refused pod %s is %q", p.Name, p.Labels["llm-d.ai/role"])
			}
			if !strings.Contains(p.Annotations[protocol.AnnotationStatus], "NVML init") {
				t.Errorf("refusal does not say what failed: %q", p.Annotations[protocol.AnnotationStatus])
			}
		}
	}
	t.Logf("gpu-b refused %d lease(s) from the controller with nvml-error", refusals)

	// Deterministically: a lease on a gpu-b pod outside any pool (so the controller leaves it alone) is
	// refused by gpu-b's agent, which says why on the pod. It carries the decode role label, as the
	// admission policy lets agents write only on decode-pool pods, and a lease within the agents' bound.
	probe, err := suite.cp.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nvml-probe", Labels: map[string]string{"llm-d.ai/role": "decode"},
			Annotations: map[string]string{protocol.AnnotationKVProducer: "true",
				protocol.AnnotationConvertUntil: time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano)}},
		Spec: corev1.PodSpec{NodeName: "gpu-b", Containers: []corev1.Container{{Name: "x", Image: "x"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = suite.cp.Client.CoreV1().Pods("default").Delete(context.Background(), probe.Name, metav1.DeleteOptions{})
	}()
	eventually(t, 10*time.Second, "gpu-b's agent recording its NVML refusal", func() error {
		p, err := suite.cp.Client.CoreV1().Pods("default").Get(ctx, probe.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if st := p.Annotations[protocol.AnnotationStatus]; !strings.HasPrefix(st, "refused: nvml-error (") || !strings.Contains(st, "NVML init") {
			return fmt.Errorf("status %q", st)
		}
		t.Logf("gpu-b's agent: %s", p.Annotations[protocol.AnnotationStatus])
		return nil
	})

	// Admission: an agent changes only its own node's pods, and only the role label.
	var onA, onB corev1.Pod
	for _, p := range decode() {
		if p.Spec.NodeName == "gpu-a" {
			onA = p
		} else {
			onB = p
		}
	}
	patch := func(c kubernetes.Interface, pod corev1.Pod, body string) error {
		_, err := c.CoreV1().Pods(ns).Patch(ctx, pod.Name, types.MergePatchType, []byte(body), metav1.PatchOptions{})
		return err
	}
	if err := patch(agents["gpu-a"], onB, `{"metadata":{"labels":{"llm-d.ai/role":"prefill-decode"}}}`); err == nil || !strings.Contains(err.Error(), "own node only") {
		t.Errorf("gpu-a's agent relabelling a gpu-b pod: %v; want denied by the admission policy", err)
	}
	if err := patch(agents["gpu-a"], onA, `{"metadata":{"labels":{"app":"stolen"}}}`); err == nil || !strings.Contains(err.Error(), "no label but llm-d.ai/role") {
		t.Errorf("gpu-a's agent changing another label: %v; want denied", err)
	}
	if err := patch(agents["gpu-a"], onA, `{"metadata":{"labels":{"llm-d.ai/role":"prefill"}}}`); err == nil || !strings.Contains(err.Error(), "decode or prefill-decode only") {
		t.Errorf("gpu-a's agent setting role prefill: %v; want denied", err)
	}
	if err := patch(agents["gpu-a"], onA, `{"metadata":{"annotations":{"tokenscale.io/convert-until":"2099-01-01T00:00:00Z"}}}`); err == nil {
		t.Error("an agent wrote its own lease; want denied")
	}
	// Only decode-pool pods: not a prefill pod (relabelled to decode), not an unrelated pod (given the role).
	for _, other := range []struct{ name, labels, patch string }{
		{"prefill-on-a", `{"llm-d.ai/role":"prefill"}`, `{"metadata":{"labels":{"llm-d.ai/role":"decode"}}}`},
		{"unrelated-on-a", `{}`, `{"metadata":{"labels":{"llm-d.ai/role":"prefill-decode"}}}`},
	} {
		var labels map[string]string
		if err := json.Unmarshal([]byte(other.labels), &labels); err != nil {
			t.Fatal(err)
		}
		// In namespace default, which no fake kubelet runs, so the pod joins no pool.
		if _, err := suite.cp.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: other.name, Labels: labels},
			Spec: corev1.PodSpec{NodeName: "gpu-a", Containers: []corev1.Container{{Name: "x", Image: "x"}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := agents["gpu-a"].CoreV1().Pods("default").Patch(ctx, other.name, types.MergePatchType, []byte(other.patch), metav1.PatchOptions{})
		if err == nil || !strings.Contains(err.Error(), "only decode-pool pods") {
			t.Errorf("gpu-a's agent patching %s with %s: %v; want denied", other.name, other.patch, err)
		}
		_ = suite.cp.Client.CoreV1().Pods("default").Delete(ctx, other.name, metav1.DeleteOptions{})
	}
	ctrlClient := clientFrom(t, kc)
	if err := patch(ctrlClient, onA, `{"metadata":{"labels":{"llm-d.ai/role":"prefill-decode"}}}`); err == nil || !strings.Contains(err.Error(), "only the tokenscale.io/convert-until") {
		t.Errorf("the controller relabelling a pod: %v; want denied", err)
	}

	// The burst ends: after the policy's release hold, every pod goes back to decode.
	fall := time.Now()
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 3000, OutputTokensPerSec: 10})
	sampleUntil(60*time.Second, "every decoder back to decode", func(pods []corev1.Pod, w int) bool {
		return len(converted(pods)) == 0 && w == 0
	})
	t.Logf("load falls -> all decoders back to decode after %s (policy release hold 5 s); at most %d converted at any sample",
		time.Since(fall).Round(10*time.Millisecond), most)
	for _, p := range decode() {
		if s := p.Annotations[protocol.AnnotationStatus]; s == protocol.StatusConverted {
			t.Errorf("pod %s still says converted", p.Name)
		}
	}

	// More bursts (TOKENSCALE_PERF=full: 20) give the distribution of burst -> first flip
	// (docs/performance.md).
	n := 4
	if os.Getenv("TOKENSCALE_PERF") == "full" {
		n = 20
	}
	flips, afterDecision := []time.Duration{flipped}, []time.Duration{flipped - decided}
	for i := 1; i < n; i++ {
		decided, flipped = 0, 0
		burst = time.Now()
		k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 30000, OutputTokensPerSec: 60})
		sampleUntil(30*time.Second, "a decoder converted", func(pods []corev1.Pod, w int) bool { return flipped > 0 })
		flips, afterDecision = append(flips, flipped), append(afterDecision, flipped-decided)
		k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 3000, OutputTokensPerSec: 10})
		sampleUntil(60*time.Second, "every decoder back to decode", func(pods []corev1.Pod, w int) bool {
			return len(converted(pods)) == 0 && w == 0
		})
		// The next burst comes right after the revert, as bursts cluster in real traffic: the controller
		// leases pods past their minimum flip interval, not the just-reverted ones, and gpu-b's repeated
		// refusals hold it off them (converter.TestRepeatedBurstsConvertWithoutChurn on a fake clock).
	}
	stats := func(d []time.Duration) string {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		q := func(p float64) time.Duration { return d[int(p*float64(len(d)-1))].Round(10 * time.Millisecond) }
		return fmt.Sprintf("p50 %s, p90 %s, max %s", q(0.5), q(0.9), d[len(d)-1].Round(10*time.Millisecond))
	}
	t.Logf("over %d bursts: burst -> first pod relabelled %s; after the decision showed %s", n, stats(flips), stats(afterDecision))
}

// agentClient creates a Node and a placeholder agent pod on it (what the DaemonSet would run) and returns
// a client authenticated with a token bound to that pod, so the API server knows the agent's node.
func agentClient(t *testing.T, dir, node string) kubernetes.Interface {
	t.Helper()
	c, cleanup, err := suite.stack.AgentClient(suite.ctx, dir, node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	return c
}

func clientFrom(t *testing.T, kubeconfig string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// gpuOK is the hardware edge of gpu-a: this machine has no GPU, so its headroom check is faked (passes).
type gpuOK struct{}

func (gpuOK) Check(context.Context, *corev1.Pod) (bool, string, string) { return true, "", "" }

type staticDevices []string

func (s staticDevices) Devices(context.Context, string, string) ([]string, error) { return s, nil }

type failingNVML struct{ err error }

func (f failingNVML) Read([]string) ([]converter.GPUReading, error) {
	return nil, errors.Join(f.err)
}
