package adapter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	apierr "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// A selector that names pools on the pool label, or by their workload, gets a 503 naming any of them with
// no Ready pods in the namespace, even beside pools that answered: their sum alone would be partial. Selectors naming no pool
// keep the documented answer (the pools with Ready pods). Fails if the check runs only on an empty answer
// (the mixed selections then get prefill's value alone, a 200) or for selectors naming no pool.
func TestExternalMetricsNamedPoolWithoutReadyPods(t *testing.T) {
	src := fixture()
	// The config's prefill and decode pools have no namespace; decode has no Ready pods in llm (scaled to
	// zero), so the round has no view of it there.
	delete(src.snap.Pools, service.PoolKey{Namespace: "llm", Name: "decode"})
	e := NewExternal(src)
	get := func(s string) (int, error) {
		t.Helper()
		sel, err := labels.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		list, err := e.GetExternalMetric(context.Background(), "llm", sel, provider.ExternalMetricInfo{Metric: DesiredReplicas})
		if err != nil {
			return 0, err
		}
		return len(list.Items), nil
	}
	for _, s := range []string{"pool in (prefill,decode)", "pool in (decode, prefill),role!=both", "pool=decode", "pool==decode",
		"workload in (llama-prefill,llama-decode)", "workload=llama-decode"} {
		n, err := get(s)
		if status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "pool decode matches") || !strings.Contains(err.Error(), "no Ready pods") {
			t.Errorf("%q: %d items, %v; want a 503 naming decode", s, n, err)
		}
	}
	// The pool names both, another requirement drops decode: prefill alone is the whole selection.
	for _, s := range []string{"", "role=prefill", "pool=prefill", "pool in (prefill,decode),role=prefill", "pool notin (decode)"} {
		if n, err := get(s); err != nil || n != 1 {
			t.Errorf("%q: %d items, %v; want prefill's value alone", s, n, err)
		}
	}
	// Two named pools without Ready pods are both named; a configured pool the selector does not name
	// (embed) is not.
	if _, err := get("pool in (prefill,decode,embed)"); status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "pool decode, embed matches") {
		t.Errorf("two named pools without Ready pods: %v; want a 503 naming both", err)
	}
}

// A selector naming a pool, workload or role no config has (a typo) is a 404 naming each such value, even
// beside configured pools that answer: prefill's value alone would be a partial sum with no error
// anywhere. Fails if the unknown name is ignored (a 200 with prefill's value).
func TestExternalMetricsNamedPoolNotConfigured(t *testing.T) {
	src := fixture()
	e := NewExternal(src)
	for _, c := range []struct{ sel, want string }{
		{"pool in (prefill,decod)", "names pool decod, which no tokenscale pool config has"},
		{"pool in (prefill,nope)", "names pool nope,"},
		{"pool in (prefill,nope,decod),role=prefill", "names pool decod, nope,"},
		{"pool=nope", "names pool nope,"},
		// The same on the other labels a sum is selected by: a typoed workload or role left the pools
		// the other values name answering alone.
		{"workload in (llama-prefill,llama-prefil)", "names workload llama-prefil,"},
		{"role in (prefill,decod)", "names role decod,"},
		{"pool in (prefill,nope),workload=llama-decod,role==prefil", "names pool nope; workload llama-decod; role prefil,"},
	} {
		sel, err := labels.Parse(c.sel)
		if err != nil {
			t.Fatal(err)
		}
		list, err := e.GetExternalMetric(context.Background(), "llm", sel, provider.ExternalMetricInfo{Metric: DesiredReplicas})
		if !apierr.IsNotFound(err) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `in namespace \"llm\"`) {
			t.Errorf("%q: %v, %v; want a 404 containing %q", c.sel, list, err, c.want)
		}
	}
	// A pool with a fixed namespace is configured only there: named elsewhere it is unknown.
	src.snap.ConfigPools = append(src.snap.ConfigPools, config.Pool{Name: "team-only", Namespace: "team"})
	sel, _ := labels.Parse("pool in (prefill,team-only)")
	if _, err := e.GetExternalMetric(context.Background(), "llm", sel, provider.ExternalMetricInfo{Metric: DesiredReplicas}); !apierr.IsNotFound(err) || !strings.Contains(err.Error(), "team-only") {
		t.Errorf("a pool fixed to another namespace: %v; want a 404 naming it", err)
	}
	// A configured pool with no Ready pods keeps its answer, a 503 (TestExternalMetricsNamedPoolWithoutReadyPods).
	delete(src.snap.Pools, service.PoolKey{Namespace: "llm", Name: "decode"})
	sel, _ = labels.Parse("pool in (prefill,decode)")
	if _, err := e.GetExternalMetric(context.Background(), "llm", sel, provider.ExternalMetricInfo{Metric: DesiredReplicas}); status(err) != http.StatusServiceUnavailable {
		t.Errorf("a configured pool without Ready pods: %v; want a 503", err)
	}
}

// A pool with pods here that are all not Ready (a rolling restart) is unknown whatever the selector: a
// selector naming no pool got prefill's value alone, a partial sum, while the custom API and the KEDA
// scaler answered 503 and Unavailable for the same pool.
func TestExternalMetricsPoolWithPodsNoneReady(t *testing.T) {
	src := fixture()
	delete(src.snap.Pools, service.PoolKey{Namespace: "llm", Name: "decode"})
	src.snap.Matching = map[service.PoolKey]int{{Namespace: "llm", Name: "prefill"}: 2, {Namespace: "llm", Name: "decode"}: 3}
	e := NewExternal(src)
	for _, s := range []string{"", "role!=both", "pool!=embed"} {
		sel, _ := labels.Parse(s)
		_, err := e.GetExternalMetric(context.Background(), "llm", sel, provider.ExternalMetricInfo{Metric: DesiredReplicas})
		if status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "decode (3 pods, none Ready)") {
			t.Errorf("%q: %v; want a 503 naming decode and its 3 pods", s, err)
		}
	}
	// A selection that leaves decode out is prefill's value alone.
	sel, _ := labels.Parse("role=prefill")
	if list, err := e.GetExternalMetric(context.Background(), "llm", sel, provider.ExternalMetricInfo{Metric: DesiredReplicas}); err != nil || len(list.Items) != 1 {
		t.Errorf("role=prefill: %v, %v; want prefill's value", list, err)
	}
}

// Of two pools whose values are unknown the same one is named every time (map order chose it).
func TestExternalMetricsErrorIsStable(t *testing.T) {
	src := fixture()
	src.snap.Pools[service.PoolKey{Namespace: "llm", Name: "prefill"}].HasDesired = false
	src.snap.Pools[service.PoolKey{Namespace: "llm", Name: "prefill"}].Err = errors.New("pool prefill: stale")
	e := NewExternal(src)
	seen := map[string]bool{}
	for range 50 {
		_, err := e.GetExternalMetric(context.Background(), "llm", labels.Everything(), provider.ExternalMetricInfo{Metric: DesiredReplicas})
		if err == nil {
			t.Fatal("two unknown pools answered")
		}
		seen[err.Error()] = true
	}
	if len(seen) != 1 {
		t.Errorf("%d different errors for the same request: %v", len(seen), seen)
	}
}

// A selector past the bounds is a 400 before any pod is matched against it, on both APIs.
func TestHugeSelectorsRefused(t *testing.T) {
	src := fixture()
	var reqs []string
	for i := range maxSelectorRequirements + 1 {
		reqs = append(reqs, fmt.Sprintf("k%d!=v", i))
	}
	many, err := labels.Parse(strings.Join(reqs, ","))
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for i := range maxSelectorValues + 1 {
		vals = append(vals, fmt.Sprintf("p%d", i))
	}
	wide, err := labels.Parse("pool in (" + strings.Join(vals, ",") + ")")
	if err != nil {
		t.Fatal(err)
	}
	for name, sel := range map[string]labels.Selector{"requirements": many, "values": wide} {
		if _, err := NewExternal(src).GetExternalMetric(context.Background(), "llm", sel, provider.ExternalMetricInfo{Metric: DesiredReplicas}); !apierr.IsBadRequest(err) {
			t.Errorf("external, too many %s: %v; want a 400", name, err)
		}
		if _, err := NewProvider(src, nil).GetMetricBySelector(context.Background(), "llm", sel, info("pods", PrefillVelocity), labels.Everything()); !apierr.IsBadRequest(err) {
			t.Errorf("custom pods, too many %s: %v; want a 400", name, err)
		}
	}
	// At the bounds they are served.
	ok, _ := labels.Parse("pool in (" + strings.Join(vals[:maxSelectorValues], ",") + ")")
	if _, err := NewExternal(src).GetExternalMetric(context.Background(), "llm", ok, provider.ExternalMetricInfo{Metric: DesiredReplicas}); apierr.IsBadRequest(err) || !strings.Contains(err.Error(), "and 246 more") {
		t.Errorf("%d values: %v; want the 404 for unknown pools, its list clipped", maxSelectorValues, err)
	}
}

// A number a pool's role lacks (conversions on a prefill pool) is no item of the external metric, as it
// has no series on /metrics, and a 400 where the selector names that pool; on the custom metrics API,
// a 400 for the prefill workload. It was served as 0, which a trigger read as an idle pool.
func TestNumbersARoleLacksAreNotZero(t *testing.T) {
	src := fixture()
	dk := service.PoolKey{Namespace: "llm", Name: "decode"}
	decode := *src.snap.Pools[dk]
	decode.Err, decode.Conversions = nil, 2
	src.snap.Pools[dk] = &decode
	e := NewExternal(src)
	get := func(s string) (map[string]int64, error) {
		t.Helper()
		sel, err := labels.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		list, err := e.GetExternalMetric(context.Background(), "llm", sel, provider.ExternalMetricInfo{Metric: Conversions})
		if err != nil {
			return nil, err
		}
		out := map[string]int64{}
		for _, it := range list.Items {
			out[it.MetricLabels[LabelPool]] = it.Value.Value()
		}
		return out, nil
	}
	if got, err := get(""); err != nil || fmt.Sprint(got) != "map[decode:2]" {
		t.Errorf("every pool: %v, %v; want decode's 2 alone", got, err)
	}
	if got, err := get("pool=prefill"); status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "decode pool") {
		t.Errorf("pool=prefill: %v, %v; want a 400 saying the decode pool carries it", got, err)
	}
	// The same answers while the prefill pool has no Ready pods: the 400 does not wait for one.
	pk := service.PoolKey{Namespace: "llm", Name: "prefill"}
	prefill := src.snap.Pools[pk]
	delete(src.snap.Pools, pk)
	if got, err := get("pool in (prefill,decode)"); status(err) != http.StatusBadRequest {
		t.Errorf("pool in (prefill,decode), prefill at zero: %v, %v; want the 400", got, err)
	}
	p := NewProvider(src, nil)
	obj := types.NamespacedName{Namespace: "llm", Name: "llama-prefill"}
	if v, err := p.GetMetricByName(context.Background(), obj, info("deployments.apps", Conversions), labels.Everything()); status(err) != http.StatusBadRequest {
		t.Errorf("conversions of the prefill workload at zero: %v, %v; want a 400", v, err)
	}
	src.snap.Pools[pk] = prefill
	if v, err := p.GetMetricByName(context.Background(), obj, info("deployments.apps", Conversions), labels.Everything()); status(err) != http.StatusBadRequest {
		t.Errorf("conversions of the prefill workload: %v, %v; want a 400", v, err)
	}
	if v, err := p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "llm", Name: "llama-decode"}, info("deployments.apps", Conversions), labels.Everything()); err != nil || v.Value.Value() != 2 {
		t.Errorf("conversions of the decode workload: %v, %v; want 2", v, err)
	}
}
