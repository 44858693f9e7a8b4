package collector

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// matrixQuerier answers every query with its matrix.
type matrixQuerier struct{ m model.Matrix }

func (q *matrixQuerier) Query(context.Context, string, time.Time, ...promv1.Option) (model.Value, promv1.Warnings, promv1.Infos, error) {
	return q.m, nil, nil, nil
}

// pageAt is one pod's vLLM series with two samples, at t-15 s and t.
func pageAt(pod string, t time.Time, prompt0, prompt1 float64) model.Matrix {
	var m model.Matrix
	for name, v := range map[string][2]float64{
		"vllm:prompt_tokens_total": {prompt0, prompt1}, "vllm:generation_tokens_total": {100, 200},
		"vllm:num_requests_waiting": {0, 0}, "vllm:num_requests_running": {1, 1},
	} {
		m = append(m, &model.SampleStream{
			Metric: model.Metric{model.MetricNameLabel: model.LabelValue(name), "namespace": "ns", "pod": model.LabelValue(pod)},
			Values: []model.SamplePair{
				{Timestamp: model.TimeFromUnixNano(t.Add(-15 * time.Second).UnixNano()), Value: model.SampleValue(v[0])},
				{Timestamp: model.TimeFromUnixNano(t.UnixNano()), Value: model.SampleValue(v[1])},
			},
		})
	}
	return m
}

// A sample stamped far ahead of this clock would stay the pod's newest, and so read as fresh, until the
// clock caught up with it: it is refused with an error naming the endpoint, and the pod goes stale.
func TestPrometheusSourceRefusesFutureSamples(t *testing.T) {
	now := time.Unix(1700000000, 0)
	st := store.New(store.Options{StaleAfter: 45 * time.Second}, func() time.Time { return now })
	q := &matrixQuerier{}
	src := NewPrometheusSource(q, st, time.Second, 45*time.Second, engine.Auto, nil)
	src.now = func() time.Time { return now }
	src.Name = "http://prom:9090"
	p, future := store.PodKey{Namespace: "ns", Name: "p"}, store.PodKey{Namespace: "ns", Name: "f"}

	q.m = append(pageAt("p", now, 0, 15000), pageAt("f", now.Add(100*365*24*time.Hour), 0, 15000)...)
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, err := st.Get(p); err != nil || v.PrefillTPS < 999 || v.PrefillTPS > 1001 {
		t.Fatalf("pod stamped now: PrefillTPS %v, %v; want 1000", v.PrefillTPS, err)
	}
	if _, err := st.Get(future); err == nil || !strings.Contains(err.Error(), "ahead of this clock") || !strings.Contains(err.Error(), "http://prom:9090") {
		t.Fatalf("pod stamped a century ahead: %v; want an error naming the endpoint and the clock", err)
	}

	// p's next answer is from the future: it is not taken, and once p's last good sample is older than
	// the staleness bound p is unknown, saying why, instead of frozen at the future sample's values.
	q.m = pageAt("p", now.Add(time.Hour), 15000, 1e6)
	now = now.Add(46 * time.Second)
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(p); !errors.Is(err, store.ErrStale) || !strings.Contains(err.Error(), "ahead of this clock") {
		t.Fatalf("after a future answer: %v; want stale with the clock as the last error", err)
	}
	// A sample within MaxClockSkew of this clock is an ordinary one.
	q.m = pageAt("p", now.Add(MaxClockSkew/2), 15000, 30000)
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(p); err != nil {
		t.Fatalf("a sample %s ahead: %v", MaxClockSkew/2, err)
	}
}

// When this process's clock steps back, Prometheus' next samples look ahead and are refused, and the pod's
// last recorded sample, stamped by Prometheus' clock, looks newer than now: it was served as fresh,
// frozen, for as long as the step (an hour here). It is stale, saying why.
func TestPrometheusSourceClockStepBack(t *testing.T) {
	now := time.Unix(1700000000, 0)
	clock := func() time.Time { return now }
	st := store.New(store.Options{StaleAfter: 45 * time.Second}, clock)
	q := &matrixQuerier{m: pageAt("p", now, 0, 15000)}
	src := NewPrometheusSource(q, st, time.Second, 45*time.Second, engine.Auto, nil)
	src.now = clock
	p := store.PodKey{Namespace: "ns", Name: "p"}
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(p); err != nil {
		t.Fatal(err)
	}
	q.m = pageAt("p", now.Add(time.Second), 15000, 16000) // Prometheus' next scrape, by its clock
	now = now.Add(-time.Hour)                             // this clock steps back
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, err := st.Get(p); !errors.Is(err, store.ErrStale) || !strings.Contains(err.Error(), "ahead of this clock") {
		t.Fatalf("after this clock stepped back an hour: PrefillTPS %v, err %v; want stale naming the clocks", v.PrefillTPS, err)
	}
}

// A pod's plausible rate (its pool's) applies to counters read from Prometheus as to scraped ones: the
// absolute cap alone let a jump of 1e6 tokens in 15 s become the pod's rate.
func TestPrometheusSourceAppliesRateLimits(t *testing.T) {
	now := time.Unix(1700000000, 0)
	st := store.New(store.Options{StaleAfter: 45 * time.Second}, func() time.Time { return now })
	q := &matrixQuerier{m: pageAt("p", now, 0, 15000)}
	src := NewPrometheusSource(q, st, time.Second, 45*time.Second, engine.Auto, nil)
	src.now = func() time.Time { return now }
	src.RateLimit = func(store.PodKey) store.Limit { return store.Limit{Tokens: 20000} }
	p := store.PodKey{Namespace: "ns", Name: "p"}
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(p); err != nil {
		t.Fatalf("1,000 tokens/s under a 20,000 limit: %v", err)
	}
	now = now.Add(15 * time.Second)
	q.m = pageAt("p", now, 15000, 15000+1e6)
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, err := st.Get(p); !errors.Is(err, store.ErrImplausible) {
		t.Fatalf("66,667 tokens/s under a 20,000 limit: PrefillTPS %v, err %v; want ErrImplausible", v.PrefillTPS, err)
	}
}

// A pool's configured engine applies to its pods read from Prometheus, as to scraped ones: a pool that
// says sglang does not have its pods' vLLM series read as vLLM.
func TestPrometheusSourceUsesThePoolsEngine(t *testing.T) {
	now := time.Unix(1700000000, 0)
	st := store.New(store.Options{StaleAfter: 45 * time.Second}, func() time.Time { return now })
	src := NewPrometheusSource(&matrixQuerier{m: pageAt("p", now, 0, 15000)}, st, time.Second, 45*time.Second, engine.Auto, nil)
	src.now = func() time.Time { return now }
	p := store.PodKey{Namespace: "ns", Name: "p"}
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, err := st.Get(p); err != nil || v.Engine != engine.VLLM {
		t.Fatalf("auto: engine %q, %v; want vllm detected", v.Engine, err)
	}
	st = store.New(store.Options{StaleAfter: 45 * time.Second}, func() time.Time { return now })
	src = NewPrometheusSource(&matrixQuerier{m: pageAt("p", now, 0, 15000)}, st, time.Second, 45*time.Second, engine.Auto, nil)
	src.now = func() time.Time { return now }
	src.Engine = func(store.PodKey) engine.Kind { return engine.SGLang }
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(p); err == nil || !strings.Contains(err.Error(), "forced engine sglang") {
		t.Fatalf("a pool configured as sglang with vLLM series: %v; want the forced engine's error", err)
	}
}
