package kedascaler

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tokenscale/tokenscale/kedascaler/trigger"
	"github.com/tokenscale/tokenscale/velocity/policy"
	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// The receive bound leaves room for every request trigger.Parse accepts, and a request past it is refused
// by Serve with ResourceExhausted. Fails if Serve drops grpc.MaxRecvMsgSize (the 128 KiB request then
// reaches trigger.Parse, an InvalidArgument) or if the bound falls below KEDA's largest request.
func TestServeBoundsRequestSize(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	md := map[string]string{}
	for _, k := range []string{trigger.KeyPool, trigger.KeyNamespace, trigger.KeyMetric, trigger.KeyTarget, trigger.KeyActivationThreshold, trigger.KeyActivationPool, trigger.KeyActivationMetric,
		"scalerAddress", "enableTLS", "unsafeSsl"} {
		md[k] = long(trigger.MaxMetadataLen)
	}
	largest := &externalscaler.GetMetricsRequest{MetricName: long(253),
		ScaledObjectRef: &externalscaler.ScaledObjectRef{Name: long(253), Namespace: long(63), ScalerMetadata: md}}
	if n := proto.Size(largest); n >= 8<<10 || n >= MaxRecvMsgSize {
		t.Errorf("the largest request trigger.Parse may accept is %d bytes; want under 8 KiB (MaxRecvMsgSize %d)", n, MaxRecvMsgSize)
	}

	src := &source{}
	src.publish(snapshot(time.Now(), 12000))
	conn, err := grpc.NewClient(serveForTest(t, src, Options{}), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := externalscaler.NewExternalScalerClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	get := func(md map[string]string) error {
		_, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(md)})
		return err
	}
	if err := get(map[string]string{"pool": "prefill", "scalerAddress": long(128 << 10)}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 128 KiB request: %v; want ResourceExhausted", err)
	}
	if err := get(map[string]string{"pool": "prefill", "scalerAddress": long(trigger.MaxMetadataLen + 1)}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "scalerAddress") {
		t.Errorf("a value past trigger.MaxMetadataLen within the receive bound: %v; want InvalidArgument naming the key", err)
	}
	if err := get(map[string]string{"pool": "prefill"}); err != nil {
		t.Errorf("after the refusals, a good request: %v", err)
	}
}

// seqSource returns its snapshots in turn, then the last one again, and counts the calls.
type seqSource struct {
	mu    sync.Mutex
	snaps []*service.Snapshot
	calls int
}

func (s *seqSource) Snapshot() *service.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	return s.snaps[min(s.calls, len(s.snaps))-1]
}
func (s *seqSource) Subscribe() (<-chan struct{}, func()) { return make(chan struct{}), func() {} }

// Each answer reads one snapshot, even when a new round is published while it is computed. Fails if an
// RPC loads the snapshot again: the second round (prefill Ready, decode idle) then decides the answer.
func TestOneSnapshotPerAnswer(t *testing.T) {
	now := time.Unix(1000, 0)
	pk, dk := service.PoolKey{Namespace: "llm", Name: "prefill"}, service.PoolKey{Namespace: "llm", Name: "decode"}
	decode := func(arrival float64, err error) *service.PoolView {
		return &service.PoolView{Key: dk, Config: &cfg.Pools[1], Pods: []store.PodKey{{Namespace: "llm", Name: "d0"}},
			Status: policy.PoolStatus{Arrival: arrival}, Err: err, Desired: 1, HasDesired: err == nil}
	}
	round := func(pools ...*service.PoolView) *service.Snapshot {
		s := &service.Snapshot{Time: now, ConfigPools: cfg.Pools, Pools: map[service.PoolKey]*service.PoolView{}}
		for _, v := range pools {
			s.Pools[v.Key] = v
		}
		return s
	}
	prefillReady := &service.PoolView{Key: pk, Config: &cfg.Pools[0], Pods: []store.PodKey{{Namespace: "llm", Name: "p0"}},
		Status: policy.PoolStatus{Arrival: 100}, Desired: 3, HasDesired: true}
	wake := map[string]string{"pool": "prefill", "activationPool": "decode"}
	ctx := context.Background()
	serve := func(first, then *service.Snapshot) (*Server, *seqSource) {
		src := &seqSource{snaps: []*service.Snapshot{first, then}}
		srv := New(src, 3*time.Second)
		srv.now = func() time.Time { return now }
		return srv, src
	}

	// Prefill at zero while decode is busy: unknown (NotFound), not the idle group's 0 of the next round.
	srv, src := serve(round(decode(5000, nil)), round(decode(0, nil)))
	m, err := srv.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(wake)})
	if status.Code(err) != codes.NotFound {
		t.Errorf("GetMetrics with prefill at zero and decode busy, then idle: %v %v; want NotFound from the first round", m, err)
	}
	if src.calls != 1 {
		t.Errorf("GetMetrics read %d snapshots; want 1", src.calls)
	}

	// Decode unknown and prefill not Ready: an error, not active on the next round's prefill.
	srv, src = serve(round(decode(0, errors.New("pool decode: no pod of the pool has a known velocity"))),
		round(prefillReady, decode(0, errors.New("still unknown"))))
	a, err := srv.IsActive(ctx, ref(wake))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no pod of the pool has a known velocity") {
		t.Errorf("IsActive with decode unknown and prefill at zero, then Ready: %v %v; want the first round's Unavailable", a, err)
	}
	if src.calls != 1 {
		t.Errorf("IsActive read %d snapshots; want 1", src.calls)
	}
}
