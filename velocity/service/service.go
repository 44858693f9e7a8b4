// Package service runs the velocity pipeline for the fronts (custom-metrics adapter, KEDA scaler): it maps
// pods to pools, scrapes them, aggregates pools, decides, and publishes the result as an immutable
// snapshot. Request paths read the snapshot and never wait for a scrape.
package service

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/velocity/collector"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/policy"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// Pod is what the service needs to know of a pod; the Kubernetes front fills it from an informer.
type Pod struct {
	Key    store.PodKey
	Labels map[string]string
	IP     string
	// Ready is false for pods not Ready or being deleted: they are neither scraped nor counted.
	Ready bool
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
	// Conversions wanted in this pool's group (decode pools carry the number).
	Conversions int
	inst        *config.Pool // Config renamed to the instance key, as the controller sees it
}

// Snapshot is one decision round's result. It is never modified after it is published.
type Snapshot struct {
	Time  time.Time
	Pools map[PoolKey]*PoolView
	// PodPool maps each Ready pod to its pool; PodLabels holds their labels for selector queries.
	PodPool   map[store.PodKey]PoolKey
	PodLabels map[store.PodKey]map[string]string
	// Decisions per group key (namespace/group).
	Decisions map[string]policy.Decision
}

// Service is the pipeline.
type Service struct {
	cfg     func() *config.Config
	pods    PodLister
	Store   *store.Store
	scraper *collector.Scraper
	// prom replaces the scraper when scrape.prometheusURL is set: the same series, read from Prometheus.
	prom    *collector.PrometheusSource
	members atomic.Pointer[map[store.PodKey]PoolKey]
	ctrl    *policy.Controller
	snap    atomic.Pointer[Snapshot]
	targets atomic.Pointer[[]collector.Target]
	subs    subscribers
}

// New builds a service. cfg returns the config in force (it may change between rounds: hot reload; the
// source, scraping or scrape.prometheusURL, is fixed at start).
func New(cfg func() *config.Config, pods PodLister, obs collector.Observer) (*Service, error) {
	c := cfg()
	s := &Service{cfg: cfg, pods: pods, ctrl: policy.NewController()}
	s.Store = store.New(store.Options{
		StaleAfter: c.Scrape.StaleAfter.Duration, LatencyWindow: c.Scrape.LatencyWindow.Duration,
		DefaultPromptTokens: c.Scrape.PromptTokens,
	}, nil)
	if u := c.Scrape.PrometheusURL; u != "" {
		q, err := collector.NewPrometheusQuerier(u)
		if err != nil {
			return nil, fmt.Errorf("scrape.prometheusURL: %w", err)
		}
		// Only pods the pod cache maps to a pool are recorded, as with scraping.
		s.prom = collector.NewPrometheusSource(q, s.Store, c.Scrape.Interval.Duration, c.Scrape.StaleAfter.Duration, engine.Auto, func(k store.PodKey) bool {
			m := s.members.Load()
			if m == nil {
				return false
			}
			_, ok := (*m)[k]
			return ok
		})
		klog.InfoS("Reading engine metrics from Prometheus instead of scraping pods", "url", u)
		return s, nil
	}
	s.scraper = collector.NewScraper(collector.Options{
		Interval: c.Scrape.Interval.Duration, Timeout: c.Scrape.Timeout.Duration,
		Concurrency: c.Scrape.Concurrency, MaxBodyBytes: c.Scrape.MaxBodyBytes, Compression: c.Scrape.Compression,
		Spread: c.Scrape.Spread.Duration,
	}, s.Store, s.currentTargets, obs)
	return s, nil
}

// Snapshot returns the latest published snapshot, or nil before the first round.
func (s *Service) Snapshot() *Snapshot { return s.snap.Load() }

func (s *Service) currentTargets() []collector.Target {
	if t := s.targets.Load(); t != nil {
		return *t
	}
	return nil
}

// assign maps Ready pods to pools (the first matching pool in config order wins) and builds targets.
func assign(c *config.Config, pods []Pod) (map[store.PodKey]PoolKey, []collector.Target) {
	member := map[store.PodKey]PoolKey{}
	var targets []collector.Target
	for _, p := range pods {
		if !p.Ready || p.IP == "" {
			continue
		}
		for i := range c.Pools {
			pl := &c.Pools[i]
			if pl.Namespace != "" && pl.Namespace != p.Key.Namespace {
				continue
			}
			if !matches(pl.Selector, p.Labels) {
				continue
			}
			kind, _ := engine.ParseKind(pl.Engine) // validated by config
			member[p.Key] = PoolKey{Namespace: p.Key.Namespace, Name: pl.Name}
			targets = append(targets, collector.Target{
				Pod: p.Key, Pool: pl.Name, Engine: kind, MaxTPS: policy.RateLimit(pl),
				URL: pl.Scheme + "://" + hostPort(p.IP, pl.Port) + pl.Path,
			})
			break
		}
	}
	return member, targets
}

func hostPort(ip string, port int) string {
	for i := 0; i < len(ip); i++ {
		if ip[i] == ':' {
			return "[" + ip + "]:" + strconv.Itoa(port) // IPv6
		}
	}
	return ip + ":" + strconv.Itoa(port)
}

func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Step runs one round: refresh targets from the pod cache, scrape, aggregate, decide, publish.
func (s *Service) Step(ctx context.Context, now time.Time) *Snapshot {
	c := s.cfg()
	pods := s.pods.Pods()
	member, targets := assign(c, pods)
	podLabels := make(map[store.PodKey]map[string]string, len(member))
	for _, p := range pods {
		if _, ok := member[p.Key]; ok {
			podLabels[p.Key] = p.Labels
		}
	}
	s.targets.Store(&targets)
	s.members.Store(&member)
	if s.prom != nil {
		// A failed query records nothing: the pods go stale (unknown), never zero.
		if err := s.prom.PollOnce(ctx); err != nil {
			klog.ErrorS(err, "Prometheus source poll failed")
		}
	} else {
		s.scraper.ScrapeOnce(ctx)
	}

	snap := &Snapshot{Time: now, Pools: map[PoolKey]*PoolView{}, PodPool: member, PodLabels: podLabels, Decisions: map[string]policy.Decision{}}
	// One pass over the store, split by pool (List returns pods sorted by key).
	byPool := map[PoolKey][]store.PodKey{}
	results := map[PoolKey][]store.Result{}
	for _, r := range s.Store.List(nil) {
		if pk, ok := member[r.Pod]; ok {
			results[pk] = append(results[pk], r)
		}
	}
	for pod, pk := range member {
		byPool[pk] = append(byPool[pk], pod)
	}
	// Every configured pool with a fixed namespace exists even with no pods, so it reads as unknown.
	for i := range c.Pools {
		if ns := c.Pools[i].Namespace; ns != "" {
			pk := PoolKey{Namespace: ns, Name: c.Pools[i].Name}
			if _, ok := byPool[pk]; !ok {
				byPool[pk] = nil
			}
		}
	}
	groups := map[string][]*PoolView{}
	for pk, pods := range byPool {
		pl := poolByName(c, pk.Name)
		if pl == nil {
			continue
		}
		sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
		res := results[pk]
		// The controller keys its state by pool name: give it one per namespace.
		inst := *pl
		inst.Name = pk.String()
		st, err := policy.Aggregate(&inst, res, s.ctrl.Calibrated(inst.Name), c.Policy.Horizon.Duration)
		group := pl.Group
		if group == "" {
			group = pk.Namespace
		}
		v := &PoolView{Key: pk, Group: pk.Namespace + "/" + group, Config: pl, inst: &inst, Pods: pods, Status: st, Err: err}
		snap.Pools[pk] = v
		groups[v.Group] = append(groups[v.Group], v)
	}
	for g, views := range groups {
		var pre, dec *PoolView
		for _, v := range views {
			switch v.Config.Role {
			case config.RoleDecode:
				dec = pickFirst(dec, v)
			default:
				pre = pickFirst(pre, v)
			}
		}
		d := s.ctrl.Decide(now, c.Policy, g, poolOf(pre), statusOf(pre), poolOf(dec), statusOf(dec))
		snap.Decisions[g] = d
		for _, v := range views {
			if n, ok := d.Desired[v.inst.Name]; ok && (v == pre || v == dec) {
				v.Desired, v.HasDesired = n, true
			}
			if v == dec {
				v.Conversions = d.Conversions
			}
		}
		klog.V(3).InfoS("Decision", "group", g, "desired", d.Desired, "conversions", d.Conversions, "reasons", d.Reasons)
	}
	s.publish(snap)
	return snap
}

// pickFirst keeps one pool per role in a group; extra pools of the same role are reported, not sized.
func pickFirst(cur, v *PoolView) *PoolView {
	if cur == nil || v.Key.Name < cur.Key.Name {
		if cur != nil {
			cur.Err = fmt.Errorf("pool %s: another pool of the same role (%s) in group %s is sized instead", cur.Key, v.Key.Name, v.Group)
		}
		return v
	}
	v.Err = fmt.Errorf("pool %s: another pool of the same role (%s) in group %s is sized instead", v.Key, cur.Key.Name, v.Group)
	return cur
}

func poolByName(c *config.Config, name string) *config.Pool {
	for i := range c.Pools {
		if c.Pools[i].Name == name {
			return &c.Pools[i]
		}
	}
	return nil
}

func poolOf(v *PoolView) *config.Pool {
	if v == nil {
		return nil
	}
	return v.inst
}

func statusOf(v *PoolView) *policy.PoolStatus {
	if v == nil || v.Err != nil {
		return nil
	}
	return &v.Status
}

// Run steps every scrape interval until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg().Scrape.Interval.Duration)
	defer t.Stop()
	for {
		s.Step(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pod returns one pod's velocity from the store, or why it is unknown.
func (s *Service) Pod(k store.PodKey) (store.Velocity, error) { return s.Store.Get(k) }

// Pods calls fn with each pod's velocity, or why it is unknown, in the order of keys (store.Store.Each).
func (s *Service) Pods(keys []store.PodKey, fn func(v *store.Velocity, err error)) {
	s.Store.Each(keys, fn)
}
