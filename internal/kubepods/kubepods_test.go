package kubepods

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
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
		pod("other", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "web"} }),
	)
	l, factory, err := New(client, "", "llm-d.ai/role", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	factory.Start(ctx.Done())
	if !l.WaitForSync(ctx) {
		t.Fatal("cache did not sync")
	}
	got := map[string]bool{}
	for _, p := range l.Pods() {
		got[p.Key.Name] = p.Ready
	}
	want := map[string]bool{"ready": true, "notready": false, "pending": false, "deleting": false, "noip": false}
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

// The cache holds no server-side-apply field records: nothing reads them.
func TestCacheDropsManagedFields(t *testing.T) {
	client := fake.NewClientset(pod("mf", func(p *corev1.Pod) {
		p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}}
	}))
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
	p, err := l.lister.Pods("llm").Get("mf")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.ManagedFields) != 0 || p.Labels["llm-d.ai/role"] != "prefill" || p.Status.PodIP != "10.0.0.1" {
		t.Fatalf("cached pod: managed fields %v, labels %v, IP %q; want none, the role, the IP", p.ManagedFields, p.Labels, p.Status.PodIP)
	}
}
