package adapter

import (
	"fmt"
	"net/http"
	"time"

	apierr "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/component-base/metrics"

	"github.com/tokenscale/tokenscale/velocity/service"
)

// monitor holds the adapter's own metrics, served on the API server's /metrics.
type monitor struct {
	scrapeDuration *metrics.HistogramVec
	scrapeErrors   *metrics.CounterVec
	lastScrape     *metrics.Gauge
	requests       *metrics.HistogramVec
	now            func() time.Time
}

func newMonitor(register func(...metrics.Registerable), now func() time.Time) *monitor {
	m := &monitor{
		scrapeDuration: metrics.NewHistogramVec(&metrics.HistogramOpts{
			Namespace: "tokenscale", Subsystem: "scrape", Name: "duration_seconds",
			Help:    "Duration of engine /metrics scrapes, per pool.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}, []string{"pool"}),
		scrapeErrors: metrics.NewCounterVec(&metrics.CounterOpts{
			Namespace: "tokenscale", Subsystem: "scrape", Name: "errors_total",
			Help: "Failed engine /metrics scrapes, per pool.",
		}, []string{"pool"}),
	}
	m.lastScrape = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "tokenscale", Name: "last_scrape_timestamp_seconds",
		Help: "Unix time of the last engine scrape; time() minus this is the freshness of served values.",
	})
	m.requests = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "tokenscale", Subsystem: "metric_request", Name: "duration_seconds",
		Help:    "Time to answer a metrics API request from memory, by API (custom, external), target (pods, object) and outcome.",
		Buckets: []float64{0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05},
	}, []string{"api", "target", "outcome"})
	m.now = now
	register(m.scrapeDuration, m.scrapeErrors, m.lastScrape, m.requests)
	return m
}

// ObserveScrape implements collector.Observer.
func (m *monitor) ObserveScrape(pool string, d time.Duration, err error) {
	m.scrapeDuration.WithLabelValues(pool).Observe(d.Seconds())
	m.lastScrape.Set(float64(m.now().UnixNano()) / 1e9)
	if err != nil {
		m.scrapeErrors.WithLabelValues(pool).Inc()
	}
}

// ObserveRequest records one metrics API answer; outcome is ok, not_found, unavailable or error.
func (m *monitor) ObserveRequest(api, target string, d time.Duration, err error) {
	m.requests.WithLabelValues(api, target, outcome(err)).Observe(d.Seconds())
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case apierr.IsNotFound(err):
		return "not_found"
	case apierr.IsServiceUnavailable(err):
		return "unavailable"
	default:
		return "error"
	}
}

// freshness is a readiness check: not ready until a snapshot exists and while it is older than maxAge.
type freshness struct {
	snapshot func() *service.Snapshot
	maxAge   time.Duration
	now      func() time.Time
}

func (f freshness) Name() string { return "tokenscale-snapshot-fresh" }

func (f freshness) Check(_ *http.Request) error {
	s := f.snapshot()
	if s == nil {
		return fmt.Errorf("no velocity snapshot yet")
	}
	if age := f.now().Sub(s.Time); age > f.maxAge {
		return fmt.Errorf("velocity snapshot is %s old (limit %s)", age.Round(time.Millisecond), f.maxAge)
	}
	return nil
}
