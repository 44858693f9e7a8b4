package collector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
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

// MaxPrometheusReply bounds one answer of the Prometheus source: the raw samples of the engine series of
// the pools' namespaces over the lookback, about 6 KB a pod at a 15 s Prometheus scrape and 90 KB at 1 s,
// so about 5,000 pods fit at 15 s and 350 at 1 s. The client reads a reply whole and decodes it into
// about eight times its size (a 31 MiB reply took 245 MiB of heap and 2.5 s on a 2-core machine,
// BenchmarkPrometheusPollAtTheBound), so the bound is what keeps a large or endless reply out of the
// adapter's memory.
const MaxPrometheusReply = 32 << 20

// maxLookback bounds the query's range whatever scrape.staleAfter says (up to 1h): the reply grows with it,
// and a pod whose newest sample is older is unknown either way once it leaves the reply.
const maxLookback = 5 * time.Minute

// minSampleGap is the least interval the source turns into a rate: two Prometheus replicas behind one
// Service answer with the same pod's scrapes a few milliseconds apart, and one prompt finishing in such a
// gap would read as tens of thousands of tokens a second.
const minSampleGap = time.Second

// NewPrometheusQuerier returns a Querier for a Prometheus-compatible base URL (Prometheus, Thanos,
// Mimir, VictoriaMetrics) whose replies are refused past maxReply bytes (0: MaxPrometheusReply). t, if
// not nil, checks an https endpoint (a private CA, a client certificate).
func NewPrometheusQuerier(url string, maxReply int64, t *TLS) (Querier, error) {
	if maxReply <= 0 {
		maxReply = MaxPrometheusReply
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// An API reply's headers are a few hundred bytes; Go's 10 MiB default is outside maxReply.
	tr.MaxResponseHeaderBytes = maxHeaderBytes
	// A redirect is answered as it is, an error: it could send the query, and the pods' numbers, to any host.
	hc := &http.Client{Transport: limitedTransport{t.transport(tr), maxReply}, CheckRedirect: noRedirect}
	c, err := promapi.NewClient(promapi.Config{Address: url, Client: hc})
	if err != nil {
		// The client's error quotes the URL whole, credentials included.
		return nil, errors.New("prometheus client: the URL does not parse")
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
	// last is each pod's newest recorded scrape time and gap the interval before it, so that a sample
	// closer than minSampleGap, or than half the pod's usual interval, to the last one waits for a later one.
	last map[store.PodKey]model.Time
	gap  map[store.PodKey]time.Duration
	now  func() time.Time
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
	// Namespaces, if set, gives the namespaces of the pods the source may record: the query asks
	// Prometheus for their series only, so other tenants' engines on a shared Prometheus do not fill the
	// reply. None: nothing is queried.
	Namespaces func() []string
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
	lookback = min(lookback, maxLookback)
	return &PrometheusSource{q: q, rec: rec, interval: interval, lookback: lookback, keep: keep, kind: kind, now: time.Now,
		last: map[store.PodKey]model.Time{}, gap: map[store.PodKey]time.Duration{}}
}

func (p *PrometheusSource) name() string {
	if p.Name == "" {
		return "prometheus"
	}
	return "prometheus " + p.Name
}

// Query returns the PromQL the source runs for pods in namespaces (none: any namespace): the raw samples
// of every series the catalog reads, by exact name, that carry a namespace and a pod, over the lookback.
// A range selector returns each sample with its scrape time, so values and time come from one consistent
// answer (two queries, one for values and one for timestamps, can straddle a Prometheus scrape and pair
// new values with the old time).
func (p *PrometheusSource) Query(namespaces ...string) string {
	ns := `namespace!=""`
	if len(namespaces) > 0 {
		q := make([]string, len(namespaces))
		for i, n := range namespaces {
			q[i] = regexp.QuoteMeta(n)
		}
		sort.Strings(q)
		ns = `namespace=~"` + strings.Join(q, "|") + `"`
	}
	return `{__name__=~"` + strings.Join(engine.SampleNames(), "|") + `",` + ns + `,pod!=""}[` + model.Duration(p.lookback).String() + `]`
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
	var namespaces []string
	if p.Namespaces != nil {
		if namespaces = p.Namespaces(); len(namespaces) == 0 {
			// No pod of any pool: nothing to ask for, and no pod to keep.
			p.seen = map[store.PodKey]bool{}
			p.rec.Retain(func(store.PodKey) bool { return false })
			return nil
		}
	}
	v, warnings, _, err := p.q.Query(ctx, p.Query(namespaces...), time.Time{})
	if err != nil {
		// The endpoint's own words (its JSON "error") may be as long as its reply; they are logged every round.
		return fmt.Errorf("%s query: %w", p.name(), clip(err))
	}
	if len(warnings) > 0 {
		klog.V(2).InfoS("Prometheus query warnings", "count", len(warnings), "first", engine.PrintableWithin(warnings[0], maxErrText))
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
		if err := oneTarget(series); err != nil {
			p.rec.RecordError(key, now, fmt.Errorf("%s: %w", p.name(), err))
			delete(p.last, key)
			continue
		}
		ts := newest[key]
		last, recorded := p.last[key]
		if recorded && ts <= last {
			continue // Prometheus has not scraped the pod again
		}
		// A pod seen for the first time also gets its previous scrape, so its rate is known now rather
		// than after Prometheus' next scrape.
		if !p.seen[key] || !recorded {
			var prev model.Time
			for _, s := range series {
				for _, v := range s.Values {
					if v.Timestamp.Add(minSampleGap) <= ts && v.Timestamp > prev {
						prev = v.Timestamp
					}
				}
			}
			if prev > 0 {
				p.record(key, series, prev)
				last, recorded = prev, true
			}
		}
		if recorded {
			gap := ts.Sub(last)
			if gap < minSampleGap || gap < p.gap[key]/2 {
				// Another replica's scrape of the same pod, moments after the last: too short an interval
				// for a rate. The pod keeps what it has until a later scrape.
				continue
			}
			if usual := p.gap[key]; usual > 0 && gap < 3*usual/2 && now.Sub(ts.Time()) < usual && halfArrived(series, last, ts) {
				// A remote-write backend (Mimir, Thanos Receive) can hold part of a scrape: a series the last
				// recorded scrape had, with no sample at ts yet, would leave its line out of the page (a
				// data-parallel pod's summed gauges read short). The pod keeps what it has until the scrape is
				// whole, for at most the pod's usual interval and only for the scrape after the last: a series
				// gone for good (Prometheus leaves its staleness marker out of a range) holds back one scrape.
				continue
			}
			p.gap[key] = gap
		}
		p.record(key, series, ts)
		p.last[key] = ts
	}
	p.seen = make(map[store.PodKey]bool, len(byPod))
	for k := range byPod {
		p.seen[k] = true
	}
	for k := range p.last {
		if !p.seen[k] {
			delete(p.last, k)
			delete(p.gap, k)
		}
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
		v, ok := sampleAt(s, ts)
		if !ok {
			continue
		}
		labels := make(map[string]string, len(s.Metric))
		for k, lv := range s.Metric {
			if _, target := targetLabels[k]; !target && k != model.MetricNameLabel {
				labels[string(k)] = string(lv)
			}
		}
		b.Add(string(s.Metric[model.MetricNameLabel]), labels, float64(v.Value))
	}
	snap, err := b.Snapshot()
	if err != nil {
		p.rec.RecordError(key, ts.Time(), fmt.Errorf("%s: %w", p.name(), err))
		return
	}
	p.rec.Record(key, ts.Time(), snap)
}

// targetLabels are the labels Prometheus' service discovery adds to an engine's lines: a page line is a
// series' name and its other labels.
var targetLabels = map[model.LabelName]struct{}{"namespace": {}, "pod": {}, "instance": {}, "job": {}, "container": {}, "endpoint": {}, "service": {}}

// halfArrived reports whether a page line that the pod's last recorded scrape had has no sample at the
// newer scrape ts yet. Lines, not series: a target scraped by two jobs has each line in two series,
// sampled at each job's own times.
func halfArrived(series []*model.SampleStream, last, ts model.Time) bool {
	// Each line keyed by its name and labels, less the target's; true once seen at ts.
	lines := map[uint64]bool{}
	for _, s := range series {
		if _, ok := sampleAt(s, last); ok {
			lines[model.SignatureWithoutLabels(s.Metric, targetLabels)] = false
		}
	}
	for _, s := range series {
		if _, ok := sampleAt(s, ts); ok {
			lines[model.SignatureWithoutLabels(s.Metric, targetLabels)] = true
		}
	}
	for _, seen := range lines {
		if !seen {
			return true
		}
	}
	return false
}

// sampleAt is the series' sample at t, if it has one (its samples are in time order).
func sampleAt(s *model.SampleStream, t model.Time) (model.SamplePair, bool) {
	i := sort.Search(len(s.Values), func(i int) bool { return s.Values[i].Timestamp >= t })
	if i == len(s.Values) || s.Values[i].Timestamp != t {
		return model.SamplePair{}, false
	}
	return s.Values[i], true
}

// oneTarget refuses a pod whose series come from more than one scrape target (instance): two engines in
// one pod, or two ports of it, scraped apart, whose counters alternating in the reply would read as
// restarts and spikes. The same target scraped by two jobs or two Prometheus replicas is one engine.
func oneTarget(series []*model.SampleStream) error {
	var first model.LabelValue
	for _, s := range series {
		in := s.Metric["instance"]
		if in == "" {
			continue
		}
		if first == "" {
			first = in
		} else if in != first {
			a, b := min(first, in), max(first, in)
			return fmt.Errorf("the pod's series come from more than one scrape target (instance %.100q and %.100q): which engine a sample is from is unknown", a, b)
		}
	}
	return nil
}
