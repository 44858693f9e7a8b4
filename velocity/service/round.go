package service

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/velocity/collector"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/policy"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// Members is one round's pool membership: which Ready pod belongs to which pool instance, the pods'
// labels (for selector queries), and the scrape targets they make.
type Members struct {
	Pool    map[store.PodKey]PoolKey
	Labels  map[store.PodKey]map[string]string
	Targets []collector.Target
	// Matching counts the pods each pool instance's selector takes, Ready or not: a pool whose pods are all
	// starting or failing their readiness probe is not at zero, and a front must not answer as if it were.
	Matching map[PoolKey]int
	// Starting maps each pod a pool's selector takes but that is not Ready to that pool instance, so a
	// read of the pod can say its values are unknown, as a read of its pool does.
	Starting map[store.PodKey]PoolKey
	// Shared holds the member pods whose metrics address another member pod has too (hostNetwork pods on
	// one node), with that address: they are not scraped (ScrapeTargets), since which engine answers is
	// unknown, and read as unknown rather than as one engine counted twice. Prometheus, which tells pods
	// apart by their own targets, reads them as any pod.
	Shared map[store.PodKey]string
	// pools maps each instance to the index of its configured pool, so an instance always takes its own
	// pool's selector, workload and profile even where two namespaces use the same pool name.
	pools map[PoolKey]int
}

// Has reports whether a pod belongs to a pool this round.
func (m *Members) Has(k store.PodKey) bool {
	_, ok := m.Pool[k]
	return ok
}

// Assign maps Ready pods to pool instances: the first matching pool in config order wins, and a pool
// without a namespace makes one instance per namespace its pods are in. Every pool with a fixed
// namespace exists even with no pods, so that it reads as unknown rather than missing. Pods that are
// not Ready are only counted (Matching): they make no instance and are not scraped.
func Assign(c *config.Config, pods []Pod) *Members {
	m := &Members{Pool: map[store.PodKey]PoolKey{}, Labels: map[store.PodKey]map[string]string{},
		Matching: map[PoolKey]int{}, Starting: map[store.PodKey]PoolKey{}, pools: map[PoolKey]int{}}
	for i := range c.Pools {
		if ns := c.Pools[i].Namespace; ns != "" {
			m.pools[PoolKey{Namespace: ns, Name: c.Pools[i].Name}] = i
		}
	}
	for _, p := range pods {
		if p.Gone {
			continue
		}
		ready := p.Ready && p.IP != ""
		for i := range c.Pools {
			pl := &c.Pools[i]
			if pl.Namespace != "" && pl.Namespace != p.Key.Namespace {
				continue
			}
			if !Matches(pl.Selector, p.Labels) {
				continue
			}
			pk := PoolKey{Namespace: p.Key.Namespace, Name: pl.Name}
			if j, taken := m.pools[pk]; taken && j != i {
				// A pool fixed to this namespace holds its name here: a pool without a namespace of the
				// same name makes no instance here (config.RunsIn, which lookups by name use).
				continue
			}
			m.Matching[pk]++
			if !ready {
				m.Starting[p.Key] = pk
				break
			}
			m.pools[pk] = i
			kind, _ := engine.ParseKind(pl.Engine) // validated by config
			m.Pool[p.Key] = pk
			m.Labels[p.Key] = p.Labels
			m.Targets = append(m.Targets, collector.Target{
				// The pool's plausible rate lets the store reject a glitched sample before it becomes a rate.
				Pod: p.Key, Pool: pl.Name, Engine: kind, Limit: policy.RateLimit(pl),
				URL: pl.Scheme + "://" + hostPort(p.IP, pl.Port) + pl.Path,
			})
			break
		}
	}
	byURL := make(map[string]int, len(m.Targets))
	for _, t := range m.Targets {
		byURL[t.URL]++
	}
	if len(byURL) < len(m.Targets) {
		m.Shared = map[store.PodKey]string{}
		for _, t := range m.Targets {
			if byURL[t.URL] > 1 {
				m.Shared[t.Pod] = t.URL
			}
		}
	}
	return m
}

// ScrapeTargets are the targets to scrape: every member's but those of pods sharing an address.
func (m *Members) ScrapeTargets() []collector.Target {
	if len(m.Shared) == 0 {
		return m.Targets
	}
	out := make([]collector.Target, 0, len(m.Targets)-len(m.Shared))
	for _, t := range m.Targets {
		if _, shared := m.Shared[t.Pod]; !shared {
			out = append(out, t)
		}
	}
	return out
}

func hostPort(ip string, port int) string {
	for i := 0; i < len(ip); i++ {
		if ip[i] == ':' {
			return "[" + ip + "]:" + strconv.Itoa(port) // IPv6
		}
	}
	return ip + ":" + strconv.Itoa(port)
}

// Matches reports whether labels satisfy an equality selector as Kubernetes reads one: every key must
// be present with exactly the value, so `role: ""` matches only pods whose role label is empty.
func Matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		lv, ok := labels[k]
		if !ok || lv != v {
			return false
		}
	}
	return true
}

// Decide is one decision round, the only one in the project: from the config in force, the round's
// membership, the store's results after this round's collection (sorted by pod, as store.List returns
// them), the controller's state and the time, it aggregates every pool instance, sizes each group and
// returns the snapshot the fronts serve. The adapter's loop, the simulator's tokenscale policy and the
// no-Kubernetes demo all call it. It reads nothing else and changes nothing but the controller.
func Decide(c *config.Config, m *Members, results []store.Result, ctrl *policy.Controller, now time.Time) *Snapshot {
	snap := &Snapshot{Time: now, Pools: map[PoolKey]*PoolView{}, PodPool: m.Pool, PodLabels: m.Labels,
		Decisions: map[string]policy.Decision{}, PodResults: make(map[store.PodKey]*store.Result, len(m.Pool)),
		ConfigPools: c.Pools, Matching: m.Matching, Starting: m.Starting}
	byPool := map[PoolKey][]store.PodKey{}
	poolResults := map[PoolKey][]store.Result{}
	for i := range results {
		r := &results[i]
		if pk, ok := m.Pool[r.Pod]; ok {
			poolResults[pk] = append(poolResults[pk], *r)
			snap.PodResults[r.Pod] = r
		}
	}
	for pk := range m.pools {
		byPool[pk] = nil
	}
	for pod, pk := range m.Pool {
		byPool[pk] = append(byPool[pk], pod)
	}
	groups := map[string][]*PoolView{}
	for pk, pods := range byPool {
		idx, ok := m.pools[pk]
		if !ok || idx >= len(c.Pools) {
			continue
		}
		pl := &c.Pools[idx]
		sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
		// A Ready pod the round has no numbers for (Prometheus has not scraped it yet, or its monitor
		// misses it) counts as a pod of unknown velocity, as one warming up does: left out, the pool's
		// capacity would count only the pods with numbers.
		if len(poolResults[pk]) < len(pods) {
			have := make(map[store.PodKey]bool, len(poolResults[pk]))
			for _, r := range poolResults[pk] {
				have[r.Pod] = true
			}
			for _, pod := range pods {
				if !have[pod] {
					r := store.Result{Velocity: store.Velocity{Pod: pod},
						Err: fmt.Errorf("%s: %w: no numbers for it this round", pod, store.ErrNotFound)}
					if url, shared := m.Shared[pod]; shared {
						r.Err = fmt.Errorf("%s: %w: another pod has its metrics address %.200s too (hostNetwork pods on one node?), so which engine answers is unknown", pod, store.ErrNotFound, url)
					}
					poolResults[pk] = append(poolResults[pk], r)
					// The pod's own query says the same, not that no pool tracks it.
					snap.PodResults[pod] = &r
				}
			}
		}
		// The controller keys its state by pool name: give it one per instance.
		inst := *pl
		inst.Name = pk.String()
		st, err := policy.Aggregate(&inst, poolResults[pk], ctrl.CalibratedFor(&inst, c.Policy), c.Policy.Horizon.Duration)
		st.Running = m.Matching[pk]
		if n := m.Matching[pk]; len(pods) == 0 && n > 0 {
			// A pool with a fixed namespace has an instance without Ready pods: it says how many it has, as
			// the fronts do for a pool without an instance.
			err = fmt.Errorf("pool %s: %w (%d pods, none Ready)", inst.Name, policy.ErrNoData, n)
		}
		group := pl.Group
		if group == "" {
			group = pk.Namespace
		}
		v := &PoolView{Key: pk, Group: pk.Namespace + "/" + group, Config: pl, inst: &inst, Pods: pods, Status: st, Err: err}
		snap.Pools[pk] = v
		groups[v.Group] = append(groups[v.Group], v)
	}
	// Groups in a fixed order, so the controller sees the same sequence of calls every round.
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	sort.Strings(names)
	for _, g := range names {
		views := groups[g]
		var pre, dec *PoolView
		for _, v := range views {
			switch v.Config.Role {
			case config.RoleDecode:
				dec = pickFirst(m, dec, v)
			default:
				pre = pickFirst(m, pre, v)
			}
		}
		d := ctrl.Decide(now, c.Policy, g, poolOf(pre), statusOf(pre), poolOf(dec), statusOf(dec))
		snap.Decisions[g] = d
		for _, v := range views {
			if n, ok := d.Desired[v.inst.Name]; ok && (v == pre || v == dec) {
				v.Desired, v.HasDesired = n, true
			}
			if v == dec {
				v.Conversions = d.Conversions
				v.ConversionsErr = prefillUnknown(c, m, pre, dec)
			}
		}
		klog.V(3).InfoS("Decision", "group", g, "desired", d.Desired, "conversions", d.Conversions, "reasons", d.Reasons)
	}
	return snap
}

// prefillUnknown says why a decode pool's conversions are unknown: its group's prefill pool is unknown,
// or has pods here of which none is Ready, and the policy released every conversion without a figure to
// decide on. nil when the prefill pool is known or has no pods here (nothing to convert for: a known 0).
func prefillUnknown(c *config.Config, m *Members, pre, dec *PoolView) error {
	if pre != nil {
		if pre.Err == nil {
			return nil
		}
		if m.Matching[pre.Key] > 0 {
			return fmt.Errorf("the group's prefill pool %s is unknown: %w", pre.Key, pre.Err)
		}
		// A pool fixed to the namespace has an instance there even with no pods: then, as where the group
		// has no prefill instance, another prefill pool's pods starting there make it unknown, and none a 0.
	}
	for i := range c.Pools {
		pl := &c.Pools[i]
		if pl.Role == config.RoleDecode || !config.RunsIn(c.Pools, pl, dec.Key.Namespace) {
			continue
		}
		group := pl.Group
		if group == "" {
			group = dec.Key.Namespace
		}
		k := PoolKey{Namespace: dec.Key.Namespace, Name: pl.Name}
		if n := m.Matching[k]; n > 0 && dec.Key.Namespace+"/"+group == dec.Group {
			return fmt.Errorf("the group's prefill pool %s is unknown: %w (%d pods, none Ready)", k, policy.ErrNoData, n)
		}
	}
	return nil
}

// pickFirst keeps one pool per role in a group; extra pools of the same role are reported, not sized.
// A pool with pods in the namespace goes before one without (a pool fixed to the namespace has an
// instance there even with none, which would otherwise take the place of a pool with Ready pods), then
// the first by name.
func pickFirst(m *Members, cur, v *PoolView) *PoolView {
	has := func(x *PoolView) bool { return m.Matching[x.Key] > 0 } // Ready or not
	if cur == nil || has(v) && !has(cur) || has(v) == has(cur) && v.Key.Name < cur.Key.Name {
		if cur != nil {
			cur.Err = fmt.Errorf("pool %s: another pool of the same role (%s) in group %s is sized instead", cur.Key, v.Key.Name, v.Group)
		}
		return v
	}
	v.Err = fmt.Errorf("pool %s: another pool of the same role (%s) in group %s is sized instead", v.Key, cur.Key.Name, v.Group)
	return cur
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
