package service

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/policy"
)

func TestPoolValue(t *testing.T) {
	v := &PoolView{Key: PoolKey{"ns", "prefill"}, Status: policy.PoolStatus{Arrival: 100, Backpressure: math.NaN()}, Desired: 3, HasDesired: true}
	if x, err := v.Value(Arrival); err != nil || x != 100 {
		t.Fatalf("arrival: %v %v", x, err)
	}
	if x, err := v.Value(Desired); err != nil || x != 3 {
		t.Fatalf("desired: %v %v", x, err)
	}
	if _, err := v.Value(Backpressure); !errors.Is(err, ErrUnknown) {
		t.Fatalf("NaN must be unknown, got %v", err)
	}
	// A value past MaxValue would wrap in an int64 (KEDA's metric value, a milli-quantity): unknown instead.
	v.Status.Capacity = 1e308
	if _, err := v.Value(Capacity); !errors.Is(err, ErrUnknown) {
		t.Fatalf("1e308 must be unknown, got %v", err)
	}
	if _, err := v.Value("nope"); err == nil {
		t.Fatal("a metric that does not exist must fail")
	}
	v.Err, v.HasDesired = errors.New("no pod of the pool has a known velocity"), false
	for _, m := range PoolMetrics {
		if _, err := v.Value(m); !errors.Is(err, ErrUnknown) {
			t.Errorf("%s of a broken pool: %v, want ErrUnknown", m, err)
		}
	}
}

func TestSubscribersHearEverySnapshot(t *testing.T) {
	s := &Service{}
	ch, cancel := s.Subscribe()
	s.publish(&Snapshot{Time: time.Unix(1, 0)})
	s.publish(&Snapshot{Time: time.Unix(2, 0)}) // coalesced with the first
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("no signal after publish")
	}
	if got := s.Snapshot().Time.Unix(); got != 2 {
		t.Fatalf("newest snapshot %d, want 2", got)
	}
	cancel()
	s.publish(&Snapshot{})
	select {
	case <-ch:
		t.Fatal("signal after cancel")
	default:
	}
}
