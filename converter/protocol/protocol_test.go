package protocol

import (
	"maps"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FuzzAnnotations checks what the protocol makes of any annotations on a pod, which anyone allowed to
// edit pods can write: a lease is never valid past maxAhead from now nor once ended; a converted pod whose
// status time cannot be read, is stale, or lies further ahead than clocks differ is silent (its lease is
// not renewed); and the pool labels differ from the pod's in at most the one key converted-from names,
// a key the pod has.
func FuzzAnnotations(f *testing.F) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	f.Add(FormatTime(now.Add(time.Minute)), StatusConverted, FormatTime(now.Add(-time.Minute)), "llm-d.ai/role=decode", "prefill-decode", int64(2*time.Minute))
	f.Add(FormatTime(now.Add(48*time.Hour)), StatusConverted, FormatTime(now.Add(time.Hour)), "=", "", int64(0))
	f.Add("not a time", "refused: gpu-busy (x)", "", "llm-d.ai/role", "decode", int64(-1))
	f.Fuzz(func(t *testing.T, until, status, statusAt, from, label string, maxAhead int64) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
			Annotations: map[string]string{AnnotationConvertUntil: until, AnnotationStatus: status, AnnotationStatusAt: statusAt, AnnotationConvertedFrom: from},
			Labels:      map[string]string{"llm-d.ai/role": label, "app": "vllm"},
		}}
		ahead := time.Duration(maxAhead)
		if LeasedWithin(pod, now, ahead) {
			end, ok := LeaseUntil(pod)
			if !ok || !now.Before(end) || ahead > 0 && end.After(now.Add(ahead)) {
				t.Fatalf("lease %q valid at %s within %s", until, now, ahead)
			}
		}
		if at, ok := StatusAt(pod); status == StatusConverted && (!ok || at.Sub(now) > MaxClockSkew || now.Sub(at) >= HeartbeatStale) && !Silent(pod, now) {
			t.Fatalf("converted at %q read as a live agent's at %s", statusAt, now)
		}
		if status != StatusConverted && Silent(pod, now) {
			t.Fatalf("status %q read as a silent conversion", status)
		}
		got := PoolLabels(pod)
		changed := 0
		for k, v := range got {
			if pod.Labels[k] != v {
				changed++
				if _, has := pod.Labels[k]; !has {
					t.Fatalf("pool labels add %q, which the pod does not have", k)
				}
			}
		}
		if changed > 1 || len(got) != len(pod.Labels) {
			t.Fatalf("pool labels %v from %v and converted-from %q", got, pod.Labels, from)
		}
		if changed == 0 && !maps.Equal(got, pod.Labels) {
			t.Fatalf("pool labels %v differ from %v", got, pod.Labels)
		}
	})
}
