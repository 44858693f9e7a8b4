//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

// hpaYAML is what a user writes: the prefill pool follows tokenscale's desired replicas (Object metric,
// AverageValue 1, so the HPA enacts the policy within its own min/max/behavior); the decode pool scales on
// a Pods metric, decode tokens/s per pod.
const hpaYAML = `apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: llama-prefill, namespace: hpa}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: llama-prefill}
  minReplicas: 1
  maxReplicas: 6
  metrics:
  - type: Object
    object:
      describedObject: {apiVersion: apps/v1, kind: Deployment, name: llama-prefill}
      metric: {name: tokenscale_desired_replicas}
      target: {type: AverageValue, averageValue: "1"}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 0}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: llama-decode, namespace: hpa}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: llama-decode}
  minReplicas: 1
  maxReplicas: 6
  metrics:
  - type: Pods
    pods:
      metric: {name: tokenscale_decode_tokens_per_second}
      target: {type: AverageValue, averageValue: "1000"}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 0}
`

func replicas(t *testing.T, ns, name string) int32 {
	t.Helper()
	d, err := suite.cp.Client.AppsV1().Deployments(ns).Get(suite.ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return *d.Spec.Replicas
}

// The real HPA controller (1 s sync period) scales the prefill Deployment up on a load step and back
// down after it falls, on tokenscale_desired_replicas; a second HPA scales decode on a Pods metric.
func TestHPAScalesOnOurMetrics(t *testing.T) {
	const ns = "hpa"
	k := namespace(t, ns)
	deployment(t, ns, "llama-prefill", "prefill", fakeengine.VLLMV1, 1)
	deployment(t, ns, "llama-decode", "decode", fakeengine.SGLang, 1)
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 5000, OutputTokensPerSec: 10})
	k.SetLoad("decode", fakeengine.Load{OutputTokensPerSec: 500})
	kubectl(t, hpaYAML, "apply", "-f", "-")

	// Settle at 1 prefill replica: desired is ceil(5000 / (10000 * 0.85)) = 1.
	eventually(t, 60*time.Second, "desired replicas known and 1", func() error {
		v, err := objectValue(ns, "llama-prefill", "tokenscale_desired_replicas")
		if err != nil {
			return err
		}
		if v != 1 {
			return fmt.Errorf("desired %g", v)
		}
		return nil
	})

	// Step: 30000 prompt tokens/s needs ceil(30000 / 8500) = 4 prefill replicas.
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 30000, OutputTokensPerSec: 10})
	firstMove := eventually(t, 60*time.Second, "prefill scaled up", func() error {
		if n := replicas(t, ns, "llama-prefill"); n < 2 {
			return fmt.Errorf("%d replicas", n)
		}
		return nil
	})
	reached := eventually(t, 90*time.Second, "prefill at >= 4 replicas", func() error {
		if n := replicas(t, ns, "llama-prefill"); n < 4 {
			return fmt.Errorf("%d replicas", n)
		}
		return nil
	}) + firstMove
	t.Logf("reaction time, load step -> prefill replicas changed by the HPA: %s (>= 4 replicas after %s; now %d)",
		firstMove.Round(100*time.Millisecond), reached.Round(100*time.Millisecond), replicas(t, ns, "llama-prefill"))

	// The queue drains and the pool holds at its size while the load lasts.
	eventually(t, 60*time.Second, "backpressure below 1 at the new size", func() error {
		v, err := objectValue(ns, "llama-prefill", "tokenscale_predicted_backpressure")
		if err != nil {
			return err
		}
		if v >= 1 {
			return fmt.Errorf("backpressure %g", v)
		}
		return nil
	})

	// Fall: back to 3000 prompt tokens/s; after the policy's 5 s scale-down window the HPA goes to 1.
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 3000, OutputTokensPerSec: 10})
	down := eventually(t, 120*time.Second, "prefill scaled back to 1", func() error {
		if n := replicas(t, ns, "llama-prefill"); n != 1 {
			return fmt.Errorf("%d replicas", n)
		}
		return nil
	})
	t.Logf("load fall -> prefill back to 1 replica: %s (policy scale-down window 5 s, HPA stabilization 0)", down.Round(100*time.Millisecond))

	// Decode on a Pods metric: 3000 output tokens/s at a 1000/pod target settles at 3 replicas.
	dstep := time.Now()
	k.SetLoad("decode", fakeengine.Load{OutputTokensPerSec: 3000})
	eventually(t, 120*time.Second, "decode at 3 replicas", func() error {
		if n := replicas(t, ns, "llama-decode"); n != 3 {
			return fmt.Errorf("%d replicas", n)
		}
		return nil
	})
	t.Logf("decode load step -> 3 replicas on the Pods metric: %s", time.Since(dstep).Round(100*time.Millisecond))
}

func scaleTo(name, ns string, n int32) *autoscalingv1.Scale {
	return &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: n}}
}
