package converter

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tokenscale/tokenscale/velocity/service"
)

// noSnapshots is a service that never publishes.
type noSnapshots struct{}

func (noSnapshots) Snapshot() *service.Snapshot { return nil }
func (noSnapshots) Subscribe() (<-chan struct{}, func()) {
	return make(chan struct{}), func() {}
}

// The controller caches only the pods the pipeline watches (--namespace, --pod-selector): it cached every
// pod of the cluster, which on a large one does not fit its memory.
func TestControllerCachesOnlySelectedPods(t *testing.T) {
	client := fake.NewClientset()
	var mu sync.Mutex
	type list struct{ ns, selector string }
	var lists []list
	listed := make(chan struct{}, 1)
	client.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		lists = append(lists, list{a.GetNamespace(), a.(k8stesting.ListAction).GetListRestrictions().Labels.String()})
		mu.Unlock()
		select {
		case listed <- struct{}{}:
		default:
		}
		return false, nil, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunController(ctx, client, NewController(client, ControllerOptions{Lease: time.Minute}), noSnapshots{}, time.Hour, time.Minute, "llm", "llm-d.ai/role")
	}()
	select {
	case <-listed:
	case err := <-done:
		t.Fatalf("RunController returned before listing pods: %v", err)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range lists {
		if l.ns != "llm" || l.selector != "llm-d.ai/role" {
			t.Fatalf("pods listed in namespace %q with selector %q, want llm and llm-d.ai/role", l.ns, l.selector)
		}
	}
	if err := RunController(context.Background(), client, nil, noSnapshots{}, time.Hour, time.Minute, "", "a b"); err == nil {
		t.Fatal("a pod selector that does not parse was accepted")
	}
}
