package service

import (
	"context"
	"fmt"
	"maps"
	neturl "net/url"
	"slices"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/velocity/collector"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// scrapeSource scrapes every member pod's page directly.
type scrapeSource struct {
	scraper *collector.Scraper
	targets atomic.Pointer[[]collector.Target]
}

func newScrapeSource(c *config.Config, st *store.Store, obs collector.Observer) (*scrapeSource, error) {
	tlsCfg, err := scrapeTLS(c)
	if err != nil {
		return nil, err
	}
	s := &scrapeSource{}
	s.scraper = collector.NewScraper(collector.Options{
		Timeout:     c.Scrape.Timeout.Duration,
		Concurrency: c.Scrape.Concurrency, MaxBodyBytes: c.Scrape.MaxBodyBytes, Compression: c.Scrape.Compression,
		Spread: c.Scrape.Spread.Duration, RoundDeadline: roundDeadline(c), TLS: tlsCfg,
	}, st, func() []collector.Target {
		if t := s.targets.Load(); t != nil {
			return *t
		}
		return nil
	}, obs)
	return s, nil
}

// scrapeTLS reads scrape.tls's files; nil when it is not set.
func scrapeTLS(c *config.Config) (*collector.TLS, error) {
	cfg, roots, err := c.Scrape.TLS.ClientConfig()
	if err != nil || cfg == nil {
		return nil, err
	}
	return &collector.TLS{Config: cfg, Roots: roots}, nil
}

// roundDeadline is how long into a round scrapes may still start. A round then ends within
// (MaxAge − interval/2) / 2, so a snapshot is replaced before it ages out even when two rounds in a row
// run that long, with half an interval left for the rest of a round (membership, decisions). At the
// defaults scrapes start up to 0.95 s in and a round ends within 1.75 s. Config validation keeps the
// timeout within the interval, so the deadline is always past the spread and more than a quarter
// interval.
func roundDeadline(c *config.Config) time.Duration {
	i := c.Scrape.Interval.Duration
	return (MaxAge(i)-i/2)/2 - c.Scrape.Timeout.Duration
}

func (s *scrapeSource) Collect(ctx context.Context, m *Members) {
	targets := m.ScrapeTargets()
	s.targets.Store(&targets)
	s.scraper.ScrapeOnce(ctx)
}

// prometheusSource reads the same raw series from Prometheus (scrape.prometheusURL).
type prometheusSource struct {
	prom    *collector.PrometheusSource
	obs     collector.Observer // told about each poll, once per pool it read, as scrapes are
	members atomic.Pointer[Members]
	targets atomic.Pointer[map[store.PodKey]collector.Target] // each member pod's target: its rate limit and engine
}

func newPrometheusSource(url string, c *config.Config, st *store.Store, obs collector.Observer) (*prometheusSource, error) {
	// With this source scrape.tls checks Prometheus' certificate: no pod is read.
	tlsCfg, err := scrapeTLS(c)
	if err != nil {
		return nil, err
	}
	q, err := collector.NewPrometheusQuerier(url, 0, tlsCfg)
	if err != nil {
		return nil, fmt.Errorf("scrape.prometheusURL: %w", err)
	}
	s := &prometheusSource{obs: obs}
	// Only pods the pod cache maps to a pool are recorded, as with scraping.
	s.prom = collector.NewPrometheusSource(q, st, c.Scrape.Interval.Duration, c.Scrape.StaleAfter.Duration, engine.Auto, func(k store.PodKey) bool {
		m := s.members.Load()
		return m != nil && m.Has(k)
	})
	// As a pod's scrape: one poll ends within scrape.timeout, which is at most the interval.
	s.prom.Timeout = c.Scrape.Timeout.Duration
	s.prom.Name = redacted(url)
	s.prom.RateLimit = func(k store.PodKey) store.Limit { return s.target(k).Limit }
	s.prom.Engine = func(k store.PodKey) engine.Kind { return s.target(k).Engine }
	// Prometheus is asked for the member pods' namespaces only: on a shared Prometheus other tenants'
	// engines would otherwise fill the reply up to its bound and make every pool unknown.
	s.prom.Namespaces = func() []string {
		m := s.members.Load()
		if m == nil {
			return nil
		}
		ns := map[string]bool{}
		for k := range m.Pool {
			ns[k.Namespace] = true
		}
		return slices.Collect(maps.Keys(ns))
	}
	return s, nil
}

// redacted is a URL as errors may show it: without a password, and with its query's values hidden too
// (an access_token there is a credential).
func redacted(raw string) string {
	u, err := neturl.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"xxxxx"}
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// target is pod's scrape target in this round (the zero Target, Auto with no limit, if none).
func (s *prometheusSource) target(k store.PodKey) collector.Target {
	if t := s.targets.Load(); t != nil {
		return (*t)[k]
	}
	return collector.Target{}
}

func (s *prometheusSource) Collect(ctx context.Context, m *Members) {
	targets := make(map[store.PodKey]collector.Target, len(m.Targets))
	for _, t := range m.Targets {
		targets[t.Pod] = t
	}
	s.targets.Store(&targets)
	s.members.Store(m)
	// A failed query records nothing: the pods go stale (unknown), never zero.
	start := time.Now()
	err := s.prom.PollOnce(ctx)
	if err != nil {
		klog.ErrorS(err, "Prometheus source poll failed")
	}
	// The scrape metrics (freshness, errors, duration) follow the polls, one observation per pool: failed
	// when the poll failed or held no sample of any of the pool's pods (Prometheus no longer scraping
	// them), so that the freshness gauge says how fresh the served values are. Without them it stayed at 0
	// and failed polls were only logged.
	if s.obs != nil {
		d := time.Since(start)
		polled := map[string]bool{}
		for _, t := range m.Targets {
			polled[t.Pool] = polled[t.Pool] || err == nil && s.prom.Polled(t.Pod)
		}
		for _, pool := range slices.Sorted(maps.Keys(polled)) {
			perr := err
			if perr == nil && !polled[pool] {
				perr = fmt.Errorf("%s: no sample of any pod of pool %s", s.prom.Name, pool)
			}
			s.obs.ObserveScrape(pool, d, perr)
		}
	}
}
