// Package kedascaler serves tokenscale's pool numbers to KEDA through its external scaler gRPC contract
// (trigger types external and external-push). Every call answers from the velocity service's latest
// snapshot in memory; unknown or stale values are errors, so KEDA's fallback can engage.
package kedascaler

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/kedascaler/trigger"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// Source is what the scaler reads: the newest snapshot, and a signal after each new one.
type Source interface {
	Snapshot() *service.Snapshot
	Subscribe() (<-chan struct{}, func())
}

// Server implements externalscaler.ExternalScalerServer.
type Server struct {
	// The embedded server answers optional RPCs added to the contract later (StreamMetricSpec) with
	// Unimplemented, which KEDA handles by falling back to polling.
	externalscaler.UnimplementedExternalScalerServer
	src Source
	// MaxAge is how old a snapshot may be before every answer is Unavailable.
	maxAge time.Duration
	now    func() time.Time
	// pushed counts StreamIsActive messages sent (for the scaler's own metrics).
	onPush func()
	// stopping closes when the scaler stops serving: open StreamIsActive streams then end (nil: never).
	stopping <-chan struct{}
	// parse holds the rules every trigger is parsed with (Options.AllowCrossNamespace).
	parse trigger.Options
	// sees is Options.Sees (nil: the informer sees every pool).
	sees func(namespace string, pool *config.Pool) bool
	// wakeEvery is how often StreamIsActive sends active again while the trigger's pool has no pods.
	wakeEvery time.Duration
}

// wakeEvery is how often an unanswered wake is pushed again: KEDA acts on each pushed activation once and
// drops it on any error (the ScaledObject not in its cache, its metric names not yet in the status, a
// conflict scaling from zero), and the pool at zero answers GetMetrics with an error, so its polls never
// reach IsActive: one dropped push left the pool at zero under load until the load stopped and came back.
// Each push costs KEDA a ScaledObject read and a scale request, and stops once a pod of the pool exists.
const wakeEvery = 5 * time.Second

// New returns a server over src; snapshots older than maxAge are stale.
func New(src Source, maxAge time.Duration) *Server {
	return &Server{src: src, maxAge: maxAge, now: time.Now, onPush: func() {}, wakeEvery: wakeEvery}
}

var _ externalscaler.ExternalScalerServer = (*Server)(nil)

// trigger parses a call's ScaledObjectRef and logs a refusal with the ScaledObject: KEDA reports the
// error only in its own log, so the scaler's must say whose trigger it turned away, and why. The names are
// a string value, which klog quotes (a KRef's parts are written as they are, a quote mark included).
func (s *Server) trigger(rpc string, ref *externalscaler.ScaledObjectRef) (trigger.Trigger, error) {
	t, err := trigger.Parse(ref, s.parse)
	if err != nil {
		klog.V(2).InfoS("Refused a trigger", "rpc", rpc, "scaledObject", trigger.Clip(ref.GetNamespace())+"/"+trigger.Clip(ref.GetName()), "err", err)
	}
	return t, err
}

// value reads one pool metric from snap, the snapshot the RPC loaded once (so that one answer never mixes
// rounds), or the gRPC error KEDA should see.
func (s *Server) value(snap *service.Snapshot, namespace, pool string, m service.PoolMetric) (float64, error) {
	if err := service.Fresh(snap, s.now(), s.maxAge); err != nil {
		return 0, status.Errorf(codes.Unavailable, "tokenscale: %v", err)
	}
	key := service.PoolKey{Namespace: namespace, Name: pool}
	v, ok := snap.Pools[key]
	if !ok {
		if n := snap.Matching[key]; n > 0 {
			// Its pods exist but none is Ready (starting, a rolling restart, failing readiness probes): the
			// pool is there and its numbers are unknown, not missing.
			return 0, status.Errorf(codes.Unavailable, "tokenscale: pool %q in namespace %q has %d pods and none Ready: its value is unknown", pool, namespace, n)
		}
		return 0, status.Errorf(codes.NotFound, "tokenscale: no pool %q with pods in namespace %q (pools there: %s)", pool, namespace, snap.PoolsIn(namespace))
	}
	x, err := v.Value(m) // a number the role lacks was refused first (mistake)
	if err != nil {
		return 0, status.Errorf(codes.Unavailable, "tokenscale: %v", err)
	}
	return x, nil
}

// mistake reports what no snapshot can serve in a trigger: an activationPool no config has in its
// namespace, or a number its pool's role lacks (queued prompt tokens of a decode pool, conversions of a
// prefill one). Each RPC checks it first: at zero the pool's own error is expected and was all KEDA saw,
// so a typo'd activationPool never woke the pool and nothing named it, and a number the role lacks was
// served as 0, holding the workload at its minimum.
func (s *Server) mistake(snap *service.Snapshot, t trigger.Trigger) error {
	if snap == nil {
		return nil
	}
	if t.ActivationPool != t.Pool && snap.ConfiguredPool(t.Namespace, t.ActivationPool) == nil {
		return status.Errorf(codes.NotFound, "tokenscale: activationPool %q: no pool of that name in namespace %q (pools there: %s)", t.ActivationPool, t.Namespace, snap.PoolsIn(t.Namespace))
	}
	for _, pm := range []struct {
		pool string
		m    service.PoolMetric
	}{{t.Pool, t.Metric}, {t.ActivationPool, t.ActivationMetric}} {
		// A pool no config has is nil here: its own lookup says so.
		p := snap.ConfiguredPool(t.Namespace, pm.pool)
		if err := service.NotCarried(service.PoolKey{Namespace: t.Namespace, Name: pm.pool}, p, pm.m); err != nil {
			return status.Errorf(codes.InvalidArgument, "tokenscale: %v", err)
		}
	}
	return nil
}

// active compares the activation value with the threshold at the resolution the value is served in
// (thousandths): the smoothed rates decay towards 0 without reaching it, and a rate that reads 0.000
// must not keep a workload awake for minutes.
func (s *Server) active(snap *service.Snapshot, t trigger.Trigger) (bool, error) {
	v, err := s.value(snap, t.Namespace, t.ActivationPool, t.ActivationMetric)
	if err != nil {
		if t.ActivationPool != t.Pool && s.noPods(snap, t.Namespace, t.ActivationPool) {
			// Another pool with no pods at all (scaled to zero, or not deployed here) serves no load: the
			// trigger is inactive, as with one idle pod. Read as unknown, it answered active forever (a
			// pool that never scales to zero), and a pool at zero beside it went to fallback's size.
			return false, nil
		}
		return false, err
	}
	return math.Round(v*1000)/1000 > t.ActivationThreshold, nil
}

// noPods says whether a pool the config runs in namespace has no pods there at all, Ready or not, in a
// fresh snapshot (a stale one says nothing of pods) from a pod informer that sees every pod of the pool
// there (one outside --namespace, or a pool selecting on labels past --pod-selector, counts none of them).
func (s *Server) noPods(snap *service.Snapshot, namespace, pool string) bool {
	if service.Fresh(snap, s.now(), s.maxAge) != nil {
		return false
	}
	p := snap.ConfiguredPool(namespace, pool)
	if p == nil || s.sees != nil && !s.sees(namespace, p) {
		return false
	}
	key := service.PoolKey{Namespace: namespace, Name: pool}
	if v, ok := snap.Pools[key]; ok && len(v.Pods) > 0 {
		return false
	}
	return snap.Matching[key] == 0
}

// IsActive says whether the workload should run at all (KEDA scales 0 <-> 1 on it). When the activation
// value is unknown but the trigger's own pool, another one, has Ready pods and a known value, the answer is
// active: KEDA asks IsActive on every poll of the HPA's metric too, and an unknown activation pool (its one
// pod restarting) must neither fail a running pool's metric nor let it scale to zero on no evidence. An
// activation pool no config has is an error still, and one with no pods at all is inactive (see active).
func (s *Server) IsActive(_ context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.IsActiveResponse, error) {
	t, err := s.trigger("IsActive", ref)
	if err != nil {
		return nil, err
	}
	snap := s.src.Snapshot()
	if err := s.mistake(snap, t); err != nil {
		return nil, err
	}
	a, err := s.active(snap, t)
	if err != nil {
		if t.ActivationPool == t.Pool {
			return nil, err
		}
		if snap == nil || snap.ConfiguredPool(t.Namespace, t.ActivationPool) == nil {
			return nil, err // no such pool: a typo stays an error, not an answer of active forever
		}
		if _, perr := s.value(snap, t.Namespace, t.Pool, t.Metric); perr != nil {
			return nil, err
		}
		klog.V(2).InfoS("Activation unknown while the pool runs; answering active", "trigger", t.String(), "err", err)
		a = true
	}
	return &externalscaler.IsActiveResponse{Result: a}, nil
}

// idleAtZero says whether a trigger's pool has no Ready pods while its activation pool, another one, is
// known and inactive (or has no pods at all). The policy's number for such a pool is then 0, by the
// trigger's own rule, and not unknown: KEDA asks GetMetrics before IsActive on every poll, and an error
// there would count toward fallback (which wakes the pool) and keep an external trigger from ever
// reading IsActive. That holds for a pool whose pods exist but are not Ready too: pods stuck Pending or
// crash-looping after a wake must not hold the pool above zero, or push it to fallback's size, once its
// activation pool is idle. Only for a pool whose pods the informer surely sees (as noPods).
func (s *Server) idleAtZero(snap *service.Snapshot, t trigger.Trigger) bool {
	if t.Metric != service.Desired || t.ActivationPool == t.Pool {
		return false
	}
	if snap == nil {
		return false
	}
	p := snap.ConfiguredPool(t.Namespace, t.Pool)
	if p == nil {
		return false // no such pool: a typo stays an error
	}
	if s.sees != nil && !s.sees(t.Namespace, p) {
		// The pod informer may miss its pods (outside --namespace, or past --pod-selector): no Ready pods
		// seen is no evidence of none, and its Ready, busy pods would be told 0.
		return false
	}
	if v, ok := snap.Pools[service.PoolKey{Namespace: t.Namespace, Name: t.Pool}]; ok && len(v.Pods) > 0 {
		return false
	}
	a, err := s.active(snap, t)
	return err == nil && !a
}

// GetMetricSpec announces the trigger's metric and target.
func (s *Server) GetMetricSpec(_ context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.GetMetricSpecResponse, error) {
	t, err := s.trigger("GetMetricSpec", ref)
	if err != nil {
		return nil, err
	}
	return &externalscaler.GetMetricSpecResponse{MetricSpecs: []*externalscaler.MetricSpec{{
		MetricName: t.HPAMetricName(), TargetSize: int64(math.Ceil(t.Target)), TargetSizeFloat: t.Target,
	}}}, nil
}

// GetMetrics returns the trigger's metric value.
func (s *Server) GetMetrics(_ context.Context, req *externalscaler.GetMetricsRequest) (*externalscaler.GetMetricsResponse, error) {
	t, err := s.trigger("GetMetrics", req.GetScaledObjectRef())
	if err != nil {
		return nil, err
	}
	snap := s.src.Snapshot()
	if err := s.mistake(snap, t); err != nil {
		return nil, err
	}
	v, err := s.value(snap, t.Namespace, t.Pool, t.Metric)
	if err != nil {
		if !s.idleAtZero(snap, t) {
			return nil, err
		}
		klog.V(2).InfoS("Pool has no pods and its activation pool is idle; desired replicas 0", "trigger", t.String())
		v = 0
	}
	name := req.GetMetricName()
	if name == "" {
		name = t.HPAMetricName()
	}
	return &externalscaler.GetMetricsResponse{MetricValues: []*externalscaler.MetricValue{{
		MetricName: name, MetricValue: int64(math.Round(v)), MetricValueFloat: v,
	}}}, nil
}

// StreamIsActive (trigger type external-push) sends the activation state on every change, evaluated on
// every new snapshot, so a burst is pushed within one scrape interval instead of on KEDA's next poll;
// while the trigger's pool has no pods and the state is active, it is sent again every wakeEvery, until a
// pod exists. While the value is unknown nothing is sent (KEDA keeps its state). It ends with the stream's context, or
// cleanly (OK, which KEDA reads as io.EOF) when the scaler stops, so KEDA reconnects rather than holding
// the stop up: KEDA retries after 2 s only on io.EOF, and doubles its wait up to a minute on any error,
// so an error here would leave push triggers without a stream for longer after every rollout.
func (s *Server) StreamIsActive(ref *externalscaler.ScaledObjectRef, stream grpc.ServerStreamingServer[externalscaler.IsActiveResponse]) error {
	t, err := s.trigger("StreamIsActive", ref)
	if err != nil {
		return err
	}
	ch, cancel := s.src.Subscribe()
	defer cancel()
	ctx := stream.Context()
	var last *bool
	var sent time.Time
	for {
		snap := s.src.Snapshot()
		if err := s.mistake(snap, t); err != nil {
			return err // KEDA logs it and opens the stream again after its backoff
		}
		a, err := s.active(snap, t)
		now := s.now()
		// Sent again while nothing of the wake shows: no pod of the pool at all, Pending ones included.
		again := err == nil && a && last != nil && *last && s.noPods(snap, t.Namespace, t.Pool) &&
			(now.Sub(sent) >= s.wakeEvery || now.Before(sent))
		if err == nil && (last == nil || *last != a || again) {
			if err := stream.Send(&externalscaler.IsActiveResponse{Result: a}); err != nil {
				return fmt.Errorf("pushing activation for %s: %w", t.Pool, err)
			}
			s.onPush()
			klog.V(2).InfoS("Pushed activation", "trigger", t.String(), "active", a, "again", again)
			last, sent = &a, now
		} else if err != nil {
			klog.V(3).InfoS("Activation unknown; nothing pushed", "trigger", t.String(), "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return nil
		case <-ch:
		}
	}
}
