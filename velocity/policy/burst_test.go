package policy

import (
	"math"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/config"
)

func series(rates []float64) []sample {
	t0 := time.Unix(1000, 0)
	h := make([]sample, len(rates))
	for i, v := range rates {
		h[i] = sample{t0.Add(time.Duration(i) * time.Second), v}
	}
	return h
}

// burstNeed against closed forms: a steady rate r over L seconds needs r·L/(L+B) (the queue may grow to
// C·B by the end); one bunch of X tokens in a second needs X/(1+B); work within the miss share is let go.
func TestBurstNeedClosedForms(t *testing.T) {
	const budget = 1.9
	steady := make([]float64, 301)
	for i := range steady {
		steady[i] = 8000
	}
	if got, want := burstNeed(series(steady), budget, 0), 8000*300/(300+budget); math.Abs(got-want) > 0.002*want {
		t.Errorf("steady 8000 tok/s over 300 s: need %.1f, want %.1f", got, want)
	}
	bunch := make([]float64, 301)
	bunch[1] = 100000
	if got, want := burstNeed(series(bunch), budget, 0), 100000/(1+budget); math.Abs(got-want) > 0.002*want {
		t.Errorf("a 100000-token bunch: need %.1f, want %.1f", got, want)
	}
	// A last-second bunch is 3% of the work beside a steady 10800 tok/s: with 4% allowed late it is let
	// go and the steady rate decides; with 1% it is served in budget, (10800 + 100000) / (1 + B).
	mixed := make([]float64, 301)
	for i := range mixed {
		mixed[i] = 10800
	}
	mixed[300] += 100000
	if got, want := burstNeed(series(mixed), budget, 0.04), 10800*299/(299+budget); math.Abs(got-want) > 0.002*want {
		t.Errorf("3%% of the work in one bunch, 4%% allowed late: need %.1f, want the steady need %.1f", got, want)
	}
	if got, want := burstNeed(series(mixed), budget, 0.01), (10800+100000)/(1+budget); math.Abs(got-want) > 0.01*want {
		t.Errorf("3%% of the work in one bunch, 1%% allowed late: need %.1f, want about %.1f", got, want)
	}
	for _, h := range [][]sample{nil, series([]float64{5}), series([]float64{0, 0, 0})} {
		if got := burstNeed(h, budget, 0.04); got != 0 {
			t.Errorf("%d samples of no work: need %v, want 0", len(h), got)
		}
	}
	if got := burstNeed(series(bunch), 0, 0.04); got != 0 {
		t.Errorf("no queueing budget: need %v, want 0 (the budget is never 0 from Aggregate)", got)
	}
}

// A pool whose mean load fits one prefiller but whose prompts arrive in bunches is sized for the bunches
// (burst sizing on, the default), and only for the last five cold starts of them; with it off, for the mean.
func TestBurstSizingHoldsForBunchedArrivals(t *testing.T) {
	cfg := config.Default()
	for _, c := range []struct {
		attainment float64
		want       int
	}{{cfg.Policy.BurstAttainment, 4}, {-1, 1}} {
		pol := cfg.Policy
		pol.BurstAttainment = c.attainment
		pol.ColdStart.Duration = 20 * time.Second // a 100 s burst memory
		ctrl := NewController()
		t0 := time.Unix(1000, 0)
		decide := func(s int, arrival float64) int {
			ps := &PoolStatus{Pods: 1, Known: 1, Arrival: arrival, Sustained: 5300, PerPod: 10000, Capacity: 10000,
				QueueBudget: 1.9, SLOMissFraction: -1, SecondsToBreach: math.Inf(1)}
			return ctrl.Decide(t0.Add(time.Duration(s)*time.Second), pol, "g", &cfg.Pools[0], ps, nil, nil).Desired["prefill"]
		}
		// 100000 tokens in one second every 30 s over 2000 tok/s: a mean of about 5300 tok/s.
		var got int
		for s := 0; s < 90; s++ {
			a := 2000.0
			if s%30 == 29 {
				a = 100000
			}
			got = decide(s, a)
		}
		// ceil(100000 / (1 + 1.9) / 10000) = 4: the bunch is most of the work, so it is served in budget.
		if got != c.want {
			t.Errorf("burstAttainment %v: desired %d after bunched arrivals, want %d", c.attainment, got, c.want)
		}
		// Five cold starts (100 s) and a scale-down window after the last bunch, it is forgotten.
		for s := 90; s < 90+100+61; s++ {
			got = decide(s, 2000)
		}
		if got != 1 {
			t.Errorf("burstAttainment %v: desired %d long after the last bunch, want 1", c.attainment, got)
		}
	}
}
