package cluster

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/sim/trace"
)

// fixed keeps replica counts where they are.
type fixed struct{ t Target }

func (f fixed) Interval() time.Duration { return time.Second }
func (f fixed) Decide(*View) Target     { return f.t }

func testHW() Hardware {
	h, err := Profile("llama3.1-8b-h100")
	if err != nil {
		panic(err)
	}
	return h
}

// N equal prompts arriving together on one prefiller, with the profile's one-prompt-per-step model
// (PrefillBatchTokens 0): request k (from 0) waits k prefills, so its first token comes after
// (k+1)·L/V_P, the KV transfer (queued on one link behind the previous ones only if the link is slower
// than prefill), and its first decode step.
//
// With vLLM's token budget B = 8192 the first prompt, alone in the queue when it arrives, has a step to
// itself; the next step takes prompts 1–4 whole and 192 tokens of prompt 5; the third the rest of 5, and
// 6 and 7. A step costs StepBase plus its tokens at V_P; prompts finishing in one step send their KV in
// turn over the link.
func TestBurstOnOnePrefillerMatchesHandComputation(t *testing.T) {
	const n, L = 8, 2000
	reqs := make([]trace.Request, n)
	for i := range reqs {
		reqs[i] = trace.Request{PromptTokens: L, OutputTokens: 1}
	}
	for _, budget := range []int{0, 8192} {
		hw := testHW()
		hw.PrefillBatchTokens = budget
		res, err := Run(Config{Hardware: hw}, reqs, fixed{Target{1, 1, 0}})
		if err != nil {
			t.Fatal(err)
		}
		prefill := float64(L) / hw.PrefillTPS
		xfer, step := hw.TransferTime(L), hw.StepTime(1, L)
		if xfer >= prefill || step >= xfer {
			t.Fatalf("test assumes the link is faster than prefill and a decode step shorter than a transfer (%v, %v, %v)", prefill, xfer, step)
		}
		want := make([]float64, n)
		if budget == 0 {
			for k := range want {
				// Each request reaches an idle decoder (the previous one finished in a step shorter than a prefill).
				want[k] = float64(k+1)*prefill + xfer + step
			}
		} else {
			e1 := hw.StepBase + prefill
			e2 := e1 + hw.StepBase + 8192/hw.PrefillTPS
			e3 := e2 + hw.StepBase + float64(n*L-L-8192)/hw.PrefillTPS
			for k, end := range []float64{e1, e2, e2, e2, e2, e3, e3, e3} {
				turn := map[int]int{0: 1, 1: 1, 2: 2, 3: 3, 4: 4, 5: 1, 6: 2, 7: 3}[k]
				want[k] = end + float64(turn)*xfer + step
			}
		}
		for k := range n {
			if got := res.ttft[k]; math.Abs(got-want[k]) > 1e-9 {
				t.Errorf("budget %d, request %d: TTFT %.6f s, want %.6f s", budget, k, got, want[k])
			}
		}
		if res.Unfinished != 0 || res.done != n {
			t.Errorf("budget %d: unfinished %d, done %d", budget, res.Unfinished, res.done)
		}
	}
}

// A single sequence decoding alone: its TPOT is the step time at its growing context, averaged.
func TestLoneDecodeTPOTMatchesStepModel(t *testing.T) {
	hw := testHW()
	const in, out = 1000, 101
	res, err := Run(Config{Hardware: hw}, []trace.Request{{PromptTokens: in, OutputTokens: out}}, fixed{Target{1, 1, 0}})
	if err != nil {
		t.Fatal(err)
	}
	// Steps 2..out run at contexts in+1 .. in+out-1.
	sum := 0.0
	for g := 1; g < out; g++ {
		sum += hw.StepTime(1, float64(in+g))
	}
	want := sum / float64(out-1)
	if got := res.tpot[0]; math.Abs(got-want) > 1e-9 {
		t.Errorf("TPOT %.6f s, want %.6f s", got, want)
	}
}

// Poisson arrivals of equal prompts on one prefiller, one prompt per step, form an M/D/1 queue: mean
// wait ρS/(2(1-ρ)).
func TestPrefillQueueIsMD1(t *testing.T) {
	hw := testHW()
	hw.PrefillBatchTokens = 0
	const L = 4000
	S := float64(L) / hw.PrefillTPS // 0.2 s
	rho := 0.7
	lambda := rho / S
	rng := rand.New(rand.NewPCG(1, 2))
	var reqs []trace.Request
	at := 0.0
	for range 40000 {
		at += rng.ExpFloat64() / lambda
		reqs = append(reqs, trace.Request{Arrival: time.Duration(at * float64(time.Second)), PromptTokens: L, OutputTokens: 1})
	}
	res, err := Run(Config{Hardware: hw, InitialDecode: 4}, reqs, fixed{Target{1, 4, 0}})
	if err != nil {
		t.Fatal(err)
	}
	fixedPart := S + hw.TransferTime(L) + hw.StepTime(1, L)
	mean := 0.0
	for _, x := range res.ttft {
		mean += x
	}
	mean = mean/float64(len(res.ttft)) - fixedPart
	want := rho * S / (2 * (1 - rho))
	if math.Abs(mean-want)/want > 0.06 {
		t.Errorf("mean prefill wait %.4f s, M/D/1 says %.4f s", mean, want)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := Run(Config{}, nil, fixed{}); err == nil {
		t.Error("zero hardware accepted")
	}
	if _, err := Run(Config{Hardware: testHW(), InitialPrefill: 5, MaxPrefill: 2}, nil, fixed{}); err == nil {
		t.Error("initial above max accepted")
	}
	if _, err := Run(Config{Hardware: testHW()}, nil, nil); err == nil {
		t.Error("nil autoscaler accepted")
	}
}

// The ceiling by hand: on the H100 profile a 200-token prompt (TTFT SLO 250 ms) and a 5,000-token one
// (2 s) are reachable; a 10,000-token prompt takes 0.5 s of prefill, under its 2 s SLO; a 60,000-token one
// needs 3 s of prefill alone, over 2 s; a 300-token prompt (400 ms SLO) is reachable, and a 1,000-token
// prompt at 400 ms needs 50 ms: reachable. One request before scoreFrom is not counted. 5 of 6 → 5/6.
func TestCeilingByHand(t *testing.T) {
	hw := testHW()
	if hw.PrefillTPS != 20000 {
		t.Fatalf("test assumes V_P 20000, got %v", hw.PrefillTPS)
	}
	reqs := []trace.Request{
		{Arrival: 0, PromptTokens: 100000, OutputTokens: 10}, // before scoreFrom: unscored
		{Arrival: 10 * time.Second, PromptTokens: 200, OutputTokens: 10},
		{Arrival: 11 * time.Second, PromptTokens: 5000, OutputTokens: 10},
		{Arrival: 12 * time.Second, PromptTokens: 10000, OutputTokens: 10},
		{Arrival: 13 * time.Second, PromptTokens: 60000, OutputTokens: 10},
		{Arrival: 14 * time.Second, PromptTokens: 300, OutputTokens: 100},
		{Arrival: 15 * time.Second, PromptTokens: 1000, OutputTokens: 100},
	}
	if got := Ceiling(hw, reqs, 5*time.Second, 0); math.Abs(got-5.0/6) > 1e-12 {
		t.Errorf("ceiling %v, want 5/6", got)
	}
	// TTFT of the 200-token prompt: one prefill step (StepBase + 200/V_P), its KV transfer, then one
	// decode step at context 200.
	if ttft, _ := hw.BestLatency(200, 10); math.Abs(ttft-(hw.StepBase+0.01+hw.TransferTime(200)+hw.StepTime(1, 200))) > 1e-12 {
		t.Errorf("best TTFT %v", ttft)
	}
	// A generous static cluster (no conversions) reaches the ceiling exactly: it is what unlimited
	// capacity gives, not a bound no configuration meets.
	res, err := Run(Config{Hardware: hw, ScoreFrom: 5 * time.Second, InitialPrefill: 8, InitialDecode: 8}, reqs, fixed{Target{8, 8, 0}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 6 || math.Abs(res.JointAttainment-5.0/6) > 1e-12 {
		t.Errorf("scored %d requests at %v, want the ceiling 5/6", res.Requests, res.JointAttainment)
	}
}

// On a long-prompt trace the ceiling counts the KV transfer: a prompt that prefill alone would serve in
// time misses once its transfer is added, and an ample static cluster meets the ceiling exactly.
func TestCeilingCountsTheTransfer(t *testing.T) {
	hw := testHW()
	// The longest prompt (in steps of 100 tokens) that prefill and one decode step alone serve within its SLO.
	long := 0
	for n := 1000; n < int(hw.KVCapacityTokens)/2; n += 100 {
		if float64(n)/hw.PrefillTPS+hw.StepTime(1, float64(n)) <= TTFTSLO(n) {
			long = n
		}
	}
	if long == 0 || float64(long)/hw.PrefillTPS+hw.TransferTime(long)+hw.StepTime(1, float64(long)) <= TTFTSLO(long) {
		t.Fatalf("no prompt on the test hardware fits its SLO alone but not with its transfer (longest alone: %d)", long)
	}
	reqs := []trace.Request{{Arrival: 0, PromptTokens: long, OutputTokens: 5}, {Arrival: 10 * time.Second, PromptTokens: 500, OutputTokens: 5}}
	if got := Ceiling(hw, reqs, 0, 0); got != 0.5 {
		t.Errorf("ceiling %v, want 1/2 (the %d-token prompt's transfer breaks its TTFT SLO)", got, long)
	}
	res, err := Run(Config{Hardware: hw, InitialPrefill: 4, InitialDecode: 4}, reqs, fixed{Target{4, 4, 0}})
	if err != nil {
		t.Fatal(err)
	}
	if res.JointAttainment != 0.5 {
		t.Errorf("an ample static cluster reaches %v, want the ceiling 1/2", res.JointAttainment)
	}
}

// Warm-up is not scored: the GPU time and requests before ScoreFrom do not count.
func TestScoreFromExcludesWarmup(t *testing.T) {
	hw := testHW()
	reqs := []trace.Request{{Arrival: 0, PromptTokens: 100, OutputTokens: 2}, {Arrival: 100 * time.Second, PromptTokens: 100, OutputTokens: 2}}
	all, err := Run(Config{Hardware: hw}, reqs, fixed{Target{1, 1, 0}})
	if err != nil {
		t.Fatal(err)
	}
	scored, err := Run(Config{Hardware: hw, ScoreFrom: 50 * time.Second}, reqs, fixed{Target{1, 1, 0}})
	if err != nil {
		t.Fatal(err)
	}
	if all.Requests != 2 || scored.Requests != 1 {
		t.Errorf("requests %d and %d, want 2 and 1", all.Requests, scored.Requests)
	}
	// Two GPUs for 50 s fewer.
	if d := all.GPUSeconds - scored.GPUSeconds; math.Abs(d-100) > 1e-9 {
		t.Errorf("warm-up GPU-seconds %v, want 100", d)
	}
}

// Merged decode steps are the same steps: on a real trace segment, with arrivals cutting runs short,
// every request's TTFT and TPOT and the decoders' counters and ITL histogram match one event per step
// to rounding, while the event count falls.
func TestMergedStepsMatchSingleSteps(t *testing.T) {
	tr, err := trace.Embedded("conv", trace.Options{Duration: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	run := func(merge time.Duration) (*Result, *View) {
		var last *View
		res, err := Run(Config{Hardware: testHW(), MergeSteps: merge, InitialPrefill: 2, InitialDecode: 2}, tr.Requests, viewer{fixed{Target{2, 2, 0}}, &last})
		if err != nil {
			t.Fatal(err)
		}
		return res, last
	}
	one, v1 := run(-1)
	merged, vm := run(0)
	for i := range one.ttft {
		if math.Abs(one.ttft[i]-merged.ttft[i]) > 1e-6 || math.Abs(one.tpot[i]-merged.tpot[i]) > 1e-6 {
			t.Fatalf("request %d: TTFT %v / %v, TPOT %v / %v (single / merged)", i, one.ttft[i], merged.ttft[i], one.tpot[i], merged.tpot[i])
		}
	}
	if one.JointAttainment != merged.JointAttainment || math.Abs(one.GPUSeconds-merged.GPUSeconds) > 1e-6 {
		t.Errorf("attainment %v / %v, GPU-s %v / %v", one.JointAttainment, merged.JointAttainment, one.GPUSeconds, merged.GPUSeconds)
	}
	for i := range v1.Decode {
		a, b := v1.Decode[i], vm.Decode[i]
		if math.Abs(a.GenerationTokens-b.GenerationTokens) > 1e-6 || math.Abs(a.BusySeconds-b.BusySeconds) > 1e-6 || math.Abs(a.ITL.Count-b.ITL.Count) > 1e-6 || math.Abs(a.ITL.Sum-b.ITL.Sum) > 1e-6 {
			t.Errorf("decoder %d: generation tokens %v / %v, busy %v / %v s, ITL count %v / %v", i, a.GenerationTokens, b.GenerationTokens, a.BusySeconds, b.BusySeconds, a.ITL.Count, b.ITL.Count)
		}
	}
	if merged.events*5 > one.events {
		t.Errorf("merging cut events only from %d to %d", one.events, merged.events)
	}
}

// viewer keeps the last view an autoscaler saw.
type viewer struct {
	fixed
	last **View
}

func (v viewer) Decide(view *View) Target { *v.last = view; return v.fixed.Decide(view) }

// observeRamp puts n evenly spaced values in the buckets one observe each would.
func TestObserveRampMatchesObserve(t *testing.T) {
	for _, c := range []struct {
		first, slope float64
		n            int64
	}{{0.004, 0.003, 40}, {0.2, 0, 7}, {0.009, 0.0005, 1}, {5, 9, 12}, {0.0101, 0.02, 300}} {
		a, b := newHistogram(ITLBounds), newHistogram(ITLBounds)
		for i := range c.n {
			a.observe(c.first+float64(i)*c.slope, 3)
		}
		b.observeRamp(c.first, c.slope, c.n, 3)
		for i := range a.counts {
			if a.counts[i] != b.counts[i] {
				t.Fatalf("%+v: bucket %d holds %v, want %v", c, i, b.counts[i], a.counts[i])
			}
		}
		if math.Abs(a.Sum-b.Sum) > 1e-9*a.Sum || a.Count != b.Count {
			t.Errorf("%+v: sum %v count %v, want %v %v", c, b.Sum, b.Count, a.Sum, a.Count)
		}
	}
}

// The quantiles by selection are the sorted slice's, ties and unfinished (+Inf) requests included.
func TestQuantilesBySelection(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 1; n < 400; n += 7 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = float64(rng.IntN(n/3 + 1))
			if rng.IntN(20) == 0 {
				xs[i] = math.Inf(1)
			}
		}
		s := append([]float64(nil), xs...)
		slices.Sort(s)
		at := func(q float64) float64 { return s[min(max(int(math.Ceil(q*float64(n)))-1, 0), n-1)] }
		if p50, p99 := quantiles(xs); p50 != at(0.5) || p99 != at(0.99) {
			t.Fatalf("n=%d: p50 %v p99 %v, want %v %v", n, p50, p99, at(0.5), at(0.99))
		}
	}
}

// Two prefillers finishing together for the one decoder share its link: the second KV lands a transfer
// time after the first, not with it.
func TestReceivingLinkIsShared(t *testing.T) {
	hw := testHW()
	const L = 2000
	reqs := []trace.Request{{PromptTokens: L, OutputTokens: 1}, {PromptTokens: L, OutputTokens: 1}}
	res, err := Run(Config{Hardware: hw, InitialPrefill: 2}, reqs, fixed{Target{2, 1, 0}})
	if err != nil {
		t.Fatal(err)
	}
	prefill, xfer, step := hw.PrefillTime(L), hw.TransferTime(L), hw.StepTime(1, L)
	if step >= xfer {
		t.Fatalf("test assumes a decode step (%v) is shorter than the transfer (%v)", step, xfer)
	}
	first, second := math.Min(res.ttft[0], res.ttft[1]), math.Max(res.ttft[0], res.ttft[1])
	if want := prefill + xfer + step; math.Abs(first-want) > 1e-9 {
		t.Errorf("first TTFT %.6f s, want %.6f s", first, want)
	}
	// The first is done by then, so the second's first step starts as its KV lands.
	if want := prefill + 2*xfer + step; math.Abs(second-want) > 1e-9 {
		t.Errorf("second TTFT %.6f s, want %.6f s (its KV lands a transfer after the first's)", second, want)
	}
}

// Two requests whose contexts outgrow a small KV: the later one is preempted when the KV fills, waits
// for the first to finish, has its context recomputed and finishes with a TPOT that shows it.
func TestKVPreemptionShowsInTPOT(t *testing.T) {
	hw := testHW()
	hw.KVCapacityTokens = 1000
	reqs := []trace.Request{{PromptTokens: 300, OutputTokens: 400}, {PromptTokens: 300, OutputTokens: 400}}
	for _, merge := range []time.Duration{-1, 0} {
		var last *View
		res, err := Run(Config{Hardware: hw, MergeSteps: merge}, reqs, viewer{fixed{Target{1, 1, 0}}, &last})
		if err != nil {
			t.Fatal(err)
		}
		if res.done != 2 || res.Unfinished != 0 {
			t.Fatalf("merge %v: %d done, %d unfinished", merge, res.done, res.Unfinished)
		}
		if d := last.Decode[0]; d.Preemptions != 1 {
			t.Errorf("merge %v: %v preemptions, want 1", merge, d.Preemptions)
		}
		// The second waited about half its output for the first to finish (with KV reserved for the whole
		// output at admission, or with room for both, the two TPOTs would be equal): about 1.5 times.
		if res.tpot[1] < 1.3*res.tpot[0] {
			t.Errorf("merge %v: TPOT %.4f s for the preempted request, %.4f s for the other", merge, res.tpot[1], res.tpot[0])
		}
	}
}

// A prompt whose blocks a prefiller has computed costs one token of prefill there: a 60,000-token prompt
// misses its 2 s TTFT SLO alone (3 s of prefill) and meets it the second time. The router sends the
// repeat to the instance holding it and the counters say so as vLLM's do.
func TestPrefixCacheSkipsCachedBlocks(t *testing.T) {
	hw := testHW()
	const L = 60000
	blocks := make([]uint64, (L+trace.BlockTokens-1)/trace.BlockTokens)
	for i := range blocks {
		blocks[i] = uint64(1000 + i)
	}
	// The short prompt takes the first prefiller, the long one the second; the repeat, arriving when both
	// are idle, must be sent to the second, which holds its blocks.
	reqs := []trace.Request{
		{PromptTokens: 100, OutputTokens: 2, Blocks: []uint64{7}},
		{PromptTokens: L, OutputTokens: 2, Blocks: blocks},
		{Arrival: 20 * time.Second, PromptTokens: L, OutputTokens: 2, Blocks: blocks},
	}
	var last *View
	res, err := Run(Config{Hardware: hw, InitialPrefill: 2}, reqs, viewer{fixed{Target{2, 1, 0}}, &last})
	if err != nil {
		t.Fatal(err)
	}
	xfer, step := hw.TransferTime(L), hw.StepTime(1, L)
	if want := hw.PrefillTime(L) + xfer + step; math.Abs(res.ttft[1]-want) > 1e-9 {
		t.Errorf("first TTFT %.4f s, want %.4f s", res.ttft[1], want)
	}
	if want := hw.PrefillTime(1) + xfer + step; math.Abs(res.ttft[2]-want) > 1e-9 {
		t.Errorf("repeat TTFT %.4f s, want %.4f s (one token prefilled)", res.ttft[2], want)
	}
	var queries, hits, prompt float64
	for _, p := range last.Prefill {
		queries, hits, prompt = queries+p.PrefixQueries, hits+p.PrefixHits, prompt+p.PromptTokens
	}
	// The last view is taken as the repeat's one computed token is in flight: its lookup is counted (vLLM
	// counts it when the request is scheduled), its prompt tokens not yet (when its prefill is done).
	if queries != 2*L+100 || hits != L-1 || prompt != L+100 {
		t.Errorf("prefix queries %v, hits %v, prompt tokens %v; want %v, %v, %v", queries, hits, prompt, 2*L+100, L-1, L+100)
	}
	// The ceiling leaves the cache out: the cached repeat is above it.
	if c := Ceiling(hw, reqs, 0, 0); math.Abs(c-1.0/3) > 1e-9 || math.Abs(res.JointAttainment-2.0/3) > 1e-9 {
		t.Errorf("ceiling %v and attainment %v, want 1/3 and 2/3", c, res.JointAttainment)
	}
}

// A decoder's KV holds the prompts it received, so a converted decoder prefills a repeat of one of them
// from its cache: one computed token in place of 20,000 in 512-token chunks (about 2 s). The repeat goes
// to it because the prefiller is busy with a long prompt for 2.5 s more.
func TestConvertedDecoderUsesItsPrefixCache(t *testing.T) {
	hw := testHW()
	const L = 20000
	blocks := func(base uint64, n int) []uint64 {
		b := make([]uint64, (n+trace.BlockTokens-1)/trace.BlockTokens)
		for i := range b {
			b[i] = base + uint64(i)
		}
		return b
	}
	a := blocks(1000, L)
	reqs := []trace.Request{
		{PromptTokens: L, OutputTokens: 2, Blocks: a},
		{Arrival: 10 * time.Second, PromptTokens: 60000, OutputTokens: 2, Blocks: blocks(5000, 60000)},
		{Arrival: 10500 * time.Millisecond, PromptTokens: L, OutputTokens: 2, Blocks: a},
	}
	var last *View
	res, err := Run(Config{Hardware: hw}, reqs, viewer{fixed{Target{1, 1, 1}}, &last})
	if err != nil {
		t.Fatal(err)
	}
	if res.done != 3 {
		t.Fatalf("%d of 3 requests done", res.done)
	}
	d := last.Decode[0]
	if !d.Converted || d.PrefixQueries != L || d.PrefixHits != L-1 || d.PromptTokens != L {
		t.Fatalf("decoder converted %v, prefix queries %v, hits %v, prompt tokens %v; want true, %d, %d, %d",
			d.Converted, d.PrefixQueries, d.PrefixHits, d.PromptTokens, L, L-1, L)
	}
	if res.ttft[2] > 0.1 {
		t.Errorf("repeat's TTFT on the converted decoder %.3f s, want under 0.1 s (one token computed)", res.ttft[2])
	}
}

// A fixed pool's mean GPU count is its size, whatever part of the run is left unscored: GPU-seconds are
// counted from the scored window's start, and so must the span they are averaged over.
func TestMeanGPUsIsOverTheScoredSpan(t *testing.T) {
	var reqs []trace.Request
	for at := time.Duration(0); at < 10*time.Minute; at += 2 * time.Second {
		reqs = append(reqs, trace.Request{Arrival: at, PromptTokens: 500, OutputTokens: 20})
	}
	for _, from := range []time.Duration{0, 5 * time.Minute} {
		res, err := Run(Config{Hardware: testHW(), InitialPrefill: 3, InitialDecode: 2, ScoreFrom: from}, reqs, fixed{Target{3, 2, 0}})
		if err != nil {
			t.Fatal(err)
		}
		if g := res.MeanGPUs(); math.Abs(g-5) > 1e-9 {
			t.Errorf("scored from %s: mean GPUs %v, want the pool's 5 (GPU-seconds %v over %v s)", from, g, res.GPUSeconds, res.Duration)
		}
	}
}

// The breakdown of missed first tokens names the leg that made them late. Two long generations fill a
// two-sequence batch, so a third short request waits on the decoder for a slot (about the others'
// whole output, about 2,000 steps with the batch full) and misses its 250 ms; three 4,000-token prompts on one prefiller miss 2 s in turn,
// the third in the prefill queue, with the decoder idle.
func TestMissedTTFTPathNamesTheLeg(t *testing.T) {
	hw := testHW()
	hw.MaxBatch = 2
	slots := []trace.Request{{PromptTokens: 100, OutputTokens: 2000}, {PromptTokens: 100, OutputTokens: 2000}, {PromptTokens: 100, OutputTokens: 10}}
	res, err := Run(Config{Hardware: hw}, slots, fixed{Target{1, 1, 0}})
	if err != nil {
		t.Fatal(err)
	}
	// Steps merged into one event count one by one: the third waits about the 2,000 steps of the others.
	single, err := Run(Config{Hardware: hw, MergeSteps: -1}, slots, fixed{Target{1, 1, 0}})
	if err != nil {
		t.Fatal(err)
	}
	p := res.MissedTTFT
	q := single.MissedTTFT
	if p.Missed != q.Missed || p.FullBatchSteps != q.FullBatchSteps || math.Abs(p.AdmissionSeconds-q.AdmissionSeconds) > 1e-6 || res.events >= single.events {
		t.Errorf("merged steps: %+v in %d events, single steps: %+v in %d", p, res.events, single.MissedTTFT, single.events)
	}
	if p.Missed != 1 || p.FullBatchSteps < 1900 || p.AdmissionSeconds < 1 || p.PrefillSeconds > 0.1 || p.TransferSeconds > 0.01 || p.FirstStepSeconds > 0.1 {
		t.Errorf("full batch: %+v; want one miss, waiting over a second for a slot", p)
	}
	hw = testHW()
	hw.PrefillTPS = 2500 // 1.6 s a prompt
	queue := []trace.Request{{PromptTokens: 4000, OutputTokens: 2}, {PromptTokens: 4000, OutputTokens: 2}, {PromptTokens: 4000, OutputTokens: 2}}
	res, err = Run(Config{Hardware: hw}, queue, fixed{Target{1, 1, 0}})
	if err != nil {
		t.Fatal(err)
	}
	p = res.MissedTTFT
	if p.Missed != 2 || p.FullBatchSteps != 0 || p.PrefillSeconds < 3 || p.AdmissionSeconds > 0.01 {
		t.Errorf("prefill queue: %+v; want two misses in the prefill leg", p)
	}
}

// watch holds its targets and keeps the decoders' TTFT histograms of its latest decision.
type watch struct {
	fixed
	sum, count float64
}

func (w *watch) Decide(v *View) Target {
	w.sum, w.count = 0, 0
	for _, d := range v.Decode {
		w.sum += d.TTFT.Sum
		w.count += d.TTFT.Count
	}
	return w.t
}

// TestDecoderTTFTIsItsOwnLeg checks that a decoder's TTFT histogram counts every request it received by
// transfer, from the prefill's end: long when the request waited for a slot of a full batch, short when
// the wait was in the prefill queue, which the decoder never sees.
func TestDecoderTTFTIsItsOwnLeg(t *testing.T) {
	hw := testHW()
	hw.MaxBatch = 2
	// A last request long after the others keeps decisions coming until they are done.
	late := trace.Request{Arrival: time.Minute, PromptTokens: 100, OutputTokens: 2}
	slots := []trace.Request{{PromptTokens: 100, OutputTokens: 2000}, {PromptTokens: 100, OutputTokens: 2000}, {PromptTokens: 100, OutputTokens: 10}, late}
	w := &watch{fixed: fixed{Target{1, 1, 0}}}
	res, err := Run(Config{Hardware: hw}, slots, w)
	if err != nil {
		t.Fatal(err)
	}
	if p := res.MissedTTFT; p.Missed != 1 || w.count < 3 || w.sum < p.AdmissionSeconds || w.sum > p.AdmissionSeconds+0.5 {
		t.Errorf("full batch: %d misses; the decoder's TTFT has %v requests summing %.2fs; want one miss and about its %.2fs wait for a slot", p.Missed, w.count, w.sum, p.AdmissionSeconds)
	}
	hw = testHW()
	hw.PrefillTPS = 2500 // 1.6 s a prompt
	queue := []trace.Request{{PromptTokens: 4000, OutputTokens: 2}, {PromptTokens: 4000, OutputTokens: 2}, {PromptTokens: 4000, OutputTokens: 2}, late}
	w = &watch{fixed: fixed{Target{1, 1, 0}}}
	res, err = Run(Config{Hardware: hw}, queue, w)
	if err != nil {
		t.Fatal(err)
	}
	if res.MissedTTFT.Missed != 2 || w.count < 3 || w.sum > 0.1*w.count {
		t.Errorf("prefill queue: %d misses; the decoder's TTFT has %v requests summing %.2fs; want 2 misses and each request within the KV pull and a step", res.MissedTTFT.Missed, w.count, w.sum)
	}
}

// pulls records, over its decisions, the most requests and the most KV a decoder's gauges showed.
type pulls struct {
	fixed
	waiting int
	kv      float64
}

func (p *pulls) Decide(v *View) Target {
	for _, d := range v.Decode {
		p.waiting = max(p.waiting, d.Waiting)
		p.kv = max(p.kv, d.KVUsage)
	}
	return p.t
}

// TestPullInFlightShowsOnTheDecoder checks that a decoder's gauges count a request whose KV it is still
// pulling, as vLLM's NIXL connector does (the request waits in the scheduler's queue on blocks already
// allocated): on a slow link a 4,000-token prompt's pull spans several decisions, in which the decoder
// shows one waiting request and the prompt's KV, and nothing once the request is done.
func TestPullInFlightShowsOnTheDecoder(t *testing.T) {
	hw := testHW()
	const L = 4000
	hw.LinkBytesPerSecond = hw.KVBytesPerToken * 1000 // 4 s for the prompt's KV
	late := trace.Request{Arrival: 20 * time.Second, PromptTokens: 100, OutputTokens: 1}
	p := &pulls{fixed: fixed{Target{1, 1, 0}}}
	if _, err := Run(Config{Hardware: hw}, []trace.Request{{PromptTokens: L, OutputTokens: 1}, late}, p); err != nil {
		t.Fatal(err)
	}
	if want := L / hw.KVCapacityTokens; p.waiting != 1 || p.kv < want*0.999 {
		t.Errorf("during the pull the decoder showed at most %d waiting and KV usage %.5f; want 1 and at least %.5f", p.waiting, p.kv, want)
	}
	last := &lastView{}
	if _, err := Run(Config{Hardware: hw}, []trace.Request{{PromptTokens: L, OutputTokens: 1}, late, {Arrival: 40 * time.Second, PromptTokens: 1, OutputTokens: 1}}, last); err != nil {
		t.Fatal(err)
	}
	if last.v == nil || last.v.Now < 25*time.Second || len(last.v.Decode) == 0 {
		t.Fatalf("no decision with a decoder after the pull landed (last view %+v)", last.v)
	}
	for _, d := range last.v.Decode {
		if d.Waiting != 0 {
			t.Errorf("after every pull landed the decoder shows %d waiting", d.Waiting)
		}
	}
}

// lastView keeps one decoder and one prefiller and the view of its latest decision.
type lastView struct{ v *View }

func (l *lastView) Interval() time.Duration { return time.Second }
func (l *lastView) Decide(v *View) Target   { l.v = v; return Target{1, 1, 0} }

// A prefilled request waiting for a batch slot keeps its KV blocks, as in vLLM, so the decoder's KV gauge
// counts it: with one slot, the second of two 4,000-token prompts waits behind the first's long output,
// and the gauge shows both prompts' KV.
func TestWaitingRequestHoldsItsKV(t *testing.T) {
	hw := testHW()
	hw.MaxBatch = 1
	const L = 4000
	late := trace.Request{Arrival: 60 * time.Second, PromptTokens: 100, OutputTokens: 1}
	p := &pulls{fixed: fixed{Target{1, 1, 0}}}
	reqs := []trace.Request{{PromptTokens: L, OutputTokens: 3000}, {PromptTokens: L, OutputTokens: 1}, late}
	if _, err := Run(Config{Hardware: hw}, reqs, p); err != nil {
		t.Fatal(err)
	}
	if want := 2 * L / hw.KVCapacityTokens; p.kv < want*0.999 {
		t.Errorf("with one prompt running and one waiting the decoder's KV usage reached %.5f; want at least %.5f (both prompts)", p.kv, want)
	}
}

// script wants one conversion, none from 10 s, and one again from 20 s, recording when the decoder is
// converted.
type script struct{ at map[int]bool }

func (s script) Interval() time.Duration { return time.Second }
func (s script) Decide(v *View) Target {
	sec := int(v.Now / time.Second)
	if len(v.Decode) > 0 {
		s.at[sec] = v.Decode[0].Converted
	}
	conv := 1
	if sec >= 10 && sec < 20 {
		conv = 0
	}
	return Target{1, 1, conv}
}

// A decoder released at 10 s is not converted again until the converter agent's minimum flip interval
// (30 s) has passed, although conversions are wanted again from 20 s: the agent would refuse it as too
// soon. Without a minimum it is converted again at once.
func TestConversionWaitsForTheMinimumFlipInterval(t *testing.T) {
	var reqs []trace.Request
	for at := time.Duration(0); at < 90*time.Second; at += time.Second {
		reqs = append(reqs, trace.Request{Arrival: at, PromptTokens: 100, OutputTokens: 4})
	}
	for _, c := range []struct {
		min  time.Duration
		at30 bool
	}{{-1, true}, {30 * time.Second, false}} {
		s := script{at: map[int]bool{}}
		res, err := Run(Config{Hardware: testHW(), MinFlipInterval: c.min}, reqs, s)
		if err != nil {
			t.Fatal(err)
		}
		if s.at[30] != c.at30 || !s.at[45] || s.at[15] || res.Conversions != 2 {
			t.Errorf("minimum flip interval %s: converted at 15 s %v, 30 s %v, 45 s %v, conversions %d; want false, %v, true, 2",
				c.min, s.at[15], s.at[30], s.at[45], res.Conversions, c.at30)
		}
	}
	// The default is the agent's.
	var cfg Config
	cfg.Hardware = testHW()
	if err := cfg.defaults(); err != nil || cfg.MinFlipInterval != 30*time.Second {
		t.Errorf("default minimum flip interval %s (%v), want 30s", cfg.MinFlipInterval, err)
	}
}

// A decoder converted as SGLang switches role prefills as a prefiller does and decodes nothing: its
// prompts' KV goes to the other decoder, so it emits only their first tokens. Converted as TokenScale's
// engine, it decodes what it prefilled.
func TestSwitchedDecoderPrefillsAndDecodesNothing(t *testing.T) {
	var reqs []trace.Request
	// 32,000 prompt tokens/s: more than one prefiller's V_P, so the converted decoder takes prompts too.
	for at := time.Duration(0); at < time.Minute; at += 250 * time.Millisecond {
		reqs = append(reqs, trace.Request{Arrival: at, PromptTokens: 8000, OutputTokens: 50})
	}
	for _, sw := range []bool{true, false} {
		var last *View
		res, err := Run(Config{Hardware: testHW(), InitialDecode: 2, ConvertSwitch: sw}, reqs, viewer{fixed{Target{1, 2, 1}}, &last})
		if err != nil {
			t.Fatal(err)
		}
		if res.done != len(reqs) {
			t.Fatalf("switch %v: %d of %d requests done", sw, res.done, len(reqs))
		}
		var conv, other *InstanceStats
		for i := range last.Decode {
			if last.Decode[i].Converted {
				conv = &last.Decode[i]
			} else {
				other = &last.Decode[i]
			}
		}
		if conv == nil || other == nil {
			t.Fatalf("switch %v: want one converted decoder and one not, got %+v", sw, last.Decode)
		}
		if conv.PromptTokens == 0 || conv.Finished == 0 {
			t.Errorf("switch %v: the converted decoder prefilled %v tokens, finished %v prompts; want some", sw, conv.PromptTokens, conv.Finished)
		}
		// 50 output tokens: a decoder that decodes what it prefilled emits 50 per prompt.
		if decodes := conv.GenerationTokens > conv.Finished; decodes == sw {
			t.Errorf("switch %v: the converted decoder emitted %v tokens for %v finished prompts; want it to decode: %v",
				sw, conv.GenerationTokens, conv.Finished, !sw)
		}
		if other.GenerationTokens == 0 {
			t.Errorf("switch %v: the other decoder decoded nothing", sw)
		}
	}
}

// until wants one conversion from a time until another and none outside, recording when the decoder is
// converted.
type until struct {
	from, end time.Duration
	at        map[int]bool
}

func (u until) Interval() time.Duration { return time.Second }
func (u until) Decide(v *View) Target {
	if len(v.Decode) > 0 {
		u.at[int(v.Now/time.Second)] = v.Decode[0].Converted
	}
	if v.Now >= u.from && v.Now < u.end {
		return Target{1, 1, 1}
	}
	return Target{1, 1, 0}
}

// SGLang switches only an idle engine: a lone decoder busy with a long decode when a conversion is wanted
// (3 s) is not converted until it is done (TokenScale's engine is at once). A prompt that arrives while the only decoder is switched waits
// for a decoder and is decoded once the conversion is released.
func TestSwitchWaitsForAnIdleDecoder(t *testing.T) {
	hw := testHW()
	out := int(math.Ceil(10 / hw.StepTime(1, 3100))) // at least 10 s of decoding
	// The third request keeps the run going past the release, so that 85 s is seen.
	reqs := []trace.Request{{PromptTokens: 100, OutputTokens: out}, {Arrival: 50 * time.Second, PromptTokens: 100, OutputTokens: 2},
		{Arrival: 95 * time.Second, PromptTokens: 100, OutputTokens: 2}}
	for _, sw := range []bool{true, false} {
		u := until{from: 3 * time.Second, end: 80 * time.Second, at: map[int]bool{}}
		res, err := Run(Config{Hardware: hw, ConvertSwitch: sw}, reqs, u)
		if err != nil {
			t.Fatal(err)
		}
		if res.done != len(reqs) {
			t.Fatalf("switch %v: %d of %d requests done", sw, res.done, len(reqs))
		}
		if u.at[5] == sw || !u.at[45] || u.at[85] {
			t.Errorf("switch %v: converted at 5 s %v, 45 s %v, 85 s %v; want %v, true, false", sw, u.at[5], u.at[45], u.at[85], !sw)
		}
		if sw && res.ttft[1] < 30 {
			t.Errorf("the prompt that came while the only decoder was switched had its first token after %.1f s; want it to wait for the release (30 s)", res.ttft[1])
		}
	}
}

// A window whose TTFT a request never reached (+Inf) is null in the report's JSON, the other fields as
// they were: the encoder refused the whole report for it, after minutes of simulation (ServeGen days 7
// and 13 with every policy).
func TestSampleJSONHasNoInfinity(t *testing.T) {
	b, err := json.Marshal([]Sample{{T: 1, PromptTPS: 2, PrefillReady: 3, TTFTP50: 0.5, TTFTP99: math.Inf(1)}, {T: 2, TTFTP50: -1, TTFTP99: -1}})
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if v, ok := got[0]["ttftP99"]; !ok || v != nil || got[0]["ttftP50"] != 0.5 || got[0]["promptTokensPerSecond"] != 2.0 ||
		got[0]["prefillReady"] != 3.0 || got[1]["ttftP99"] != -1.0 || len(got[0]) != 10 {
		t.Errorf("JSON %s", b)
	}
}
