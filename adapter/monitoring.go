package adapter

import (
	"net/http"
	"time"

	apierr "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/component-base/metrics"

	"github.com/tokenscale/tokenscale/internal/selfmetrics"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// monitor holds the adapter's own metrics, served on the API server's /metrics: the shared scrape
// metrics and the request latency of the metrics APIs.
type monitor struct {
	*selfmetrics.Scrape
	requests *metrics.HistogramVec
}

func newMonitor(register func(...metrics.Registerable), now func() time.Time) *monitor {
	m := &monitor{Scrape: selfmetrics.NewScrape(register, now)}
	m.requests = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "tokenscale", Subsystem: "metric_request", Name: "duration_seconds",
		Help:    "Time to answer a metrics API request from memory, by API (custom, external), target (pods, object) and outcome.",
		Buckets: []float64{0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05},
	}, []string{"api", "target", "outcome"})
	register(m.requests)
	return m
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
	return service.Fresh(f.snapshot(), f.now(), f.maxAge)
}
