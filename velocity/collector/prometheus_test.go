package collector

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
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

// podSamples is one pod's vLLM series as scraped at each of at, its prompt counter at prompt[i] and its
// generation counter at a tenth of it, stamped with target instance ("" leaves the label out).
func podSamples(pod, instance string, at []time.Time, prompt []float64) model.Matrix {
	var m model.Matrix
	for _, name := range []string{"vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:num_requests_waiting", "vllm:num_requests_running"} {
		s := &model.SampleStream{Metric: model.Metric{model.MetricNameLabel: model.LabelValue(name), "namespace": "ns", "pod": model.LabelValue(pod)}}
		if instance != "" {
			s.Metric["instance"] = model.LabelValue(instance)
		}
		for i, t := range at {
			v := map[string]float64{"vllm:prompt_tokens_total": prompt[i], "vllm:generation_tokens_total": prompt[i] / 10, "vllm:num_requests_running": 1}[name]
			s.Values = append(s.Values, model.SamplePair{Timestamp: model.TimeFromUnixNano(t.UnixNano()), Value: model.SampleValue(v)})
		}
		m = append(m, s)
	}
	return m
}

// queryRecorder answers every query with its matrix and keeps the queries.
type queryRecorder struct {
	m       model.Matrix
	queries []string
}

func (q *queryRecorder) Query(_ context.Context, query string, _ time.Time, _ ...promv1.Option) (model.Value, promv1.Warnings, promv1.Infos, error) {
	q.queries = append(q.queries, query)
	return q.m, nil, nil, nil
}

// Prometheus is asked for the pools' namespaces only, and for series that name a pod, over at most
// maxLookback: on a shared Prometheus other tenants' engines would fill the reply to its bound, and every
// pool would be unknown. With no pod in any pool nothing is asked and nothing is kept.
func TestPrometheusSourceAsksForThePoolsNamespaces(t *testing.T) {
	now := time.Unix(1700000000, 0)
	st := store.New(store.Options{StaleAfter: time.Hour}, func() time.Time { return now })
	q := &queryRecorder{m: pageAt("p", now, 0, 15000)}
	src := NewPrometheusSource(q, st, time.Second, time.Hour, engine.Auto, nil)
	src.now = func() time.Time { return now }
	namespaces := []string{"team.b", "ns"}
	src.Namespaces = func() []string { return namespaces }
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := `,namespace=~"ns|team\.b",pod!=""}[5m]`
	if len(q.queries) != 1 || !strings.HasSuffix(q.queries[0], want) || !strings.HasPrefix(q.queries[0], `{__name__=~"`) || !strings.Contains(q.queries[0], "vllm:prompt_tokens_total|") {
		t.Fatalf("queries %q; want one ending %s", q.queries, want)
	}
	if _, err := st.Get(store.PodKey{Namespace: "ns", Name: "p"}); err != nil {
		t.Fatal(err)
	}
	namespaces = nil
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(q.queries) != 1 {
		t.Errorf("with no pod in any pool Prometheus was asked %q", q.queries[1:])
	}
	if _, err := st.Get(store.PodKey{Namespace: "ns", Name: "p"}); err == nil {
		t.Errorf("a pod no pool holds any more is still served")
	}
	if got := NewPrometheusSource(q, st, time.Second, 45*time.Second, engine.Auto, nil).Query(); !strings.HasSuffix(got, `,namespace!="",pod!=""}[45s]`) {
		t.Errorf("query for any namespace: %s", got)
	}
}

// Two Prometheus replicas behind one Service answer with the same pod's scrapes moments apart: one prompt
// of 4,096 tokens finishing in 50 ms read as 81,920 tokens/s. An interval under minSampleGap, or under
// half the pod's usual one, is not made a rate: the pod keeps its rate until the next scrape.
func TestPrometheusSourceSkipsReplicasMomentsApart(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	now := t0
	st := store.New(store.Options{StaleAfter: 45 * time.Second, RiseTau: 500 * time.Millisecond, FallTau: 500 * time.Millisecond}, func() time.Time { return now })
	q := &matrixQuerier{}
	src := NewPrometheusSource(q, st, time.Second, 45*time.Second, engine.Auto, nil)
	src.now = func() time.Time { return now }
	p := store.PodKey{Namespace: "ns", Name: "p"}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	ms := time.Millisecond
	for i, c := range []struct {
		at     []time.Time
		prompt []float64
		want   float64 // PrefillTPS after the poll
	}{
		// Replica A: 15,000 tokens in 15 s.
		{[]time.Time{at(-15 * time.Second), at(0)}, []float64{0, 15000}, 1000},
		// Replica B, 50 ms behind A, a prompt of 4,096 more: held.
		{[]time.Time{at(-14950 * ms), at(50 * ms)}, []float64{0, 19096}, 1000},
		// Replica A again, 15 s on: 30,000 tokens in 15 s.
		{[]time.Time{at(0), at(15 * time.Second)}, []float64{15000, 45000}, 2000},
		// Replica B 900 ms after A: under minSampleGap, held.
		{[]time.Time{at(50 * ms), at(15900 * ms)}, []float64{19096, 46800}, 2000},
		// Replica B 3 s after A, where the pod's scrapes come 15 s apart: under half of that, held.
		{[]time.Time{at(50 * ms), at(18 * time.Second)}, []float64{19096, 54000}, 2000},
		// Replica A, 15 s after its last: 15,000 tokens in 15 s.
		{[]time.Time{at(15 * time.Second), at(30 * time.Second)}, []float64{45000, 60000}, 1000},
	} {
		now = c.at[1].Add(time.Second)
		q.m = podSamples("p", "10.0.0.1:8000", c.at, c.prompt)
		if err := src.PollOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if v, err := st.Get(p); err != nil || math.Abs(v.PrefillTPS-c.want) > 1 {
			t.Fatalf("poll %d: PrefillTPS %v, %v; want %v", i, v.PrefillTPS, err, c.want)
		}
	}
	// A pod first seen with two samples 50 ms apart takes the older scrape that is far enough back.
	st = store.New(store.Options{StaleAfter: 45 * time.Second}, func() time.Time { return now })
	src = NewPrometheusSource(&matrixQuerier{m: podSamples("p", "", []time.Time{at(0), at(15 * time.Second), at(15050 * ms)}, []float64{0, 15000, 19096})}, st, time.Second, 45*time.Second, engine.Auto, nil)
	src.now = func() time.Time { return now }
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, err := st.Get(p); err != nil || math.Abs(v.PrefillTPS-19096/15.05) > 1 {
		t.Fatalf("a new pod: PrefillTPS %v, %v; want %v over 15.05 s", v.PrefillTPS, err, 19096/15.05)
	}
}

// A remote-write backend can hold part of a scrape when it is polled: a series the last recorded scrape
// had, with no sample at the newer one yet, would leave its line out of the page (a missing waiting gauge
// made the pod unknown; a data-parallel pod's summed gauges read short for an interval). The scrape is
// recorded once whole, or once the pod's usual interval has passed since it; a series gone for good holds
// back only the scrape after the last, since Prometheus leaves its staleness marker out of a range.
func TestPrometheusSourceWaitsForAHalfArrivedScrape(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	p := store.PodKey{Namespace: "ns", Name: "p"}
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	// without drops the named series' samples after the one at keep seconds: not arrived, or gone.
	without := func(m model.Matrix, name string, keep float64) model.Matrix {
		for _, s := range m {
			if string(s.Metric[model.MetricNameLabel]) == name {
				for len(s.Values) > 0 && s.Values[len(s.Values)-1].Timestamp.Time().After(at(keep)) {
					s.Values = s.Values[:len(s.Values)-1]
				}
			}
		}
		return m
	}
	scrapes := func(secs ...float64) model.Matrix {
		var ts []time.Time
		var prompt []float64
		for _, x := range secs {
			ts = append(ts, at(x))
			prompt = append(prompt, 15000+x*1000+math.Max(0, x)*1000) // 1,000 tok/s before 0 s, 2,000 after
		}
		return podSamples("p", "", ts, prompt)
	}
	type poll struct {
		now    float64
		m      model.Matrix
		want   float64 // the scrape the pod's values are from
		prompt float64 // PrefillTPS then
	}
	start := []poll{
		{1, scrapes(-15, 0), 0, 1000},
		// The waiting gauge of the scrape at 15 s has not arrived: held.
		{16, without(scrapes(-15, 0, 15), "vllm:num_requests_waiting", 0), 0, 1000},
		// Whole a second later: recorded.
		{17, scrapes(-15, 0, 15), 15, 2000},
		// The running gauge is not in the scrape at 30 s: held.
		{31, without(scrapes(0, 15, 30), "vllm:num_requests_running", 15), 15, 2000},
	}
	for _, c := range []struct {
		name  string
		polls []poll
	}{
		{"no newer scrape", append(start[:len(start):len(start)],
			// Still without it a usual interval after the scrape: the series is gone, the scrape taken.
			poll{45, without(scrapes(0, 15, 30), "vllm:num_requests_running", 15), 30, 2000})},
		{"a newer scrape", append(start[:len(start):len(start)],
			// Gone for good and the next scrape in: only the scrape after the last was held.
			poll{46, without(scrapes(15, 30, 45), "vllm:num_requests_running", 15), 45, 2000})},
		{"one target scraped by two jobs", []poll{
			{1, scrapes(-15, 0), 0, 1000},
			// Job b's scrapes fall between job a's; a series without a sample at the last scrape itself
			// holds nothing back.
			{9, append(scrapes(-15, 0), relabel(scrapes(7.5), "job", "b")...), 7.5, 2000},
			{16, append(scrapes(0, 15), relabel(scrapes(7.5), "job", "b")...), 15, 2000},
			{31, append(scrapes(15, 30), relabel(scrapes(7.5, 22.5), "job", "b")...), 30, 2000},
		}},
	} {
		now := t0
		st := store.New(store.Options{StaleAfter: 45 * time.Second}, func() time.Time { return now })
		q := &matrixQuerier{}
		src := NewPrometheusSource(q, st, time.Second, 45*time.Second, engine.Auto, nil)
		src.now = func() time.Time { return now }
		for i, pl := range c.polls {
			now = at(pl.now)
			q.m = pl.m
			if err := src.PollOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			v, err := st.Get(p)
			if err != nil {
				t.Fatalf("%s, poll %d: %v", c.name, i, err)
			}
			if !v.Time.Equal(at(pl.want)) || math.Abs(v.PrefillTPS-pl.prompt) > 1 {
				t.Fatalf("%s, poll %d at %g s: values of the scrape at %s (PrefillTPS %.0f); want the scrape at %g s (%.0f)",
					c.name, i, pl.now, v.Time.Sub(t0), v.PrefillTPS, pl.want, pl.prompt)
			}
		}
	}
}

// relabel sets label k to v on every series of m.
func relabel(m model.Matrix, k, v string) model.Matrix {
	for _, s := range m {
		s.Metric[model.LabelName(k)] = model.LabelValue(v)
	}
	return m
}

// A pod whose series come from two scrape targets (two engines in one pod, or two ports of one) is
// unknown, with an error naming the source: their counters alternating in the reply read as restarts
// and spikes.
func TestPrometheusSourceRefusesTwoTargetsInOnePod(t *testing.T) {
	now := time.Unix(1700000000, 0)
	st := store.New(store.Options{StaleAfter: 45 * time.Second}, func() time.Time { return now })
	m := append(podSamples("p", "10.0.0.1:8000", []time.Time{now.Add(-15 * time.Second), now}, []float64{1e6, 1.015e6}),
		podSamples("p", "10.0.0.1:8001", []time.Time{now.Add(-8 * time.Second), now.Add(-7 * time.Second)}, []float64{907000, 908000})...)
	src := NewPrometheusSource(&matrixQuerier{m: m}, st, time.Second, 45*time.Second, engine.Auto, nil)
	src.now = func() time.Time { return now }
	src.Name = "http://prom:9090"
	if err := src.PollOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := st.Get(store.PodKey{Namespace: "ns", Name: "p"})
	if err == nil || !strings.Contains(err.Error(), "more than one scrape target") || !strings.Contains(err.Error(), "http://prom:9090") {
		t.Fatalf("a pod with two targets: %v; want unknown, naming the targets and the source", err)
	}
}

// The Prometheus API client answers a redirect as it is, an error, and bounds the reply's headers: a
// redirect could send the query, and the pods' numbers, to any host; 10 MiB of headers is outside the
// reply's bound.
func TestPrometheusQuerierRefusesRedirectsAndLongHeaders(t *testing.T) {
	hit := false
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hit = true
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"status":"success","data":{"resultType":"matrix","result":[]}}`)
	}))
	defer other.Close()
	redirect := httptest.NewServer(http.RedirectHandler(other.URL+"/api/v1/query", http.StatusTemporaryRedirect))
	defer redirect.Close()
	long := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Long", strings.Repeat("x", 2*maxHeaderBytes))
		fmt.Fprint(w, `{"status":"success","data":{"resultType":"matrix","result":[]}}`)
	}))
	defer long.Close()
	for _, srv := range []*httptest.Server{redirect, long} {
		q, err := NewPrometheusQuerier(srv.URL, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := NewPrometheusSource(q, store.New(store.Options{}, nil), time.Second, 45*time.Second, engine.Auto, nil).PollOnce(context.Background()); err == nil {
			t.Errorf("%s: no error", srv.URL)
		}
	}
	if hit {
		t.Errorf("the redirect was followed")
	}
	if _, err := NewPrometheusQuerier("http://user:s3cret@prom:9090/%zz", 0, nil); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("an unparsable URL: %v; want an error without the password", err)
	}
}
