package converter

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

// A decode pod whose ReplicaSet or StatefulSet selects on the label the actuator flips is refused: once
// flipped it would leave its owner, which would start a replacement decoder (llm-d-modelservice's decode
// Deployment selects on llm-d.ai/role). An owner that selects on other labels converts as before.
func TestAgentRefusesWhenTheOwnerSelectsTheFlippedLabel(t *testing.T) {
	lease := map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(5 * time.Second))}
	for _, c := range []struct {
		name     string
		kind     string
		selector map[string]string
		want     string // status prefix
	}{
		{"ReplicaSet selecting the role", "ReplicaSet", map[string]string{"app": "llama", "llm-d.ai/role": "decode"}, "refused: owner-selector (ReplicaSet decode-rs selects"},
		{"StatefulSet selecting the role", "StatefulSet", map[string]string{"llm-d.ai/role": "decode"}, "refused: owner-selector (StatefulSet decode-rs selects"},
		{"ReplicaSet selecting other labels", "ReplicaSet", map[string]string{"app": "llama"}, protocol.StatusConverted},
		{"owner gone", "", nil, "refused: owner-selector (reading its ReplicaSet decode-rs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			pod := onNode(decodePod("d1", lease), "node-1")
			pod.Labels["app"] = "llama"
			kind := c.kind
			if kind == "" {
				kind = "ReplicaSet"
			}
			yes := true
			pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: "decode-rs", UID: "u1", Controller: &yes}}
			a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, pod)
			sel := &metav1.LabelSelector{MatchLabels: c.selector}
			ctx := context.Background()
			switch c.kind {
			case "ReplicaSet":
				if _, err := client.AppsV1().ReplicaSets("ns").Create(ctx, &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "decode-rs", Namespace: "ns"}, Spec: appsv1.ReplicaSetSpec{Selector: sel}}, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			case "StatefulSet":
				if _, err := client.AppsV1().StatefulSets("ns").Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "decode-rs", Namespace: "ns"}, Spec: appsv1.StatefulSetSpec{Selector: sel}}, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.Reconcile(ctx, get(t, client, "d1")); err != nil {
				t.Fatal(err)
			}
			p := get(t, client, "d1")
			if !strings.HasPrefix(p.Annotations[protocol.AnnotationStatus], c.want) {
				t.Fatalf("status %q, want %q...", p.Annotations[protocol.AnnotationStatus], c.want)
			}
			if converted := p.Labels["llm-d.ai/role"] == "prefill-decode"; converted != (c.want == protocol.StatusConverted) {
				t.Fatalf("role label %q with status %q", p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationStatus])
			}
		})
	}
}

// An actuator that flips no label (SGLang's role switch) is not held to the owner's selector.
func TestOwnerCheckOnlyForLabelActuators(t *testing.T) {
	pod := onNode(decodePod("d1", nil), "node-1")
	yes := true
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "missing", Controller: &yes}}
	a, _, _ := agentFixture(t, &fixedGPUs{ok: true}, pod)
	if ok, detail := a.ownerKeeps(context.Background(), pod); ok {
		t.Fatalf("llm-d actuator, owner missing: ok (%q); want a refusal", detail)
	}
	a.o.Actuator = &SGLangActuator{}
	if ok, detail := a.ownerKeeps(context.Background(), pod); !ok {
		t.Fatalf("sglang actuator: refused (%s)", detail)
	}
}
