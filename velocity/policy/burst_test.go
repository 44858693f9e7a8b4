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
		h[i] = sample{t0.Add(time.Duration(i) * time.Second), v, 0}
	}
	return h
}

// steadyWithBunch is n one-second samples at v tokens/s and r requests/s, sample at carrying a bunch of
// tokens and requests more.
func steadyWithBunch(n int, v, r float64, at int, tokens, requests float64) []sample {
	h := make([]sample, n)
	t0 := time.Unix(1000, 0)
	for i := range h {
		h[i] = sample{t0.Add(time.Duration(i) * time.Second), v, r}
	}
	h[at].v += tokens
	h[at].r += requests
	return h
}

// lateShare against closed forms: a steady rate r over L seconds is all in budget from capacity
// r·L/(L+B) (the queue may grow to C·B by the end); one bunch of X tokens in a second from X/(1+B).
// burstPods counts pods up to the first that meets the miss share.
func TestLateShareAndBurstPods(t *testing.T) {
	const budget = 1.9
	steady := make([]float64, 301)
	for i := range steady {
		steady[i] = 8000
	}
	c := 8000 * 300 / (300 + budget)
	if got := lateShare(series(steady), 1.001*c, budget, 0); got != 0 {
		t.Errorf("steady 8000 tok/s over 300 s at %.0f tok/s: %.3f late, want 0", 1.001*c, got)
	}
	if got := lateShare(series(steady), 0.99*c, budget, 0); got == 0 {
		t.Errorf("steady 8000 tok/s over 300 s at %.0f tok/s: nothing late, want the end of it late", 0.99*c)
	}
	bunch := make([]float64, 301)
	bunch[1] = 100000
	c = 100000 / (1 + budget)
	if late, early := lateShare(series(bunch), 0.99*c, budget, 0), lateShare(series(bunch), 1.001*c, budget, 0); late != 1 || early != 0 {
		t.Errorf("a 100000-token bunch: %.3f late just below %.0f tok/s, %.3f just above; want 1 and 0", late, c, early)
	}
	// A last-second bunch beside a steady 10800 tok/s: at the steady rate's need only the last second,
	// (10800 + 100000) / (300 × 10800 + 100000) ≈ 3.3% of the work, is late.
	mixed := make([]float64, 301)
	for i := range mixed {
		mixed[i] = 10800
	}
	mixed[300] += 100000
	if got, want := lateShare(series(mixed), 1.001*10800*299/(299+budget), budget, 0), 110800.0/(300*10800+100000); math.Abs(got-want) > 1e-9 {
		t.Errorf("a last-second bunch: %.4f late, want %.4f", got, want)
	}
	for _, c := range []struct {
		name       string
		h          []sample
		miss       float64
		perPod     float64
		from, want int
	}{
		{"steady 8000 on 10000 pods", series(steady), 0, 10000, 1, 1},
		{"a bunch of 100000: ceil(100000 / 2.9 / 10000)", series(bunch), 0.04, 10000, 1, 4},
		{"never below the sizing's answer", series(bunch), 0.04, 10000, 6, 6},
		{"3.3% late is within 4%", series(mixed), 0.04, 11000, 1, 1},
		{"3.3% late is not within 1%: (110800 / 2.9) / 11000 → 4", series(mixed), 0.01, 11000, 1, 4},
		{"no samples", nil, 0.04, 10000, 2, 2},
		{"one sample", series([]float64{5e5}), 0.04, 10000, 2, 2},
		{"no work", series([]float64{0, 0, 0}), 0.04, 10000, 0, 0},
		{"no velocity", series(bunch), 0.04, 0, 1, 1},
	} {
		if got := burstPods(c.h, budget, c.miss, c.perPod, c.perPod*budget, c.from); got != c.want {
			t.Errorf("%s: %d pods, want %d", c.name, got, c.want)
		}
	}
}

// With request rates recorded the late share counts requests: a last-second bunch of 100,000 tokens is
// 11 of 3,001 requests late when it is one long prompt, and needs no pod more at a 1% miss share, where
// weighted by its tokens (3.3% of the work) it needed 4; as 100 prompts it is 110 of 3,100 (3.5%) late
// and still needs them.
func TestLateShareCountsRequests(t *testing.T) {
	const budget = 1.9
	withRequests := func(bunchRequests float64) []sample {
		return steadyWithBunch(301, 10800, 10, 300, 100000, bunchRequests)
	}
	c := 1.001 * 10800 * 299 / (299 + budget)
	if got, want := lateShare(withRequests(1), c, budget, c*budget), 11.0/3001; math.Abs(got-want) > 1e-9 {
		t.Errorf("one long prompt: %.4f late, want %.4f", got, want)
	}
	if got, want := lateShare(withRequests(100), c, budget, c*budget), 110.0/3100; math.Abs(got-want) > 1e-9 {
		t.Errorf("100 prompts: %.4f late, want %.4f", got, want)
	}
	if got := burstPods(withRequests(1), budget, 0.01, 11000, 11000*budget, 1); got != 1 {
		t.Errorf("one long prompt at a 1%% miss share: %d pods, want 1", got)
	}
	if got := burstPods(withRequests(100), budget, 0.01, 11000, 11000*budget, 1); got != 4 {
		t.Errorf("100 prompts at a 1%% miss share: %d pods, want 4", got)
	}
	// A round whose request rate was unknown (no pod gave one: a gauge flapped) counts its tokens at the
	// history's requests per token, not as no requests: charged none, the 100 prompts' interval was erased
	// from the replay and 1 pod answered. A known 0 (a long prompt's prefill spanning seconds) still
	// brings none.
	unknown := withRequests(100)
	unknown[300].r = math.NaN()
	if got := burstPods(unknown, budget, 0.01, 11000, 11000*budget, 1); got != 4 {
		t.Errorf("100 prompts in a round of unknown request rate: %d pods, want 4", got)
	}
	if got := lateShare(unknown, c, budget, c*budget); !(got > 0 && got <= 1) {
		t.Errorf("100 prompts in a round of unknown request rate: share %v, want some late", got)
	}
	// Rates so large their sum overflows still give a share in [0, 1], and no history gives 0.
	huge := withRequests(1)
	for i := range huge {
		huge[i].r = math.MaxFloat64 / 2
	}
	if got := lateShare(huge, c, budget, c*budget); !(got >= 0 && got <= 1) {
		t.Errorf("overflowing request rates: share %v", got)
	}
	if got := lateShare(nil, c, budget, c*budget); got != 0 {
		t.Errorf("no history: share %v", got)
	}
}

// A prompt longer than a pod prefills within the TTFT SLO holds only the pod it runs on: a second of five
// prompts of 200,000 tokens beside a steady 10 requests/s of 1,000 tokens needs a few pods, where the same
// million tokens as 1,000 prompts of 1,000 is a bunch that more pods do serve sooner (and without request
// rates recorded, tokens are all the replay has).
func TestBurstPodsHoldNoPoolForLongPrompts(t *testing.T) {
	const budget, perPod = 0.3, 10000.0
	history := func(requests float64, withRates bool) []sample {
		h := steadyWithBunch(302, 10000, 10, 150, 1e6, requests)
		if !withRates {
			for i := range h {
				h[i].r = 0
			}
		}
		return h
	}
	// The lump's second brings its 15 requests at most 4,330 tokens each (the mean prompt, 4,010,000/3,015,
	// plus a pod's 3,000 within the budget). One pod, all taken by the steady 10,000 tok/s, never drains
	// them (51% late); two leave 1.5% of requests late, under the 4% miss share. Replayed whole, the
	// million tokens made 33% late on two pods and needed about ten.
	if got := burstPods(history(5, true), budget, 0.04, perPod, perPod*budget, 1); got != 2 {
		t.Errorf("five long prompts: %d pods, want 2", got)
	}
	// 1,000 prompts of 1,000 tokens in a second: a quarter of the requests arrive in it, late until the pool
	// drains them within the budget: 78 pods.
	if got := burstPods(history(990, true), budget, 0.04, perPod, perPod*budget, 1); got != 78 {
		t.Errorf("a bunch of 1,000 prompts: %d pods, want 78", got)
	}
	// Without request rates the million tokens are replayed whole, as a bunch.
	if got := burstPods(history(5, false), budget, 0.04, perPod, perPod*budget, 1); got != 78 {
		t.Errorf("five long prompts, no request rates: %d pods, want 78 as for a bunch", got)
	}
}

// A pool whose mean load fits one prefiller but whose prompts arrive in bunches is sized for the bunches
// (burst sizing on, the default), and only for the last five cold starts of them; with it off, for the mean.
func TestBurstSizingHoldsForBunchedArrivals(t *testing.T) {
	cfg := config.Default()
	for _, c := range []struct {
		attainment float64
		want       int
	}{{cfg.Policy.BurstAttainment, 5}, {-1, 1}} {
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
		// ceil(100000 / (1 + 1.9) / (10000 × 0.85)) = 5: the bunch is most of the work, so it is served in
		// budget, on pods used at the target utilisation.
		if cfg.Policy.TargetUtilisation != 0.85 {
			t.Fatalf("test assumes targetUtilisation 0.85, got %v", cfg.Policy.TargetUtilisation)
		}
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

// Burst sizing keeps at most about maxHistory samples however long its window and short the interval
// (the longest cold start at the shortest scrape interval would keep 180,000), and merging keeps the
// arrivals it replays: the late share of the merged history is the unmerged one's within the merge's
// blur.
func TestBurstHistoryIsBounded(t *testing.T) {
	c := NewController()
	window := 10000 * time.Second // 100 ms decisions would keep 100,000 samples
	t0 := time.Unix(0, 0)
	var h []sample
	var total float64
	const step = 100 * time.Millisecond
	for i := 1; i <= 120000; i++ { // 12,000 s: past the window
		v := 1000.0
		if i%50 < 5 { // a 0.5 s bunch every 5 s
			v = 20000
		}
		h = c.record(t0.Add(time.Duration(i)*step), "p", v, 1, window)
		if i > 20000 {
			total += v * step.Seconds()
		}
	}
	if len(h) > maxHistory+1 || len(h) < maxHistory/2 {
		t.Errorf("%d samples kept over a %s window at %s, want at most %d and not far fewer", len(h), window, step, maxHistory)
	}
	if span := h[len(h)-1].t.Sub(h[0].t); span > window || span < window-time.Second {
		t.Errorf("history spans %s, want the window, %s", span, window)
	}
	var kept float64
	for i := 1; i < len(h); i++ {
		kept += h[i].v * h[i].t.Sub(h[i-1].t).Seconds()
	}
	if math.Abs(kept-total)/total > 0.001 {
		t.Errorf("arrivals in the merged history %.0f tokens, want the window's %.0f", kept, total)
	}
}

// A prefill pool unknown for a minute records no arrivals for those rounds: the first velocity known again
// is charged over one decision interval, as without the gap, not over the whole minute (which replayed a
// minute of overload and held pods for it over the burst memory).
func TestBurstHistoryChargesNothingToAnUnknownGap(t *testing.T) {
	cfg := config.Default()
	pol := cfg.Policy
	pol.ColdStart.Duration = 60 * time.Second
	t0 := time.Unix(1000, 0)
	status := func(arrival float64) *PoolStatus {
		return &PoolStatus{Pods: 1, Known: 1, Arrival: arrival, RequestArrival: arrival / 1000, Sustained: 2000,
			PerPod: 10000, Capacity: 10000, QueueBudget: 1.9, SLOMissFraction: -1, SecondsToBreach: math.Inf(1)}
	}
	// history after 60 s of 2000 tok/s, gap rounds without the pool's velocity, then a second of 12000 tok/s
	// (over one pod). In a gap the pool is unknown (Ready pods, no values), has no view (no Ready pod: the
	// group is decided without it), or the group is not decided at all.
	const unknown, noView, notDecided = 0, 1, 2
	history := func(gap, kind int) []sample {
		ctrl := NewController()
		at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
		s := 0
		for ; s < 60; s++ {
			ctrl.Decide(at(s), pol, "g", &cfg.Pools[0], status(2000), nil, nil)
		}
		for i := 0; i < gap; i++ {
			switch kind {
			case unknown:
				ctrl.Decide(at(s), pol, "g", &cfg.Pools[0], nil, nil, nil)
			case noView:
				ctrl.Decide(at(s), pol, "g", nil, nil, nil, nil)
			}
			s++
		}
		ctrl.Decide(at(s), pol, "g", &cfg.Pools[0], status(12000), nil, nil)
		return ctrl.history[cfg.Pools[0].Name]
	}
	charged := func(h []sample, after time.Time) (tokens float64) {
		for i := 1; i < len(h); i++ {
			if h[i].t.After(after) {
				tokens += h[i].v * h[i].t.Sub(h[i-1].t).Seconds()
			}
		}
		return tokens
	}
	lastKnown := t0.Add(59 * time.Second)
	plain := history(0, unknown)
	for kind, name := range []string{"the pool unknown", "no prefill view", "the group not decided"} {
		gapped := history(60, kind)
		if got := charged(gapped, lastKnown); math.Abs(got-12000) > 1 {
			t.Errorf("after 60 s with %s the history charges %.0f tokens since the last known round, want one second's 12000", name, got)
		}
		for _, c := range []float64{8500, 10000, 12000} {
			if a, b := lateShare(plain, c, 1.9, c*1.9), lateShare(gapped, c, 1.9, c*1.9); math.Abs(a-b) > 1e-9 {
				t.Errorf("late share at %.0f tok/s: %.4f after 60 s with %s, want %.4f as without it", c, b, name, a)
			}
		}
	}
	// A round or two late is no gap: the velocity still speaks for the time since the last.
	ctrl := NewController()
	ctrl.Decide(t0, pol, "g", &cfg.Pools[0], status(2000), nil, nil)
	ctrl.Decide(t0.Add(3*time.Second), pol, "g", &cfg.Pools[0], status(4000), nil, nil)
	if got := charged(ctrl.history[cfg.Pools[0].Name], t0); math.Abs(got-12000) > 1 {
		t.Errorf("a round 3 s after the last charges %.0f tokens, want its 3 s at 4000 tok/s, 12000", got)
	}
}

// A round whose prefill pool gave no request rate (its pods' request gauges flapped) is unknown, not a
// round of no requests: the controller recorded 0 for it, the replay charged the burst's 100 prompts
// nothing and 1 pod answered where the same round with its rate known asks 4. A known 0 (a long
// prompt's prefill spanning seconds) still brings none.
func TestBurstSizingCountsARoundOfUnknownRequestRate(t *testing.T) {
	cfg := config.Default()
	pol := cfg.Policy
	pool := &cfg.Pools[0]
	run := func(r float64, known bool) int {
		c := NewController()
		t0 := time.Unix(1000, 0)
		steady := PoolStatus{Pods: 1, Known: 1, Arrival: 5000, Sustained: 5000, RequestArrival: 5,
			PerPod: 12000, Capacity: 12000, QueueBudget: 1.9, SLOMissFraction: -1, SecondsToBreach: math.Inf(1)}
		var n int
		for i := range 302 {
			st := steady
			if i == 300 { // 100 prompts of 1,000 tokens in one second
				st.Arrival, st.RequestArrival, st.NoRequestArrival = 105000, r, !known
			}
			n = c.Decide(t0.Add(time.Duration(i)*time.Second), pol, "g", pool, &st, nil, nil).Desired["prefill"]
		}
		return n
	}
	want := run(105, true)
	if want < 2 {
		t.Fatalf("the burst with its request rate known asks %d pods; the test needs it to ask more than 1", want)
	}
	if got := run(0, false); got != want {
		t.Errorf("the burst in a round of unknown request rate: %d pods, want %d as with the rate known", got, want)
	}
	if got := run(0, true); got != 1 {
		t.Errorf("a known 0 (one long prompt): %d pods, want 1", got)
	}
}
