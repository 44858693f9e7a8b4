package converter

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

// Many node agents pass at staggered moments while the policy's number moves up and down faster than they
// react: at no moment, down to each single pod write, are more pods converted than the policy asks for,
// beyond pods still draining from before a decrease, and the count settles on what is wanted.
//
// The controller's steps and the agents' passes run in turn from this goroutine on a fake clock, each
// agent reading its pod fresh: the interleavings are the same on every run, however loaded the machine.
func TestNoOvershootWithManyNodes(t *testing.T) {
	const nodes = 40 // one pod per node: agents revert and convert independently
	client := fake.NewClientset()
	ctx := context.Background()
	// The ceiling: the number wanted now, or, after a decrease, the pods that were converted or leased
	// when it came and still are (an agent undoes them on its next pass). Pods converted on top of both
	// would be an overshoot.
	var wanted int
	legacy := map[string]bool{}
	leasedNow := map[string]bool{}
	converted := map[string]bool{}
	var worst string
	peak := 0
	convertedNow := func() int {
		n := 0
		for _, c := range converted {
			if c {
				n++
			}
		}
		return n
	}
	// The observer: a reactor applies each pod write and checks the count before the writer goes on, so
	// every intermediate state is seen, in order.
	apply := k8stesting.ObjectReaction(client.Tracker())
	client.PrependReactor("*", "pods", func(action k8stesting.Action) (bool, runtime.Object, error) {
		handled, obj, err := apply(action)
		p, ok := obj.(*corev1.Pod)
		if v := action.GetVerb(); err != nil || !ok || v != "create" && v != "update" && v != "patch" {
			return handled, obj, err
		}
		converted[p.Name] = p.Labels["llm-d.ai/role"] == "prefill-decode"
		_, leasedNow[p.Name] = p.Annotations[protocol.AnnotationConvertUntil]
		if !converted[p.Name] && !leasedNow[p.Name] {
			delete(legacy, p.Name)
		}
		n := convertedNow()
		peak = max(peak, n)
		if c := max(wanted, len(legacy)); n > c && worst == "" {
			worst = fmt.Sprintf("%d pods converted while the policy asks for %d and %d pods from before its last decrease are still draining", n, wanted, len(legacy))
		}
		return handled, obj, err
	})
	setWanted := func(v int) {
		if v < wanted {
			for name := range converted {
				if converted[name] || leasedNow[name] {
					legacy[name] = true
				}
			}
		}
		wanted = v
	}

	clk := &clock{t: t0}
	var agents []*Agent
	for n := range nodes {
		p := decodePod(fmt.Sprintf("d-%02d", n), nil)
		p.Spec.NodeName = fmt.Sprintf("node-%02d", n)
		if _, err := client.CoreV1().Pods("ns").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		agents = append(agents, NewAgent(client, AgentOptions{NodeName: p.Spec.NodeName, Actuator: LLMD(client),
			GPUs: &fixedGPUs{ok: true}, MinFlipInterval: time.Millisecond, Now: clk.Now}))
	}
	ctrl := NewController(client, ControllerOptions{Lease: 2 * time.Second, Plan: PlanOptions{MaxFraction: 0.5, RefusalBackoff: time.Second}, Now: clk.Now})
	// A tick is 50 ms: the controller steps on every tick, each agent passes every third tick (a third of
	// them on each), so pods drain while leases move.
	ticks := 0
	tick := func() {
		clk.Set(clk.Now().Add(50 * time.Millisecond))
		list, err := client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var pods []*corev1.Pod
		for i := range list.Items {
			pods = append(pods, &list.Items[i])
		}
		if err := ctrl.Step(ctx, []Pool{{Name: "decode", Pods: pods, Wanted: wanted, Known: true}}); err != nil {
			t.Fatal(err)
		}
		// Agents whose pod is leased pass first: conversions land before the reverts of pods still
		// draining, the order that overshoots if draining pods were not counted.
		for _, leasedFirst := range []bool{true, false} {
			for n, a := range agents {
				if (ticks+n)%3 != 0 {
					continue
				}
				p := get(t, client, fmt.Sprintf("d-%02d", n))
				if _, leased := p.Annotations[protocol.AnnotationConvertUntil]; leased != leasedFirst {
					continue
				}
				if err := a.Reconcile(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
		}
		ticks++
	}
	// Slow rises, and sudden drops that last one tick (shorter than an agent pass) before a rise: the
	// moves that would overshoot if pods still draining were not counted.
	schedule := []struct{ wanted, ticks int }{{5, 12}, {1, 1}, {8, 12}, {20, 20}, {0, 1}, {12, 12}, {2, 1}, {20, 20}, {3, 1}, {6, 12}}
	for _, ph := range schedule {
		setWanted(ph.wanted)
		for range ph.ticks {
			tick()
		}
	}
	// Settle on the last number: a few agent passes suffice, so 100 ticks bound a count that never settles.
	for i := 0; convertedNow() != 6; i++ {
		if i == 100 {
			list, _ := client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
			for _, p := range list.Items {
				t.Logf("%s %s %v", p.Name, p.Labels["llm-d.ai/role"], p.Annotations)
			}
			t.Fatalf("converted pods settled at %d; want the 6 asked for", convertedNow())
		}
		tick()
	}
	if worst != "" {
		t.Fatal(worst)
	}
	t.Logf("%d agents, %d decode pods: peak %d converted (highest ask 20 = the 0.5 cap of 40 pods)", nodes, nodes, peak)
	if peak < 15 {
		t.Errorf("peak %d converted; the test never drove conversions near the ask", peak)
	}
}
