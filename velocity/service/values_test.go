package service

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/config"
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

// A round ends within roundDeadline + timeout, and two such rounds in a row must fit in MaxAge with half
// an interval to spare for the rest of the rounds, or hanging pods would age the snapshot into 503s;
// spread rounds must still start all their scrapes. Checked over the configs validation accepts on a
// grid, not only the defaults: it guards the formula against an edit that breaks either.
func TestRoundDeadlineKeepsSnapshotsFresh(t *testing.T) {
	checked := 0
	for _, interval := range []string{"100ms", "500ms", "1s", "2s", "5s", "30s", "2m"} {
		for _, timeout := range []string{"50ms", "100ms", "400ms", "800ms", "1s", "4s", "25s", "2m"} {
			for _, spread := range []string{"0s", "100ms", "1s", "20s"} {
				c, err := config.Parse([]byte(fmt.Sprintf("version: tokenscale.io/v1alpha1\nscrape: {interval: %s, timeout: %s, spread: %s, staleAfter: 10m, latencyWindow: 10m}\n", interval, timeout, spread) + onePool))
				if err != nil {
					continue // not a config anyone can run
				}
				checked++
				d, s := roundDeadline(c), c.Scrape
				if margin := MaxAge(s.Interval.Duration) - 2*(d+s.Timeout.Duration); margin < s.Interval.Duration/2 {
					t.Errorf("interval %s timeout %s: two rounds of %s + %s leave %s of the snapshot's age limit %s for the rest of the rounds, want half an interval",
						interval, timeout, d, s.Timeout, margin, MaxAge(s.Interval.Duration))
				}
				if d < s.Spread.Duration || d < s.Interval.Duration/4 {
					t.Errorf("interval %s timeout %s spread %s: round deadline %s cuts a spread round short or leaves under a quarter interval", interval, timeout, spread, d)
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d configs on the grid were valid; the grid no longer tests anything", checked)
	}
}
