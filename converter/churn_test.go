package converter

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

// Repeated bursts, as e2e TestConverter drives them but on a fake clock: node b's agent refuses every
// conversion with the same nvml-error, node c's converts. A burst right after the previous revert must get
// a decoder converted within a few controller rounds, and the controller must not grant and release leases
// round after round (the e2e flake: b's repeated identical refusal did not refresh its time, so the
// controller's backoff never held and the same b pods were leased and released every round).
func TestRepeatedBurstsConvertWithoutChurn(t *testing.T) {
	client := fake.NewClientset()
	ctx := context.Background()
	// b pods sort before c pods and never flip, so a controller that prefers them starves c.
	for _, node := range []string{"b", "c"} {
		for i := range 4 {
			p := decodePod(fmt.Sprintf("%s%d", node, i), nil)
			p.Spec.NodeName = node
			if _, err := client.CoreV1().Pods("ns").Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var leaseWrites int
	client.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if strings.Contains(string(a.(k8stesting.PatchAction).GetPatch()), protocol.AnnotationConvertUntil) {
			leaseWrites++
		}
		return false, nil, nil
	})
	clk := &clock{t: t0}
	const minFlip = 2 * time.Second
	ctrl := NewController(client, ControllerOptions{Lease: 3 * time.Second, Now: clk.Now,
		Plan: PlanOptions{MaxFraction: 0.25, RefusalBackoff: 5 * time.Second, MinFlipInterval: minFlip}})
	agents := []*Agent{
		NewAgent(client, AgentOptions{NodeName: "b", Actuator: LLMD(client), MinFlipInterval: minFlip, Now: clk.Now,
			GPUs: &fixedGPUs{reason: protocol.ReasonNVMLError, detail: "NVML init: ERROR_LIBRARY_NOT_FOUND"}}),
		NewAgent(client, AgentOptions{NodeName: "c", Actuator: LLMD(client), MinFlipInterval: minFlip, Now: clk.Now, GPUs: &fixedGPUs{ok: true}}),
	}
	list := func() []*corev1.Pod {
		l, err := client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out := make([]*corev1.Pod, len(l.Items))
		for i := range l.Items {
			out[i] = &l.Items[i]
		}
		return out
	}
	converted := func() (n int) {
		for _, p := range list() {
			if p.Labels["llm-d.ai/role"] == "prefill-decode" {
				n++
			}
		}
		return n
	}
	// One round: the controller steps, then every agent reconciles its pods; 0.6 s apart as in the flake.
	round := func(wanted int) {
		clk.Set(clk.Now().Add(600 * time.Millisecond))
		if err := ctrl.Step(ctx, []Pool{{Name: "decode", Pods: list(), Wanted: wanted, Known: true}}); err != nil {
			t.Fatal(err)
		}
		for _, a := range agents {
			for _, p := range list() {
				if err := a.Reconcile(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for burst := range 5 {
		writes := leaseWrites
		rounds := 0
		for converted() == 0 {
			if rounds++; rounds > 20 {
				for _, p := range list() {
					t.Logf("%s %s %v", p.Name, p.Labels["llm-d.ai/role"], p.Annotations)
				}
				t.Fatalf("burst %d: nothing converted after %d controller rounds (%d lease writes)", burst, rounds, leaseWrites-writes)
			}
			round(2)
		}
		for range 20 { // the burst holds: leases are renewed, not moved
			round(2)
		}
		if converted() != 2 {
			t.Errorf("burst %d: %d converted while the burst holds, want 2", burst, converted())
		}
		// 20 rounds of 0.6 s holding 2 leases of 3 s, each renewed once 2 s or less is left (every other
		// round), is 20 writes; b's refusals and the grants add a few. Churn (a grant and a release of the
		// same pods every round), or renewing every round (40), is more.
		if w := leaseWrites - writes; w > 20+12 {
			t.Errorf("burst %d: %d lease writes in %d rounds; the controller churns", burst, w, rounds+20)
		}
		for converted() > 0 {
			round(0)
		}
		round(0) // the next burst comes right after the revert, within the minimum flip interval
	}
}
