// Package selfmetrics holds what tokenscale's fronts export on their own /metrics, registered on
// component-base's registry (the adapter serves it on the API server's /metrics): the scrape metrics (every
// front), the pools' numbers for dashboards and build info (the adapter and the KEDA scaler), and the
// /healthz and plain-HTTP Serve of the fronts that are not API servers.
package selfmetrics

import (
	"context"
	"errors"
	"net/http"
	"time"

	"k8s.io/component-base/metrics"

	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/velocity/collector"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// Scrape implements collector.Observer.
type Scrape struct {
	duration *metrics.HistogramVec
	errors   *metrics.CounterVec
	// last has no series until a scrape succeeds: a plain gauge read 0, the Unix epoch, while no scrape had.
	last *metrics.GaugeVec
	// reloadOK and reloadAt say whether the config file's last reload was applied, and when one last was.
	reloadOK, reloadAt *metrics.Gauge
	now                func() time.Time
}

// NewScrape registers the scrape metrics with register.
func NewScrape(register func(...metrics.Registerable), now func() time.Time) *Scrape {
	s := &Scrape{
		duration: metrics.NewHistogramVec(&metrics.HistogramOpts{
			Namespace: "tokenscale", Subsystem: "scrape", Name: "duration_seconds",
			Help:    "Duration of engine /metrics scrapes, per pool.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}, []string{"pool"}),
		errors: metrics.NewCounterVec(&metrics.CounterOpts{
			Namespace: "tokenscale", Subsystem: "scrape", Name: "errors_total",
			Help: "Failed engine /metrics scrapes (and failed Prometheus polls), and pods a round had no time to scrape, per pool.",
		}, []string{"pool"}),
		last: metrics.NewGaugeVec(&metrics.GaugeOpts{
			Namespace: "tokenscale", Name: "last_scrape_timestamp_seconds",
			Help: "Unix time of the last successful engine scrape of any pod (no series before one); time() minus this is the freshness of the newest numbers, not of every pool's.",
		}, nil),
		reloadOK: metrics.NewGauge(&metrics.GaugeOpts{
			Namespace: "tokenscale", Subsystem: "config", Name: "last_reload_successful",
			Help: "1 if the config file's last load or reload was applied, 0 if it was rejected (the previous config stays in force).",
		}),
		reloadAt: metrics.NewGauge(&metrics.GaugeOpts{
			Namespace: "tokenscale", Subsystem: "config", Name: "last_reload_success_timestamp_seconds",
			Help: "Unix time of the last config load or reload that was applied.",
		}),
		now: now,
	}
	register(s.duration, s.errors, s.last, s.reloadOK, s.reloadAt)
	return s
}

// ConfigReloaded records a config load or reload: err nil means it was applied.
func (s *Scrape) ConfigReloaded(err error) {
	if err != nil {
		s.reloadOK.Set(0)
		return
	}
	s.reloadOK.Set(1)
	s.reloadAt.Set(float64(s.now().UnixNano()) / 1e9)
}

// ObserveScrape records one scrape. Only a successful one moves the freshness gauge (with every pod
// failing, a gauge that still advanced would hide the staleness it exists to show), and one cut short by
// shutdown is no pod's error; a pod the round had no time for counts as an error and takes no time.
func (s *Scrape) ObserveScrape(pool string, d time.Duration, err error) {
	if !errors.Is(err, collector.ErrNotScraped) {
		s.duration.WithLabelValues(pool).Observe(d.Seconds())
	}
	// The pool's error series exists from its first scrape, at 0, so rate() works before any error.
	errs := s.errors.WithLabelValues(pool)
	switch {
	case err == nil:
		s.last.WithLabelValues().Set(float64(s.now().UnixNano()) / 1e9)
	case !errors.Is(err, context.Canceled):
		errs.Inc()
	}
}

// poolGauges are the pool numbers exported for dashboards, one series per pool instance; names mirror
// the custom metrics with a tokenscale_pool_ prefix.
var poolGauges = []struct {
	metric service.PoolMetric
	name   string
	help   string
}{
	{service.Arrival, "arrival_tokens_per_second", "Arrival token velocity λ of the pool (tokens/s)."},
	{service.Capacity, "capacity_tokens_per_second", "Capacity N·V of the pool's Ready pods (tokens/s)."},
	{service.Utilisation, "utilisation", "Utilisation ρ = λ / (N·V)."},
	{service.Backpressure, "predicted_backpressure", "Predicted backpressure; >= 1 means a TTFT breach is predicted within the horizon."},
	{service.Queued, "queued_tokens", "Prompt tokens queued in the pool (prefill and both-roles pools)."},
	{service.Desired, "desired_replicas", "Replicas the policy wants for the pool."},
	{service.Conversions, "conversions_wanted", "Decoders the policy wants to take prefill work (on decode pools)."},
}

// Pools exports the newest snapshot's pool numbers at every scrape of /metrics. A value that is unknown
// has no series (never a 0); tokenscale_pool_value_unknown says which and the adapter's 503 says why.
type Pools struct {
	metrics.BaseStableCollector
	snapshot func() *service.Snapshot
	fresh    func(*service.Snapshot) error
	descs    []*metrics.Desc
	ready    *metrics.Desc
	unknown  *metrics.Desc
}

// NewPools returns the collector; register it with a registry's CustomMustRegister. fresh says whether a
// snapshot may still be served (nil: always): a stale one's numbers are all unknown, as the API's 503s
// say, rather than its last values read as current by dashboards and alerts.
func NewPools(snapshot func() *service.Snapshot, fresh func(*service.Snapshot) error) *Pools {
	labels := []string{"namespace", "pool", "role"}
	p := &Pools{snapshot: snapshot, fresh: fresh}
	for _, g := range poolGauges {
		p.descs = append(p.descs, metrics.NewDesc("tokenscale_pool_"+g.name, g.help, labels, nil, metrics.ALPHA, ""))
	}
	p.ready = metrics.NewDesc("tokenscale_pool_ready_pods", "Ready pods tokenscale assigns to the pool.", labels, nil, metrics.ALPHA, "")
	p.unknown = metrics.NewDesc("tokenscale_pool_value_unknown", "1 for each pool number that is unknown now (so it has no series).",
		append(labels, "value"), nil, metrics.ALPHA, "")
	return p
}

// DescribeWithStability implements metrics.StableCollector.
func (p *Pools) DescribeWithStability(ch chan<- *metrics.Desc) {
	for _, d := range p.descs {
		ch <- d
	}
	ch <- p.ready
	ch <- p.unknown
}

// CollectWithStability implements metrics.StableCollector.
func (p *Pools) CollectWithStability(ch chan<- metrics.Metric) {
	snap := p.snapshot()
	if snap == nil {
		return
	}
	stale := p.fresh != nil && p.fresh(snap) != nil
	for _, v := range snap.Pools {
		var role config.Role
		if v.Config != nil {
			role = v.Config.Role
		}
		p.collectPool(ch, v.Key, role, len(v.Pods), stale, v.Value)
	}
	// A pool whose pods are all starting or failing their readiness probe has no instance: its numbers
	// are unknown (the API's 503), not absent.
	for k, n := range snap.Matching {
		if n == 0 || snap.Pools[k] != nil {
			continue
		}
		var role config.Role
		if pl := snap.ConfiguredPool(k.Namespace, k.Name); pl != nil {
			role = pl.Role
		}
		p.collectPool(ch, k, role, 0, stale, func(service.PoolMetric) (float64, error) { return 0, service.ErrUnknown })
	}
}

// collectPool sends one pool instance's series: its Ready pods, each number that applies to its role
// and is known, and a flag for each that applies and is not (all of them when stale).
func (p *Pools) collectPool(ch chan<- metrics.Metric, k service.PoolKey, role config.Role, ready int, stale bool, value func(service.PoolMetric) (float64, error)) {
	lv := []string{k.Namespace, k.Name, string(role)}
	if !stale {
		ch <- metrics.NewLazyConstMetric(p.ready, metrics.GaugeValue, float64(ready), lv...)
	}
	for i, g := range poolGauges {
		if !service.Carries(role, g.metric) {
			// A number the role does not have (a decode pool's queued prompt tokens) is no series, not unknown.
			continue
		}
		x, err := value(g.metric)
		if err != nil || stale {
			ch <- metrics.NewLazyConstMetric(p.unknown, metrics.GaugeValue, 1, append(lv, g.name)...)
			continue
		}
		ch <- metrics.NewLazyConstMetric(p.descs[i], metrics.GaugeValue, x, lv...)
	}
}

// NewBuildInfo registers tokenscale_build_info, a gauge of 1 whose labels say which build is running
// (version, commit, Go version), as Kubernetes components export kubernetes_build_info.
func NewBuildInfo(register func(...metrics.Registerable), v version.Info) {
	g := metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "tokenscale", Name: "build_info",
		Help: "A metric with a constant '1' value labeled by the version, commit and Go version tokenscale was built from.",
	}, []string{"version", "commit", "go_version"})
	register(g)
	g.WithLabelValues(v.Version, v.Commit, v.GoVersion).Set(1)
}

// Healthz answers "ok" while check passes and 503 with its reason otherwise; check nil means the
// process is alive and has nothing fresher to prove. The KEDA scaler's and the converter's /healthz mean
// this; the adapter's freshness is its API server's /readyz.
func Healthz(check func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if check != nil {
			if err := check(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	}
}
