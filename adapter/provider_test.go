package adapter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode"

	corev1 "k8s.io/api/core/v1"
	apierr "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/internal/kubepods"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/policy"
	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
)

type fakeSource struct {
	snap *service.Snapshot
}

func (f *fakeSource) Snapshot() *service.Snapshot { return f.snap }

func fixture() *fakeSource {
	cfg := config.Default()
	cfg.Pools[0].Workload.Name = "llama-prefill"
	cfg.Pools[1].Workload.Name = "llama-decode"
	now := time.Unix(1000, 0)
	p1, p2, p3 := store.PodKey{Namespace: "llm", Name: "p1"}, store.PodKey{Namespace: "llm", Name: "p2"}, store.PodKey{Namespace: "llm", Name: "d1"}
	f := &fakeSource{
		snap: &service.Snapshot{
			Time: now,
			Pools: map[service.PoolKey]*service.PoolView{
				{Namespace: "llm", Name: "prefill"}: {Key: service.PoolKey{Namespace: "llm", Name: "prefill"}, Config: &cfg.Pools[0],
					Status: policy.PoolStatus{Arrival: 25000.5, Capacity: 20000, Utilisation: 1.25, Backpressure: 1.3}, Desired: 3, HasDesired: true},
				{Namespace: "llm", Name: "decode"}: {Key: service.PoolKey{Namespace: "llm", Name: "decode"}, Config: &cfg.Pools[1],
					Err: errors.New("pool decode: no pod of the pool has a known velocity")},
			},
			PodLabels: map[store.PodKey]map[string]string{
				p1: {"llm-d.ai/role": "prefill"}, p2: {"llm-d.ai/role": "prefill"}, p3: {"llm-d.ai/role": "decode"},
			},
		},
	}
	cfg.Pools = append(cfg.Pools, config.Pool{Name: "embed", Workload: config.Workload{Kind: "Deployment", Name: "llama-embed"}})
	f.snap.ConfigPools = cfg.Pools
	f.snap.PodResults = map[store.PodKey]*store.Result{
		p1: {Velocity: store.Velocity{Pod: p1, Time: now, PrefillTPS: 12000, QueuedTokens: 3000}},
		p2: {Velocity: store.Velocity{Pod: p2, Time: now, PrefillTPS: 13000.25}},
		p3: {Velocity: store.Velocity{Pod: p3}, Err: store.ErrStale},
	}
	return f
}

func info(gr string, metric string) provider.CustomMetricInfo {
	for _, m := range NewProvider(&fakeSource{}, nil).ListAllMetrics() {
		if m.GroupResource.String() == gr && m.Metric == metric {
			return m
		}
	}
	panic("no such metric " + gr + " " + metric)
}

func status(err error) int32 {
	var se *apierr.StatusError
	if errors.As(err, &se) {
		return se.ErrStatus.Code
	}
	return 0
}

func TestDiscoveryNeverEmpty(t *testing.T) {
	all := NewProvider(&fakeSource{}, nil).ListAllMetrics()
	if len(all) != 3+2*6 {
		t.Errorf("%d metrics listed without LeaderWorkerSet, want 15", len(all))
	}
	if n := len(NewProvider(&fakeSource{}, func() bool { return true }).ListAllMetrics()); n != 3+3*6 {
		t.Errorf("%d metrics with LeaderWorkerSet, want 21", n)
	}
}

func TestPodsBySelector(t *testing.T) {
	p := NewProvider(fixture(), nil)
	sel, _ := labels.Parse("llm-d.ai/role=prefill")
	list, err := p.GetMetricBySelector(context.Background(), "llm", sel, info("pods", PrefillVelocity), labels.Everything())
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 || list.Items[0].DescribedObject.Name != "p1" || list.Items[1].Value.MilliValue() != 13000250 {
		t.Fatalf("items = %+v", list.Items)
	}
	// The decode pod is tracked but its velocity is unknown: an error with the reason, not 0.
	sel, _ = labels.Parse("llm-d.ai/role=decode")
	_, err = p.GetMetricBySelector(context.Background(), "llm", sel, info("pods", DecodeVelocity), labels.Everything())
	if status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "stale") {
		t.Fatalf("err = %v, want 503 naming staleness", err)
	}
	sel, _ = labels.Parse("app=web")
	_, err = p.GetMetricBySelector(context.Background(), "llm", sel, info("pods", DecodeVelocity), labels.Everything())
	if status(err) != http.StatusNotFound {
		t.Fatalf("no matching pods: err = %v, want 404", err)
	}
}

// A decode pod's queued tokens are refused with a 400, as the decode pool's are: its waiting requests wait
// for a decode slot, counted at a mean prompt length it never reports. Served, they read as prefill work
// to an HPA on the pods. Fails if the pods' number skips the role rule (a 200 with d1's value).
func TestPodQueuedTokensOnlyForPrefillWork(t *testing.T) {
	src := fixture()
	p1, d1 := store.PodKey{Namespace: "llm", Name: "p1"}, store.PodKey{Namespace: "llm", Name: "d1"}
	src.snap.PodPool = map[store.PodKey]service.PoolKey{
		p1: {Namespace: "llm", Name: "prefill"}, {Namespace: "llm", Name: "p2"}: {Namespace: "llm", Name: "prefill"},
		d1: {Namespace: "llm", Name: "decode"},
	}
	src.snap.PodResults[d1] = &store.Result{Velocity: store.Velocity{Pod: d1, Time: src.snap.Time, DecodeTPS: 900, QueuedTokens: 4000}}
	p := NewProvider(src, nil)
	ctx := context.Background()
	if _, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "d1"}, info("pods", QueuedTokens), labels.Everything()); status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "llm/d1") {
		t.Errorf("a decode pod's queued tokens: %v; want a 400 naming it", err)
	}
	for _, s := range []string{"llm-d.ai/role=decode", ""} {
		sel, _ := labels.Parse(s)
		if _, err := p.GetMetricBySelector(ctx, "llm", sel, info("pods", QueuedTokens), labels.Everything()); status(err) != http.StatusBadRequest {
			t.Errorf("queued tokens over %q, which takes a decode pod: %v; want a 400", s, err)
		}
	}
	// Prefill pods answer, and a decode pod's other numbers too.
	sel, _ := labels.Parse("llm-d.ai/role=prefill")
	if list, err := p.GetMetricBySelector(ctx, "llm", sel, info("pods", QueuedTokens), labels.Everything()); err != nil || len(list.Items) != 2 || list.Items[0].Value.Value() != 3000 {
		t.Errorf("prefill pods' queued tokens: %+v, %v; want p1's 3000 and p2's", list, err)
	}
	if v, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "d1"}, info("pods", DecodeVelocity), labels.Everything()); err != nil || v.Value.Value() != 900 {
		t.Errorf("a decode pod's decode velocity: %+v, %v; want 900", v, err)
	}
}

func TestObjectMetrics(t *testing.T) {
	p := NewProvider(fixture(), nil)
	ctx := context.Background()
	v, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "llama-prefill"}, info("deployments.apps", DesiredReplicas), labels.Everything())
	if err != nil || v.Value.Value() != 3 || v.DescribedObject.Kind != "Deployment" || v.DescribedObject.APIVersion != "apps/v1" {
		t.Fatalf("desired replicas = %+v, %v", v, err)
	}
	v, err = p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "llama-prefill"}, info("deployments.apps", ArrivalVelocity), labels.Everything())
	if err != nil || v.Value.MilliValue() != 25000500 {
		t.Fatalf("arrival = %+v, %v", v, err)
	}
	_, err = p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "llama-decode"}, info("deployments.apps", DesiredReplicas), labels.Everything())
	if status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "no pod of the pool") {
		t.Fatalf("unknown pool: err = %v, want 503 with the reason", err)
	}
	_, err = p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "web"}, info("deployments.apps", DesiredReplicas), labels.Everything())
	if status(err) != http.StatusNotFound || !strings.Contains(err.Error(), "prefill→Deployment/llama-prefill") {
		t.Fatalf("unmapped workload: err = %v, want 404 listing the pools", err)
	}
	// A workload the config maps whose pool has no Ready pods: its value is unknown (503 naming the pool),
	// not a workload no pool maps to.
	_, err = p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "llama-embed"}, info("deployments.apps", DesiredReplicas), labels.Everything())
	if status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "pool embed") || !strings.Contains(err.Error(), "no Ready pods") {
		t.Fatalf("mapped workload without Ready pods: err = %v, want 503 naming the pool", err)
	}
	// A pod no pool tracks does not exist for tokenscale: 404, as docs/metrics.md says.
	_, err = p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "web-0"}, info("pods", PrefillVelocity), labels.Everything())
	if status(err) != http.StatusNotFound || !strings.Contains(err.Error(), "not a Ready pod") || !strings.Contains(err.Error(), "prefill→Deployment/llama-prefill") {
		t.Fatalf("untracked pod: err = %v, want 404 listing the pools", err)
	}
	// Our custom series carry no labels: a metric selector (copied from the external metrics) would match
	// nothing, and must not get the unfiltered value.
	byPool := labels.SelectorFromSet(labels.Set{LabelPool: "decode"})
	_, err = p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "llama-prefill"}, info("deployments.apps", DesiredReplicas), byPool)
	if status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "pool=decode") {
		t.Fatalf("object metric with a metric selector: err = %v, want 400 naming the selector", err)
	}
	_, err = p.GetMetricBySelector(ctx, "llm", labels.Everything(), info("pods", PrefillVelocity), byPool)
	if status(err) != http.StatusBadRequest {
		t.Fatalf("pods metric with a metric selector: err = %v, want 400", err)
	}
	bad := provider.CustomMetricInfo{GroupResource: podsGR, Namespaced: true, Metric: "gpu_util"}
	_, err = p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "p1"}, bad, labels.Everything())
	if status(err) != http.StatusNotFound || !strings.Contains(err.Error(), "tokenscale serves "+DecodeVelocity) {
		t.Fatalf("unknown metric: err = %v, want 404 listing what exists", err)
	}
}

// A snapshot older than the limit is a 503 on every path, never its old values served as known: the
// scrape loop has stalled, and readiness takes a few probe periods to notice.
func TestStaleSnapshotIsRefused(t *testing.T) {
	ctx := context.Background()
	src := fixture()
	src.snap.Time = time.Now().Add(-time.Minute)
	p := NewProvider(src, nil)
	ext := NewExternal(src)
	pod := types.NamespacedName{Namespace: "llm", Name: "p1"}
	dep := types.NamespacedName{Namespace: "llm", Name: "llama-prefill"}
	sel, _ := labels.Parse("llm-d.ai/role=prefill")
	poolSel, _ := labels.Parse("pool=prefill")
	reads := func() []error {
		_, e1 := p.GetMetricByName(ctx, pod, info("pods", PrefillVelocity), labels.Everything())
		_, e2 := p.GetMetricByName(ctx, dep, info("deployments.apps", DesiredReplicas), labels.Everything())
		_, e3 := p.GetMetricBySelector(ctx, "llm", sel, info("pods", PrefillVelocity), labels.Everything())
		_, e4 := ext.GetExternalMetric(ctx, "llm", poolSel, provider.ExternalMetricInfo{Metric: DesiredReplicas})
		return []error{e1, e2, e3, e4}
	}
	for i, err := range reads() {
		if err != nil {
			t.Fatalf("read %d without a limit: %v", i, err)
		}
	}
	p.RefuseOlderThan(10 * time.Second)
	ext.RefuseOlderThan(10 * time.Second)
	for i, err := range reads() {
		if status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "scraping has stalled") {
			t.Errorf("read %d of a minute-old snapshot: err = %v, want 503 saying scraping stalled", i, err)
		}
	}
	src.snap.Time = time.Now()
	for i, err := range reads() {
		if err != nil {
			t.Errorf("read %d of a fresh snapshot: %v", i, err)
		}
	}
}

func TestNoSnapshotYet(t *testing.T) {
	p := NewProvider(&fakeSource{}, nil)
	_, err := p.GetMetricBySelector(context.Background(), "llm", labels.Everything(), info("pods", QueuedTokens), labels.Everything())
	if status(err) != http.StatusServiceUnavailable {
		t.Fatalf("err = %v, want 503 before the first round", err)
	}
}

func TestExternalMetrics(t *testing.T) {
	e := NewExternal(fixture())
	if got := len(e.ListAllExternalMetrics()); got != len(poolMetrics) {
		t.Fatalf("listed %d external metrics, want %d", got, len(poolMetrics))
	}
	sel := func(s string) labels.Selector {
		l, err := labels.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	list, err := e.GetExternalMetric(context.Background(), "llm", sel("pool=prefill"), provider.ExternalMetricInfo{Metric: ArrivalVelocity})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Value.MilliValue() != 25000500 || list.Items[0].MetricLabels[LabelWorkload] != "llama-prefill" {
		t.Fatalf("arrival for pool=prefill: %+v", list.Items)
	}
	list, err = e.GetExternalMetric(context.Background(), "llm", sel("role=prefill"), provider.ExternalMetricInfo{Metric: DesiredReplicas})
	if err != nil || list.Items[0].Value.Value() != 3 {
		t.Fatalf("desired for role=prefill: %v %+v", err, list)
	}
	// Every pool matches an empty selector; the decode pool is unknown, so the answer is an error, not a partial list.
	_, err = e.GetExternalMetric(context.Background(), "llm", labels.Everything(), provider.ExternalMetricInfo{Metric: ArrivalVelocity})
	if code := status(err); code != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "llm/decode") {
		t.Fatalf("unknown pool in the selection: %v (code %d), want a 503 naming it", err, code)
	}
	// A configured pool with no Ready pods in the namespace is unknown, not absent.
	_, err = e.GetExternalMetric(context.Background(), "llm", sel("pool=embed"), provider.ExternalMetricInfo{Metric: ArrivalVelocity})
	if code := status(err); code != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "embed") || !strings.Contains(err.Error(), "no Ready pods") {
		t.Fatalf("a configured pool without pods: %v (code %d), want a 503 naming it", err, code)
	}
	_, err = e.GetExternalMetric(context.Background(), "llm", sel("pool=nope"), provider.ExternalMetricInfo{Metric: ArrivalVelocity})
	if !apierr.IsNotFound(err) || !strings.Contains(err.Error(), "prefill→Deployment/llama-prefill") {
		t.Fatalf("no pool matches: %v, want a 404 listing the pools", err)
	}
	_, err = e.GetExternalMetric(context.Background(), "llm", labels.Everything(), provider.ExternalMetricInfo{Metric: "nope"})
	if !apierr.IsNotFound(err) || !strings.Contains(err.Error(), Backpressure) {
		t.Fatalf("unknown metric: %v", err)
	}
	if _, err := NewExternal(&fakeSource{}).GetExternalMetric(context.Background(), "llm", labels.Everything(), provider.ExternalMetricInfo{Metric: ArrivalVelocity}); status(err) != http.StatusServiceUnavailable {
		t.Fatalf("before the first round: %v, want 503", err)
	}
}

// A root-scoped request (no namespace) is a 400 saying to ask per namespace: it was a 503, which reads as
// a value coming back later.
func TestWorkloadMetricWithoutNamespace(t *testing.T) {
	p := NewProvider(fixture(), nil)
	for _, gr := range []string{"deployments.apps", "pods"} {
		metric := DesiredReplicas
		if gr == "pods" {
			metric = PrefillVelocity
		}
		_, err := p.GetMetricByName(context.Background(), types.NamespacedName{Name: "llama-prefill"}, info(gr, metric), labels.Everything())
		if !apierr.IsBadRequest(err) || !strings.Contains(err.Error(), "/namespaces/<namespace>/") {
			t.Errorf("%s without a namespace: %v; want a 400 saying where to ask", gr, err)
		}
	}
	// A root-scoped selector query (/apis/custom.metrics.k8s.io/v1beta2/pods/*/<metric>) is the same 400:
	// it was a 404 saying no pod matches.
	sel, _ := labels.Parse("llm-d.ai/role=prefill")
	if _, err := p.GetMetricBySelector(context.Background(), "", sel, info("pods", PrefillVelocity), labels.Everything()); !apierr.IsBadRequest(err) || !strings.Contains(err.Error(), "/namespaces/<namespace>/pods/") {
		t.Errorf("pods by selector without a namespace: %v; want a 400 saying where to ask", err)
	}
	// Metrics on the namespace object itself are root-scoped by nature: not served, a 404.
	in := provider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "namespaces"}, Metric: DesiredReplicas}
	if _, err := p.GetMetricByName(context.Background(), types.NamespacedName{Name: "llm"}, in, labels.Everything()); !apierr.IsNotFound(err) {
		t.Errorf("a namespace's metric: %v; want a 404", err)
	}
}

// A served metric asked on a resource tokenscale does not serve (deployments without its group, a custom
// scale target) is a 404 naming the resources served, not one saying the metric is unknown.
func TestWorkloadMetricOnAnUnservedResource(t *testing.T) {
	p := NewProvider(fixture(), nil)
	for _, gr := range []schema.GroupResource{{Resource: "deployments"}, {Group: "argoproj.io", Resource: "rollouts"}} {
		in := provider.CustomMetricInfo{GroupResource: gr, Namespaced: true, Metric: DesiredReplicas}
		_, err := p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "llm", Name: "llama-prefill"}, in, labels.Everything())
		if !apierr.IsNotFound(err) || !strings.Contains(err.Error(), "deployments.apps, statefulsets.apps") || !strings.Contains(err.Error(), "not on "+gr.String()) {
			t.Errorf("%s: %v; want a 404 naming the resources served", gr, err)
		}
	}
	// LeaderWorkerSet is served only while its CRD exists, as discovery lists it: it was answered without.
	lwsGR := schema.GroupResource{Group: "leaderworkerset.x-k8s.io", Resource: "leaderworkersets"}
	for _, crd := range []bool{false, true} {
		in := provider.CustomMetricInfo{GroupResource: lwsGR, Namespaced: true, Metric: DesiredReplicas}
		_, err := NewProvider(fixture(), func() bool { return crd }).GetMetricByName(context.Background(), types.NamespacedName{Namespace: "llm", Name: "llama-prefill"}, in, labels.Everything())
		if unserved := strings.Contains(fmt.Sprint(err), "not on "+lwsGR.String()); unserved == crd {
			t.Errorf("LeaderWorkerSet with its CRD %v: %v; want it refused as not served only without the CRD", crd, err)
		}
	}
	in := provider.CustomMetricInfo{GroupResource: schema.GroupResource{Group: "apps", Resource: "deployments"}, Namespaced: true, Metric: "tokenscale_nope"}
	if _, err := p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "llm", Name: "llama-prefill"}, in, labels.Everything()); !apierr.IsNotFound(err) || !strings.Contains(err.Error(), "metric tokenscale_nope") {
		t.Errorf("an unknown metric: %v; want the 404 listing the metrics", err)
	}
}

// A pods query whose pool's pods are all starting is a 503 naming the pool: it was a 404 ("no tracked
// pod matches"), while the same pool's workload metric answered 503.
func TestPodsSelectorOnAPoolWithNoReadyPods(t *testing.T) {
	src := fixture()
	src.snap.Matching = map[service.PoolKey]int{{Namespace: "llm", Name: "prefill"}: 2}
	src.snap.PodLabels = map[store.PodKey]map[string]string{} // no Ready pod
	delete(src.snap.Pools, service.PoolKey{Namespace: "llm", Name: "prefill"})
	p := NewProvider(src, nil)
	sel, _ := labels.Parse("llm-d.ai/role=prefill")
	_, err := p.GetMetricBySelector(context.Background(), "llm", sel, info("pods", PrefillVelocity), labels.Everything())
	if status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "prefill (2 pods)") {
		t.Errorf("pods of a pool with none Ready: %v; want a 503 naming the pool", err)
	}
	// No selector is every pod of the namespace (kubectl get --raw without labelSelector): the pool's too.
	if _, err := p.GetMetricBySelector(context.Background(), "llm", labels.Everything(), info("pods", PrefillVelocity), labels.Everything()); status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "prefill (2 pods)") {
		t.Errorf("no selector: %v; want a 503 naming the pool", err)
	}
	// An HPA's selector is its workload's: the pool's label beside the workload's own.
	sel, _ = labels.Parse("app=llama-prefill,llm-d.ai/role=prefill")
	if _, err := p.GetMetricBySelector(context.Background(), "llm", sel, info("pods", PrefillVelocity), labels.Everything()); status(err) != http.StatusServiceUnavailable {
		t.Errorf("the workload's selector: %v; want a 503 naming the pool", err)
	}
	// Selectors that do not pick the pool stay a 404: another key only, one that excludes, another role.
	for _, s := range []string{"app=other", "app!=x", "!foo", "llm-d.ai/role=decode", "app=llama-prefill,llm-d.ai/role!=prefill"} {
		sel, _ = labels.Parse(s)
		if _, err := p.GetMetricBySelector(context.Background(), "llm", sel, info("pods", PrefillVelocity), labels.Everything()); !apierr.IsNotFound(err) {
			t.Errorf("%q: %v; want a 404", s, err)
		}
	}
	// A pool with a fixed namespace has an instance without Ready pods: still a 503.
	src.snap.ConfigPools[0].Namespace = "llm"
	src.snap.Pools[service.PoolKey{Namespace: "llm", Name: "prefill"}] = &service.PoolView{Key: service.PoolKey{Namespace: "llm", Name: "prefill"}, Config: &src.snap.ConfigPools[0],
		Err: errors.New("pool prefill: no pods")}
	sel, _ = labels.Parse("llm-d.ai/role=prefill")
	if _, err := p.GetMetricBySelector(context.Background(), "llm", sel, info("pods", PrefillVelocity), labels.Everything()); status(err) != http.StatusServiceUnavailable {
		t.Errorf("a fixed-namespace pool without Ready pods: %v; want a 503", err)
	}
}

// A workload's pool whose pods are all starting says how many it has on both APIs, whether the pool is
// fixed to the namespace (an instance without Ready pods) or not (no instance): the fixed one said
// "(no pods)".
func TestPoolOfStartingPodsSaysItsCount(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		cfg := config.Default()
		cfg.Pools[0].Workload.Name = "llama-prefill"
		if fixed {
			cfg.Pools[0].Namespace = "llm"
		}
		var pods []service.Pod
		for _, name := range []string{"a", "b", "c"} {
			pods = append(pods, service.Pod{Key: store.PodKey{Namespace: "llm", Name: name}, Labels: map[string]string{"llm-d.ai/role": "prefill"}, IP: "10.0.0.1"})
		}
		src := &fakeSource{snap: service.Decide(cfg, service.Assign(cfg, pods), nil, policy.NewController(), time.Now())}
		_, err := NewProvider(src, nil).GetMetricByName(context.Background(), types.NamespacedName{Namespace: "llm", Name: "llama-prefill"}, info("deployments.apps", DesiredReplicas), labels.Everything())
		if status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "3 pods, none Ready") {
			t.Errorf("custom, namespace fixed %v: %v; want a 503 with the pod count", fixed, err)
		}
		_, err = NewExternal(src).GetExternalMetric(context.Background(), "llm", labels.SelectorFromSet(labels.Set{LabelPool: "prefill"}), provider.ExternalMetricInfo{Metric: DesiredReplicas})
		if status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "3 pods, none Ready") {
			t.Errorf("external, namespace fixed %v: %v; want a 503 with the pod count", fixed, err)
		}
		// One of those pods read alone is unknown too, as a selector query over it says, not absent.
		_, err = NewProvider(src, nil).GetMetricByName(context.Background(), types.NamespacedName{Namespace: "llm", Name: "a"}, info("pods", PrefillVelocity), labels.Everything())
		if status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "pod of pool llm/prefill that is not Ready") {
			t.Errorf("a starting pod read alone, namespace fixed %v: %v; want a 503 naming its pool", fixed, err)
		}
		_, err = NewProvider(src, nil).GetMetricByName(context.Background(), types.NamespacedName{Namespace: "llm", Name: "z"}, info("pods", PrefillVelocity), labels.Everything())
		if !apierr.IsNotFound(err) {
			t.Errorf("a pod of no pool, namespace fixed %v: %v; want a 404", fixed, err)
		}
	}
}

// Text from a request is clipped in every error: a metric selector of 10,000 requirements and a metric
// name of 100 KiB were echoed whole.
func TestErrorsStayShort(t *testing.T) {
	const limit = 1024
	var long string // set below to each of texts: the calls read it when made
	texts := []string{strings.Repeat("m", 100<<10), strings.Repeat("\x01", 100<<10), strings.Repeat("\x1b]0;x\x07\"", 10<<10),
		strings.Repeat("\u202e\u05fb\u200b", 10<<10)} // a bidirectional override, an unassigned and a zero-width character
	odd := strings.Repeat("\x01", 100<<10) // quoted, each byte is written as four
	var reqs []string
	for i := range 10000 {
		reqs = append(reqs, fmt.Sprintf("k%d=v", i))
	}
	huge, err := labels.Parse(strings.Join(reqs, ","))
	if err != nil {
		t.Fatal(err)
	}
	// About the most a selector within the bounds holds: 64 requirements on the longest keys, 256 values,
	// most of them of the longest.
	reqs = reqs[:0]
	for i := range maxSelectorRequirements - 1 {
		reqs = append(reqs, fmt.Sprintf("%s/k%03d%s!=v", strings.Repeat("d", 253), i, strings.Repeat("k", 59)))
	}
	var vals []string
	for i := range maxSelectorValues - len(reqs) {
		vals = append(vals, fmt.Sprintf("p%03d%s", i, strings.Repeat("v", 59)))
	}
	wide, err := labels.Parse(strings.Join(reqs, ",") + ",pool in (" + strings.Join(vals, ",") + ")")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := NewProvider(fixture(), func() bool { return true })
	e := NewExternal(fixture())
	var gr schema.GroupResource
	calls := map[string]func() error{
		"unknown pods metric": func() error {
			_, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "p1"}, provider.CustomMetricInfo{GroupResource: podsGR, Namespaced: true, Metric: long}, labels.Everything())
			return err
		},
		"unknown metric on an unknown resource": func() error {
			_, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "x"}, provider.CustomMetricInfo{GroupResource: gr, Namespaced: true, Metric: long}, labels.Everything())
			return err
		},
		"served metric on an unknown resource": func() error {
			_, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "x"}, provider.CustomMetricInfo{GroupResource: gr, Namespaced: true, Metric: DesiredReplicas}, labels.Everything())
			return err
		},
		"metric selector": func() error {
			_, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "llama-prefill"}, info("deployments.apps", DesiredReplicas), huge)
			return err
		},
		"root-scoped": func() error {
			_, err := p.GetMetricByName(ctx, types.NamespacedName{Name: "x"}, provider.CustomMetricInfo{GroupResource: podsGR, Metric: long}, labels.Everything())
			return err
		},
		"untracked pod": func() error {
			_, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: long, Name: long}, info("pods", PrefillVelocity), labels.Everything())
			return err
		},
		"mapped workload without Ready pods": func() error {
			_, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: long, Name: "llama-embed"}, info("deployments.apps", DesiredReplicas), labels.Everything())
			return err
		},
		"unmapped workload": func() error {
			_, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: long, Name: long}, info("deployments.apps", DesiredReplicas), labels.Everything())
			return err
		},
		"pods by selector, metric selector": func() error {
			_, err := p.GetMetricBySelector(ctx, "llm", labels.Everything(), info("pods", PrefillVelocity), huge)
			return err
		},
		"pods by selector, unknown resource": func() error {
			_, err := p.GetMetricBySelector(ctx, "llm", labels.Everything(), provider.CustomMetricInfo{GroupResource: gr, Metric: long}, labels.Everything())
			return err
		},
		"pods by selector, unknown metric": func() error {
			_, err := p.GetMetricBySelector(ctx, "llm", labels.Everything(), provider.CustomMetricInfo{GroupResource: podsGR, Metric: long}, labels.Everything())
			return err
		},
		"pods by selector, too many requirements": func() error {
			_, err := p.GetMetricBySelector(ctx, "llm", huge, info("pods", PrefillVelocity), labels.Everything())
			return err
		},
		"pods by selector, none matches": func() error {
			_, err := p.GetMetricBySelector(ctx, odd, wide, info("pods", PrefillVelocity), labels.Everything())
			return err
		},
		"external, unknown metric": func() error {
			_, err := e.GetExternalMetric(ctx, "llm", labels.Everything(), provider.ExternalMetricInfo{Metric: long})
			return err
		},
		"external, too many requirements": func() error {
			_, err := e.GetExternalMetric(ctx, "llm", huge, provider.ExternalMetricInfo{Metric: DesiredReplicas})
			return err
		},
		"external, unknown pools": func() error {
			_, err := e.GetExternalMetric(ctx, odd, wide, provider.ExternalMetricInfo{Metric: DesiredReplicas})
			return err
		},
		"external, no pool matches": func() error {
			_, err := e.GetExternalMetric(ctx, odd, labels.SelectorFromSet(labels.Set{LabelRole: "embed"}), provider.ExternalMetricInfo{Metric: DesiredReplicas})
			return err
		},
	}
	for i, text := range texts {
		long, gr = text, schema.GroupResource{Group: text, Resource: text}
		for name, call := range calls {
			err := call()
			if err == nil {
				t.Errorf("%s: no error", name)
				continue
			}
			if n := len(err.Error()); n >= limit {
				t.Errorf("%s, names of text %d: a %d-byte error, want under %d: %.300q...", name, i, n, limit, err)
			}
			if strings.IndexFunc(err.Error(), func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) }) >= 0 {
				t.Errorf("%s, names of text %d: a character that is not printable reached the message: %.300q", name, i, err)
			}
			var se *apierr.StatusError
			if errors.As(err, &se) && se.ErrStatus.Details != nil && len(se.ErrStatus.Details.Name) > 300 {
				t.Errorf("%s, names of text %d: details name of %d bytes", name, i, len(se.ErrStatus.Details.Name))
			}
		}
	}
}

// A pods query's labelSelector matches the labels tokenscale reads a pod's pool from: a converted
// decoder, relabelled llm-d.ai/role=prefill-decode by the label actuator, keeps its role from before the
// conversion (docs/metrics.md), so a selector on its current label finds nothing.
func TestPodsSelectorMatchesPoolLabels(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "llm", Name: "d1", Labels: map[string]string{"llm-d.ai/role": "prefill-decode"},
			Annotations: map[string]string{protocol.AnnotationConvertedFrom: "llm-d.ai/role=decode"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	l, factory, err := kubepods.New(fake.NewClientset(pod), "", "llm-d.ai/role", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard on the sync
	defer cancel()
	factory.Start(ctx.Done())
	if !l.WaitForSync(ctx) {
		t.Fatal("cache did not sync")
	}
	cfg := config.Default()
	now := time.Now()
	key := store.PodKey{Namespace: "llm", Name: "d1"}
	snap := service.Decide(cfg, service.Assign(cfg, l.Pods()), []store.Result{{Velocity: store.Velocity{Pod: key, Time: now, DecodeTPS: 100}}}, policy.NewController(), now)
	p := NewProvider(&fakeSource{snap: snap}, nil)
	sel, _ := labels.Parse("llm-d.ai/role=decode")
	if list, err := p.GetMetricBySelector(ctx, "llm", sel, info("pods", DecodeVelocity), labels.Everything()); err != nil || len(list.Items) != 1 {
		t.Errorf("the converted decoder by its pool's label: %v, %v; want its value", list, err)
	}
	sel, _ = labels.Parse("llm-d.ai/role=prefill-decode")
	if _, err := p.GetMetricBySelector(ctx, "llm", sel, info("pods", DecodeVelocity), labels.Everything()); !apierr.IsNotFound(err) {
		t.Errorf("the converted decoder by its current label: %v; want a 404, as documented", err)
	}
}

// A metric tokenscale does not serve on the request's resource is a 404 whatever the request's shape (a
// selector, no namespace): the shape's 400s came first and gave advice for a metric that does not exist
// there ("no_such_metric is served per workload object"). Only a workload metric asked by selector of a
// served workload resource is the 400.
func TestUnservedMetricsAre404WhateverTheShape(t *testing.T) {
	p := NewProvider(fixture(), nil)
	ctx := context.Background()
	deploy := schema.GroupResource{Group: "apps", Resource: "deployments"}
	sel := labels.SelectorFromSet(labels.Set{"a": "b"})
	for _, tc := range []struct {
		name string
		call func() error
		want int32
	}{
		{"unknown metric by selector on deployments.apps", func() error {
			_, err := p.GetMetricBySelector(ctx, "llm", labels.Everything(), provider.CustomMetricInfo{GroupResource: deploy, Namespaced: true, Metric: "no_such_metric"}, labels.Everything())
			return err
		}, http.StatusNotFound},
		{"workload metric by selector on deployments without .apps", func() error {
			_, err := p.GetMetricBySelector(ctx, "llm", labels.Everything(), provider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "deployments"}, Namespaced: true, Metric: DesiredReplicas}, labels.Everything())
			return err
		}, http.StatusNotFound},
		{"pods metric by selector on deployments.apps", func() error {
			_, err := p.GetMetricBySelector(ctx, "llm", labels.Everything(), provider.CustomMetricInfo{GroupResource: deploy, Namespaced: true, Metric: PrefillVelocity}, labels.Everything())
			return err
		}, http.StatusNotFound},
		{"unknown pods metric without a namespace", func() error {
			_, err := p.GetMetricByName(ctx, types.NamespacedName{Name: "x"}, provider.CustomMetricInfo{GroupResource: podsGR, Metric: "bogus"}, labels.Everything())
			return err
		}, http.StatusNotFound},
		{"unknown metric with a metric selector", func() error {
			_, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "p1"}, provider.CustomMetricInfo{GroupResource: podsGR, Namespaced: true, Metric: "bogus"}, sel)
			return err
		}, http.StatusNotFound},
		{"workload metric by selector on deployments.apps", func() error {
			_, err := p.GetMetricBySelector(ctx, "llm", labels.Everything(), info("deployments.apps", DesiredReplicas), labels.Everything())
			return err
		}, http.StatusBadRequest},
		{"pods metric without a namespace", func() error {
			_, err := p.GetMetricByName(ctx, types.NamespacedName{Name: "x"}, provider.CustomMetricInfo{GroupResource: podsGR, Metric: PrefillVelocity}, labels.Everything())
			return err
		}, http.StatusBadRequest},
	} {
		if err := tc.call(); status(err) != tc.want {
			t.Errorf("%s: %v; want %d", tc.name, err, tc.want)
		}
	}
}

// A pod's rates are taken between its last two scrapes, so its values' window is the scrape interval in
// whole seconds, rounded up: it was 1 s at every interval.
func TestPodValuesWindowIsTheScrapeInterval(t *testing.T) {
	sel, _ := labels.Parse("llm-d.ai/role=prefill")
	for _, c := range []struct {
		interval time.Duration
		want     int64
	}{{0, 1}, {500 * time.Millisecond, 1}, {time.Second, 1}, {1500 * time.Millisecond, 2}, {15 * time.Second, 15}} {
		p := NewProvider(fixture(), nil)
		if c.interval > 0 {
			p.RatesOver(c.interval)
		}
		list, err := p.GetMetricBySelector(context.Background(), "llm", sel, info("pods", PrefillVelocity), labels.Everything())
		if err != nil {
			t.Fatal(err)
		}
		one, err := p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "llm", Name: "p1"}, info("pods", PrefillVelocity), labels.Everything())
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []*int64{list.Items[0].WindowSeconds, one.WindowSeconds} {
			if w == nil || *w != c.want {
				t.Errorf("interval %s: WindowSeconds %v, want %d", c.interval, w, c.want)
			}
		}
	}
}
