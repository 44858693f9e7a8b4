package localcluster

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPodsGetEnginesAndStatus(t *testing.T) {
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := NewKubelet(client, KubeletOptions{Namespace: "ns", Port: 0, Tick: 20 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()

	mk := func(name, flavor string) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns",
			Labels: map[string]string{LoadLabel: "g"}, Annotations: map[string]string{FlavorAnnotation: flavor}}}
		if _, err := client.CoreV1().Pods("ns").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk("a", "vllm-v1")
	mk("b", "sglang")
	for _, name := range []string{"a", "b"} {
		waitFor(t, name+" Running and Ready", func() bool {
			p, err := client.CoreV1().Pods("ns").Get(ctx, name, metav1.GetOptions{})
			return err == nil && isReportedAt(p, p.Status.PodIP, true) && strings.HasPrefix(p.Status.PodIP, "127.0.")
		})
	}
	if k.Pod("a").IP == k.Pod("b").IP {
		t.Fatalf("two pods share address %s", k.Pod("a").IP)
	}

	k.SetLoad("g", fakeengine.Load{PromptTokensPerSec: 2000})
	for name, want := range map[string]string{"a": "vllm:prompt_tokens_total", "b": "sglang:"} {
		resp, err := http.Get(k.Pod(name).URL())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), want) {
			t.Errorf("pod %s page lacks %q", name, want)
		}
	}
	// The group's load is split over its two pods.
	waitFor(t, "load to be served", func() bool {
		a, _ := k.Pod("a").Engine.Counters()
		b, _ := k.Pod("b").Engine.Counters()
		return a > 0 && b > 0
	})

	// A killed engine refuses scrapes and its share moves to the other pod.
	url := k.Pod("a").URL()
	k.Pod("a").Kill()
	if _, err := http.Get(url); err == nil {
		t.Fatal("a killed engine still answers")
	}

	if err := client.CoreV1().Pods("ns").Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's engine to stop", func() bool { return k.Pod("b") == nil })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if k.Pod("a") != nil {
		t.Fatal("engines outlive Run")
	}
}

// A pod in its cold start is Running but not Ready and gets none of its group's load; then it turns Ready
// and takes its share.
func TestColdStart(t *testing.T) {
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Long enough that a starved machine still shows the NotReady window to the polls below.
	const cold = 2 * time.Second
	k := NewKubelet(client, KubeletOptions{Namespace: "ns", Port: 0, Tick: 20 * time.Millisecond, ColdStart: cold})
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	k.SetLoad("g", fakeengine.Load{PromptTokensPerSec: 5000})
	created := time.Now()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", Labels: map[string]string{LoadLabel: "g"}}}
	if _, err := client.CoreV1().Pods("ns").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	readiness := func() corev1.ConditionStatus {
		p, err := client.CoreV1().Pods("ns").Get(ctx, "a", metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodRunning {
			return ""
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				return c.Status
			}
		}
		return ""
	}
	waitFor(t, "pod Running, not Ready", func() bool { return readiness() == corev1.ConditionFalse })
	time.Sleep(200 * time.Millisecond)
	// Counters read between two NotReady readings were read during the cold start, however slow the
	// machine: they must show no load served.
	before := readiness()
	prompt, _ := k.Pod("a").Engine.Counters()
	if after := readiness(); before == corev1.ConditionFalse && after == corev1.ConditionFalse && prompt != 0 {
		t.Fatalf("during the cold start the engine served %v prompt tokens; want 0", prompt)
	}
	waitFor(t, "pod Ready after the cold start", func() bool { return readiness() == corev1.ConditionTrue })
	if took := time.Since(created); took < cold {
		t.Errorf("Ready %s after creation; want >= %s", took, cold)
	}
	waitFor(t, "load served once Ready", func() bool { prompt, _ := k.Pod("a").Engine.Counters(); return prompt > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
