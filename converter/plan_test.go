package converter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/velocity/policy"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func decodePod(name string, ann map[string]string) *corev1.Pod {
	a := map[string]string{protocol.AnnotationKVProducer: "true"}
	for k, v := range ann {
		a[k] = v
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Annotations: a,
		Labels: map[string]string{"llm-d.ai/role": "decode"}}, Spec: corev1.PodSpec{NodeName: "node-" + name},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
}

// notReady marks a pod's Ready condition false (starting, failing its probe).
func notReady(p *corev1.Pod) *corev1.Pod {
	p.Status.Conditions[0].Status = corev1.ConditionFalse
	return p
}

// deleting marks a pod as being deleted.
func deleting(p *corev1.Pod) *corev1.Pod {
	p.DeletionTimestamp = &metav1.Time{Time: t0}
	return p
}

func names(ps []*corev1.Pod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func TestChoose(t *testing.T) {
	lease := map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))}
	expired := map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(-time.Second))}
	// Its agent's heartbeat 10 s ago; silent: none for ten minutes, or none at all (a status written by hand).
	converted := map[string]string{protocol.AnnotationStatus: protocol.StatusConverted, protocol.AnnotationStatusAt: protocol.FormatTime(t0.Add(-10 * time.Second))}
	silent := map[string]string{protocol.AnnotationStatus: protocol.StatusConverted, protocol.AnnotationStatusAt: protocol.FormatTime(t0.Add(-10 * time.Minute))}
	handWritten := map[string]string{protocol.AnnotationStatus: protocol.StatusConverted}
	refused := map[string]string{protocol.AnnotationStatus: protocol.Refused(protocol.ReasonMemoryShort, ""), protocol.AnnotationStatusAt: protocol.FormatTime(t0.Add(-10 * time.Second))}
	staleRefusal := map[string]string{protocol.AnnotationStatus: protocol.Refused(protocol.ReasonNVMLError, ""), protocol.AnnotationStatusAt: protocol.FormatTime(t0.Add(-2 * time.Minute))}
	tooSoon := func(ago time.Duration) map[string]string {
		return map[string]string{protocol.AnnotationStatus: protocol.Refused(protocol.ReasonTooSoon, "last flip 1s ago"), protocol.AnnotationStatusAt: protocol.FormatTime(t0.Add(-ago))}
	}
	justFlipped := map[string]string{protocol.AnnotationStatus: protocol.StatusDecode, protocol.AnnotationFlippedAt: protocol.FormatTime(t0.Add(-time.Second))}
	opts := PlanOptions{MaxFraction: 0.5, RefusalBackoff: time.Minute, MinFlipInterval: 30 * time.Second}
	cases := []struct {
		name          string
		pods          []*corev1.Pod
		wanted        int
		lease, relase string
	}{
		{"fresh pods, least recently flipped first", []*corev1.Pod{
			decodePod("a", map[string]string{protocol.AnnotationFlippedAt: protocol.FormatTime(t0.Add(-time.Minute))}),
			decodePod("b", nil), decodePod("c", nil), decodePod("d", nil)}, 2, "[b c]", "[]"},
		{"held leases are kept, no churn", []*corev1.Pod{decodePod("a", nil), decodePod("b", nil), decodePod("c", lease), decodePod("d", nil)}, 1, "[c]", "[]"},
		{"capped by the max fraction", []*corev1.Pod{decodePod("a", nil), decodePod("b", nil), decodePod("c", nil), decodePod("d", nil)}, 4, "[a b]", "[]"},
		{"fewer wanted: the extra lease is released", []*corev1.Pod{decodePod("a", lease), decodePod("b", lease), decodePod("c", nil), decodePod("d", nil)}, 1, "[a]", "[b]"},
		{"a draining converted pod holds its slot", []*corev1.Pod{decodePod("a", converted), decodePod("b", nil), decodePod("c", nil), decodePod("d", nil)}, 1, "[a]", "[]"},
		{"draining pods beyond wanted keep slots: nothing new", []*corev1.Pod{decodePod("a", converted), decodePod("b", converted), decodePod("c", nil), decodePod("d", nil), decodePod("e", nil), decodePod("f", nil)}, 1, "[a]", "[]"},
		{"refused pods are skipped and their lease released", []*corev1.Pod{decodePod("a", mergeAnn(lease, refused)), decodePod("b", nil), decodePod("c", nil), decodePod("d", nil)}, 1, "[b]", "[a]"},
		{"a lease on a stale refusal waits for the agent's answer", []*corev1.Pod{decodePod("a", mergeAnn(lease, staleRefusal)), decodePod("b", nil), decodePod("c", nil), decodePod("d", nil)}, 1, "[a]", "[]"},
		{"pods that never refused are asked first", []*corev1.Pod{decodePod("a", staleRefusal), decodePod("b", nil), decodePod("c", nil), decodePod("d", nil)}, 1, "[b]", "[]"},
		{"a pod that flipped within the minimum interval is not leased", []*corev1.Pod{decodePod("a", justFlipped), decodePod("b", justFlipped), decodePod("c", nil), decodePod("d", justFlipped)}, 2, "[c]", "[]"},
		{"a too-soon refusal is retried after the flip interval, not the backoff", []*corev1.Pod{decodePod("a", tooSoon(31*time.Second)), decodePod("b", tooSoon(time.Second))}, 1, "[a]", "[]"},
		// A time far ahead (a node's clock hours fast, a hand edit) does not hold a pod out for good.
		// A flip 30 s ahead is within the clock skew allowed, so recent.
		{"a flip stamped far in the future is no recent one", []*corev1.Pod{
			decodePod("a", map[string]string{protocol.AnnotationFlippedAt: protocol.FormatTime(t0.Add(24 * time.Hour))}),
			decodePod("c", map[string]string{protocol.AnnotationFlippedAt: protocol.FormatTime(t0.Add(30 * time.Second))})}, 1, "[a]", "[]"},
		// A refusal stamped ahead within the clock skew allowed (a node's clock fast) stands: its agent,
		// asked again, would refuse again. One a day ahead is a wrong clock or a hand edit: it is asked again.
		{"a refusal stamped a little in the future stands", []*corev1.Pod{
			decodePod("b", map[string]string{protocol.AnnotationStatus: protocol.Refused(protocol.ReasonMemoryShort, ""), protocol.AnnotationStatusAt: protocol.FormatTime(t0.Add(protocol.MaxClockSkew))}),
			decodePod("c", map[string]string{protocol.AnnotationFlippedAt: protocol.FormatTime(t0.Add(30 * time.Second))})}, 1, "[]", "[]"},
		{"a refusal stamped far in the future does not hold the pod out for good", []*corev1.Pod{
			decodePod("b", map[string]string{protocol.AnnotationStatus: protocol.Refused(protocol.ReasonMemoryShort, ""), protocol.AnnotationStatusAt: protocol.FormatTime(t0.Add(24 * time.Hour))}),
			decodePod("c", map[string]string{protocol.AnnotationFlippedAt: protocol.FormatTime(t0.Add(30 * time.Second))})}, 1, "[b]", "[]"},
		// A pod not Ready is never leased fresh; one being deleted is not renewed (its agent skips it) and,
		// still converted, holds its slot; one failing a probe keeps its lease (a blip must not revert it);
		// the max fraction is of the running pods, and a pod being deleted is the one past it.
		{"a pod not Ready is not leased", []*corev1.Pod{notReady(decodePod("a", nil)), decodePod("b", nil), decodePod("c", nil), decodePod("d", nil)}, 1, "[b]", "[]"},
		{"a leased pod being deleted is released", []*corev1.Pod{deleting(decodePod("a", lease)), decodePod("b", nil), decodePod("c", nil), decodePod("d", nil)}, 1, "[]", "[a]"},
		{"a converted pod being deleted keeps its slot, unleased", []*corev1.Pod{deleting(decodePod("a", mergeAnn(lease, converted))), decodePod("b", nil), decodePod("c", nil), decodePod("d", nil), decodePod("e", nil)}, 1, "[]", "[a]"},
		{"a converted pod failing a probe keeps its lease", []*corev1.Pod{notReady(decodePod("a", mergeAnn(lease, converted))), decodePod("b", nil), decodePod("c", nil), decodePod("d", nil)}, 1, "[a]", "[]"},
		{"a blip does not release another converted pod", []*corev1.Pod{notReady(decodePod("a", mergeAnn(lease, converted))), decodePod("b", mergeAnn(lease, converted)), decodePod("c", nil), decodePod("d", nil)}, 2, "[a b]", "[]"},
		{"the pod being deleted is the one past the limit", []*corev1.Pod{deleting(decodePod("a", mergeAnn(lease, converted))), decodePod("b", mergeAnn(lease, converted)), decodePod("c", nil), decodePod("d", nil), decodePod("e", nil)}, 2, "[b]", "[a]"},
		{"the max fraction counts running pods only", []*corev1.Pod{deleting(decodePod("a", expired)), deleting(decodePod("b", expired)), decodePod("c", nil), decodePod("d", nil)}, 2, "[c]", "[a b]"},
		{"not a KV producer: never chosen", []*corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, decodePod("b", nil)}, 1, "[b]", "[]"},
		{"expired lease is cleaned up", []*corev1.Pod{decodePod("a", expired), decodePod("b", nil)}, 0, "[]", "[a]"},
		{"unknown or zero: nothing leased", []*corev1.Pod{decodePod("a", lease), decodePod("b", nil)}, 0, "[]", "[a]"},
		// A converted pod whose agent has gone silent keeps its slot but its lease is not renewed: it was
		// renewed for good, nothing checking its headroom, after its agent died without reverting it.
		{"a converted pod whose agent is silent is not renewed", []*corev1.Pod{decodePod("a", mergeAnn(lease, silent)), decodePod("b", mergeAnn(lease, converted)), decodePod("c", nil), decodePod("d", nil)}, 2, "[b]", "[a]"},
		{"a silent pod does not take a live converted pod's renewal", []*corev1.Pod{decodePod("a", mergeAnn(lease, silent)), decodePod("b", mergeAnn(lease, converted)), decodePod("c", nil)}, 1, "[b]", "[a]"},
		{"a converted status without a time is no live agent's", []*corev1.Pod{decodePod("a", mergeAnn(lease, handWritten)), decodePod("b", nil), decodePod("c", nil), decodePod("d", nil)}, 2, "[b]", "[a]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Choose(c.pods, c.wanted, t0, opts, nil)
			if got := fmt.Sprint(names(p.Lease)); got != c.lease {
				t.Errorf("lease %s, want %s", got, c.lease)
			}
			if got := fmt.Sprint(names(p.Release)); got != c.relase {
				t.Errorf("release %s, want %s", got, c.relase)
			}
		})
	}
}

func mergeAnn(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// Whatever the pods' states, the pods leased or still converted after a round never exceed wanted (or
// the fraction cap) unless they already did before it (draining pods cannot be un-converted by a lease).
func TestChooseNeverOvershoots(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		n := 1 + r.IntN(12)
		var pods []*corev1.Pod
		drainingBefore := 0
		for j := range n {
			ann := map[string]string{}
			if r.IntN(2) == 0 {
				ann[protocol.AnnotationKVProducer] = "true"
			}
			switch r.IntN(5) {
			case 0:
				ann[protocol.AnnotationConvertUntil] = protocol.FormatTime(t0.Add(time.Duration(r.IntN(20)-10) * time.Second))
			case 1:
				ann[protocol.AnnotationStatus] = protocol.StatusConverted
				ann[protocol.AnnotationStatusAt] = protocol.FormatTime(t0.Add(-time.Duration(r.IntN(90)) * time.Second)) // its agent's heartbeat
				drainingBefore++
			case 2:
				ann[protocol.AnnotationStatus] = protocol.Refused(protocol.ReasonBusy, "")
				ann[protocol.AnnotationStatusAt] = protocol.FormatTime(t0.Add(-time.Duration(r.IntN(120)) * time.Second))
			}
			pods = append(pods, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", j), Annotations: ann}})
		}
		wanted := r.IntN(n + 3)
		frac := r.Float64()
		plan := Choose(pods, wanted, t0, PlanOptions{MaxFraction: frac, RefusalBackoff: time.Minute}, nil)
		ceiling := min(wanted, policy.ConversionLimit(frac, n))
		occupied := map[string]bool{}
		for _, p := range plan.Lease {
			occupied[p.Name] = true
		}
		for _, p := range pods {
			if p.Annotations[protocol.AnnotationStatus] == protocol.StatusConverted {
				occupied[p.Name] = true
			}
		}
		if len(plan.Lease) > ceiling || len(occupied) > max(ceiling, drainingBefore) {
			t.Fatalf("case %d: %d pods, wanted %d, cap %d: leased %v, occupied %d (draining before %d)", i, n, wanted, ceiling, names(plan.Lease), len(occupied), drainingBefore)
		}
		for _, p := range plan.Lease {
			if contains(plan.Release, p) {
				t.Fatalf("case %d: %s both leased and released", i, p.Name)
			}
		}
	}
}

// The controller never writes a lease further ahead than MaxLease, and releases one it finds further.
func TestControllerBoundsLeases(t *testing.T) {
	far := decodePod("a", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Hour))})
	client := fake.NewClientset(far, decodePod("b", nil))
	ctrl := NewController(client, ControllerOptions{Lease: 10 * time.Minute, MaxLease: time.Minute, Now: func() time.Time { return t0 },
		Plan: PlanOptions{MaxFraction: 0.5, RefusalBackoff: time.Minute}})
	l, _ := client.CoreV1().Pods("ns").List(context.Background(), metav1.ListOptions{})
	pods := []*corev1.Pod{&l.Items[0], &l.Items[1]}
	if err := ctrl.Step(context.Background(), []Pool{{Name: "decode", Pods: pods, Wanted: 1, Known: true}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		p, _ := client.CoreV1().Pods("ns").Get(context.Background(), name, metav1.GetOptions{})
		until, ok := protocol.LeaseUntil(p)
		if ok && until.After(t0.Add(time.Minute)) {
			t.Errorf("%s leased until %s, beyond the 1 min bound", name, until)
		}
	}
}

// A lease no agent answers (no agent on the node, a --max-lease shorter than the controller's --lease) is
// reported once after three lease lengths, released, and the pod left out for the refusal backoff, so its
// slot goes to a pod an agent serves (it held the slot for as long as conversions were wanted); one the
// agent answered is not. The record of a pod that went away without a release is dropped once its lease
// is long over.
func TestControllerReportsUnansweredLeases(t *testing.T) {
	clk := &clock{t: t0}
	// "kept" was converted under a lease an earlier leader granted: its status is older than this
	// controller's lease, and is an answer all the same.
	kept := decodePod("kept", map[string]string{protocol.AnnotationStatus: protocol.StatusConverted,
		protocol.AnnotationStatusAt: protocol.FormatTime(t0.Add(-30 * time.Second))})
	// "ahead" carries a status stamped an hour ahead (written by hand, or by a clock far off): no agent of
	// this lease wrote it, and taken for an answer it hid the silence for good.
	ahead := decodePod("ahead", map[string]string{protocol.AnnotationStatus: protocol.StatusDecode,
		protocol.AnnotationStatusAt: protocol.FormatTime(t0.Add(time.Hour))})
	client := fake.NewClientset(decodePod("quiet", nil), decodePod("answered", nil), kept, ahead)
	ctrl := NewController(client, ControllerOptions{Lease: 10 * time.Second, Now: clk.Now, Plan: PlanOptions{MaxFraction: 1, RefusalBackoff: time.Minute}})
	step := func(names ...string) {
		t.Helper()
		var pods []*corev1.Pod
		for _, n := range names {
			p, err := client.CoreV1().Pods("ns").Get(context.Background(), n, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pods = append(pods, p)
		}
		if err := ctrl.Step(context.Background(), []Pool{{Name: "decode", Pods: pods, Wanted: len(pods), Known: true}}); err != nil {
			t.Fatal(err)
		}
	}
	key := func(n string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: n} }
	step("quiet", "answered", "kept", "ahead")
	// The agent of "answered" writes its status, as agents do within a round.
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q,%q:%q}}}`, protocol.AnnotationStatus, protocol.StatusConverted,
		protocol.AnnotationStatusAt, protocol.FormatTime(clk.Now().Add(time.Second)))
	if _, err := client.CoreV1().Pods("ns").Patch(context.Background(), "answered", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	leasedNow := func(n string) bool {
		p, err := client.CoreV1().Pods("ns").Get(context.Background(), n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return protocol.Leased(p, clk.Now())
	}
	for s := 1; s <= 40; s++ {
		clk.Set(t0.Add(time.Duration(s) * time.Second))
		step("quiet", "answered", "kept", "ahead")
		if _, out := ctrl.unanswered[key("quiet")]; s < 30 && (out || !leasedNow("quiet")) {
			t.Fatalf("reported or released at %d s, before three lease lengths", s)
		}
	}
	for _, n := range []string{"quiet", "ahead"} {
		if _, out := ctrl.unanswered[key(n)]; !out || leasedNow(n) {
			t.Errorf("%s: a lease unanswered for 40 s (4 leases) was not reported and released", n)
		}
	}
	delete(ctrl.unanswered, key("ahead"))
	if len(ctrl.unanswered) != 1 || !leasedNow("answered") || !leasedNow("kept") {
		t.Error("a lease its agent answered was reported or released")
	}
	// Left out for the refusal backoff (a minute here), then leased again.
	clk.Set(t0.Add(70 * time.Second))
	step("quiet", "answered", "kept")
	if leasedNow("quiet") {
		t.Error("the unanswered pod leased again within the refusal backoff")
	}
	clk.Set(t0.Add(95 * time.Second))
	step("quiet", "answered", "kept")
	if !leasedNow("quiet") {
		t.Error("the unanswered pod not leased again after the refusal backoff")
	}
	// "quiet" is deleted without a release: its records go once its lease is long over.
	clk.Set(t0.Add(95*time.Second + protocol.DefaultMaxLease + 20*time.Second))
	step("answered")
	if _, ok := ctrl.granted[key("quiet")]; ok || ctrl.silent[key("quiet")] || len(ctrl.unanswered) != 0 {
		t.Error("the records of a pod gone without a release are kept")
	}
}

// A controller's first round, a new leader's, renews the leases it finds and grants none: a grant of the
// leader before it may still be in flight, and would land beside this one's for the same slot.
func TestNewLeaderGrantsNothingFreshInItsFirstRound(t *testing.T) {
	clk := &clock{t: t0}
	held := decodePod("held", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))})
	client := fake.NewClientset(held, decodePod("free", nil))
	ctrl := NewController(client, ControllerOptions{Lease: 10 * time.Second, Now: clk.Now, Plan: PlanOptions{MaxFraction: 1, RefusalBackoff: time.Minute}})
	leased := func() []string {
		var out []string
		for _, n := range []string{"free", "held"} {
			p, err := client.CoreV1().Pods("ns").Get(context.Background(), n, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if protocol.Leased(p, clk.Now()) {
				out = append(out, n)
			}
		}
		return out
	}
	step := func() {
		t.Helper()
		var pods []*corev1.Pod
		for _, n := range []string{"free", "held"} {
			p, _ := client.CoreV1().Pods("ns").Get(context.Background(), n, metav1.GetOptions{})
			pods = append(pods, p)
		}
		if err := ctrl.Step(context.Background(), []Pool{{Name: "decode", Pods: pods, Wanted: 2, Known: true}}); err != nil {
			t.Fatal(err)
		}
	}
	step()
	if got := fmt.Sprint(leased()); got != "[held]" {
		t.Fatalf("first round: leased %s; want [held], renewed, and nothing fresh", got)
	}
	clk.Set(t0.Add(3 * time.Second))
	step()
	if got := fmt.Sprint(leased()); got != "[free held]" {
		t.Errorf("second round: leased %s; want both", got)
	}
}

// A pod recreated under the same name (a StatefulSet's) gets a fresh window to answer its lease: the
// record of its predecessor's lease made it unanswered at once, left out before its agent saw a lease.
func TestRecreatedPodGetsAFreshWindowToAnswer(t *testing.T) {
	clk := &clock{t: t0}
	old := decodePod("p", nil)
	old.UID = "first"
	client := fake.NewClientset(old)
	ctrl := NewController(client, ControllerOptions{Lease: 10 * time.Second, Now: clk.Now, Plan: PlanOptions{MaxFraction: 1, RefusalBackoff: time.Minute}})
	step := func(p *corev1.Pod) {
		t.Helper()
		if err := ctrl.Step(context.Background(), []Pool{{Name: "decode", Pods: []*corev1.Pod{p}, Wanted: 1, Known: true}}); err != nil {
			t.Fatal(err)
		}
	}
	step(old) // the first round grants nothing fresh
	clk.Set(t0.Add(time.Second))
	step(old)
	// No agent answers its lease for three lease lengths: it is released and left out for the backoff.
	var cur *corev1.Pod
	for at := 5 * time.Second; at <= 35*time.Second; at += 5 * time.Second {
		clk.Set(t0.Add(at))
		var err error
		if cur, err = client.CoreV1().Pods("ns").Get(context.Background(), "p", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		step(cur)
	}
	if !ctrl.leftOut(cur, clk.Now()) {
		t.Fatalf("the pod whose agent never answered is not left out: the case below would test nothing")
	}
	// Deleted and recreated, not leased: its predecessor's agent never answered, its own has not had a lease.
	if err := client.CoreV1().Pods("ns").Delete(context.Background(), "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	recreated := decodePod("p", nil)
	recreated.UID = "second"
	if _, err := client.CoreV1().Pods("ns").Create(context.Background(), recreated, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(36 * time.Second))
	step(recreated)
	p, err := client.CoreV1().Pods("ns").Get(context.Background(), "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !protocol.Leased(p, clk.Now()) || ctrl.leftOut(p, clk.Now()) {
		t.Errorf("the recreated pod: leased %v, left out %v; want leased, with a fresh window", protocol.Leased(p, clk.Now()), ctrl.leftOut(p, clk.Now()))
	}
}

// A pool wanting conversions whose pods none declares KV-producing is said once, at the default log
// level, and again only after a producer came and went: no refusal would ever say why nothing converts.
func TestControllerSaysWhenNoPodIsAKVProducer(t *testing.T) {
	ctrl := NewController(fake.NewClientset(), ControllerOptions{Now: func() time.Time { return t0 }})
	plain := func(name string) *corev1.Pod {
		p := decodePod(name, nil)
		delete(p.Annotations, protocol.AnnotationKVProducer)
		return p
	}
	pool := Pool{Name: "ns/decode", Pods: []*corev1.Pod{plain("a"), plain("b")}, Known: true}
	steps := []struct {
		name   string
		pods   []*corev1.Pod
		wanted int
		says   bool
	}{
		{"wanted, no producer: said", pool.Pods, 2, true},
		{"still so: not said again", pool.Pods, 2, false},
		{"none wanted: nothing to say", pool.Pods, 0, false},
		{"wanted again after none was: said again", pool.Pods, 1, true},
		{"a producer joins: nothing to say", append([]*corev1.Pod{decodePod("c", nil)}, pool.Pods...), 1, false},
		{"it leaves: said again", pool.Pods, 1, true},
		{"no pods at all: nothing to say", nil, 1, false},
	}
	for _, s := range steps {
		pool.Pods = s.pods
		if got := ctrl.reportNoProducer(pool, s.wanted); got != s.says {
			t.Errorf("%s: said %v", s.name, got)
		}
	}
}

// A lease the controller wrote belongs to the pod it wrote it to: a pod of the same name recreated
// within the lease (a StatefulSet's, force-deleted) is not leased by it, so it gets no lease before it is
// Ready, and the write carries the pod's UID as a precondition.
func TestControllerLeasesAreThePodsNotTheNames(t *testing.T) {
	old := decodePod("d-0", nil)
	old.UID = "old"
	client := fake.NewClientset(old)
	ctrl := NewController(client, ControllerOptions{Lease: time.Minute, Now: func() time.Time { return t0 }, Plan: PlanOptions{MaxFraction: 1}})
	ctrl.stepped = true
	var patches []string
	client.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		patches = append(patches, string(a.(k8stesting.PatchAction).GetPatch()))
		return false, nil, nil
	})
	if err := ctrl.Step(context.Background(), []Pool{{Name: "decode", Pods: []*corev1.Pod{old}, Wanted: 1, Known: true}}); err != nil {
		t.Fatal(err)
	}
	if len(patches) != 1 || !strings.Contains(patches[0], `"uid":"old"`) {
		t.Fatalf("patches %q; want one lease carrying the pod's UID", patches)
	}
	// Recreated under the same name, starting: not Ready, and not leased by the old pod's lease.
	fresh := notReady(decodePod("d-0", nil))
	fresh.UID = "new"
	patches = nil
	if err := ctrl.Step(context.Background(), []Pool{{Name: "decode", Pods: []*corev1.Pod{fresh}, Wanted: 1, Known: true}}); err != nil {
		t.Fatal(err)
	}
	if len(patches) != 0 {
		t.Errorf("patches %q to a recreated pod that is not Ready; want none", patches)
	}
}
