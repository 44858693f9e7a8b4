package converter

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

// Many node agents act at once while the policy's number moves up and down faster than they react: at no
// observed moment are more pods converted than the policy asks for, beyond pods still draining from before
// a decrease, and the count settles on what is wanted.
func TestNoOvershootWithManyNodes(t *testing.T) {
	const nodes, perNode = 40, 1 // one pod per node: agents revert and convert independently
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The observer: every pod event updates the converted set; the count is checked on every event.
	w, err := client.CoreV1().Pods("ns").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The ceiling is timing-independent: the number wanted now, or, after a decrease, the pods that were
	// converted or leased when it came and still are (an agent undoes them on its next pass). Pods
	// converted on top of both would be an overshoot, however slow the agents are.
	var mu sync.Mutex
	var wanted int
	legacy := map[string]bool{}
	leasedNow := map[string]bool{}
	converted := map[string]bool{}
	var worst string
	peak := 0
	observed := make(chan struct{})
	go func() {
		defer close(observed)
		for ev := range w.ResultChan() {
			if ev.Type != watch.Modified && ev.Type != watch.Added {
				continue
			}
			p := ev.Object.(*corev1.Pod)
			mu.Lock()
			converted[p.Name] = p.Labels["llm-d.ai/role"] == "prefill-decode"
			_, leasedNow[p.Name] = p.Annotations[protocol.AnnotationConvertUntil]
			if !converted[p.Name] && !leasedNow[p.Name] {
				delete(legacy, p.Name)
			}
			n := 0
			for _, c := range converted {
				if c {
					n++
				}
			}
			peak = max(peak, n)
			if c := max(wanted, len(legacy)); n > c && worst == "" {
				worst = fmt.Sprintf("%d pods converted while the policy asks for %d and %d pods from before its last decrease are still draining", n, wanted, len(legacy))
			}
			mu.Unlock()
		}
	}()

	for n := range nodes {
		for i := range perNode {
			p := decodePod(fmt.Sprintf("d-%02d-%d", n, i), nil)
			p.Spec.NodeName = fmt.Sprintf("node-%02d", n)
			if _, err := client.CoreV1().Pods("ns").Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var agents sync.WaitGroup
	actx, stopAgents := context.WithCancel(ctx)
	// Each agent reconciles its node's pods in its own goroutine (the fake clientset's watches cannot
	// carry 30 informers' traffic, so each pass lists instead; Run's informer is tested above).
	for n := range nodes {
		node := fmt.Sprintf("node-%02d", n)
		a := NewAgent(client, AgentOptions{NodeName: node, Actuator: LLMD(client), GPUs: &fixedGPUs{ok: true}, MinFlipInterval: time.Millisecond})
		agents.Add(1)
		phase := time.Duration(n) * 150 * time.Millisecond / nodes // agents pass at different moments, as real ones do
		go func() {
			defer agents.Done()
			time.Sleep(phase)
			for actx.Err() == nil {
				list, err := client.CoreV1().Pods("ns").List(actx, metav1.ListOptions{})
				if err == nil {
					for i := range list.Items {
						if list.Items[i].Spec.NodeName == node {
							_ = a.Reconcile(actx, &list.Items[i])
						}
					}
				}
				time.Sleep(150 * time.Millisecond) // slower than the controller, so pods drain while leases move
			}
		}()
	}
	ctrl := NewController(client, ControllerOptions{Lease: 2 * time.Second, Plan: PlanOptions{MaxFraction: 0.5, RefusalBackoff: time.Second}})
	setWanted := func(v int) {
		mu.Lock()
		if v < wanted {
			for name := range converted {
				if converted[name] || leasedNow[name] {
					legacy[name] = true
				}
			}
		}
		wanted = v
		mu.Unlock()
	}
	step := func() {
		list, err := client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Error(err)
			return
		}
		var pods []*corev1.Pod
		for i := range list.Items {
			pods = append(pods, &list.Items[i])
		}
		mu.Lock()
		v := wanted
		mu.Unlock()
		if err := ctrl.Step(ctx, []Pool{{Name: "decode", Pods: pods, Wanted: v, Known: true}}); err != nil {
			t.Error(err)
		}
	}
	// Slow rises and sudden drops followed by rises, faster than an agent pass: the moves that would
	// overshoot if pods still draining were not counted.
	convertedNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range converted {
			if c {
				n++
			}
		}
		return n
	}
	schedule := []struct {
		wanted int
		hold   time.Duration
	}{{5, 600 * time.Millisecond}, {1, 30 * time.Millisecond}, {8, 600 * time.Millisecond}, {20, time.Second}, {0, 30 * time.Millisecond},
		{12, 600 * time.Millisecond}, {2, 30 * time.Millisecond}, {20, time.Second}, {3, 30 * time.Millisecond}, {6, 600 * time.Millisecond}}
	for _, ph := range schedule {
		setWanted(ph.wanted)
		end := time.Now().Add(ph.hold)
		// A phase asking for 20 also holds until 15 are converted (at most 30 s): on a starved machine the
		// agents may not reach the ask within the hold, and the peak check below needs the ask approached.
		for limit := time.Now().Add(30 * time.Second); time.Now().Before(end) || ph.wanted == 20 && time.Now().Before(limit) && convertedNow() < 15; {
			step()
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Settle on the last number (the deadline only bounds a count that never settles).
	deadline := time.Now().Add(30 * time.Second)
	for {
		step()
		if n := convertedNow(); n == 6 {
			break
		}
		if time.Now().After(deadline) {
			list, _ := client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
			for _, p := range list.Items {
				t.Logf("%s %s %v", p.Name, p.Labels["llm-d.ai/role"], p.Annotations)
			}
			t.Fatalf("converted pods settled at %d; want the 6 asked for", convertedNow())
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopAgents()
	agents.Wait()
	cancel()
	w.Stop()
	<-observed
	if worst != "" {
		t.Fatal(worst)
	}
	t.Logf("%d agents, %d decode pods: peak %d converted (highest ask 20 = the 0.5 cap of 40 pods)", nodes, nodes*perNode, peak)
	if peak < 15 {
		t.Errorf("peak %d converted; the test never drove conversions near the ask", peak)
	}
}
