// Package selfmetrics holds the scrape metrics every tokenscale front exports about itself, registered
// on component-base's registry (the adapter serves it on the API server's /metrics).
package selfmetrics

import (
	"time"

	"k8s.io/component-base/metrics"
)

// Scrape implements collector.Observer.
type Scrape struct {
	duration *metrics.HistogramVec
	errors   *metrics.CounterVec
	last     *metrics.Gauge
	now      func() time.Time
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
			Help: "Failed engine /metrics scrapes, per pool.",
		}, []string{"pool"}),
		last: metrics.NewGauge(&metrics.GaugeOpts{
			Namespace: "tokenscale", Name: "last_scrape_timestamp_seconds",
			Help: "Unix time of the last engine scrape; time() minus this is the freshness of served values.",
		}),
		now: now,
	}
	register(s.duration, s.errors, s.last)
	return s
}

// ObserveScrape records one scrape.
func (s *Scrape) ObserveScrape(pool string, d time.Duration, err error) {
	s.duration.WithLabelValues(pool).Observe(d.Seconds())
	s.last.Set(float64(s.now().UnixNano()) / 1e9)
	if err != nil {
		s.errors.WithLabelValues(pool).Inc()
	}
}
