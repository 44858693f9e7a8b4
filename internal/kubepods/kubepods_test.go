package kubepods

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

func pod(name string, mutate func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "llm", Name: name, Labels: map[string]string{"llm-d.ai/role": "prefill"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

func TestListerReadiness(t *testing.T) {
	now := metav1.Now()
	client := fake.NewClientset(
		pod("ready", nil),
		pod("notready", func(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse }),
		pod("pending", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }),
		pod("deleting", func(p *corev1.Pod) { p.DeletionTimestamp = &now; p.Finalizers = []string{"x"} }),
		pod("noip", func(p *corev1.Pod) { p.Status.PodIP = "" }),
		pod("failed", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }),
		pod("other", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "web"} }),
	)
	l := synced(t, client)
	got, gone := map[string]bool{}, map[string]bool{}
	for _, p := range l.Pods() {
		got[p.Key.Name] = p.Ready
		gone[p.Key.Name] = p.Gone
	}
	want := map[string]bool{"ready": true, "notready": false, "pending": false, "deleting": false, "noip": false, "failed": false}
	// Gone pods are not counted as a pool's members at all (a pool scaled to zero whose pods terminate is
	// at zero); the others not Ready are starting or failing their probes.
	if wantGone := map[string]bool{"deleting": true, "failed": true}; !maps.Equal(gone, map[string]bool{"ready": false, "notready": false, "pending": false, "deleting": true, "noip": false, "failed": true}) {
		t.Errorf("gone = %v, want true for %v only", gone, wantGone)
	}
	if len(got) != len(want) {
		t.Errorf("pods = %v, want %v (the label selector excludes 'other')", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: ready = %v, want %v", k, got[k], v)
		}
	}
}

func TestBadSelector(t *testing.T) {
	if _, _, err := New(fake.NewClientset(), "", "a in (", 0); err == nil {
		t.Error("want an error for a bad selector")
	}
}

// The cache holds what the service and the converter read of a pod (metadata, node, readiness and IP),
// not the rest of a serving pod's object: managed fields, kubectl's last-applied copy, containers,
// volumes, container statuses.
func TestCacheKeepsOnlyWhatIsRead(t *testing.T) {
	full := servingPod(t)
	full.Annotations[corev1.LastAppliedConfigAnnotation] = `{"apiVersion":"v1","kind":"Pod"}`
	full.Annotations[protocol.AnnotationConvertedFrom] = "llm-d.ai/role=decode"
	client := fake.NewClientset(full.DeepCopy())
	l, factory, err := New(client, "", "llm-d.ai/role", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	factory.Start(ctx.Done())
	if !l.WaitForSync(ctx) {
		t.Fatal("cache did not sync")
	}
	p, err := l.lister.Pods(full.Namespace).Get(full.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.ManagedFields) != 0 || len(p.Spec.Containers) != 0 || len(p.Spec.Volumes) != 0 || len(p.Status.ContainerStatuses) != 0 {
		t.Errorf("cached pod keeps %d managed fields, %d containers, %d volumes, %d container statuses; want none",
			len(p.ManagedFields), len(p.Spec.Containers), len(p.Spec.Volumes), len(p.Status.ContainerStatuses))
	}
	if _, has := p.Annotations[corev1.LastAppliedConfigAnnotation]; has {
		t.Error("cached pod keeps kubectl's last-applied copy")
	}
	if p.Annotations[protocol.AnnotationConvertedFrom] != "llm-d.ai/role=decode" || p.Labels["llm-d.ai/role"] != "prefill" ||
		p.Spec.NodeName != full.Spec.NodeName || p.Status.PodIP != full.Status.PodIP || len(p.Status.Conditions) != len(full.Status.Conditions) ||
		p.UID != full.UID || len(p.OwnerReferences) != 1 {
		t.Errorf("cached pod lost what is read: annotations %v, labels %v, node %q, IP %q, conditions %d, uid %q, owners %d",
			p.Annotations, p.Labels, p.Spec.NodeName, p.Status.PodIP, len(p.Status.Conditions), p.UID, len(p.OwnerReferences))
	}
	pods := l.Pods()
	if len(pods) != 1 || !pods[0].Ready || pods[0].IP != full.Status.PodIP {
		t.Errorf("Pods() = %+v, want the pod Ready at %s", pods, full.Status.PodIP)
	}
}

// servingPod is a vLLM prefill pod as a watch returns it (testdata/prefill-pod.yaml).
func servingPod(tb testing.TB) *corev1.Pod {
	tb.Helper()
	f, err := os.Open("testdata/prefill-pod.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var p corev1.Pod
	if err := utilyaml.NewYAMLOrJSONDecoder(f, 4096).Decode(&p); err != nil {
		tb.Fatal(err)
	}
	if len(p.Spec.Containers) == 0 || len(p.ManagedFields) == 0 {
		tb.Fatal("testdata/prefill-pod.yaml did not decode into a full pod")
	}
	return &p
}

// BenchmarkCachedPodBytes reports the heap a cached serving pod costs as the API server sends it and as
// the cache keeps it: go test ./internal/kubepods -run '^$' -bench CachedPodBytes -benchtime 1x
func BenchmarkCachedPodBytes(b *testing.B) {
	src := servingPod(b)
	const n = 2000
	for _, mode := range []struct {
		name string
		keep func(*corev1.Pod) any
	}{
		{"full", func(p *corev1.Pod) any { return p }},
		{"slim", func(p *corev1.Pod) any { o, _ := slim(p); return o }},
	} {
		b.Run(mode.name, func(b *testing.B) {
			for range b.N {
				// Each pod is decoded apart, as a watch delivers it, so nothing is shared between pods.
				raw, err := json.Marshal(src)
				if err != nil {
					b.Fatal(err)
				}
				kept := make([]any, n)
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				for i := range kept {
					var p corev1.Pod
					if err := json.Unmarshal(raw, &p); err != nil {
						b.Fatal(err)
					}
					kept[i] = mode.keep(&p)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/pod")
				runtime.KeepAlive(kept)
			}
		})
	}
}

// A converted decoder's pool labels (its labels with the role it was converted from) are copied once per
// version of the pod, not on every round: the annotation that asks for the copy is the pod's own, and a
// pod of thousands of labels cost their size in garbage each second. They read as the decode pool's.
func TestConvertedPodLabelsAreCopiedOnce(t *testing.T) {
	conv := pod("conv", func(p *corev1.Pod) {
		p.UID, p.ResourceVersion = "u1", "7" // as an API server sets them
		p.Labels["llm-d.ai/role"] = "prefill-decode"
		p.Annotations = map[string]string{protocol.AnnotationConvertedFrom: "llm-d.ai/role=decode"}
		for i := range 2000 {
			p.Labels[fmt.Sprintf("l%d", i)] = "v"
		}
	})
	l := synced(t, fake.NewClientset(conv))
	if p := l.Pods(); len(p) != 1 || p[0].Labels["llm-d.ai/role"] != "decode" {
		t.Fatalf("pods %v; want the converted pod in its decode pool", p)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 20 {
		l.Pods()
	}
	runtime.ReadMemStats(&after)
	// A copy of 2,000 labels is about 100 KiB; the rounds' own lists are a few hundred bytes.
	if per := (after.TotalAlloc - before.TotalAlloc) / 20; per > 16<<10 {
		t.Errorf("%d bytes allocated a round for one converted pod of 2,000 labels; want no copy of its labels (under 16 KiB)", per)
	}
}

// synced starts a Lister on client's pods labelled llm-d.ai/role and waits for its cache.
func synced(t *testing.T, client *fake.Clientset) *Lister {
	t.Helper()
	l, factory, err := New(client, "", "llm-d.ai/role", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard on the sync
	t.Cleanup(cancel)
	factory.Start(ctx.Done())
	if !l.WaitForSync(ctx) {
		t.Fatal("cache did not sync")
	}
	return l
}
