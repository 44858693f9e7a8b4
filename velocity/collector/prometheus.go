package collector

import (
	"context"
	"fmt"
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

// NewPrometheusQuerier returns a Querier for a Prometheus-compatible base URL (Prometheus, Thanos,
// Mimir, VictoriaMetrics).
func NewPrometheusQuerier(url string) (Querier, error) {
	c, err := promapi.NewClient(promapi.Config{Address: url})
	if err != nil {
		return nil, fmt.Errorf("prometheus client for %s: %w", url, err)
	}
	return promv1.NewAPI(c), nil
}

// PrometheusSource reads the same engine series from Prometheus instead of scraping pods, and records
// them into the store as if scraped: the raw counters go in, so reset detection and smoothing are the
// store's, as for direct scrapes. Series must carry `namespace` and `pod` labels (the usual Kubernetes
// service-discovery relabelling).
type PrometheusSource struct {
	q        Querier
	rec      Recorder
	interval time.Duration
	keep     func(store.PodKey) bool // selects pods that belong to some pool; nil keeps all
	kind     engine.Kind
}

// NewPrometheusSource returns a source polling q every interval.
func NewPrometheusSource(q Querier, rec Recorder, interval time.Duration, kind engine.Kind, keep func(store.PodKey) bool) *PrometheusSource {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	return &PrometheusSource{q: q, rec: rec, interval: interval, keep: keep, kind: kind}
}

// Query returns the PromQL the source runs: every series the catalog reads, by exact name.
func (p *PrometheusSource) Query() string {
	return `{__name__=~"` + strings.Join(engine.SampleNames(), "|") + `"}`
}

// TimestampQuery returns the PromQL giving each pod's last scrape time of its token counters.
func (p *PrometheusSource) TimestampQuery() string {
	var names []string
	for _, n := range engine.SampleNames() {
		if strings.Contains(n, "tokens_total") {
			names = append(names, n)
		}
	}
	// timestamp() drops the metric name, and two counters of one pod would then collide ("vector cannot
	// contain metrics with the same labelset"): the name is copied into a label first.
	return `max by (namespace, pod) (timestamp(label_replace({__name__=~"` + strings.Join(names, "|") + `"}, "tokenscale_series", "$1", "__name__", "(.+)")))`
}

// Run polls until ctx ends.
func (p *PrometheusSource) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		if err := p.PollOnce(ctx); err != nil {
			klog.ErrorS(err, "Prometheus source poll failed")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PollOnce queries once and records one snapshot per pod, stamped with the time Prometheus last scraped
// that pod, so an unchanged Prometheus scrape is not mistaken for a new one (which would read as a zero
// rate). A failed query records nothing: pods go stale (unknown), never zero.
func (p *PrometheusSource) PollOnce(ctx context.Context) error {
	tv, _, _, err := p.q.Query(ctx, p.TimestampQuery(), time.Time{})
	if err != nil {
		return fmt.Errorf("prometheus timestamp query: %w", err)
	}
	scraped := map[store.PodKey]time.Time{}
	if tvec, ok := tv.(model.Vector); ok {
		for _, s := range tvec {
			key := store.PodKey{Namespace: string(s.Metric["namespace"]), Name: string(s.Metric["pod"])}
			scraped[key] = time.Unix(0, int64(float64(s.Value)*1e9))
		}
	}
	v, warnings, _, err := p.q.Query(ctx, p.Query(), time.Time{})
	if err != nil {
		return fmt.Errorf("prometheus query: %w", err)
	}
	if len(warnings) > 0 {
		klog.V(2).InfoS("Prometheus query warnings", "warnings", warnings)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return fmt.Errorf("prometheus query: want a vector, got %s", v.Type())
	}
	builders := map[store.PodKey]*engine.Builder{}
	for _, s := range vec {
		key := store.PodKey{Namespace: string(s.Metric["namespace"]), Name: string(s.Metric["pod"])}
		if key.Namespace == "" || key.Name == "" || (p.keep != nil && !p.keep(key)) {
			continue
		}
		b := builders[key]
		if b == nil {
			b = engine.NewBuilder(p.kind)
			builders[key] = b
		}
		labels := make(map[string]string, len(s.Metric))
		for k, lv := range s.Metric {
			switch k {
			case model.MetricNameLabel, "namespace", "pod", "instance", "job", "container", "endpoint", "service":
			default:
				labels[string(k)] = string(lv)
			}
		}
		b.Add(string(s.Metric[model.MetricNameLabel]), labels, float64(s.Value))
	}
	for key, b := range builders {
		ts, ok := scraped[key]
		if !ok {
			p.rec.RecordError(key, time.Now(), fmt.Errorf("prometheus has no token counter timestamp for %s", key))
			continue
		}
		snap, err := b.Snapshot()
		if err != nil {
			p.rec.RecordError(key, ts, err)
			continue
		}
		p.rec.Record(key, ts, snap)
	}
	p.rec.Retain(func(k store.PodKey) bool { _, ok := builders[k]; return ok })
	return nil
}
