package converter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
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

// Two models' decode pools in one namespace: a converted pod (relabelled prefill-decode by llm-d, its
// role before the conversion in converted-from) counts with its own model's pool only. It counted with
// every decode pool of the namespace, so a pool wanting no conversions released the other's leases.
func TestDecodePoolsKeepConvertedPodsWithTheirPool(t *testing.T) {
	pool := func(name, model string) config.Pool {
		return config.Pool{Name: name, Namespace: "ns", Role: config.RoleDecode, Selector: map[string]string{"model": model, "llm-d.ai/role": "decode"}}
	}
	a, b := pool("a-decode", "a"), pool("b-decode", "b")
	// A catch-all decode pool listed after them: pods go to the first pool that matches, so not to it.
	all := config.Pool{Name: "all-decode", Namespace: "ns", Group: "all", Role: config.RoleDecode, Selector: map[string]string{"llm-d.ai/role": "decode"}}
	converted := decodePod("a1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute)),
		protocol.AnnotationStatus: protocol.StatusConverted, protocol.AnnotationConvertedFrom: "llm-d.ai/role=decode"})
	converted.Labels = map[string]string{"model": "a", "llm-d.ai/role": "prefill-decode"}
	b1 := decodePod("b1", nil)
	b1.Labels["model"] = "b"
	snap := &service.Snapshot{Pools: map[service.PoolKey]*service.PoolView{
		{Namespace: "ns", Name: "a-decode"}: {Key: service.PoolKey{Namespace: "ns", Name: "a-decode"}, Config: &a},
		{Namespace: "ns", Name: "b-decode"}: {Key: service.PoolKey{Namespace: "ns", Name: "b-decode"}, Config: &b,
			Pods: []store.PodKey{{Namespace: "ns", Name: "b1"}}},
		{Namespace: "ns", Name: "all-decode"}: {Key: service.PoolKey{Namespace: "ns", Name: "all-decode"}, Config: &all},
	}, ConfigPools: []config.Pool{a, b, all}}
	pods := map[string]*corev1.Pod{"a1": converted, "b1": b1}
	got := map[string][]string{}
	for _, p := range DecodePools(snap, func(_, name string) *corev1.Pod { return pods[name] }, func(string) []*corev1.Pod { return []*corev1.Pod{converted, b1} }) {
		got[p.Name] = names(p.Pods)
	}
	if want := "[a1]"; fmt.Sprint(got["ns/a-decode"]) != want {
		t.Errorf("pool a's pods %v, want %s (its converted pod)", got["ns/a-decode"], want)
	}
	if want := "[b1]"; fmt.Sprint(got["ns/b-decode"]) != want {
		t.Errorf("pool b's pods %v, want %s (not pool a's converted pod)", got["ns/b-decode"], want)
	}
	if len(got["ns/all-decode"]) != 0 {
		t.Errorf("the catch-all pool listed last counts %v, want none (pods go to the first pool that matches)", got["ns/all-decode"])
	}
}

// A pool without a namespace is shadowed, in a namespace with a pool of its name fixed to it, as
// velocity/service assigns pods (config.RunsIn): a converted pod there goes to the next pool that matches.
// It went to the shadowed pool's name, so the fixed pool counted a pod of another pool in its slots.
func TestDecodePoolsSkipAShadowedPool(t *testing.T) {
	anyNS := config.Pool{Name: "a-decode", Role: config.RoleDecode, Selector: map[string]string{"llm-d.ai/role": "decode"}}
	a := config.Pool{Name: "a-decode", Namespace: "ns", Role: config.RoleDecode, Selector: map[string]string{"model": "a", "llm-d.ai/role": "decode"}}
	b := config.Pool{Name: "b-decode", Namespace: "ns", Group: "b", Role: config.RoleDecode, Selector: map[string]string{"model": "b", "llm-d.ai/role": "decode"}}
	converted := decodePod("b1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute)),
		protocol.AnnotationStatus: protocol.StatusConverted, protocol.AnnotationConvertedFrom: "llm-d.ai/role=decode"})
	converted.Labels = map[string]string{"model": "b", "llm-d.ai/role": "prefill-decode"}
	snap := &service.Snapshot{Pools: map[service.PoolKey]*service.PoolView{
		{Namespace: "ns", Name: "a-decode"}: {Key: service.PoolKey{Namespace: "ns", Name: "a-decode"}, Config: &a},
		{Namespace: "ns", Name: "b-decode"}: {Key: service.PoolKey{Namespace: "ns", Name: "b-decode"}, Config: &b},
	}, ConfigPools: []config.Pool{anyNS, a, b}}
	got := map[string][]string{}
	for _, p := range DecodePools(snap, func(string, string) *corev1.Pod { return nil }, func(string) []*corev1.Pod { return []*corev1.Pod{converted} }) {
		got[p.Name] = names(p.Pods)
	}
	if len(got["ns/a-decode"]) != 0 {
		t.Errorf("the fixed pool a-decode counts %v, want none (the shadowed pool of its name takes no pod in ns)", got["ns/a-decode"])
	}
	if want := "[b1]"; fmt.Sprint(got["ns/b-decode"]) != want {
		t.Errorf("pool b's pods %v, want %s (its converted pod)", got["ns/b-decode"], want)
	}
}
