package autoscale

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/sim/cluster"
)

// decodeView is a view with n Ready decoders whose generation counters read gen each.
func decodeView(now time.Duration, n int, gen float64) *cluster.View {
	v := &cluster.View{Now: now, PrefillReplicas: 1, DecodeReplicas: n}
	for i := range n {
		v.Decode = append(v.Decode, cluster.InstanceStats{Name: string(rune('a' + i)), GenerationTokens: gen})
	}
	return v
}

// HeteroScale applies the P:D ratio to the fractional decode demand: a decoder needing 1% of an
// instance brings ⌈0.01 × ratio⌉ prefillers, not ⌈1 × ratio⌉.
func TestHeteroScaleRatioOnFractionalDemand(t *testing.T) {
	h := &HeteroScale{TargetPerDecode: 1000, Ratio: 20, emergencyAt: -1e9}
	h.Decide(decodeView(0, 1, 0))
	got := h.Decide(decodeView(10*time.Second, 1, 100)) // 10 tok/s: 1% of a decoder
	if got.Decode != 1 || got.Prefill != 1 {
		t.Errorf("1%% decode demand: got P=%d D=%d, want P=1 D=1 (⌈0.01×20⌉)", got.Prefill, got.Decode)
	}
	got = h.Decide(decodeView(20*time.Second, 1, 100+25000)) // 2,500 tok/s: 2.5 decoders' worth
	if got.Decode != 3 || got.Prefill != 50 {
		t.Errorf("2.5 decoders of demand: got P=%d D=%d, want P=50 (⌈2.5×20⌉) D=3", got.Prefill, got.Decode)
	}
}

// The KPA panics on a burst (twice the Ready pods' worth in the panic window), then holds its pods
// (scale up only) until a stable window passes calm, and scales down by at most half per decision.
func TestKPAPanicScalesUpOnly(t *testing.T) {
	k := NewKPA(1, 0)
	n := 0
	for s := 0; s < 60; s++ {
		n = k.Step(float64(s), 2, 2) // steady: 2 per pod-target, 2 pods
	}
	if n != 2 {
		t.Fatalf("steady: %d pods, want 2", n)
	}
	for s := 60; s < 64; s++ {
		n = k.Step(float64(s), 2, 12) // burst: panic window sees 12
	}
	if n != 4 {
		t.Errorf("burst from 2 Ready pods: %d, want 4 (scale-up capped at 2×)", n)
	}
	peak := 0
	for s := 64; s < 100; s++ {
		n = k.Step(float64(s), n, 0.5) // calm again, still inside the stable window after the panic
		if n < peak {
			t.Fatalf("t=%ds: scaled down from %d to %d in panic mode", s, peak, n)
		}
		peak = n
	}
	for s := 100; s < 200; s++ {
		n = k.Step(float64(s), n, 0.5)
	}
	if n != 1 {
		t.Errorf("after the panic: %d, want 1", n)
	}
}

// KEDA sees a token rate only after two Prometheus scrapes (15 s apart, at 7 s and 22 s), and the HPA acts
// on it at its next sync (30 s): KEDA's metrics server runs the query on each of the HPA's reads.
func TestKEDAGoesThroughPrometheus(t *testing.T) {
	e := Env{DecodeTPS: 1000, Hardware: cluster.Hardware{PrefillTPS: 1e9, KVBytesPerToken: 1, LinkBytesPerSecond: 1e9}}
	k := NewKEDA(e, 1, time.Minute)
	n := 1
	for s := 0; s <= 35; s++ {
		got := k.Decide(decodeView(time.Duration(s)*time.Second, n, float64(s)*4000/float64(n))) // 4,000 tok/s in all
		n = got.Decode
		if s < 30 && got.Decode != 1 {
			t.Fatalf("t=%ds: scaled to %d before Prometheus had two scrapes", s, got.Decode)
		}
		if s >= 30 && got.Decode != 4 {
			t.Fatalf("t=%ds: %d decoders, want 4 (rate 4,000 ÷ 1,000 per replica) from the sync after the second scrape", s, got.Decode)
		}
	}
}

// llm-d's route sizes prefill on seconds of in-flight backlog per replica and decode on summed KV usage,
// through the blueprint's HPA behavior: one pod up per 180 s, one down per 300 s.
func TestLLMDBlueprint(t *testing.T) {
	e := Env{Hardware: cluster.Hardware{PrefillTPS: 1000, KVBytesPerToken: 1, LinkBytesPerSecond: 1e9}}
	l := NewLLMD(e, 1, time.Minute)
	p, d := 1, 2
	view := func(s int, backlog, kv float64) *cluster.View {
		v := &cluster.View{Now: time.Duration(s) * time.Second, PrefillReplicas: p, DecodeReplicas: d}
		v.Prefill = []cluster.InstanceStats{{Name: "p0", QueuedPromptTokens: backlog}}
		for i := range d {
			v.Decode = append(v.Decode, cluster.InstanceStats{Name: string(rune('a' + i)), KVUsage: kv / float64(d)})
		}
		return v
	}
	// 5,000 tokens in flight at 1,000 tok/s: 5 s of backlog, five replicas' worth of 1 s; KV 1.8 in all
	// is 2.25 decoders' worth of 0.8.
	var steps []int
	for s := 0; s <= 400; s++ {
		got := l.Decide(view(s, 5000, 1.8))
		if got.Prefill != p {
			steps = append(steps, s)
		}
		p, d = got.Prefill, got.Decode
	}
	if want := []int{15, 195, 375}; !slices.Equal(steps, want) {
		t.Errorf("prefill grew at %v s, want one pod at each of %v (one per 180 s, at the HPA's 15 s syncs)", steps, want)
	}
	if p != 4 || d != 3 {
		t.Errorf("after 400 s: P=%d D=%d, want P=4 (rising by one per 180 s towards 5) and D=3 (⌈1.8 ÷ 0.8⌉)", p, d)
	}
	// Idle: down by one pod per 300 s, after the 1 min stabilisation window.
	steps = nil
	for s := 401; s <= 1100; s++ {
		got := l.Decide(view(s, 0, 0))
		if got.Prefill != p {
			steps = append(steps, s)
		}
		p, d = got.Prefill, got.Decode
	}
	// The period counts the scale-ups too: 4 pods at 405 s with two added in the last 300 s start the period
	// at 2, so the first step down may go to 1 at once (Kubernetes' calculateScaleDownLimitWithBehaviors).
	if len(steps) != 1 || p != 1 || steps[0] < 401+60 {
		t.Errorf("prefill shrank at %v s to %d, want to 1 in one step, after a minute's stabilisation", steps, p)
	}
}

// Dynamo's Kalman predictor answers the last value until it has 5 points, then follows a ramp where
// the constant predictor lags a step, holds a flat series, and skips an idle start.
func TestKalmanPredictor(t *testing.T) {
	k := newKalman()
	if f := k.observe(0); f != 0 || k.n != 0 {
		t.Errorf("a leading zero was taken: forecast %v, %d points", f, k.n)
	}
	if f := k.observe(100); f != 100 {
		t.Errorf("first forecast %v, want the observation", f)
	}
	var f float64
	for x := 110.0; x <= 300; x += 10 {
		f = k.observe(x)
	}
	if math.Abs(f-310) > 3 {
		t.Errorf("ramp forecast %v, want about 310 (the constant predictor says 300)", f)
	}
	flat := newKalman()
	for range 30 {
		f = flat.observe(42)
	}
	if math.Abs(f-42) > 1e-6 {
		t.Errorf("flat forecast %v, want 42", f)
	}
}

func TestStaticGridIsFullOnSmallPools(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		n      int
		want   []int
	}{
		{2.1, 2.9, 4, []int{2, 3, 4, 5}},       // one size (3): widened around it, the odd one above
		{0.5, 0.9, 4, []int{1, 2, 3, 4}},       // never below 1
		{4.5, 6.2, 6, []int{4, 5, 6, 7, 8, 9}}, // three sizes (5–7): one below, two above
		{1, 20, 6, []int{1, 5, 9, 12, 16, 20}}, // a wide range: evenly spaced over it
		{0, 0, 3, []int{1, 2, 3}},
	} {
		if got := spread(c.lo, c.hi, c.n); !slices.Equal(got, c.want) {
			t.Errorf("spread(%g, %g, %d) = %v, want %v", c.lo, c.hi, c.n, got, c.want)
		}
	}
	// A pool whose mean and peak need one prefiller and one decoder still gets its full grid.
	env := Env{Hardware: cluster.Hardware{PrefillTPS: 20000}, DecodeTPS: 1000, MeanPromptTPS: 500, PeakPromptTPS: 900,
		MeanOutputTPS: 100, PeakOutputTPS: 200}
	g := staticGrid(env)
	seen := map[string]bool{}
	for _, v := range g {
		seen[v.Tuning] = true
	}
	if len(g) != StaticSweepSize || len(seen) != StaticSweepSize {
		t.Fatalf("static grid has %d tunings (%d distinct), want %d", len(g), len(seen), StaticSweepSize)
	}
}

// The GPU-utilisation HPA counts starting pods as 0% when scaling up; when that brings the ratio below 1
// it keeps the current count, as Kubernetes does rather than change direction, instead of shrinking a
// pool whose pods are still starting. Here 2 of 4 prefillers are Ready and busy 90% of the time against a
// 60% target: 1.5 over the Ready pods, 0.75 over all 4.
func TestHPAGPUKeepsStartingPods(t *testing.T) {
	h := NewHPAGPU(0.6, 0)
	busy := 0.0
	var got []int
	for s := 0; s <= 120; s++ {
		busy += 0.9
		v := &cluster.View{Now: time.Duration(s) * time.Second, PrefillReplicas: 4, DecodeReplicas: 1,
			Prefill: []cluster.InstanceStats{{Name: "p0", BusySeconds: busy}, {Name: "p1", BusySeconds: busy}},
			Decode:  []cluster.InstanceStats{{Name: "d0", BusySeconds: 0.6 * float64(s)}}}
		if n := h.Decide(v).Prefill; n != 4 {
			got = append(got, n)
		}
	}
	if len(got) > 0 {
		t.Errorf("prefill moved to %v with 2 of 4 pods Ready at 1.5× the target; want 4 held", got)
	}
}

// HeteroScale-like's safety net reads the share of first tokens over its SLO as PromQL's
// histogram_fraction does, interpolating inside the bucket that holds the SLO: with vLLM's buckets a 2 s
// SLO falls in (1, 2.5], and the bucket's bound alone counted every first token up to 2.5 s as on time.
func TestCountBelowInterpolatesInsideTheBucket(t *testing.T) {
	bounds := []float64{1, 2.5, math.Inf(1)}
	prev := []float64{10, 10, 10}
	cum := []float64{20, 50, 60} // since prev: 10 at ≤ 1 s, 30 in (1, 2.5], 10 above
	if got := countBelow(bounds, cum, prev, 2); math.Abs(got-(10+30*(1.0/1.5))) > 1e-9 {
		t.Errorf("below 2 s: %v, want 10 + 30 × (2−1)/(2.5−1) = 30", got)
	}
	if got := countBelow(bounds, cum, prev, 1); got != 10 {
		t.Errorf("below 1 s: %v, want the first bucket's 10", got)
	}
	if got := countBelow(bounds, cum, prev, 5); got != 40 {
		t.Errorf("below 5 s (inside +Inf): %v, want the finite buckets' 40", got)
	}
}

// A baseline with one fraction for both pools is swept as its source has it and as tokenscale's sweep
// moves its two targets (decode at the default decodeTargetUtilisation below it); every other swept
// policy keeps SweepSize. Fails if a coupled baseline loses the second form, or it sizes decode at x.
func TestCoupledBaselinesAlsoSweepTokenscalesDecodeTarget(t *testing.T) {
	env := Env{Hardware: cluster.Hardware{PrefillTPS: 20000}, DecodeTPS: 1000, MeanIn: 1000, MeanOut: 100, ColdStart: time.Minute,
		MeanPromptTPS: 500, PeakPromptTPS: 900, MeanOutputTPS: 100, PeakOutputTPS: 200}
	coupled := map[string]bool{"distserve": true, "blitzscale": true, "keda-rate": true, "dynamo": true, "dynamo-kalman": true}
	for _, p := range Policies() {
		vs := p.Variants(env)
		names := map[string]bool{}
		for _, v := range vs {
			names[v.Tuning] = true
		}
		switch {
		case coupled[p.Name]:
			if len(vs) != CoupledSweepSize || len(names) != CoupledSweepSize {
				t.Errorf("%s: %d tunings (%d distinct), want %d", p.Name, len(vs), len(names), CoupledSweepSize)
			}
		case len(vs) > 1 && p.Name != "static":
			if len(vs) != SweepSize {
				t.Errorf("%s: %d tunings, want %d", p.Name, len(vs), SweepSize)
			}
		}
	}
	for _, v := range Policies()[3].Variants(env) { // distserve
		ds, ok := v.New().(*DistServe)
		if !ok {
			t.Fatalf("distserve's variant %q is %T", v.Tuning, v.New())
		}
		want := 0.45 * env.DecodeTPS / env.MeanOut
		if strings.Contains(v.Tuning, "decode=0.85") {
			want = DecodeDefault * env.DecodeTPS / env.MeanOut
		}
		if strings.HasPrefix(v.Tuning, "rpsFraction=0.45,") && math.Abs(ds.RPSPerDecode-want) > 1e-9 {
			t.Errorf("%s: %g requests/s per decoder, want %g", v.Tuning, ds.RPSPerDecode, want)
		}
	}
}

// With no history at the replay's start, a baseline holds the pools it is given, as its source does
// there: AIBrix's KPA starts in panic mode at the Ready count, DistServe-like waits for its first measured
// rate, and llm-d's HPA gets no metric before Prometheus' first scrape. Each shrank a warm pool at once.
func TestBaselinesHoldThePoolsAtTheStart(t *testing.T) {
	k := NewKPA(1, 0)
	if n := k.Step(0, 4, 0); n != 4 {
		t.Errorf("KPA's first decision over 4 Ready pods and no history: %d, want 4 (panic mode at the Ready count)", n)
	}
	ds := NewDistServe(Env{Hardware: cluster.Hardware{PrefillTPS: 20000}, DecodeTPS: 1000, MeanIn: 1000, MeanOut: 100}, 0.5, 0)
	v := &cluster.View{PrefillReplicas: 3, DecodeReplicas: 2}
	if got := ds.Decide(v); got.Prefill != 3 || got.Decode != 2 {
		t.Errorf("DistServe-like's first decision: P=%d D=%d, want the pools it was given, 3 and 2", got.Prefill, got.Decode)
	}
	l := NewLLMD(Env{Hardware: cluster.Hardware{PrefillTPS: 1000}}, 1, 0)
	for s := 0; s < scrapePhase; s++ {
		v := &cluster.View{Now: time.Duration(s) * time.Second, PrefillReplicas: 3, DecodeReplicas: 2}
		if got := l.Decide(v); got.Prefill != 3 || got.Decode != 2 {
			t.Fatalf("llm-d at %ds, before Prometheus' first scrape: P=%d D=%d, want 3 and 2", s, got.Prefill, got.Decode)
		}
	}
}
