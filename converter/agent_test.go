package converter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

// fixedGPUs answers every headroom check the same way.
type fixedGPUs struct {
	ok             bool
	reason, detail string
	calls          int
	mu             sync.Mutex
}

func (f *fixedGPUs) Check(context.Context, *corev1.Pod) (bool, string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.ok, f.reason, f.detail
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func agentFixture(t *testing.T, gpus Checker, pods ...*corev1.Pod) (*Agent, *fake.Clientset, *clock) {
	t.Helper()
	client := fake.NewClientset()
	for _, p := range pods {
		if _, err := client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c := &clock{t: t0}
	a := NewAgent(client, AgentOptions{NodeName: "node-1", Actuator: LLMD(client), GPUs: gpus, MinFlipInterval: 30 * time.Second, Now: c.Now})
	return a, client, c
}

func get(t *testing.T, client *fake.Clientset, name string) *corev1.Pod {
	t.Helper()
	p, err := client.CoreV1().Pods("ns").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func onNode(p *corev1.Pod, node string) *corev1.Pod { p.Spec.NodeName = node; return p }

func TestAgentConvertsWhileLeasedAndRevertsAfter(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))}), "node-1")
	gpus := &fixedGPUs{ok: true}
	a, client, clk := agentFixture(t, gpus, pod)
	ctx := context.Background()
	if err := a.Reconcile(ctx, get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	p := get(t, client, "d1")
	if p.Labels["llm-d.ai/role"] != "prefill-decode" || p.Annotations[protocol.AnnotationStatus] != protocol.StatusConverted || p.Annotations[protocol.AnnotationFlippedAt] == "" {
		t.Fatalf("after a leased reconcile: labels %v annotations %v", p.Labels, p.Annotations)
	}
	// The router sees prefill-decode; tokenscale still counts the pod in its decode pool.
	if p.Annotations[protocol.AnnotationConvertedFrom] != "llm-d.ai/role=decode" || protocol.PoolLabels(p)["llm-d.ai/role"] != "decode" {
		t.Fatalf("converted-from %q, pool labels %v", p.Annotations[protocol.AnnotationConvertedFrom], protocol.PoolLabels(p))
	}
	// Reconciling again changes nothing and checks no GPU (idempotent across restarts too).
	if err := a.Reconcile(ctx, p); err != nil || gpus.calls != 1 {
		t.Fatalf("second reconcile: %v, %d GPU checks; want none more", err, gpus.calls)
	}
	// The lease ends (not renewed: the controller wants fewer, or is gone): back to decode.
	clk.Set(t0.Add(6 * time.Second))
	if err := a.Reconcile(ctx, get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	p = get(t, client, "d1")
	if p.Labels["llm-d.ai/role"] != "decode" || p.Annotations[protocol.AnnotationStatus] != protocol.StatusDecode {
		t.Fatalf("after the lease ended: labels %v annotations %v", p.Labels, p.Annotations)
	}
	if _, has := p.Annotations[protocol.AnnotationConvertedFrom]; has {
		t.Errorf("converted-from left after reverting: %v", p.Annotations)
	}
}

func TestAgentRefusesAndSaysWhy(t *testing.T) {
	lease := map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))}
	cases := []struct {
		name   string
		pod    *corev1.Pod
		gpus   *fixedGPUs
		reason string
	}{
		{"GPU memory short", onNode(decodePod("d1", lease), "node-1"), &fixedGPUs{reason: protocol.ReasonMemoryShort, detail: "GPU-1: 0.5 GiB free of 80.0 GiB, need 2.0 GiB"}, "refused: memory-short (GPU-1: 0.5 GiB free"},
		{"unhealthy GPU", onNode(decodePod("d1", lease), "node-1"), &fixedGPUs{reason: protocol.ReasonUnhealthy, detail: "GPU-1: 3 pending retired pages"}, "refused: gpu-unhealthy"},
		{"not a KV producer", onNode(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "d1", Namespace: "ns", Annotations: lease, Labels: map[string]string{"llm-d.ai/role": "decode"}}}, "node-1"), &fixedGPUs{ok: true}, "refused: not-kv-producer"},
		{"flipped too recently", onNode(decodePod("d1", mergeAnn(lease, map[string]string{protocol.AnnotationFlippedAt: protocol.FormatTime(t0.Add(-10 * time.Second))})), "node-1"), &fixedGPUs{ok: true}, "refused: flipped-too-recently"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, client, _ := agentFixture(t, c.gpus, c.pod)
			if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
				t.Fatal(err)
			}
			p := get(t, client, "d1")
			if !strings.HasPrefix(p.Annotations[protocol.AnnotationStatus], c.reason) || p.Labels["llm-d.ai/role"] != "decode" {
				t.Errorf("status %q label %q; want %q... and still decode", p.Annotations[protocol.AnnotationStatus], p.Labels["llm-d.ai/role"], c.reason)
			}
		})
	}
}

func TestAgentLeavesOthersAlone(t *testing.T) {
	// Deployed as prefill-decode by its owner (no status of ours), and a pod on another node with a lease.
	mine := onNode(decodePod("own", nil), "node-1")
	mine.Labels["llm-d.ai/role"] = "prefill-decode"
	other := onNode(decodePod("other", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))}), "node-2")
	a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, mine, other)
	for _, n := range []string{"own", "other"} {
		if err := a.Reconcile(context.Background(), get(t, client, n)); err != nil {
			t.Fatal(err)
		}
	}
	if l := get(t, client, "own").Labels["llm-d.ai/role"]; l != "prefill-decode" {
		t.Errorf("a pod we never converted was relabelled to %q", l)
	}
	if l := get(t, client, "other").Labels["llm-d.ai/role"]; l != "decode" {
		t.Errorf("a pod on another node was relabelled to %q", l)
	}
}

// failingActuator fails Convert, succeeds Revert.
type failingActuator struct{ *LabelActuator }

func (f failingActuator) Convert(context.Context, *corev1.Pod) error {
	return errors.New("router said no")
}

func TestAgentActuatorFailureIsUndoneAndRecorded(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))}), "node-1")
	a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, pod)
	a.o.Actuator = failingActuator{LLMD(client)}
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err == nil {
		t.Fatal("no error from a failed conversion")
	}
	p := get(t, client, "d1")
	if !strings.Contains(p.Annotations[protocol.AnnotationStatus], "actuator-failed (router said no)") || p.Labels["llm-d.ai/role"] != "decode" {
		t.Errorf("status %q label %q", p.Annotations[protocol.AnnotationStatus], p.Labels["llm-d.ai/role"])
	}
}

// halfActuator lands the label but reports Convert failed (a reply lost after the patch) and, while
// revertFails, fails Revert too.
type halfActuator struct {
	*LabelActuator
	revertFails bool
}

func (h *halfActuator) Convert(ctx context.Context, p *corev1.Pod) error {
	if err := h.LabelActuator.Convert(ctx, p); err != nil {
		return err
	}
	return errors.New("reply lost")
}

func (h *halfActuator) Revert(ctx context.Context, p *corev1.Pod) error {
	if h.revertFails {
		return errors.New("API unreachable")
	}
	return h.LabelActuator.Revert(ctx, p)
}

// A conversion that half landed and could not be undone stays the agent's own (status "converted"), so
// it is reverted when its lease ends instead of being left converted under a refusal.
func TestAgentKeepsAHalfConversionItCouldNotUndo(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))}), "node-1")
	a, client, clk := agentFixture(t, &fixedGPUs{ok: true}, pod)
	act := &halfActuator{LabelActuator: LLMD(client), revertFails: true}
	a.o.Actuator = act
	err := a.Reconcile(context.Background(), get(t, client, "d1"))
	if err == nil || !strings.Contains(err.Error(), "API unreachable") {
		t.Fatalf("error %v; want the failed undo named", err)
	}
	p := get(t, client, "d1")
	if p.Annotations[protocol.AnnotationStatus] != protocol.StatusConverted || p.Labels["llm-d.ai/role"] != "prefill-decode" {
		t.Fatalf("after a failed undo: status %q label %q; want converted (the agent's own) with the label that landed",
			p.Annotations[protocol.AnnotationStatus], p.Labels["llm-d.ai/role"])
	}
	act.revertFails = false
	clk.Set(t0.Add(6 * time.Second)) // the lease has ended
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if p := get(t, client, "d1"); p.Labels["llm-d.ai/role"] != "decode" || p.Annotations[protocol.AnnotationStatus] != protocol.StatusDecode {
		t.Errorf("after the lease: status %q label %q; want reverted to decode", p.Annotations[protocol.AnnotationStatus], p.Labels["llm-d.ai/role"])
	}
}

// A conversion whose flip landed but reported failure is undone on the pod as it is now (the copy in hand
// still says decode, on which the actuator would change nothing), and only then refused.
func TestAgentUndoesAHalfConversion(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))}), "node-1")
	a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, pod)
	a.o.Actuator = &halfActuator{LabelActuator: LLMD(client)}
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err == nil {
		t.Fatal("no error from a conversion that reported failure")
	}
	p := get(t, client, "d1")
	if p.Labels["llm-d.ai/role"] != "decode" || !strings.HasPrefix(p.Annotations[protocol.AnnotationStatus], "refused: actuator-failed") {
		t.Errorf("after the undo: status %q label %q; want refused with the label back at decode", p.Annotations[protocol.AnnotationStatus], p.Labels["llm-d.ai/role"])
	}
}

// The informer can hold a conversion's status write without its flip: the pod is read fresh, and one that
// is converted is rechecked (busy is expected), not refused while converted.
func TestAgentReadsFreshBeforeReapplying(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{
		protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute)),
		protocol.AnnotationStatus:       protocol.StatusConverted,
	}), "node-1")
	stale := pod.DeepCopy()
	pod.Labels["llm-d.ai/role"] = "prefill-decode"
	gpus := &fixedGPUs{ok: false, reason: protocol.ReasonBusy, detail: "GPU-1: 97% utilised"}
	a, client, _ := agentFixture(t, gpus, pod)
	if err := a.Reconcile(context.Background(), stale); err != nil {
		t.Fatal(err)
	}
	p := get(t, client, "d1")
	if p.Labels["llm-d.ai/role"] != "prefill-decode" || p.Annotations[protocol.AnnotationStatus] != protocol.StatusConverted {
		t.Errorf("a converted pod seen through a stale copy: status %q label %q; want still converted", p.Annotations[protocol.AnnotationStatus], p.Labels["llm-d.ai/role"])
	}
}

// The lease gone while the informer holds the conversion's status write without its flip: the revert reads
// the pod fresh, so the flip is undone rather than skipped as done, which left the pod prefill-decode with
// status decode and nobody owning it.
func TestAgentReadsFreshBeforeReverting(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{
		protocol.AnnotationStatus:        protocol.StatusConverted,
		protocol.AnnotationConvertedFrom: "llm-d.ai/role=decode",
	}), "node-1")
	stale := pod.DeepCopy()
	delete(stale.Annotations, protocol.AnnotationConvertedFrom)
	pod.Labels["llm-d.ai/role"] = "prefill-decode"
	a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, pod)
	if err := a.Reconcile(context.Background(), stale); err != nil {
		t.Fatal(err)
	}
	p := get(t, client, "d1")
	if p.Labels["llm-d.ai/role"] != "decode" || p.Annotations[protocol.AnnotationStatus] != protocol.StatusDecode {
		t.Errorf("reverted through a stale copy: label %q status %q; want decode and decode", p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationStatus])
	}
	// Leased again since the stale copy: the newer lease wins, nothing is reverted.
	again := onNode(decodePod("d2", map[string]string{
		protocol.AnnotationStatus:        protocol.StatusConverted,
		protocol.AnnotationConvertedFrom: "llm-d.ai/role=decode",
		protocol.AnnotationConvertUntil:  protocol.FormatTime(t0.Add(time.Minute)),
	}), "node-1")
	again.Labels["llm-d.ai/role"] = "prefill-decode"
	staleAgain := again.DeepCopy()
	delete(staleAgain.Annotations, protocol.AnnotationConvertUntil)
	a, client, _ = agentFixture(t, &fixedGPUs{ok: true}, again)
	if err := a.Reconcile(context.Background(), staleAgain); err != nil {
		t.Fatal(err)
	}
	if p := get(t, client, "d2"); p.Labels["llm-d.ai/role"] != "prefill-decode" {
		t.Errorf("a pod leased again was reverted through a stale copy: label %q", p.Labels["llm-d.ai/role"])
	}
}

// A pod marked converted whose label says decode (a revert whose refusal was never recorded, a hand
// edit) is converted again only with the headroom a fresh conversion needs.
func TestAgentReappliesAConversionOnlyWithHeadroom(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{
		protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute)),
		protocol.AnnotationStatus:       protocol.StatusConverted,
	}), "node-1")
	gpus := &fixedGPUs{ok: false, reason: protocol.ReasonMemoryShort, detail: "GPU-1: 0.5 GiB free"}
	a, client, _ := agentFixture(t, gpus, pod)
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	p := get(t, client, "d1")
	if gpus.calls != 1 || p.Labels["llm-d.ai/role"] != "decode" || !strings.HasPrefix(p.Annotations[protocol.AnnotationStatus], "refused: memory-short") {
		t.Fatalf("no headroom: %d checks, label %q, status %q; want one check, decode, refused", gpus.calls, p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationStatus])
	}
	pod2 := onNode(decodePod("d2", map[string]string{
		protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute)),
		protocol.AnnotationStatus:       protocol.StatusConverted,
	}), "node-1")
	if _, err := client.CoreV1().Pods("ns").Create(context.Background(), pod2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gpus.ok = true
	if err := a.Reconcile(context.Background(), get(t, client, "d2")); err != nil {
		t.Fatal(err)
	}
	if p := get(t, client, "d2"); p.Labels["llm-d.ai/role"] != "prefill-decode" {
		t.Errorf("with headroom: label %q; want converted again", p.Labels["llm-d.ai/role"])
	}
}

// On shutdown the agent converts its pods back before it exits.
func TestAgentRevertsEverythingWhenStopped(t *testing.T) {
	pods := []*corev1.Pod{
		onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(time.Now().Add(time.Minute))}), "node-1"),
		onNode(decodePod("d2", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(time.Now().Add(time.Minute))}), "node-1"),
	}
	a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, pods...)
	a.o.Now, a.o.Resync = time.Now, 20*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// A hang guard, well inside the minute the leases last.
	deadline := time.Now().Add(30 * time.Second)
	for get(t, client, "d1").Labels["llm-d.ai/role"] != "prefill-decode" || get(t, client, "d2").Labels["llm-d.ai/role"] != "prefill-decode" {
		if time.Now().After(deadline) {
			t.Fatal("pods not converted within 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"d1", "d2"} {
		if p := get(t, client, n); p.Labels["llm-d.ai/role"] != "decode" || p.Annotations[protocol.AnnotationStatus] != protocol.StatusDecode {
			t.Errorf("%s after shutdown: label %q status %q; want decode", n, p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationStatus])
		}
	}
}

// A pod deleted while converted (the HPA scaled its Deployment down) is never reconciled again: the
// periodic pass forgets what the agent kept for it, or every such pod's entries stayed for good.
func TestAgentForgetsPodsThatAreGone(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}), "node-1")
	a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, pod, onNode(decodePod("d2", nil), "node-1"))
	ctx := context.Background()
	live := []string{"d1", "d2"}
	a.lister = func() []*corev1.Pod {
		var out []*corev1.Pod
		for _, n := range live {
			out = append(out, get(t, client, n))
		}
		return out
	}
	a.pass(ctx)
	if p := get(t, client, "d1"); p.Annotations[protocol.AnnotationStatus] != protocol.StatusConverted {
		t.Fatalf("d1 not converted by the pass: %v", p.Annotations)
	}
	a.mu.Lock()
	a.unanswered[types.NamespacedName{Namespace: "ns", Name: "d1"}] = unanswered{at: t0}
	kept := len(a.checked)
	a.mu.Unlock()
	if kept != 1 {
		t.Fatalf("%d pods checked after converting one; want 1", kept)
	}
	if err := client.CoreV1().Pods("ns").Delete(ctx, "d1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	live = []string{"d2"}
	a.pass(ctx)
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.checked) != 0 || len(a.unanswered) != 0 {
		t.Fatalf("after d1 was deleted: checked %v, unanswered %v; want both empty", a.checked, a.unanswered)
	}
}

// hungGPUs answers a headroom check only once its context ends, as a call that hangs does.
type hungGPUs struct{}

func (hungGPUs) Check(ctx context.Context, _ *corev1.Pod) (bool, string, string) {
	<-ctx.Done()
	return false, protocol.ReasonBusy, ctx.Err().Error()
}

// One pod's hung call must not stall the node's other pods: each reconcile has its own budget.
func TestAgentPassBoundsEachReconcile(t *testing.T) {
	leased := map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}
	a, client, _ := agentFixture(t, hungGPUs{}, onNode(decodePod("d1", leased), "node-1"), onNode(decodePod("d2", leased), "node-1"))
	a.lister = func() []*corev1.Pod { return []*corev1.Pod{get(t, client, "d1"), get(t, client, "d2")} }
	defer func(b time.Duration) { reconcileBudget = b }(reconcileBudget)
	reconcileBudget = 50 * time.Millisecond
	done := make(chan struct{})
	go func() { a.pass(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute): // far beyond two budgets: only a pass without one gets here
		t.Fatal("a pass over two pods whose headroom checks hang did not return")
	}
	for _, n := range []string{"d1", "d2"} {
		if p := get(t, client, n); p.Labels["llm-d.ai/role"] != "decode" {
			t.Errorf("%s converted without an answered headroom check: %v", n, p.Labels)
		}
	}
}

// A pod kept converted has its headroom checked again every Recheck; when memory runs short it is
// reverted and the refusal recorded (so the controller moves the lease), while a busy GPU is expected.
func TestAgentRechecksKeptConversions(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}), "node-1")
	gpus := &fixedGPUs{ok: true}
	a, client, clk := agentFixture(t, gpus, pod)
	a.o.Recheck = 10 * time.Second
	ctx := context.Background()
	reconcileAt := func(at time.Duration) *corev1.Pod {
		clk.Set(t0.Add(at))
		if err := a.Reconcile(ctx, get(t, client, "d1")); err != nil {
			t.Fatal(err)
		}
		return get(t, client, "d1")
	}
	reconcileAt(0)
	if p := reconcileAt(5 * time.Second); p.Labels["llm-d.ai/role"] != "prefill-decode" || gpus.calls != 1 {
		t.Fatalf("within the recheck interval: role %q, %d checks; want converted, 1 check", p.Labels["llm-d.ai/role"], gpus.calls)
	}
	gpus.ok, gpus.reason = false, protocol.ReasonBusy
	if p := reconcileAt(11 * time.Second); p.Labels["llm-d.ai/role"] != "prefill-decode" || gpus.calls != 2 {
		t.Fatalf("busy GPU at the recheck: role %q, %d checks; want still converted after a second check", p.Labels["llm-d.ai/role"], gpus.calls)
	}
	gpus.reason, gpus.detail = protocol.ReasonMemoryShort, "GPU-1: 0.5 GiB free"
	p := reconcileAt(22 * time.Second)
	if p.Labels["llm-d.ai/role"] != "decode" || !strings.HasPrefix(p.Annotations[protocol.AnnotationStatus], "refused: memory-short") || p.Annotations[protocol.AnnotationFlippedAt] != protocol.FormatTime(t0.Add(22*time.Second)) {
		t.Fatalf("memory short at the recheck: role %q, annotations %v; want reverted and refused", p.Labels["llm-d.ai/role"], p.Annotations)
	}
}

// A lease that ends further ahead than MaxLease is invalid: nothing is converted, and a pod converted
// under it is reverted.
func TestAgentIgnoresLeasesTooFarAhead(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Hour))}), "node-1")
	gpus := &fixedGPUs{ok: true}
	a, client, _ := agentFixture(t, gpus, pod)
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if p := get(t, client, "d1"); p.Labels["llm-d.ai/role"] != "decode" || gpus.calls != 0 {
		t.Fatalf("a lease an hour ahead: role %q, %d GPU checks; want ignored", p.Labels["llm-d.ai/role"], gpus.calls)
	}
	a.o.MaxLease = 2 * time.Hour
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if p := get(t, client, "d1"); p.Labels["llm-d.ai/role"] != "prefill-decode" {
		t.Fatalf("within a 2 h bound: role %q, want converted", p.Labels["llm-d.ai/role"])
	}
}

// versionedPods makes the fake API server do what the real one does and the fake does not: keep each
// pod's metadata.resourceVersion, and refuse a patch naming an older one with a Conflict.
func versionedPods(t *testing.T, client *fake.Clientset) {
	t.Helper()
	tracker := client.Tracker()
	apply := k8stesting.ObjectReaction(tracker)
	gvr := corev1.SchemeGroupVersion.WithResource("pods")
	var mu sync.Mutex
	rv := 0
	client.PrependReactor("*", "pods", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if v := action.GetVerb(); v != "create" && v != "update" && v != "patch" {
			return false, nil, nil
		}
		mu.Lock()
		defer mu.Unlock()
		if pa, ok := action.(k8stesting.PatchAction); ok {
			var patch struct {
				Metadata struct {
					ResourceVersion string `json:"resourceVersion"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(pa.GetPatch(), &patch); err == nil && patch.Metadata.ResourceVersion != "" {
				cur, err := tracker.Get(gvr, pa.GetNamespace(), pa.GetName())
				if err == nil && cur.(*corev1.Pod).ResourceVersion != patch.Metadata.ResourceVersion {
					return true, nil, apierrors.NewConflict(gvr.GroupResource(), pa.GetName(), errors.New("the object has been modified"))
				}
			}
		}
		handled, obj, err := apply(action)
		p, ok := obj.(*corev1.Pod)
		if err != nil || !ok {
			return handled, obj, err
		}
		rv++
		p = p.DeepCopy()
		p.ResourceVersion = strconv.Itoa(rv)
		if err := tracker.Update(gvr, p, p.Namespace, metav1.UpdateOptions{FieldManager: "test"}); err != nil {
			return true, nil, err
		}
		return true, p, nil
	})
}

// checkFunc is a headroom check that can act while it runs (the checks can take seconds).
type checkFunc func(context.Context, *corev1.Pod) (bool, string, string)

func (f checkFunc) Check(ctx context.Context, p *corev1.Pod) (bool, string, string) { return f(ctx, p) }

func patchPod(t *testing.T, client *fake.Clientset, name, patch string) {
	t.Helper()
	if _, err := client.CoreV1().Pods("ns").Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A pass over the informer's list can hold a pod from before this agent converted it (decode, no status
// of ours). The pod is read fresh before anything is written, so a failing check (a transient NVML
// error) cannot write a refusal over the conversion: that left the pod prefill-decode with converted-from,
// and nobody (this agent, RevertAll, the controller) counting or reverting it.
func TestAgentReadsFreshBeforeConverting(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}), "node-1")
	stale := pod.DeepCopy()
	pod.Labels["llm-d.ai/role"] = "prefill-decode"
	pod.Annotations = mergeAnn(pod.Annotations, map[string]string{
		protocol.AnnotationStatus:        protocol.StatusConverted,
		protocol.AnnotationConvertedFrom: "llm-d.ai/role=decode",
		protocol.AnnotationFlippedAt:     protocol.FormatTime(t0.Add(-time.Second)),
	})
	gpus := &fixedGPUs{reason: protocol.ReasonNVMLError, detail: "NVML did not answer within 5s"}
	a, client, _ := agentFixture(t, gpus, pod)
	if err := a.Reconcile(context.Background(), stale); err != nil {
		t.Fatal(err)
	}
	if p := get(t, client, "d1"); p.Labels["llm-d.ai/role"] != "prefill-decode" || p.Annotations[protocol.AnnotationStatus] != protocol.StatusConverted {
		t.Errorf("a converted pod seen through a stale copy, NVML failing: status %q label %q; want still converted and ours",
			p.Annotations[protocol.AnnotationStatus], p.Labels["llm-d.ai/role"])
	}
}

// A write that follows the checks is conditional on the pod the agent checked: if the pod changed
// meanwhile, nothing is written and the next pass judges it again.
func TestAgentWritesOnlyOnThePodItChecked(t *testing.T) {
	lease := map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}
	cases := []struct {
		name       string
		meanwhile  string // a merge patch another writer makes while the agent checks
		ok         bool
		wantRole   string
		wantStatus string
	}{
		{"the controller releases the lease while the checks pass", `{"metadata":{"annotations":{"` + protocol.AnnotationConvertUntil + `":null}}}`,
			true, "decode", ""},
		{"a second agent (a DaemonSet update with surge) converts it while the checks fail",
			`{"metadata":{"labels":{"llm-d.ai/role":"prefill-decode"},"annotations":{"` + protocol.AnnotationStatus + `":"converted"}}}`,
			false, "prefill-decode", protocol.StatusConverted},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var client *fake.Clientset
			check := checkFunc(func(context.Context, *corev1.Pod) (bool, string, string) {
				patchPod(t, client, "d1", c.meanwhile)
				return c.ok, protocol.ReasonNVMLError, "NVML did not answer within 5s"
			})
			var a *Agent
			a, client, _ = agentFixture(t, check, onNode(decodePod("d1", lease), "node-1"))
			versionedPods(t, client)
			patchPod(t, client, "d1", `{}`) // stamps a resourceVersion
			if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
				t.Fatalf("a write that lost to a newer one is retried on the next pass, not an error: %v", err)
			}
			p := get(t, client, "d1")
			if p.Labels["llm-d.ai/role"] != c.wantRole || p.Annotations[protocol.AnnotationStatus] != c.wantStatus {
				t.Errorf("status %q label %q; want %q and %q, as the other writer left it", p.Annotations[protocol.AnnotationStatus],
					p.Labels["llm-d.ai/role"], c.wantStatus, c.wantRole)
			}
		})
	}
}

// A leased pod that is converted without this agent's status (deployed prefill-decode by its owner, or
// flipped by someone else) is refused, with nothing else written: taken over, it was reverted to decode
// when its lease ended, out of the service its owner runs it for.
func TestAgentDoesNotTakeOverAPodConvertedByOthers(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))}), "node-1")
	pod.Labels["llm-d.ai/role"] = "prefill-decode"
	gpus := &fixedGPUs{ok: true}
	a, client, clk := agentFixture(t, gpus, pod)
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	p := get(t, client, "d1")
	_, from := p.Annotations[protocol.AnnotationConvertedFrom]
	_, flipped := p.Annotations[protocol.AnnotationFlippedAt]
	if !strings.HasPrefix(p.Annotations[protocol.AnnotationStatus], "refused: "+protocol.ReasonAlreadyConverted) || from || flipped || gpus.calls != 0 {
		t.Fatalf("leased while deployed converted: annotations %v, %d GPU checks; want refused already-converted and nothing else", p.Annotations, gpus.calls)
	}
	clk.Set(t0.Add(6 * time.Second)) // the lease has ended
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if l := get(t, client, "d1").Labels["llm-d.ai/role"]; l != "prefill-decode" {
		t.Errorf("after the lease: role %q; want prefill-decode, as its owner deployed it", l)
	}
}

// The lease is judged again after the checks, which can take seconds: one that ended meanwhile gets no
// conversion (which the next pass would revert at once, two flips for nothing).
func TestAgentDoesNotConvertALeaseThatEndedDuringItsChecks(t *testing.T) {
	var clk *clock
	slow := checkFunc(func(context.Context, *corev1.Pod) (bool, string, string) {
		clk.Set(t0.Add(6 * time.Second)) // NVML took its time
		return true, "", ""
	})
	a, client, c := agentFixture(t, slow, onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))}), "node-1"))
	clk = c
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	p := get(t, client, "d1")
	if _, flipped := p.Annotations[protocol.AnnotationFlippedAt]; p.Labels["llm-d.ai/role"] != "decode" || flipped || p.Annotations[protocol.AnnotationStatus] != "" {
		t.Errorf("a lease that ended during the checks: role %q, annotations %v; want nothing written", p.Labels["llm-d.ai/role"], p.Annotations)
	}
}

// A pod of ours whose flip is missing is converted again as a fresh conversion would be: not within the
// minimum flip interval, recording the flip's time, and recording a failed flip as a refusal (it was
// retried every second, unrecorded).
func TestAgentReappliesAConversionAsAFreshOne(t *testing.T) {
	ours := func(flippedAgo time.Duration) *corev1.Pod {
		return onNode(decodePod("d1", map[string]string{
			protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute)),
			protocol.AnnotationStatus:       protocol.StatusConverted,
			protocol.AnnotationFlippedAt:    protocol.FormatTime(t0.Add(-flippedAgo)),
		}), "node-1")
	}
	t.Run("within the minimum flip interval", func(t *testing.T) {
		a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, ours(10*time.Second))
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
			t.Fatal(err)
		}
		if p := get(t, client, "d1"); p.Labels["llm-d.ai/role"] != "decode" || !strings.HasPrefix(p.Annotations[protocol.AnnotationStatus], "refused: "+protocol.ReasonTooSoon) {
			t.Errorf("role %q status %q; want decode, refused as too soon", p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationStatus])
		}
	})
	t.Run("the flip's time is recorded", func(t *testing.T) {
		a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, ours(time.Hour))
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
			t.Fatal(err)
		}
		if p := get(t, client, "d1"); p.Labels["llm-d.ai/role"] != "prefill-decode" || p.Annotations[protocol.AnnotationFlippedAt] != protocol.FormatTime(t0) {
			t.Errorf("role %q flipped-at %q; want prefill-decode flipped at %s", p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationFlippedAt], protocol.FormatTime(t0))
		}
	})
	t.Run("a failed flip is refused", func(t *testing.T) {
		a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, ours(time.Hour))
		a.o.Actuator = failingActuator{LLMD(client)}
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); err == nil {
			t.Fatal("no error from a failed re-apply")
		}
		if p := get(t, client, "d1"); p.Labels["llm-d.ai/role"] != "decode" || !strings.HasPrefix(p.Annotations[protocol.AnnotationStatus], "refused: "+protocol.ReasonActuator) {
			t.Errorf("role %q status %q; want decode, refused actuator-failed", p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationStatus])
		}
	})
}

// A refusal that cannot be written after an undone flip is an error: the pod then says converted at
// decode, which the controller counts as converted.
func TestAgentReportsARefusalItCouldNotWrite(t *testing.T) {
	a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}), "node-1"))
	a.o.Actuator = failingActuator{LLMD(client)}
	denied := errors.New("admission webhook unavailable")
	client.PrependReactor("patch", "pods", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if strings.Contains(string(action.(k8stesting.PatchAction).GetPatch()), "refused: ") {
			return true, nil, denied
		}
		return false, nil, nil
	})
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); !errors.Is(err, denied) {
		t.Errorf("error %v; want one carrying the failed refusal write", err)
	}
}

// slowActuator lands the label, then outlasts the caller's deadline; its calls fail on a spent context,
// as a real client's do (the fake clientset ignores contexts).
type slowActuator struct{ *LabelActuator }

func (s slowActuator) Convert(ctx context.Context, p *corev1.Pod) error {
	if err := s.LabelActuator.Convert(ctx, p); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

func (s slowActuator) Revert(ctx context.Context, p *corev1.Pod) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.LabelActuator.Revert(ctx, p)
}

// A flip that ran past the reconcile's budget is undone on a budget of its own: on the spent one the undo
// failed too, and the pod stayed converted over a refused flip until its lease ended.
func TestAgentUndoesAFlipThatSpentTheBudget(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}), "node-1")
	a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, pod)
	a.o.Actuator = slowActuator{LLMD(client)}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := a.Reconcile(ctx, get(t, client, "d1")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v; want the flip's deadline", err)
	}
	p := get(t, client, "d1")
	if p.Labels["llm-d.ai/role"] != "decode" || !strings.HasPrefix(p.Annotations[protocol.AnnotationStatus], "refused: "+protocol.ReasonActuator) {
		t.Fatalf("label %q status %q; want the flip undone and refused", p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationStatus])
	}
}

// deadlineActuator records the time each revert was given, on the agent's clock.
type deadlineActuator struct {
	*LabelActuator
	clk  *clock
	mu   sync.Mutex
	left map[string]time.Duration
}

func (d *deadlineActuator) Revert(ctx context.Context, p *corev1.Pod) error {
	dl, ok := ctx.Deadline()
	d.mu.Lock()
	d.left[p.Name] = time.Duration(math.MaxInt64)
	if ok {
		d.left[p.Name] = dl.Sub(d.clk.Now())
	}
	d.mu.Unlock()
	return d.LabelActuator.Revert(ctx, p)
}

// At shutdown only the pods the cache shows as possibly converted are read (the node's DaemonSet pods
// spent the budget at the client's rate limit), including one whose conversion the cache has not seen yet,
// and each revert gets a fraction of the budget, so an engine that does not answer cannot starve the rest.
func TestAgentRevertAllReadsOnlyCandidatesWithinAShareOfTheBudget(t *testing.T) {
	converted := func(name string) *corev1.Pod {
		p := onNode(decodePod(name, map[string]string{
			protocol.AnnotationConvertUntil:  protocol.FormatTime(t0.Add(time.Minute)),
			protocol.AnnotationStatus:        protocol.StatusConverted,
			protocol.AnnotationConvertedFrom: "llm-d.ai/role=decode",
		}), "node-1")
		p.Labels["llm-d.ai/role"] = "prefill-decode"
		return p
	}
	pods := []*corev1.Pod{converted("c1"), converted("c2")}
	// The cache has c2 from before its conversion: decode, leased.
	cached := []*corev1.Pod{pods[0].DeepCopy(), onNode(decodePod("c2", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}), "node-1")}
	for i := range 30 {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("daemon-%02d", i), Namespace: "ns"}, Spec: corev1.PodSpec{NodeName: "node-1"}}
		pods, cached = append(pods, p), append(cached, p.DeepCopy())
	}
	a, client, clk := agentFixture(t, &fixedGPUs{ok: true}, pods...)
	clk.Set(time.Now())
	act := &deadlineActuator{LabelActuator: LLMD(client), clk: clk, left: map[string]time.Duration{}}
	a.o.Actuator = act
	a.lister = func() []*corev1.Pod { return cached }
	var gets []string
	client.PrependReactor("get", "pods", func(action k8stesting.Action) (bool, runtime.Object, error) {
		gets = append(gets, action.(k8stesting.GetAction).GetName())
		return false, nil, nil
	})
	const budget = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	if err := a.RevertAll(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Join(gets, ",") != "c1,c2" {
		t.Errorf("read %v; want only c1 and c2, the pods that may be converted", gets)
	}
	for _, n := range []string{"c1", "c2"} {
		if p := get(t, client, n); p.Labels["llm-d.ai/role"] != "decode" || p.Annotations[protocol.AnnotationStatus] != protocol.StatusDecode {
			t.Errorf("%s after RevertAll: role %q status %q; want decode", n, p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationStatus])
		}
		if left := act.left[n]; left > budget/2 {
			t.Errorf("%s's revert was given %s of a %s budget; want a share of it", n, left, budget)
		}
	}
}

// A lease is outside input: one written on a pod that is no decoder (a prefill server, or one with no
// role) is refused, since flipped it would be counted in the decode pool and labelled a decoder for good
// at its revert.
func TestAgentConvertsOnlyADecoder(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))}), "node-1")
	pod.Labels["llm-d.ai/role"] = "prefill"
	a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, pod)
	_ = a.Reconcile(context.Background(), get(t, client, "d1"))
	p := get(t, client, "d1")
	if p.Labels["llm-d.ai/role"] != "prefill" || !strings.HasPrefix(p.Annotations[protocol.AnnotationStatus], "refused: "+protocol.ReasonActuator) || !strings.Contains(p.Annotations[protocol.AnnotationStatus], "only a decoder") {
		t.Fatalf("a leased prefill pod: role %q, status %q; want it left a prefill server and the lease refused", p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationStatus])
	}
}

// Every write of the agent names the pod's UID, as the controller's leases do: the API server refuses it
// if a pod recreated under the same name replaced the one read, which a revert's "decode", a refusal or
// a flip written from a stale copy would otherwise mark.
func TestAgentWritesCarryThePodsUID(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))}), "node-1")
	pod.UID = "uid-1"
	a, client, clk := agentFixture(t, &fixedGPUs{ok: true}, pod)
	var patches []string
	client.PrependReactor("patch", "pods", func(act k8stesting.Action) (bool, runtime.Object, error) {
		patches = append(patches, string(act.(k8stesting.PatchAction).GetPatch()))
		return false, nil, nil
	})
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(6 * time.Second)) // the lease ends: reverted
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if len(patches) < 3 {
		t.Fatalf("patches %q; want the flip, its status, the revert and its status", patches)
	}
	for _, p := range patches {
		if !strings.Contains(p, `"uid":"uid-1"`) {
			t.Errorf("patch %s does not name the pod's UID", p)
		}
	}
}
