package kedascaler

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/policy"
	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// source is a Source the test publishes snapshots to.
type source struct {
	mu   sync.Mutex
	snap *service.Snapshot
	subs []chan struct{}
}

func (s *source) Snapshot() *service.Snapshot { s.mu.Lock(); defer s.mu.Unlock(); return s.snap }
func (s *source) Subscribe() (<-chan struct{}, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{}, 1)
	s.subs = append(s.subs, ch)
	return ch, func() {}
}
func (s *source) publish(snap *service.Snapshot) {
	s.mu.Lock()
	s.snap = snap
	subs := s.subs
	s.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

var cfg = config.Default()

// snapshot has a prefill pool at the given arrival (desired 3) and a decode pool whose value is unknown.
func snapshot(now time.Time, arrival float64) *service.Snapshot {
	pk, dk := service.PoolKey{Namespace: "llm", Name: "prefill"}, service.PoolKey{Namespace: "llm", Name: "decode"}
	return &service.Snapshot{Time: now, ConfigPools: cfg.Pools, Pools: map[service.PoolKey]*service.PoolView{
		pk: {Key: pk, Config: &cfg.Pools[0], Status: policy.PoolStatus{Arrival: arrival, Backpressure: 0.4}, Desired: 3, HasDesired: true},
		dk: {Key: dk, Config: &cfg.Pools[1], Pods: []store.PodKey{{Namespace: "llm", Name: "d0"}}, Err: errors.New("pool decode: no pod of the pool has a known velocity")},
	}}
}

// dial serves srv over an in-memory connection and returns a client and a counter of running streams.
func dial(t testing.TB, srv *Server) (externalscaler.ExternalScalerClient, *atomic.Int32) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	var streams atomic.Int32
	g := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		streams.Add(1)
		defer streams.Add(-1)
		return h(srv, ss)
	}))
	externalscaler.RegisterExternalScalerServer(g, srv)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return externalscaler.NewExternalScalerClient(conn), &streams
}

// clientAt serves a Server over src, whose clock stands still at now, and returns its client.
func clientAt(t *testing.T, src *source, now time.Time) externalscaler.ExternalScalerClient {
	t.Helper()
	srv := New(src, 3*time.Second)
	srv.now = func() time.Time { return now }
	c, _ := dial(t, srv)
	return c
}

func ref(md map[string]string) *externalscaler.ScaledObjectRef {
	return &externalscaler.ScaledObjectRef{Name: "prefill", Namespace: "llm", ScalerMetadata: md}
}

// KEDA asks GetMetrics before IsActive on every poll, so a pool scaled to zero must not answer with an
// error while its group is idle: the error would count toward fallback (which wakes the pool, then it
// scales back: a flap) and an external trigger would never reach IsActive.
func TestPoolAtZero(t *testing.T) {
	now := time.Unix(1000, 0)
	src := &source{}
	c := clientAt(t, src, now)
	ctx := context.Background()
	dk := service.PoolKey{Namespace: "llm", Name: "decode"}
	publish := func(decodeArrival float64) {
		src.publish(&service.Snapshot{Time: now, ConfigPools: cfg.Pools,
			Pools: map[service.PoolKey]*service.PoolView{
				dk: {Key: dk, Config: &cfg.Pools[1], Pods: []store.PodKey{{Namespace: "llm", Name: "d0"}}, Status: policy.PoolStatus{Arrival: decodeArrival}, Desired: 1, HasDesired: true},
			}})
	}
	wake := map[string]string{"pool": "prefill", "activationPool": "decode", "activationThreshold": "0"}
	get := func(md map[string]string) (float64, error) {
		m, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(md)})
		if err != nil {
			return 0, err
		}
		return m.MetricValues[0].MetricValueFloat, nil
	}

	publish(1e-9) // a smoothed rate decaying after the load stopped: 0.000 as served
	if v, err := get(wake); err != nil || v != 0 {
		t.Fatalf("prefill at zero, decode idle: %v %v; want desired 0", v, err)
	}
	if a, err := c.IsActive(ctx, ref(wake)); err != nil || a.Result {
		t.Fatalf("IsActive with decode at 0.000 > 0: %v %v; want inactive", a, err)
	}
	publish(5000)
	if _, err := get(wake); status.Code(err) != codes.NotFound {
		t.Fatalf("prefill at zero, decode busy: %v; want NotFound (unknown until a pod is Ready)", err)
	}
	if a, err := c.IsActive(ctx, ref(wake)); err != nil || !a.Result {
		t.Fatalf("IsActive with decode busy: %v %v", a, err)
	}
	publish(0)
	for name, md := range map[string]map[string]string{
		"another metric":           {"pool": "prefill", "metric": "arrivalVelocity", "target": "100", "activationPool": "decode"},
		"activation from the pool": {"pool": "prefill"},
		"a pool no config has":     {"pool": "prefil", "activationPool": "decode"},
	} {
		if _, err := get(md); status.Code(err) != codes.NotFound {
			t.Errorf("%s: %v; want NotFound", name, err)
		}
	}
}

// A pool whose pods all exist but none is Ready (starting, a rolling restart, failing readiness probes) is
// unknown, Unavailable saying so, not missing (NotFound); while its activation pool is idle its
// desiredReplicas is 0 by the trigger's rule, as for a pool with no pods.
func TestPoolWithoutReadyPodsIsUnknown(t *testing.T) {
	now := time.Unix(1000, 0)
	src := &source{}
	c := clientAt(t, src, now)
	ctx := context.Background()
	pk, dk := service.PoolKey{Namespace: "llm", Name: "prefill"}, service.PoolKey{Namespace: "llm", Name: "decode"}
	publish := func(matching map[service.PoolKey]int, fixed bool) {
		snap := &service.Snapshot{Time: now, ConfigPools: cfg.Pools, Matching: matching,
			Pools: map[service.PoolKey]*service.PoolView{
				dk: {Key: dk, Config: &cfg.Pools[1], Pods: []store.PodKey{{Namespace: "llm", Name: "p0"}}, Status: policy.PoolStatus{Arrival: 0}, Desired: 1, HasDesired: true},
			}}
		if fixed { // a pool with a fixed namespace has a view even without Ready pods, its value unknown
			snap.Pools[pk] = &service.PoolView{Key: pk, Config: &cfg.Pools[0], Err: errors.New("pool prefill: no pod of the pool has a known velocity")}
		}
		src.publish(snap)
	}
	wake := ref(map[string]string{"pool": "prefill", "activationPool": "decode", "activationThreshold": "0"})
	get := func() (float64, error) {
		m, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: wake})
		if err != nil {
			return 0, err
		}
		return m.MetricValues[0].MetricValueFloat, nil
	}
	for _, fixed := range []bool{false, true} {
		// With its activation pool idle the trigger's own rule says the pool should not run, Ready pods or
		// not: pods stuck Pending after a wake must not hold it above zero or push it to fallback's size.
		for _, n := range []int{4, 0} {
			publish(map[service.PoolKey]int{pk: n, dk: 1}, fixed)
			if v, err := get(); err != nil || v != 0 {
				t.Errorf("fixed namespace %v: %d prefill pods, none Ready, decode idle: %v %v; want desired 0", fixed, n, v, err)
			}
		}
	}
	// Otherwise any metric of a pool with pods but none Ready is unknown, not missing: NotFound is for no
	// pods.
	publish(map[service.PoolKey]int{pk: 4, dk: 1}, false)
	_, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"pool": "prefill", "metric": "arrivalVelocity", "target": "100"})})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "4 pods and none Ready") {
		t.Errorf("arrival of a pool with 4 pods, none Ready: %v; want Unavailable saying so", err)
	}
}

// The scaler refuses a trigger that names another namespace than its ScaledObject's unless it runs with
// AllowCrossNamespace (Options, from --allow-cross-namespace); its own namespace is always served.
func TestServeRefusesOtherNamespaces(t *testing.T) {
	now := time.Now()
	src := &source{}
	src.publish(snapshot(now, 12000)) // pools in namespace llm
	get := func(o Options, soNamespace string) (*externalscaler.GetMetricsResponse, error) {
		conn, err := grpc.NewClient(serveForTest(t, src, o), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return externalscaler.NewExternalScalerClient(conn).GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: &externalscaler.ScaledObjectRef{
			Name: "prefill", Namespace: soNamespace, ScalerMetadata: map[string]string{"pool": "prefill", "namespace": "llm"}}})
	}
	if _, err := get(Options{}, "team-a"); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), `"llm", not the ScaledObject's own namespace "team-a"`) || !strings.Contains(err.Error(), "--allow-cross-namespace") {
		t.Errorf("team-a reading llm: %v; want InvalidArgument naming both namespaces and the flag", err)
	}
	if m, err := get(Options{AllowCrossNamespace: true}, "team-a"); err != nil || m.MetricValues[0].MetricValueFloat != 3 {
		t.Errorf("team-a reading llm with AllowCrossNamespace: %v %v; want 3", m, err)
	}
	if m, err := get(Options{}, "llm"); err != nil || m.MetricValues[0].MetricValueFloat != 3 {
		t.Errorf("llm naming its own namespace: %v %v; want 3", m, err)
	}
}

// An unknown activation pool does not fail a running pool's trigger: it answers active.
func TestActivationUnknownWhilePoolRuns(t *testing.T) {
	now := time.Unix(1000, 0)
	src := &source{}
	c := clientAt(t, src, now)
	src.publish(snapshot(now, 12000)) // prefill known, decode unknown
	a, err := c.IsActive(context.Background(), ref(map[string]string{"pool": "prefill", "activationPool": "decode"}))
	if err != nil || !a.Result {
		t.Fatalf("prefill known, activation on unknown decode: %v %v; want active", a, err)
	}
	if _, err := c.IsActive(context.Background(), ref(map[string]string{"pool": "decode", "activationPool": "decode"})); status.Code(err) != codes.Unavailable {
		t.Fatalf("activation on its own unknown pool: %v; want Unavailable", err)
	}
	// An activation pool with no pods at all serves no load: inactive, not unknown (which answered active
	// forever, so the pool never scaled to zero), for a pool with a fixed namespace too; and a pool at
	// zero beside it wants 0, not an error toward fallback, which would wake it.
	for _, fixed := range []bool{false, true} {
		snap := snapshot(now, 12000)
		dk := service.PoolKey{Namespace: "llm", Name: "decode"}
		if fixed {
			pools := slices.Clone(cfg.Pools)
			pools[1].Namespace = "llm"
			snap.ConfigPools = pools
			snap.Pools[dk] = &service.PoolView{Key: dk, Config: &pools[1], Err: errors.New("pool llm/decode: no data (no pods)")}
		} else {
			delete(snap.Pools, dk)
		}
		src.publish(snap)
		if a, err := c.IsActive(context.Background(), ref(map[string]string{"pool": "prefill", "activationPool": "decode"})); err != nil || a.Result {
			t.Errorf("fixed namespace %v: activation on a decode pool without pods: %v %v; want inactive", fixed, a, err)
		}
		delete(snap.Pools, service.PoolKey{Namespace: "llm", Name: "prefill"})
		m, err := c.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"pool": "prefill", "activationPool": "decode"})})
		if err != nil || m.MetricValues[0].MetricValueFloat != 0 {
			t.Errorf("fixed namespace %v: prefill at zero beside a decode pool without pods: %v %v; want desired 0", fixed, m, err)
		}
		// Pods that exist but none Ready are a restart: active while the pool runs, as above.
		snap = snapshot(now, 12000)
		delete(snap.Pools, dk)
		snap.Matching = map[service.PoolKey]int{dk: 1}
		src.publish(snap)
		if a, err := c.IsActive(context.Background(), ref(map[string]string{"pool": "prefill", "activationPool": "decode"})); err != nil || !a.Result {
			t.Errorf("activation on a decode pool whose one pod starts: %v %v; want active", a, err)
		}
	}
	// A pool the pod informer cannot see there (outside --namespace, or selecting on labels past
	// --pod-selector) counts no pods whatever runs: it is unknown, not idle.
	blind := New(src, 3*time.Second)
	blind.now = func() time.Time { return now }
	var asked []string
	blind.sees = func(ns string, p *config.Pool) bool { asked = append(asked, ns+"/"+p.Name); return false }
	bc, _ := dial(t, blind)
	snap := snapshot(now, 12000)
	delete(snap.Pools, service.PoolKey{Namespace: "llm", Name: "decode"})
	src.publish(snap)
	if a, err := bc.IsActive(context.Background(), ref(map[string]string{"pool": "prefill", "activationPool": "decode"})); err != nil || !a.Result || !slices.Contains(asked, "llm/decode") {
		t.Errorf("activation on a decode pool the informer cannot see: %v %v (asked %v); want active, as for an unknown pool", a, err, asked)
	}
	delete(snap.Pools, service.PoolKey{Namespace: "llm", Name: "prefill"})
	if _, err := bc.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"pool": "prefill", "activationPool": "decode"})}); err == nil {
		t.Error("prefill at zero beside a decode pool the informer cannot see: desired 0; want an error")
	}
	// The trigger's own pool past the informer beside an activation pool it sees idle: no Ready pods seen
	// is no evidence of none, and its Ready, busy pods were told 0.
	half := New(src, 3*time.Second)
	half.now = func() time.Time { return now }
	half.sees = func(_ string, p *config.Pool) bool { return p.Name != "prefill" }
	hc, _ := dial(t, half)
	snap = snapshot(now, 12000)
	delete(snap.Pools, service.PoolKey{Namespace: "llm", Name: "decode"})
	delete(snap.Pools, service.PoolKey{Namespace: "llm", Name: "prefill"})
	src.publish(snap)
	if a, err := hc.IsActive(context.Background(), ref(map[string]string{"pool": "prefill", "activationPool": "decode"})); err != nil || a.Result {
		t.Errorf("setup: activation on a decode pool seen without pods: %v %v; want inactive", a, err)
	}
	if m, err := hc.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"pool": "prefill", "activationPool": "decode"})}); err == nil {
		t.Errorf("a prefill pool the informer cannot see, beside an idle decode pool: %v; want an error, not desired 0", m)
	}
	src.publish(snapshot(now, 12000))
	// A pool no config has is a typo, not a restart: answering active would keep the workload from ever
	// scaling to zero, with no error anywhere.
	if a, err := c.IsActive(context.Background(), ref(map[string]string{"pool": "prefill", "activationPool": "decod"})); status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "decod") {
		t.Fatalf("activation on a pool no config has: %v %v; want NotFound naming it", a, err)
	}
}

func TestUnaryRPCs(t *testing.T) {
	now := time.Unix(1000, 0)
	src := &source{}
	srv := New(src, 3*time.Second)
	srv.now = func() time.Time { return now } // the test moves now on to make the snapshot stale
	c, _ := dial(t, srv)
	ctx := context.Background()
	desired := ref(map[string]string{"pool": "prefill", "scalerAddress": "tokenscale:9090"})

	if _, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: desired}); status.Code(err) != codes.Unavailable {
		t.Fatalf("before the first snapshot: %v, want Unavailable", err)
	}
	src.publish(snapshot(now, 12000))

	spec, err := c.GetMetricSpec(ctx, desired)
	if err != nil || len(spec.MetricSpecs) != 1 || spec.MetricSpecs[0].TargetSizeFloat != 1 || spec.MetricSpecs[0].MetricName != "tokenscale-prefill-desiredReplicas" {
		t.Fatalf("GetMetricSpec: %v %v", spec, err)
	}
	m, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: desired, MetricName: "s0-tokenscale-prefill-desiredReplicas"})
	if err != nil || m.MetricValues[0].MetricValueFloat != 3 || m.MetricValues[0].MetricName != "s0-tokenscale-prefill-desiredReplicas" {
		t.Fatalf("GetMetrics desired: %v %v", m, err)
	}
	arrival := ref(map[string]string{"pool": "prefill", "metric": "arrivalVelocity", "target": "8500", "activationThreshold": "100"})
	m, err = c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: arrival})
	if err != nil || m.MetricValues[0].MetricValueFloat != 12000 || m.MetricValues[0].MetricValue != 12000 {
		t.Fatalf("GetMetrics arrival: %v %v", m, err)
	}
	a, err := c.IsActive(ctx, arrival)
	if err != nil || !a.Result {
		t.Fatalf("IsActive at 12000 > 100: %v %v", a, err)
	}
	a, err = c.IsActive(ctx, ref(map[string]string{"pool": "prefill", "metric": "arrivalVelocity", "target": "8500", "activationThreshold": "20000"}))
	if err != nil || a.Result {
		t.Fatalf("IsActive at 12000 <= 20000: %v %v", a, err)
	}

	for name, c2 := range map[string]struct {
		call func() error
		code codes.Code
	}{
		"unknown pool": {func() error {
			_, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"pool": "nope"})})
			return err
		}, codes.NotFound},
		"unknown value": {func() error { _, err := c.IsActive(ctx, ref(map[string]string{"pool": "decode"})); return err }, codes.Unavailable},
		"bad metadata": {func() error {
			_, err := c.GetMetricSpec(ctx, ref(map[string]string{"pool": "prefill", "metric": "rps"}))
			return err
		}, codes.InvalidArgument},
		"optional RPC": {func() error {
			s, err := c.StreamMetricSpec(ctx, desired)
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}, codes.Unimplemented},
	} {
		if err := c2.call(); status.Code(err) != c2.code {
			t.Errorf("%s: %v, want %s", name, err, c2.code)
		}
	}
	now = now.Add(10 * time.Second) // the scrape loop stalled
	if _, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: desired}); status.Code(err) != codes.Unavailable {
		t.Fatalf("stale snapshot: %v, want Unavailable (never a stale or zero value)", err)
	}
}

func TestStreamIsActivePushesOnBurst(t *testing.T) {
	src := &source{}
	srv := New(src, time.Hour)
	// The pool has no pods, so a wake would be sent again after wakeEvery of real time: a loaded machine's
	// pause could then push active after the burst (TestStreamIsActivePushesAWakeAgain tests that).
	srv.wakeEvery = time.Hour
	c, streams := dial(t, srv)
	src.publish(snapshot(time.Now(), 0))
	ctx, cancel := context.WithCancel(context.Background())
	st, err := c.StreamIsActive(ctx, ref(map[string]string{"pool": "prefill", "activationThreshold": "500"}))
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.Recv()
	if err != nil || first.Result {
		t.Fatalf("first message: %v %v, want inactive", first, err)
	}
	// The burst: the next snapshot is pushed as it is published, not on a poll.
	start := time.Now()
	src.publish(snapshot(time.Now(), 4000))
	got, err := st.Recv()
	if err != nil || !got.Result {
		t.Fatalf("after the burst: %v %v, want active", got, err)
	}
	t.Logf("burst pushed %s after the snapshot was published", time.Since(start))
	// No change, no message; back to idle is pushed.
	src.publish(snapshot(time.Now(), 4100))
	src.publish(snapshot(time.Now(), 0))
	if got, err := st.Recv(); err != nil || got.Result {
		t.Fatalf("after the burst ended: %v %v, want inactive", got, err)
	}
	cancel()
	deadline := time.Now().Add(30 * time.Second) // a hang guard: ending the stream needs CPU a loaded machine gives late
	for streams.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server's stream did not end with its context")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func BenchmarkGetMetrics(b *testing.B) {
	src := &source{}
	src.publish(snapshot(time.Now(), 12000))
	srv := New(src, time.Hour)
	req := &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"pool": "prefill", "metric": "arrivalVelocity", "target": "8500"})}
	b.Run("in-process", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := srv.GetMetrics(context.Background(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("grpc-bufconn", func(b *testing.B) {
		c, _ := dial(b, srv)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.GetMetrics(context.Background(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A wake is pushed again every wakeEvery while the trigger's pool has no pods: KEDA acts on a pushed
// activation once and drops it on any error, and the pool at zero answers its polls with an error before
// IsActive, so one dropped push left the pool at zero under load. Once a pod of the pool exists (Pending
// counts), nothing more is sent until the state changes.
func TestStreamIsActivePushesAWakeAgain(t *testing.T) {
	var clock atomic.Int64
	t0 := time.Unix(1000, 0)
	clock.Store(t0.UnixNano())
	src := &source{}
	srv := New(src, 3*time.Second)
	srv.now = func() time.Time { return time.Unix(0, clock.Load()) }
	c, _ := dial(t, srv)
	pk, dk := service.PoolKey{Namespace: "llm", Name: "prefill"}, service.PoolKey{Namespace: "llm", Name: "decode"}
	publish := func(at time.Duration, prefillPods int, decodeArrival float64) {
		clock.Store(t0.Add(at).UnixNano())
		src.publish(&service.Snapshot{Time: t0.Add(at), ConfigPools: cfg.Pools, Matching: map[service.PoolKey]int{pk: prefillPods, dk: 1},
			Pools: map[service.PoolKey]*service.PoolView{
				dk: {Key: dk, Config: &cfg.Pools[1], Pods: []store.PodKey{{Namespace: "llm", Name: "d0"}}, Status: policy.PoolStatus{Arrival: decodeArrival}, Desired: 1, HasDesired: true},
			}})
	}
	// A hang guard only: a message that never comes fails the test instead of holding it to go test's limit.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	publish(0, 0, 5000)
	st, err := c.StreamIsActive(ctx, ref(map[string]string{"pool": "prefill", "activationPool": "decode", "activationThreshold": "0"}))
	if err != nil {
		t.Fatal(err)
	}
	recv := func(want bool, what string) {
		t.Helper()
		got, err := st.Recv()
		if err != nil || got.Result != want {
			t.Fatalf("%s: %v %v; want active %v", what, got, err, want)
		}
	}
	recv(true, "the wake")
	publish(time.Second, 0, 5000) // within wakeEvery: nothing
	publish(wakeEvery+time.Second, 0, 5000)
	recv(true, "the wake again, no pod of the pool after wakeEvery")
	publish(wakeEvery+2*time.Second, 1, 5000)   // a pod exists (Pending): the wake was taken
	publish(3*wakeEvery+2*time.Second, 1, 5000) // nothing more while it does
	publish(3*wakeEvery+3*time.Second, 1, 0)
	recv(false, "the load gone (a message sent in between would come first)")
}

// A trigger on a number its pool's role lacks (queued prompt tokens of a decode pool, conversions of a
// prefill pool) is refused, with or without pods, naming the pool that carries it: it was served as 0,
// which held the workload at its minimum with no error anywhere.
func TestTriggerOnANumberTheRoleLacks(t *testing.T) {
	now := time.Unix(1000, 0)
	src := &source{}
	c := clientAt(t, src, now)
	src.publish(snapshot(now, 4000)) // prefill has a view; decode's value is unknown
	for _, tc := range []struct {
		md   map[string]string
		want string
	}{
		{map[string]string{"pool": "decode", "metric": "queuedTokens", "target": "1000"}, "the prefill pool"},
		{map[string]string{"pool": "prefill", "metric": "conversionsWanted", "target": "1"}, "the decode pool"},
		{map[string]string{"pool": "prefill", "activationPool": "decode", "activationMetric": "queuedTokens"}, "the prefill pool"},
	} {
		_, err := c.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(tc.md)})
		if _, aerr := c.IsActive(context.Background(), ref(tc.md)); err == nil {
			err = aerr
		}
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want InvalidArgument naming %s", tc.md, err, tc.want)
		}
	}
	if m, err := c.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"pool": "prefill", "metric": "queuedTokens", "target": "1000"})}); err != nil || len(m.MetricValues) != 1 {
		t.Errorf("queued tokens of the prefill pool: %v, %v", m, err)
	}
}

// An activationPool no config has is an error naming it on every RPC, the pool at zero or not: at zero
// GetMetrics answered only the pool's own NotFound (expected there), KEDA never reached IsActive, and the
// stream logged at -v=3 and pushed nothing, so the workload never woke and nothing named the typo.
func TestTypoedActivationPoolAtZero(t *testing.T) {
	now := time.Unix(1000, 0)
	src := &source{}
	srv := New(src, 3*time.Second)
	srv.now = func() time.Time { return now }
	c, _ := dial(t, srv)
	dk := service.PoolKey{Namespace: "llm", Name: "decode"}
	src.publish(&service.Snapshot{Time: now, ConfigPools: cfg.Pools, Matching: map[service.PoolKey]int{dk: 1},
		Pools: map[service.PoolKey]*service.PoolView{
			dk: {Key: dk, Config: &cfg.Pools[1], Pods: []store.PodKey{{Namespace: "llm", Name: "d0"}}, Status: policy.PoolStatus{Arrival: 5000}, Desired: 1, HasDesired: true},
		}})
	typo := ref(map[string]string{"pool": "prefill", "activationPool": "decod"})
	check := func(rpc string, err error) {
		t.Helper()
		if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), `activationPool "decod"`) {
			t.Errorf("%s: %v; want NotFound naming the activation pool", rpc, err)
		}
	}
	_, err := c.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: typo})
	check("GetMetrics", err)
	_, err = c.IsActive(context.Background(), typo)
	check("IsActive", err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard only
	defer cancel()
	st, err := c.StreamIsActive(ctx, typo)
	if err == nil {
		_, err = st.Recv()
	}
	check("StreamIsActive", err)
}
