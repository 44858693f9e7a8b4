package service

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
)

// PoolMetric names one of a pool's served numbers; every front (custom metrics, external metrics, KEDA)
// reads pools through Value so that they agree on what is known.
type PoolMetric string

const (
	Arrival      PoolMetric = "arrival"      // λ, tokens/s
	Capacity     PoolMetric = "capacity"     // N·V, tokens/s
	Utilisation  PoolMetric = "utilisation"  // ρ
	Backpressure PoolMetric = "backpressure" // ≥ 1: TTFT breach predicted within the horizon
	Queued       PoolMetric = "queued"       // queued prompt tokens
	Desired      PoolMetric = "desired"      // the policy's replica count
	Conversions  PoolMetric = "conversions"  // decoders wanted for prefill work
)

// PoolMetrics lists every PoolMetric.
var PoolMetrics = []PoolMetric{Arrival, Capacity, Utilisation, Backpressure, Queued, Desired, Conversions}

// MaxValue is the largest number any front serves: a Kubernetes milli-quantity of it fits an int64
// (9.2e18) with room for rounding, as does KEDA's int64 metric value, and no token rate or count comes
// near it. A larger one is an error, never a wrapped number.
const MaxValue = 1e15

// ErrUnknown wraps every reason a pool value is not known now.
var ErrUnknown = errors.New("value unknown")

// ErrNotCarried is a number the pool's role does not have: queued prompt tokens on a decode pool,
// conversions on a prefill or both pool. Served as 0 it read as an idle pool to any trigger on it.
var ErrNotCarried = errors.New("not a number of this pool's role")

// Carries reports whether a pool of role r has the number m: queued prompt tokens are prefill work, and
// conversions are decided for decode pools.
func Carries(r config.Role, m PoolMetric) bool {
	switch m {
	case Queued:
		return r != config.RoleDecode
	case Conversions:
		return r == config.RoleDecode
	}
	return true
}

// NotCarried returns an error wrapping ErrNotCarried, naming the pool and the one that carries m, when
// pool p (at key) has a role that lacks m; nil otherwise, and for a nil p. The key is written printable:
// its namespace can be a request's (any text a client sends).
func NotCarried(key PoolKey, p *config.Pool, m PoolMetric) error {
	if p == nil || Carries(p.Role, m) {
		return nil
	}
	where := "the prefill pool"
	if m == Conversions {
		where = "the decode pool"
	}
	return fmt.Errorf("%s of pool %s: %w (a %s pool): read it on %s of the group", m, engine.PrintableWithin(key.String(), 300), ErrNotCarried, p.Role, where)
}

// Value returns one of the pool's numbers, or why it is unknown. It never returns NaN, Inf or a
// negative number.
func (v *PoolView) Value(m PoolMetric) (float64, error) {
	if err := NotCarried(v.Key, v.Config, m); err != nil {
		return 0, err
	}
	var x float64
	known := v.Err == nil
	switch m {
	case Arrival:
		x = v.Status.Arrival
	case Capacity:
		x = v.Status.Capacity
	case Utilisation:
		x = v.Status.Utilisation
	case Backpressure:
		x = v.Status.Backpressure
	case Queued:
		x = v.Status.QueuedTokens
	case Desired:
		x, known = float64(v.Desired), v.HasDesired
	case Conversions:
		x = float64(v.Conversions)
		known = known && v.ConversionsErr == nil
	default:
		return 0, fmt.Errorf("pool metric %q does not exist", m)
	}
	if !known {
		why := "the policy could not size the pool"
		switch {
		case v.Err != nil:
			why = v.Err.Error()
		case m == Conversions && v.ConversionsErr != nil:
			why = v.ConversionsErr.Error()
		}
		return 0, fmt.Errorf("%s of pool %s: %w: %s", m, v.Key, ErrUnknown, why)
	}
	if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 || x > MaxValue {
		return 0, fmt.Errorf("%s of pool %s: %w: %g is not a finite number within 0..%g", m, v.Key, ErrUnknown, x, float64(MaxValue))
	}
	return x, nil
}

// subscribers are notified after each published snapshot.
type subscribers struct {
	mu   sync.Mutex
	next int
	chs  map[int]chan struct{}
}

// Subscribe returns a channel that is signalled after every published snapshot; a slow reader misses
// nothing that matters, as the signals coalesce and Snapshot returns the newest. cancel releases it.
func (s *Service) Subscribe() (<-chan struct{}, func()) {
	s.subs.mu.Lock()
	defer s.subs.mu.Unlock()
	if s.subs.chs == nil {
		s.subs.chs = map[int]chan struct{}{}
	}
	id := s.subs.next
	s.subs.next++
	ch := make(chan struct{}, 1)
	s.subs.chs[id] = ch
	return ch, func() {
		s.subs.mu.Lock()
		delete(s.subs.chs, id)
		s.subs.mu.Unlock()
	}
}

func (s *Service) publish(snap *Snapshot) {
	s.snap.Store(snap)
	s.subs.mu.Lock()
	defer s.subs.mu.Unlock()
	for _, ch := range s.subs.chs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// MaxAge is how old a snapshot may be before a front refuses to answer from it and reports not ready:
// three scrape intervals and a second, so one slow or failed round is tolerated and a stalled loop is not.
// The scrape loop bounds its rounds to half of it (roundDeadline), so even two slow rounds in a row fit.
func MaxAge(interval time.Duration) time.Duration { return 3*interval + time.Second }

// Fresh says whether a snapshot may be served at now: it exists and is at most maxAge old. Every front
// uses it for readiness and for refusing stale answers.
func Fresh(s *Snapshot, now time.Time, maxAge time.Duration) error {
	if s == nil {
		return errors.New("no velocity snapshot yet (the first scrape round has not finished)")
	}
	if age := now.Sub(s.Time); age > maxAge {
		return fmt.Errorf("velocity snapshot is %s old (limit %s): scraping has stalled", age.Round(time.Millisecond), maxAge)
	}
	return nil
}

// ConfiguredPool is the config's pool of this name that may run in namespace, or nil.
func (s *Snapshot) ConfiguredPool(namespace, name string) *config.Pool {
	for i := range s.ConfigPools {
		if p := &s.ConfigPools[i]; p.Name == name && config.RunsIn(s.ConfigPools, p, namespace) {
			return p
		}
	}
	return nil
}

// WorkloadPool is the config's pool whose Object metrics go on this workload in namespace, or nil.
func (s *Snapshot) WorkloadPool(namespace, kind, name string) *config.Pool {
	for i := range s.ConfigPools {
		p := &s.ConfigPools[i]
		if p.Workload.Kind == kind && p.Workload.Name == name && config.RunsIn(s.ConfigPools, p, namespace) {
			return p
		}
	}
	return nil
}

// PoolsIn lists a namespace's pool instances and their workloads ("prefill→Deployment/llama-prefill"),
// or "none", for error messages that say what exists.
func (s *Snapshot) PoolsIn(namespace string) string {
	var out []string
	for k, v := range s.Pools {
		if k.Namespace != namespace {
			continue
		}
		if v.Config.Workload.Name == "" {
			// The built-in pools name none: saying so tells a user why an Object query found nothing.
			out = append(out, k.Name+"→no workload.name")
			continue
		}
		out = append(out, fmt.Sprintf("%s→%s/%s", k.Name, v.Config.Workload.Kind, v.Config.Workload.Name))
	}
	if len(out) == 0 {
		return "none"
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
