package localcluster

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // a hang guard: waits may need CPU a loaded machine gives late
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
// and takes its share. The checks hold at any speed: every status write and counter reading is compared
// with the pod's own end of cold start, not with when the test happened to look.
func TestColdStart(t *testing.T) {
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const cold = 2 * time.Second
	type write struct {
		at    time.Time
		ready corev1.ConditionStatus
	}
	var mu sync.Mutex
	var writes []write
	client.PrependReactor("update", "pods", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() == "status" {
			w := write{at: time.Now()}
			p := action.(k8stesting.UpdateAction).GetObject().(*corev1.Pod)
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady {
					w.ready = c.Status
				}
			}
			if p.Status.Phase != corev1.PodRunning {
				w.ready = "" // reported, but not Running
			}
			mu.Lock()
			writes = append(writes, w)
			mu.Unlock()
		}
		return false, nil, nil
	})
	k := NewKubelet(client, KubeletOptions{Namespace: "ns", Port: 0, Tick: 20 * time.Millisecond, ColdStart: cold})
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	k.SetLoad("g", fakeengine.Load{PromptTokensPerSec: 5000})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", Labels: map[string]string{LoadLabel: "g"}}}
	if _, err := client.CoreV1().Pods("ns").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pod's engine", func() bool { return k.Pod("a") != nil })
	p := k.Pod("a")
	// Counters read wholly before the end of the cold start must show no load served (engines advance
	// every tick meanwhile, so a load given too early shows at once).
	for {
		prompt, _ := p.Engine.Counters()
		if !time.Now().Before(p.readyAt) {
			break
		}
		if prompt != 0 {
			t.Fatalf("during the cold start the engine served %v prompt tokens; want 0", prompt)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, "pod Ready after the cold start", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(writes) > 0 && writes[len(writes)-1].ready == corev1.ConditionTrue
	})
	mu.Lock()
	for i, w := range writes {
		switch {
		case w.ready == "":
			t.Errorf("status write %d does not report the pod Running with a Ready condition", i)
		case w.ready == corev1.ConditionTrue && w.at.Before(p.readyAt):
			t.Errorf("status write %d reported the pod Ready %s before its cold start ended", i, p.readyAt.Sub(w.at))
		}
	}
	mu.Unlock()
	waitFor(t, "load served once Ready", func() bool { prompt, _ := p.Engine.Counters(); return prompt > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
