package eval

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/sim/autoscale"
	"github.com/tokenscale/tokenscale/sim/cluster"
)

// Two sizes over two segments of 10 requests each: small costs 1 a segment and meets 5 then 10; large
// costs 3 and meets 10 in both. The hull's mixes are (15, 2), (20, 4) and nothing else, so a need of
// 17.5 costs 3, halfway; small alone is enough for 15; 21 is out of reach.
func TestCheapestMix(t *testing.T) {
	runs := []sizeRun{
		{met: []int{5, 10}, cost: []float64{1, 1}},
		{met: []int{10, 10}, cost: []float64{3, 3}},
	}
	for _, c := range []struct {
		need float64
		want float64
		ok   bool
	}{{15, 2, true}, {10, 2, true}, {17.5, 3, true}, {20, 4, true}, {21, 0, false}} {
		got, ok := cheapestMix(runs, c.need)
		if ok != c.ok || ok && math.Abs(got-c.want) > 1e-9 {
			t.Errorf("need %v: cost %v (reachable %v), want %v (%v)", c.need, got, ok, c.want, c.ok)
		}
	}
	// Large everywhere would cost 6 for 20; the mix that takes large only where it helps costs 4.
	if got, _ := cheapestMix(runs, 20); got >= 6 {
		t.Errorf("need 20: cost %v, want the mix (4), not large everywhere (6)", got)
	}
	if _, ok := cheapestMix(nil, 1); ok {
		t.Error("no sizes: reachable, want not")
	}
}

// segmentRun counts each met request in the segment of its arrival and charges the run's mean GPUs for
// each segment's length, the last running to the run's end.
func TestSegmentRun(t *testing.T) {
	outs := []cluster.Outcome{{Arrival: 100, Met: true}, {Arrival: 159, Met: true}, {Arrival: 161, Met: false}, {Arrival: 250, Met: true}}
	s := segmentRun(outs, 2, 150, 100, 60, 3)
	if want := []int{2, 0, 1}; !equalInts(s.met, want) {
		t.Errorf("met %v, want %v", s.met, want)
	}
	// 2 GPUs over 150 s: segments of 60, 60 and the last 30 s.
	if want := []float64{120, 120, 60}; math.Abs(s.cost[0]-want[0])+math.Abs(s.cost[1]-want[1])+math.Abs(s.cost[2]-want[2]) > 1e-9 {
		t.Errorf("cost %v, want %v", s.cost, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// On a real trace window the reference can keep any one size throughout, so it never costs more than
// the swept static pool at the target, and it reaches the target wherever that pool does.
func TestHindsightNeverAboveTheStaticPool(t *testing.T) {
	hw, err := cluster.Profile("llama3.1-8b-h100")
	if err != nil {
		t.Fatal(err)
	}
	pols, err := autoscale.Select([]string{"static"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Evaluate("code", codeWindow(t, 10*time.Minute), pols, Options{Cluster: cluster.Config{Hardware: hw}, Workers: 2,
		History: 4 * time.Minute, Tune: 3 * time.Minute, Warmup: 2 * time.Minute, Hindsight: time.Minute, Goal: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	static := rep.costOf("static")
	if static == nil {
		t.Fatal("the static pool does not reach T on the test window: the test needs a window where it does")
	}
	h := rep.Hindsight
	if h == nil || h.CostAtTarget == nil {
		t.Fatalf("hindsight %+v: no cost at T where the static pool has %.3f", h, *static)
	}
	t.Logf("at T = %.1f%%: hindsight %.3f GPU-h, the swept static pool %.3f", 100*rep.Target, *h.CostAtTarget, *static)
	if !(*h.CostAtTarget > 0) || *h.CostAtTarget > *static+1e-9 {
		t.Errorf("hindsight %.3f GPU-h at T, the static pool %.3f: want in (0, static]", *h.CostAtTarget, *static)
	}
	if !strings.Contains(rep.describeHindsight(), "× the swept static pool") {
		t.Errorf("report line %q does not compare with the static pool", rep.describeHindsight())
	}
}
