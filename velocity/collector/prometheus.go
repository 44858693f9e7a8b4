package collector

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// Querier is the part of the Prometheus HTTP API the Prometheus source uses.
type Querier interface {
	Query(ctx context.Context, query string, ts time.Time, opts ...promv1.Option) (model.Value, promv1.Warnings, promv1.Infos, error)
}

// MaxPrometheusReply bounds one answer of the Prometheus source: the raw samples of every engine
// series over the lookback, about 6 KB a pod at a 15 s Prometheus scrape and 90 KB at 1 s, so 1,000 pods
// fit with room; a larger or endless reply is an error, not the adapter's memory.
const MaxPrometheusReply = 256 << 20

// NewPrometheusQuerier returns a Querier for a Prometheus-compatible base URL (Prometheus, Thanos,
// Mimir, VictoriaMetrics) whose replies are refused past maxReply bytes (0: MaxPrometheusReply). t, if
// not nil, checks an https endpoint (a private CA, a client certificate).
func NewPrometheusQuerier(url string, maxReply int64, t *TLS) (Querier, error) {
	if maxReply <= 0 {
		maxReply = MaxPrometheusReply
	}
	rt := http.DefaultTransport
	if t != nil {
		rt = t.transport(http.DefaultTransport.(*http.Transport).Clone())
	}
	c, err := promapi.NewClient(promapi.Config{Address: url, RoundTripper: limitedTransport{rt, maxReply}})
	if err != nil {
		return nil, fmt.Errorf("prometheus client for %s: %w", url, err)
	}
	return promv1.NewAPI(c), nil
}

// limitedTransport fails a response body once it passes max bytes: the Prometheus client reads a reply
// whole into memory before decoding it.
type limitedTransport struct {
	rt  http.RoundTripper
	max int64
}

func (t limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, max: t.max}
	return resp, nil
}

type limitedBody struct {
	io.ReadCloser
	n, max int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.n += int64(n); b.n > b.max {
		return 0, fmt.Errorf("prometheus reply larger than %d bytes", b.max)
	}
	return n, err
}

// PrometheusSource reads the same engine series from Prometheus instead of scraping pods, and records
// them into the store as if scraped: the raw counters go in, so reset detection and smoothing are the
// store's, as for direct scrapes. Series must carry `namespace` and `pod` labels (the usual Kubernetes
// service-discovery relabelling).
type PrometheusSource struct {
	q        Querier
	rec      Recorder
	interval time.Duration
	lookback time.Duration
	keep     func(store.PodKey) bool // selects pods that belong to some pool; nil keeps all
	kind     engine.Kind
	seen     map[store.PodKey]bool // pods in the last answer
	now      func() time.Time
	// Timeout bounds one query (0: none), so a Prometheus that hangs makes pods stale instead of
	// holding the round.
	Timeout time.Duration
	// Name says which endpoint errors come from (a URL without its credentials); "" reads "prometheus".
	Name string
	// RateLimit, if set, gives a pod's plausible token rates (its pool's, as a scrape target's Limit),
	// so a jump in a counter Prometheus holds is refused as a scraped one is.
	RateLimit func(store.PodKey) store.Limit
	// Engine, if set, gives a pod's engine as its pool's config names it (Auto: detect), as a scrape
	// target's Engine does; otherwise the source's kind applies to every pod.
	Engine func(store.PodKey) engine.Kind
}

// MaxClockSkew is how far ahead of this process's clock a Prometheus sample may be stamped. A sample
// further ahead would stay the pod's newest, and read as fresh, until the clock caught up with it.
const MaxClockSkew = 5 * time.Second

// NewPrometheusSource returns a source polling q every interval; samples older than lookback are not
// read (pods whose newest sample is older are stale anyway).
func NewPrometheusSource(q Querier, rec Recorder, interval, lookback time.Duration, kind engine.Kind, keep func(store.PodKey) bool) *PrometheusSource {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	if lookback < time.Second {
		lookback = time.Minute
	}
	return &PrometheusSource{q: q, rec: rec, interval: interval, lookback: lookback, keep: keep, kind: kind, now: time.Now}
}

func (p *PrometheusSource) name() string {
	if p.Name == "" {
		return "prometheus"
	}
	return "prometheus " + p.Name
}

// Query returns the PromQL the source runs: the raw samples of every series the catalog reads, by exact
// name, over the lookback. A range selector returns each sample with its scrape time, so values and
// time come from one consistent answer (two queries, one for values and one for timestamps, can straddle
// a Prometheus scrape and pair new values with the old time).
func (p *PrometheusSource) Query() string {
	return `{__name__=~"` + strings.Join(engine.SampleNames(), "|") + `"}[` + model.Duration(p.lookback).String() + `]`
}

// PollOnce queries once and records one snapshot per pod: the series of its newest scrape, stamped with
// that scrape's time, so a Prometheus that has not scraped again is not mistaken for a new scrape (which
// would read as a zero rate). A failed query records nothing: pods go stale (unknown), never zero.
func (p *PrometheusSource) PollOnce(ctx context.Context) error {
	if p.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Timeout)
		defer cancel()
	}
	v, warnings, _, err := p.q.Query(ctx, p.Query(), time.Time{})
	if err != nil {
		// The endpoint's own words (its JSON "error") may be as long as its reply; they are logged every round.
		return fmt.Errorf("%s query: %w", p.name(), clip(err))
	}
	if len(warnings) > 0 {
		first := warnings[0]
		if len(first) > maxErrText {
			first = strings.ToValidUTF8(first[:maxErrText], "") + "… (truncated)"
		}
		klog.V(2).InfoS("Prometheus query warnings", "count", len(warnings), "first", first)
	}
	// A reply is whatever the configured endpoint sends: "data": null decodes to no value at all, and a
	// null in the result list to a nil series.
	mat, ok := v.(model.Matrix)
	if !ok {
		if v == nil {
			return fmt.Errorf("%s query: the reply holds no data", p.name())
		}
		return fmt.Errorf("%s query: want a matrix, got %s", p.name(), v.Type())
	}
	byPod := map[store.PodKey][]*model.SampleStream{}
	newest := map[store.PodKey]model.Time{}
	now := p.now()
	ahead := map[store.PodKey]model.Time{} // pods with a sample stamped past now + MaxClockSkew
	for _, s := range mat {
		if s == nil {
			continue
		}
		key := store.PodKey{Namespace: string(s.Metric["namespace"]), Name: string(s.Metric["pod"])}
		if key.Namespace == "" || key.Name == "" || len(s.Values) == 0 || (p.keep != nil && !p.keep(key)) {
			continue
		}
		byPod[key] = append(byPod[key], s)
		t := s.Values[len(s.Values)-1].Timestamp
		if t > newest[key] {
			newest[key] = t
		}
		if t.Time().Sub(now) > MaxClockSkew && t > ahead[key] {
			ahead[key] = t
		}
	}
	for key, t := range ahead {
		// None of the pod's samples is recorded: the pod keeps what it had until that goes stale, with
		// this as its last error, as after a failed scrape.
		p.rec.RecordError(key, now, fmt.Errorf("%s: a sample of this pod is stamped %s, %s ahead of this clock (at most %s allowed): the clocks of Prometheus and this process differ, or the reply is wrong",
			p.name(), t.Time().UTC().Format(time.RFC3339), t.Time().Sub(now).Round(time.Second), MaxClockSkew))
		delete(byPod, key)
	}
	limiter, _ := p.rec.(RateLimiter)
	for key, series := range byPod {
		if limiter != nil && p.RateLimit != nil {
			if l := p.RateLimit(key); l != (store.Limit{}) {
				limiter.SetRateLimit(key, l)
			}
		}
		// A pod seen for the first time also gets its previous scrape, so its rate is known now rather
		// than after Prometheus' next scrape.
		if !p.seen[key] {
			var prev model.Time
			for _, s := range series {
				for _, v := range s.Values {
					if v.Timestamp < newest[key] && v.Timestamp > prev {
						prev = v.Timestamp
					}
				}
			}
			if prev > 0 {
				p.record(key, series, prev)
			}
		}
		p.record(key, series, newest[key])
	}
	p.seen = make(map[store.PodKey]bool, len(byPod))
	for k := range byPod {
		p.seen[k] = true
	}
	p.rec.Retain(func(k store.PodKey) bool {
		_, ok := byPod[k]
		_, skewed := ahead[k]
		return ok || skewed
	})
	return nil
}

// Polled reports whether the last poll had samples of pod (none of them ahead of this clock). It is
// meant for the goroutine that polls.
func (p *PrometheusSource) Polled(pod store.PodKey) bool { return p.seen[pod] }

// record builds the pod's snapshot from its series' samples scraped at ts (series without one, such as a
// series that went away, are left out) and records it.
func (p *PrometheusSource) record(key store.PodKey, series []*model.SampleStream, ts model.Time) {
	kind := p.kind
	if p.Engine != nil {
		kind = p.Engine(key)
	}
	b := engine.NewBuilder(kind)
	for _, s := range series {
		i := sort.Search(len(s.Values), func(i int) bool { return s.Values[i].Timestamp >= ts })
		if i == len(s.Values) || s.Values[i].Timestamp != ts {
			continue
		}
		labels := make(map[string]string, len(s.Metric))
		for k, lv := range s.Metric {
			switch k {
			case model.MetricNameLabel, "namespace", "pod", "instance", "job", "container", "endpoint", "service":
			default:
				labels[string(k)] = string(lv)
			}
		}
		b.Add(string(s.Metric[model.MetricNameLabel]), labels, float64(s.Values[i].Value))
	}
	snap, err := b.Snapshot()
	if err != nil {
		p.rec.RecordError(key, ts.Time(), err)
		return
	}
	p.rec.Record(key, ts.Time(), snap)
}
