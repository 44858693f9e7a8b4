// Package service is the adapter's loop, shared by every front (custom-metrics adapter, KEDA scaler,
// converter controller): each tick it maps pods to pool instances (Assign), has its source collect the
// engines' metrics into the store, runs the one decision round (Decide) and publishes the result as an
// immutable snapshot. Request paths read the snapshot and never wait for a round.
package service

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/velocity/collector"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/policy"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// Pod is what the service needs to know of a pod; the Kubernetes front fills it from an informer.
type Pod struct {
	Key    store.PodKey
	Labels map[string]string
	IP     string
	// Ready is false for pods not Ready or being deleted: they are neither scraped nor sized, only counted
	// in their pool's Matching.
	Ready bool
	// Gone marks a pod being deleted or finished (Succeeded, Failed): it is not counted in Matching
	// either, so a pool scaled to zero reads as at zero while its pods terminate.
	Gone bool
}

// PodLister lists the pods the service may scrape. It must answer from a cache.
type PodLister interface {
	Pods() []Pod
}

// PoolKey names a pool instance: a configured pool in one namespace.
type PoolKey struct{ Namespace, Name string }

func (k PoolKey) String() string { return k.Namespace + "/" + k.Name }

// PoolView is one pool instance in a snapshot.
type PoolView struct {
	Key    PoolKey
	Group  string
	Config *config.Pool
	Pods   []store.PodKey
	// Status is valid when Err is nil; otherwise the pool's figures are unknown (never zero).
	Status policy.PoolStatus
	Err    error
	// Desired replicas; HasDesired is false when the policy could not size the pool.
	Desired    int
	HasDesired bool
	// Conversions wanted in this pool's group (decode pools carry the number). ConversionsErr says why
	// the number is unknown though the pool's own figures are known: the group's prefill pool is unknown,
	// so the policy released every conversion without deciding on any figure.
	Conversions    int
	ConversionsErr error
	inst           *config.Pool // Config renamed to the instance key, as the controller sees it
}

// Snapshot is one decision round's result. It is never modified after it is published, and every
// answer a front gives reads one snapshot, so a pod's value and its pool's always come from one round.
type Snapshot struct {
	Time  time.Time
	Pools map[PoolKey]*PoolView
	// PodPool maps each Ready pod to its pool; PodLabels holds their labels for selector queries.
	PodPool   map[store.PodKey]PoolKey
	PodLabels map[store.PodKey]map[string]string
	// Decisions per group key (namespace/group).
	Decisions map[string]policy.Decision
	// PodResults holds each member pod's velocity, or why it is unknown, as the round saw it.
	PodResults map[store.PodKey]*store.Result
	// ConfigPools are the pools of the config in force, so a pool with no Ready pods (not in Pools) can be
	// told from a name or workload no config has.
	ConfigPools []config.Pool
	// Matching counts each pool instance's pods, Ready or not (see Members.Matching); an instance with
	// none is at zero, one with some but no Ready pod is unknown.
	Matching map[PoolKey]int
	// Starting maps pods of a pool that are not Ready to their pool instance (see Members.Starting).
	Starting map[store.PodKey]PoolKey
}

// Pod returns one pod's velocity as this round saw it, or why it is unknown.
func (s *Snapshot) Pod(k store.PodKey) (store.Velocity, error) {
	r, ok := s.PodResults[k]
	if !ok {
		return store.Velocity{Pod: k}, fmt.Errorf("%s: %w", k, store.ErrNotFound)
	}
	return r.Velocity, r.Err
}

// EachPod calls fn with each pod's velocity, or why it is unknown, in the order of keys. fn must not
// keep v.
func (s *Snapshot) EachPod(keys []store.PodKey, fn func(v *store.Velocity, err error)) {
	for _, k := range keys {
		r, ok := s.PodResults[k]
		if !ok {
			fn(&store.Velocity{Pod: k}, fmt.Errorf("%s: %w", k, store.ErrNotFound))
			continue
		}
		fn(&r.Velocity, r.Err)
	}
}

// Source brings a round's engine metrics into the store: scraping the pods directly, or reading the
// same series from Prometheus. It records what it gets and forgets pods that are no longer targets.
type Source interface {
	Collect(ctx context.Context, m *Members)
}

// Service runs the adapter's loop: each tick it assigns pods to pools, has the source collect, runs
// the decision round (Decide) and publishes the snapshot. Request paths read the snapshot and never
// wait for a round.
type Service struct {
	cfg   func() *config.Config
	pods  PodLister
	store *store.Store
	src   Source
	ctrl  *policy.Controller
	snap  atomic.Pointer[Snapshot]
	subs  subscribers
}

// New builds a service. cfg returns the config in force (it may change between rounds: hot reload; the
// source, scraping or scrape.prometheusURL, is fixed at start).
func New(cfg func() *config.Config, pods PodLister, obs collector.Observer) (*Service, error) {
	c := cfg()
	s := &Service{cfg: cfg, pods: pods, ctrl: NewController(c)}
	s.store = store.New(StoreOptions(c), nil)
	if u := c.Scrape.PrometheusURL; u != "" {
		src, err := newPrometheusSource(u, c, s.store, obs)
		if err != nil {
			return nil, err
		}
		s.src = src
		klog.InfoS("Reading engine metrics from Prometheus instead of scraping pods", "url", redacted(u))
		return s, nil
	}
	src, err := newScrapeSource(c, s.store, obs)
	if err != nil {
		return nil, err
	}
	s.src = src
	return s, nil
}

// StoreOptions are the store's options for a config; the simulator builds its store from them too.
// The counters' rates are smoothed with a time constant of a quarter of the scrape interval, so with
// direct scrapes a step shows 98% of itself after one full scrape at the new load, at any interval, and
// 90% at most about two intervals after it whatever the scrape's phase (half an interval left 86% after
// one scrape, and a third scrape, up to 2.3 intervals, at the worst phases). Queue growth and learned lengths keep half
// the interval: smoothed as fast, their noise cost GPUs in the simulator (docs/metrics.md). The
// Prometheus source's samples are Prometheus' scrapes, further apart than its polls, so each counts
// almost in full.
func StoreOptions(c *config.Config) store.Options {
	rates, noisy := c.Scrape.Interval.Duration/4, c.Scrape.Interval.Duration/2
	return store.Options{
		StaleAfter: c.Scrape.StaleAfter.Duration, LatencyWindow: c.Scrape.LatencyWindow.Duration,
		DefaultPromptTokens: c.Scrape.PromptTokens, RiseTau: rates, FallTau: rates, GrowthTau: noisy, LengthTau: noisy,
	}
}

// NewController returns a policy controller for the config, told how far back the pods' latency
// histograms reach (two scrape.latencyWindow) and how often it decides (scrape.interval); scrape.* is
// fixed at start.
func NewController(c *config.Config) *policy.Controller {
	ctrl := policy.NewController()
	ctrl.LatencySpan = 2 * c.Scrape.LatencyWindow.Duration
	ctrl.Interval = c.Scrape.Interval.Duration
	return ctrl
}

// Snapshot returns the latest published snapshot, or nil before the first round.
func (s *Service) Snapshot() *Snapshot { return s.snap.Load() }

// Step runs one round: membership from the pod cache, collection, the decision round, publication.
func (s *Service) Step(ctx context.Context, now time.Time) *Snapshot {
	c := s.cfg()
	m := Assign(c, s.pods.Pods())
	s.src.Collect(ctx, m)
	snap := Decide(c, m, s.store.List(m.Has), s.ctrl, now)
	s.publish(snap)
	return snap
}

// stepContained is Step with a panic logged instead of ending the process: the round publishes nothing,
// so the snapshot ages into 503s and failed readiness, which say something is wrong, where a crash loop
// would stop the autoscaler's signal altogether.
func (s *Service) stepContained(ctx context.Context, now time.Time) {
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(nil, "Recovered from a panic in a round; nothing published", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	s.Step(ctx, now)
}

// Run steps every scrape interval until ctx ends. A slow round delays the next, never overlaps it.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg().Scrape.Interval.Duration)
	defer t.Stop()
	for {
		s.stepContained(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
