package store

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/engine"
)

// checkSane fails when a value that can leave the store is non-finite, negative where it must not be, or
// beyond the store's bounds (checkSaneLimit with the store's cap as the pod's limit).
func checkSane(t testing.TB, v Velocity, o Options) {
	t.Helper()
	checkSaneLimit(t, v, o, o.MaxTokensPerSecond)
}

// checkSaneLimit fails when a value leaving the store is non-finite, negative where it must not be, or
// beyond what the store lets through for a pod whose rate limit is limit: a token rate above the limit
// (each interval's is checked against it, and smoothing and windows only average intervals), a gauge or
// learned length above its cap, a latency window that is not one (see checkWindow).
func checkSaneLimit(t testing.TB, v Velocity, o Options, limit float64) {
	t.Helper()
	within := func(name string, x, lo, hi float64) {
		t.Helper()
		// The relative slack is rounding in the smoothing; anything a bound lets through is far beyond it.
		if math.IsNaN(x) || x < lo-1e-9*math.Abs(lo) || x > hi+1e-9*hi {
			t.Fatalf("%s = %v: want a finite number in %g..%g", name, x, lo, hi)
		}
	}
	for name, x := range map[string]float64{
		"PrefillTPS": v.PrefillTPS, "ComputedPrefillTPS": v.ComputedPrefillTPS, "DecodeTPS": v.DecodeTPS,
		"WindowPrefillTPS": v.WindowPrefillTPS, "WindowComputedPrefillTPS": v.WindowComputedPrefillTPS, "WindowDecodeTPS": v.WindowDecodeTPS,
	} {
		within(name, x, 0, limit)
	}
	// Arrivals are the finished requests, clipped to the interval's tokens (at most twice the limit), plus
	// the growth of waiting and running, each held to the cap's worth of the default prompt.
	within("RequestTPS", v.RequestTPS, 0, 2*limit+2*o.MaxTokensPerSecond/o.DefaultPromptTokens)
	within("Waiting", v.Waiting, 0, o.MaxRequests)
	within("Running", v.Running, 0, o.MaxRequests)
	within("KVUsage", v.KVUsage, 0, 1.0001)
	within("MeanPromptTokens", v.MeanPromptTokens, 0, maxMeanTokens)
	within("MeanOutputTokens", v.MeanOutputTokens, 0, maxMeanTokens)
	within("QueuedTokens", v.QueuedTokens, 0, o.MaxRequests*maxMeanTokens)
	// Queue growth is the change of waiting × the learned mean: a gauge's jump is held to the cap's worth
	// of the default prompt, a mean moves by at most its distance to the observation per time constant.
	growth := o.MaxRequests*maxMeanTokens/min(o.RiseTau, o.FallTau, o.GrowthTau, o.LengthTau).Seconds() + o.MaxTokensPerSecond*maxMeanTokens/o.DefaultPromptTokens
	for name, x := range map[string]float64{
		"QueueGrowthTPS": v.QueueGrowthTPS, "OwedOutputGrowthTPS": v.OwedOutputGrowthTPS,
		"WindowQueueGrowthTPS": v.WindowQueueGrowthTPS, "WindowOwedOutputGrowthTPS": v.WindowOwedOutputGrowthTPS,
	} {
		within(name, x, -growth, growth)
	}
	checkWindow(t, "TTFT", v.TTFT)
	checkWindow(t, "ITL", v.ITL)
}

// checkWindow fails when a latency window served as usable is not one: a count or sum that is negative
// or not finite, buckets that are not cumulative or count more than the window, a +Inf bucket other than
// the count, or a share of observations above a bound outside 0..1 before FractionAbove holds it there.
func checkWindow(t testing.TB, name string, h engine.Histogram) {
	t.Helper()
	if !h.OK {
		return
	}
	if !(h.Count >= 0 && h.Count <= math.MaxFloat64) || !(h.Sum >= 0 && h.Sum <= math.MaxFloat64) {
		t.Fatalf("%s window %+v: count and sum must be finite and non-negative", name, h)
	}
	prev := 0.0
	for _, b := range h.Buckets {
		if !(b.Count >= prev && b.Count <= h.Count) {
			t.Fatalf("%s window %+v: buckets must be cumulative and within the count", name, h)
		}
		prev = b.Count
	}
	if n := len(h.Buckets); n > 0 && math.IsInf(h.Buckets[n-1].UpperBound, 1) && h.Buckets[n-1].Count != h.Count {
		t.Fatalf("%s window %+v: the +Inf bucket must count every observation", name, h)
	}
	for i, b := range h.Buckets {
		xs := []float64{b.UpperBound}
		if i > 0 {
			xs = append(xs, (b.UpperBound+h.Buckets[i-1].UpperBound)/2)
		}
		for _, x := range xs {
			if f, ok := fractionAbove(h, x); ok && !(f >= -1e-12 && f <= 1+1e-12) {
				t.Fatalf("%s window %+v: share above %g is %v before clamping, want 0..1", name, h, x, f)
			}
		}
	}
}

// One glitched counter sample must not reach the rates: that interval is an error for the pod, and the
// next sane sample is measured from the last good one.
func TestGlitchSampleIsAnErrorNotARate(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	prompt := 0.0
	for i := 0; i < 20; i++ {
		c.t = c.t.Add(time.Second)
		prompt += 1000
		p := prompt
		if i == 10 {
			p = 1e12 // one glitched sample, then the counter is normal again
		}
		s.Record(pod, c.t, page(t, p, p/10, 0))
		v, err := s.Get(pod)
		if i == 0 {
			continue
		}
		if i == 10 {
			if !errors.Is(err, ErrImplausible) {
				t.Fatalf("glitch scrape: err = %v, want ErrImplausible", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("scrape %d: %v", i, err)
		}
		checkSane(t, v, s.Options())
		if v.PrefillTPS > 1000*1.0001 || (i > 3 && math.Abs(v.PrefillTPS-1000) > 1) {
			t.Fatalf("scrape %d: PrefillTPS = %v, want 1000", i, v.PrefillTPS)
		}
		if v.WindowPrefillTPS > 1000*1.0001 {
			t.Fatalf("scrape %d: WindowPrefillTPS = %v, want at most 1000", i, v.WindowPrefillTPS)
		}
	}
}

// A per-pod limit (set from the pool's profile) rejects rates the absolute cap would let through.
func TestPerPodRateLimit(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	s.SetRateLimit(pod, Limit{Tokens: 50000})
	s.Record(pod, c.t, page(t, 0, 0, 0))
	c.t = c.t.Add(time.Second)
	s.Record(pod, c.t, page(t, 1000, 10, 0))
	c.t = c.t.Add(time.Second)
	s.Record(pod, c.t, page(t, 1000+1e6, 20, 0))
	if _, err := s.Get(pod); !errors.Is(err, ErrImplausible) || !strings.Contains(err.Error(), "50000") {
		t.Fatalf("err = %v, want ErrImplausible naming the limit", err)
	}
}

// A decoder's prompt counter may count every prompt it receives by KV transfer, from a prefill pool many
// times its size: with a prompt limit of its own (the absolute cap, for a decode pool) such a rate is
// kept, while its generated tokens stay held to the tokens' limit.
func TestPromptLimitOfADecoder(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "d"}
	s.SetRateLimit(pod, Limit{Tokens: 25000, Prompt: math.Inf(1)})
	prompt, gen := 0.0, 0.0
	for i := range 4 {
		s.Record(pod, c.t, page(t, prompt, gen, 0))
		if v, err := s.Get(pod); i > 0 && (err != nil || v.PrefillTPS < 100000 || v.DecodeTPS < 1000) {
			t.Fatalf("scrape %d: %+v, %v; want 150,000 prompt tok/s received and 2,000 decoded kept", i, v, err)
		}
		c.t = c.t.Add(time.Second)
		prompt, gen = prompt+150000, gen+2000
	}
	s.Record(pod, c.t, page(t, prompt, gen+1e6, 0))
	if _, err := s.Get(pod); !errors.Is(err, ErrImplausible) || !strings.Contains(err.Error(), "25000") {
		t.Fatalf("generated tokens past the tokens' limit: err = %v, want ErrImplausible naming 25000", err)
	}
	// Without a prompt limit of its own the prompt rate is held to the tokens' limit, as before.
	other := PodKey{"ns", "p"}
	s.SetRateLimit(other, Limit{Tokens: 25000})
	s.Record(other, c.t, page(t, 0, 0, 0))
	c.t = c.t.Add(time.Second)
	s.Record(other, c.t, page(t, 150000, 2000, 0))
	if _, err := s.Get(other); !errors.Is(err, ErrImplausible) {
		t.Fatalf("a prefiller's 150,000 prompt tok/s under a 25,000 limit: err = %v, want ErrImplausible", err)
	}
}

// num_requests_waiting = 1e308 once must not leave Inf or NaN in the queue growth for good.
func TestHugeGaugeOnceRecovers(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	prompt := 0.0
	for i := 0; i < 10; i++ {
		c.t = c.t.Add(time.Second)
		prompt += 1000
		w := 2.0
		if i == 4 {
			w = 1e308
		}
		s.Record(pod, c.t, page(t, prompt, prompt/10, w))
		v, err := s.Get(pod)
		switch {
		case i == 0:
		case i == 4:
			if !errors.Is(err, ErrImplausible) {
				t.Fatalf("huge gauge: err = %v, want ErrImplausible", err)
			}
		default:
			if err != nil {
				t.Fatalf("scrape %d: %v", i, err)
			}
			checkSane(t, v, s.Options())
			if i > 5 && math.Abs(v.QueueGrowthTPS) > 1 {
				t.Fatalf("scrape %d: QueueGrowthTPS = %v, want about 0 (queue steady)", i, v.QueueGrowthTPS)
			}
		}
	}
}

// A counter beyond 2^53 cannot count tokens any more (increments vanish): the pod is an error, never 0.
func TestCounterBeyondPrecisionIsAnError(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	for i := 0; i < 8; i++ {
		c.t = c.t.Add(time.Second)
		p := float64(i) * 1000
		if i >= 3 {
			p = 1e308
		}
		s.Record(pod, c.t, page(t, p, 10*float64(i), 0))
		v, err := s.Get(pod)
		if i >= 3 && err == nil {
			t.Fatalf("scrape %d: counter at 1e308 served as %v tok/s", i, v.PrefillTPS)
		}
		if i >= 3 && !errors.Is(err, ErrImplausible) && !errors.Is(err, ErrStale) {
			t.Fatalf("scrape %d: err = %v, want ErrImplausible", i, err)
		}
	}
}

func sglangPage(t *testing.T, prompt, gen float64) *engine.Snapshot {
	t.Helper()
	s, err := engine.Extract(strings.NewReader(fmt.Sprintf(
		"sglang:prompt_tokens_total %g\nsglang:generation_tokens_total %g\nsglang:num_queue_reqs 0\n", prompt, gen)), engine.Auto)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// An engine that changes between scrapes is an error with the reason, not a reset that serves the held
// rate as fresh for ever.
func TestEngineFlipIsAnError(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	for i := 0; i < 3; i++ {
		c.t = c.t.Add(time.Second)
		s.Record(pod, c.t, page(t, float64(i)*1000, float64(i)*100, 0))
	}
	for i := 3; i < 10; i++ {
		c.t = c.t.Add(time.Second)
		if i%2 == 1 {
			s.Record(pod, c.t, sglangPage(t, float64(i)*1000, float64(i)*100))
		} else {
			s.Record(pod, c.t, page(t, float64(i)*1000, float64(i)*100, 0))
		}
		if _, err := s.Get(pod); err == nil || !strings.Contains(err.Error(), "engine changed") {
			t.Fatalf("scrape %d: err = %v, want an engine change error", i, err)
		}
	}
}

// Counters that go down on every scrape give no rate: after the first held interval the pod is an error.
func TestRepeatedResetsAreAnError(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	for i := 0; i < 3; i++ {
		c.t = c.t.Add(time.Second)
		s.Record(pod, c.t, page(t, float64(i)*1000, float64(i)*100, 0))
	}
	for i := 0; i < 4; i++ {
		c.t = c.t.Add(time.Second)
		p := 1000 - 100*float64(i) // going down on every scrape
		s.Record(pod, c.t, page(t, p, p, 0))
		_, err := s.Get(pod)
		if i >= 1 && (err == nil || !strings.Contains(err.Error(), "reset")) {
			t.Fatalf("reset %d: err = %v, want an error about repeated resets", i, err)
		}
	}
}

// A scrape error's text is kept short whatever the target sent.
func TestRecordErrorKeepsShortText(t *testing.T) {
	s := New(Options{}, nil)
	pod := PodKey{"ns", "p"}
	s.RecordError(pod, time.Now(), errors.New(strings.Repeat("x", 1<<20)))
	_, err := s.Get(pod)
	if err == nil || len(err.Error()) > 1024 {
		t.Fatalf("error text is %d bytes, want at most 1024", len(fmt.Sprint(err)))
	}
}

// FuzzStoreSamples feeds adversarial sequences of samples; whatever they are, what leaves the store is
// finite, non-negative where a rate must be, and bounded.
func FuzzStoreSamples(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte{255, 255, 0, 0, 255, 255, 0, 0, 128, 7, 1, 2, 3, 4, 5, 6, 7, 8})
	vals := []float64{0, 1, 2, 1000, math.NaN(), 1e6, 1e9, 1e12, 1e15, 1 << 53, math.Inf(1), 1e308, math.MaxFloat64, 0.5, -3, 17}
	f.Fuzz(func(t *testing.T, b []byte) {
		c := &clock{t: time.Unix(1000, 0)}
		s := New(Options{}, c.now)
		pod := PodKey{"ns", "p"}
		for len(b) >= 4 {
			step := time.Duration(b[0]%8) * 250 * time.Millisecond
			c.t = c.t.Add(step)
			snap := engine.NewSnapshot(engine.VLLM)
			if b[0]&0x80 != 0 {
				snap = engine.NewSnapshot(engine.SGLang)
			}
			snap.SetScalar(engine.PromptTokens, vals[b[1]&15]*float64(1+b[1]>>4))
			snap.SetScalar(engine.GenerationTokens, vals[b[2]&15]*float64(1+b[2]>>4))
			snap.SetScalar(engine.RequestsWaiting, vals[b[3]&15])
			if b[3]&0x10 != 0 {
				snap.SetScalar(engine.RequestsFinished, vals[b[3]>>4])
			}
			s.Record(pod, c.t, snap)
			if v, err := s.Get(pod); err == nil {
				checkSane(t, v, s.Options())
			}
			b = b[4:]
		}
	})
}

// A page that lacks a token counter every other scrape gives no rate for the interval before it or after
// it: the last rate must not be served stamped with the full page's time.
func TestMissingCounterEveryOtherScrapeIsUnknown(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	prompt := 0.0
	for i := 0; i < 5; i++ {
		c.t = c.t.Add(time.Second)
		prompt += 1000
		s.Record(pod, c.t, page(t, prompt, prompt/10, 0))
	}
	if _, err := s.Get(pod); err != nil {
		t.Fatalf("steady pod: %v", err)
	}
	for i := 0; i < 10; i++ {
		c.t = c.t.Add(time.Second)
		prompt += 5000 // the load changes; a rate that is still 1000 would be the old one
		snap := page(t, prompt, prompt/10, 0)
		if i%2 == 0 {
			var err error
			snap, err = engine.Extract(strings.NewReader(fmt.Sprintf("vllm:generation_tokens_total %g\nvllm:num_requests_waiting 0\nvllm:num_requests_running 3\n", prompt/10)), engine.VLLM)
			if err != nil {
				t.Fatal(err)
			}
		}
		s.Record(pod, c.t, snap)
		if v, err := s.Get(pod); err == nil {
			t.Fatalf("scrape %d (counter missing: %v): served PrefillTPS %v as fresh at %s", i, i%2 == 0, v.PrefillTPS, v.Time)
		}
	}
	// Two whole pages in a row give a rate again.
	for i := 0; i < 2; i++ {
		c.t = c.t.Add(time.Second)
		prompt += 5000
		s.Record(pod, c.t, page(t, prompt, prompt/10, 0))
	}
	if v, err := s.Get(pod); err != nil || v.PrefillTPS < 2000 {
		t.Fatalf("after two whole pages: PrefillTPS %v, err %v; want a rate following the new load", v.PrefillTPS, err)
	}
}

// A latency histogram whose count grows far beyond the tokens processed would outweigh every other pod
// in the pool's share of SLO misses: that interval is implausible.
func TestHistogramCountBoundByTokens(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	hpage := func(prompt, ttftCount float64) *engine.Snapshot {
		t.Helper()
		snap, err := engine.Extract(strings.NewReader(fmt.Sprintf(`vllm:prompt_tokens_total %g
vllm:generation_tokens_total %g
vllm:num_requests_waiting 0
vllm:num_requests_running 3
vllm:time_to_first_token_seconds_bucket{le="0.5"} 0
vllm:time_to_first_token_seconds_bucket{le="+Inf"} %g
vllm:time_to_first_token_seconds_count %g
vllm:time_to_first_token_seconds_sum %g
`, prompt, prompt/10, ttftCount, ttftCount, ttftCount)), engine.VLLM)
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	prompt, count := 0.0, 0.0
	for i := 0; i < 4; i++ {
		c.t = c.t.Add(time.Second)
		prompt += 1000
		count += 2 // two requests a second of 500 tokens
		s.Record(pod, c.t, hpage(prompt, count))
	}
	if _, err := s.Get(pod); err != nil {
		t.Fatalf("plausible histogram: %v", err)
	}
	c.t = c.t.Add(time.Second)
	prompt += 1000
	s.Record(pod, c.t, hpage(prompt, count+1e12))
	if _, err := s.Get(pod); !errors.Is(err, ErrImplausible) || !strings.Contains(err.Error(), "time_to_first_token") {
		t.Fatalf("1e12 observations in a second of 1,100 tokens: err = %v, want ErrImplausible naming the histogram", err)
	}

	// SGLang's token counters move only when a request finishes, while its inter-token histogram grows
	// with every streamed chunk: a decoder streaming 64 × 40 tokens a second between two finishes is healthy.
	sg := PodKey{"ns", "sglang"}
	spage := func(gen, itlCount float64) *engine.Snapshot {
		t.Helper()
		snap, err := engine.Extract(strings.NewReader(fmt.Sprintf(`sglang:prompt_tokens_total 5000
sglang:generation_tokens_total %g
sglang:num_queue_reqs 0
sglang:num_running_reqs 64
sglang:inter_token_latency_seconds_bucket{le="0.1"} %g
sglang:inter_token_latency_seconds_bucket{le="+Inf"} %g
sglang:inter_token_latency_seconds_count %g
sglang:inter_token_latency_seconds_sum 1
`, gen, itlCount, itlCount, itlCount)), engine.SGLang)
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	gen, itl := 1000.0, 0.0
	for i := 0; i < 5; i++ {
		c.t = c.t.Add(time.Second)
		if i == 0 || i == 4 {
			gen += 1000 // requests finish only now and then
		}
		itl += 64 * 40
		s.Record(sg, c.t, spage(gen, itl))
		if _, err := s.Get(sg); i > 0 && errors.Is(err, ErrImplausible) {
			t.Fatalf("SGLang decoder, second %d: %v", i, err)
		}
	}
	c.t = c.t.Add(time.Second)
	s.Record(sg, c.t, spage(gen, itl+1e12))
	if _, err := s.Get(sg); !errors.Is(err, ErrImplausible) {
		t.Fatalf("SGLang: 1e12 observations in a second: err = %v, want ErrImplausible (the token cap)", err)
	}
}

// le="-Inf" below a finite bound once made the share of observations above the SLO Inf/Inf = NaN, which
// switched off the pool's latency checks.
func TestFractionAboveNeverNaN(t *testing.T) {
	h := engine.Histogram{OK: true, Count: 10, Buckets: []engine.Bucket{
		{UpperBound: math.Inf(-1), Count: 1}, {UpperBound: 100, Count: 5}, {UpperBound: math.Inf(1), Count: 10}}}
	for _, x := range []float64{-1, 0.25, 50, 200} {
		f, ok := FractionAbove(h, x)
		if math.IsNaN(f) || f < 0 || f > 1 {
			t.Fatalf("FractionAbove(%v) = %v, %v: want a share in 0..1 or not ok", x, f, ok)
		}
	}
	if f, ok := FractionAbove(engine.Histogram{OK: true, Count: math.Inf(1), Buckets: []engine.Bucket{{UpperBound: 1, Count: math.Inf(1)}}}, 0.5); ok && math.IsNaN(f) {
		t.Fatalf("infinite counts: %v", f)
	}
}

// vllmText reads a vLLM page made of lines; the tests below leave lines out.
func vllmText(t *testing.T, lines ...string) *engine.Snapshot {
	t.Helper()
	snap, err := engine.Extract(strings.NewReader(strings.Join(lines, "\n")+"\n"), engine.VLLM)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// A page without the running or waiting line once read that gauge as 0 and took it as the next
// interval's start: a steady pod (5 req/s, 100 waiting, 50 running) read 50 arrivals a second that never
// happened, or 75,000 queued tokens/s of growth.
func TestMissingRequestGaugeIsNoChange(t *testing.T) {
	for _, drop := range []string{"vllm:num_requests_running", "vllm:num_requests_waiting"} {
		t.Run(drop, func(t *testing.T) {
			c := &clock{t: time.Unix(1000, 0)}
			s := New(Options{}, c.now)
			pod := PodKey{"ns", "p"}
			for i := 1; i <= 8; i++ {
				c.t = c.t.Add(time.Second)
				n := float64(i)
				lines := []string{
					fmt.Sprintf("vllm:prompt_tokens_total %g", 5000*n), fmt.Sprintf("vllm:generation_tokens_total %g", 500*n),
					fmt.Sprintf("vllm:request_success_total{finished_reason=\"stop\"} %g", 5*n),
					"vllm:num_requests_waiting 100", "vllm:num_requests_running 50",
				}
				if i == 7 {
					lines = slices.DeleteFunc(lines, func(l string) bool { return strings.HasPrefix(l, drop+" ") })
				}
				s.Record(pod, c.t, vllmText(t, lines...))
			}
			v, err := s.Get(pod)
			if err != nil {
				t.Fatal(err)
			}
			checkSane(t, v, s.Options())
			if math.Abs(v.RequestTPS-5) > 0.1 {
				t.Errorf("RequestTPS = %v, want 5 (the finished rate of a steady pod)", v.RequestTPS)
			}
			for name, x := range map[string]float64{"QueueGrowthTPS": v.QueueGrowthTPS, "OwedOutputGrowthTPS": v.OwedOutputGrowthTPS,
				"WindowQueueGrowthTPS": v.WindowQueueGrowthTPS, "WindowOwedOutputGrowthTPS": v.WindowOwedOutputGrowthTPS} {
				if math.Abs(x) > 1 {
					t.Errorf("%s = %v, want about 0 (the queue is steady)", name, x)
				}
			}
		})
	}
}

// The jump check compares a gauge with the last page that had it: 0 waiting, a page without the line,
// then 10^6 waiting is the same jump as without the page in between, not 10^9 queued tokens served.
func TestGaugeJumpAcrossMissingLineIsImplausible(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	for i := 1; i <= 5; i++ {
		c.t = c.t.Add(time.Second)
		n := float64(i)
		tokens := []string{fmt.Sprintf("vllm:prompt_tokens_total %g", 1000*n), fmt.Sprintf("vllm:generation_tokens_total %g", 100*n)}
		switch i {
		case 4:
			s.Record(pod, c.t, vllmText(t, tokens...))
		case 5:
			s.Record(pod, c.t, vllmText(t, append(tokens, "vllm:num_requests_waiting 1e6")...))
		default:
			s.Record(pod, c.t, vllmText(t, append(tokens, "vllm:num_requests_waiting 0")...))
		}
	}
	if v, err := s.Get(pod); !errors.Is(err, ErrImplausible) {
		t.Fatalf("waiting 0, no line, 1e6: err = %v with %g queued tokens, want ErrImplausible", err, v.QueuedTokens)
	}
}

// The fast queue growth follows the queued-token estimate (waiting × learned mean prompt): with a queue
// steady at 100 while the mean is learned from 1000 towards 9000 tokens it is positive and never more
// than the estimate can move (100 × 8000 tokens in a second); the window's growth uses one mean for both
// ends and stays at 0. The simulator measured one mean for the fast growth too and found it dearer.
func TestQueueGrowthFollowsTheQueueEstimate(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	prompt := 0.0
	rose := false
	for i := 1; i <= 8; i++ {
		c.t = c.t.Add(time.Second)
		if i <= 4 {
			prompt += 1000
		} else {
			prompt += 9000 // one request a second, now 9000 tokens long
		}
		s.Record(pod, c.t, vllmText(t, fmt.Sprintf("vllm:prompt_tokens_total %g", prompt), "vllm:generation_tokens_total 0",
			fmt.Sprintf("vllm:request_success_total{finished_reason=\"stop\"} %d", i), "vllm:num_requests_waiting 100", "vllm:num_requests_running 1"))
		v, err := s.Get(pod)
		if i == 1 {
			continue
		}
		if err != nil {
			t.Fatalf("scrape %d: %v", i, err)
		}
		if !(v.QueueGrowthTPS >= -1 && v.QueueGrowthTPS <= 100*8000) || math.Abs(v.WindowQueueGrowthTPS) > 1 {
			t.Fatalf("scrape %d (mean prompt %.0f): QueueGrowthTPS = %v, window %v; want within [0, 800000] and about 0",
				i, v.MeanPromptTokens, v.QueueGrowthTPS, v.WindowQueueGrowthTPS)
		}
		rose = rose || v.QueueGrowthTPS > 1000
	}
	if v, _ := s.Get(pod); v.MeanPromptTokens < 8000 || !rose {
		t.Fatalf("MeanPromptTokens = %v, growth seen %v; want the mean learned towards 9000 and shown as growth", v.MeanPromptTokens, rose)
	}
}

// Pages refused on their own (a counter beyond 2^53) do not count towards the three implausible
// intervals that take a new level as a reset: a jump after two of them is still refused.
func TestRejectedPagesDoNotRebase(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	for _, p := range []struct{ prompt, waiting float64 }{{1000, 0}, {2000, 0}, {1e17, 0}, {1e17, 0}, {3000, 1e6}} {
		c.t = c.t.Add(time.Second)
		s.Record(pod, c.t, page(t, p.prompt, 0, p.waiting))
	}
	if v, err := s.Get(pod); !errors.Is(err, ErrImplausible) {
		t.Fatalf("waiting 0 to 1e6 after two refused pages: err = %v with %g queued tokens, want ErrImplausible", err, v.QueuedTokens)
	}
	// The level persists: the third implausible interval from that base takes it as a reset.
	for i := 0; i < 2; i++ {
		c.t = c.t.Add(time.Second)
		s.Record(pod, c.t, page(t, 4000+1000*float64(i), 0, 1e6))
	}
	if v, err := s.Get(pod); err == nil || errors.Is(err, ErrImplausible) || v.Waiting != 1e6 || v.Resets != 1 {
		t.Fatalf("after three implausible intervals: err = %v, waiting %g, resets %d; want the level taken as a reset, no rate yet", err, v.Waiting, v.Resets)
	}
	// The next interval from the new level computes a rate.
	c.t = c.t.Add(time.Second)
	s.Record(pod, c.t, page(t, 6000, 0, 1e6))
	if v, err := s.Get(pod); err != nil || v.Waiting != 1e6 || v.Resets != 1 {
		t.Fatalf("an interval after the new level: err = %v, waiting %g, resets %d; want a rate", err, v.Waiting, v.Resets)
	}
}

// A pod really running above a limit set too low (a profile far below the hardware) rebased on every
// third page and served the rate from before the jumps, stamped with that page's time, as fresh.
func TestRebaseServesNoHeldRate(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	s.SetRateLimit(pod, Limit{Tokens: 1000})
	prompt := 0.0
	for i := 1; i <= 20; i++ {
		c.t = c.t.Add(time.Second)
		rate := 100.0
		if i > 5 {
			rate = 5000 // the pod's real rate from here on, five times the limit
		}
		prompt += rate
		s.Record(pod, c.t, page(t, prompt, 0, 0))
		v, err := s.Get(pod)
		if i > 5 && err == nil {
			t.Fatalf("page %d: served PrefillTPS %g as fresh while every interval is above the limit", i, v.PrefillTPS)
		}
	}
}

// A data-parallel engine's series missing from one page dropped the summed counter (read as a restart),
// and its return added its whole count to one interval: 2,000 tokens/s served as 6,000.
func TestSummedSeriesLeavingIsNoWork(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	for i := 1; i <= 8; i++ {
		c.t = c.t.Add(time.Second)
		lines := []string{"vllm:num_requests_waiting 0",
			fmt.Sprintf(`vllm:prompt_tokens_total{engine="0"} %d`, 1000*i), fmt.Sprintf(`vllm:generation_tokens_total{engine="0"} %d`, 100*i)}
		if i != 4 {
			lines = append(lines, fmt.Sprintf(`vllm:prompt_tokens_total{engine="1"} %d`, 1000*i), fmt.Sprintf(`vllm:generation_tokens_total{engine="1"} %d`, 100*i))
		}
		s.Record(pod, c.t, vllmText(t, lines...))
		v, err := s.Get(pod)
		if v.Resets != 0 {
			t.Fatalf("page %d: %d resets, want none (no engine restarted)", i, v.Resets)
		}
		if err != nil {
			if i == 4 || i == 5 {
				continue // the intervals into and out of the page without engine 1 are unknown
			}
			if i > 1 {
				t.Fatalf("page %d: %v", i, err)
			}
			continue
		}
		if i == 4 || i == 5 {
			t.Fatalf("page %d: served PrefillTPS %g for an interval whose summed series changed", i, v.PrefillTPS)
		}
		if math.Abs(v.PrefillTPS-2000) > 1 || math.Abs(v.WindowPrefillTPS-2000) > 1 {
			t.Fatalf("page %d: PrefillTPS %g, window %g; want 2000", i, v.PrefillTPS, v.WindowPrefillTPS)
		}
	}
}

// A summed gauge whose series changed between pages (one engine's waiting line missing from one page of a
// data-parallel pod, its token counters all there) is no queue change: the waiting count halved and came
// back read as 43,000 tokens/s of queue drain, then 37,000 of growth, and 2 requests/s finishing as 0.27.
func TestSummedGaugeSeriesChangingIsNoQueueChange(t *testing.T) {
	// 1,000 prompt tokens a request, the default mean, so that learning it moves no queue estimate.
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	for i := 1; i <= 8; i++ {
		c.t = c.t.Add(time.Second)
		lines := []string{`vllm:num_requests_waiting{engine="0"} 50`, `vllm:num_requests_running{engine="0"} 5`, `vllm:num_requests_running{engine="1"} 5`}
		for _, e := range []string{"0", "1"} {
			lines = append(lines, fmt.Sprintf(`vllm:prompt_tokens_total{engine="%s"} %d`, e, 1000*i), fmt.Sprintf(`vllm:generation_tokens_total{engine="%s"} %d`, e, 100*i),
				fmt.Sprintf(`vllm:request_success_total{engine="%s",finished_reason="stop"} %d`, e, i))
		}
		if i != 4 {
			lines = append(lines, `vllm:num_requests_waiting{engine="1"} 50`)
		}
		s.Record(pod, c.t, vllmText(t, lines...))
		v, err := s.Get(pod)
		if i == 1 {
			continue
		}
		if err != nil {
			t.Fatalf("page %d: %v (the token rates are known)", i, err)
		}
		if math.Abs(v.QueueGrowthTPS) > 1 || math.Abs(v.WindowQueueGrowthTPS) > 1 || math.Abs(v.OwedOutputGrowthTPS) > 1 {
			t.Errorf("page %d: queue growth %g (window %g), owed output growth %g; want 0: no request came or went", i, v.QueueGrowthTPS, v.WindowQueueGrowthTPS, v.OwedOutputGrowthTPS)
		}
		if v.HasRequestRate && math.Abs(v.RequestTPS-2) > 0.5 {
			t.Errorf("page %d: %g requests/s, want the 2 that finish (or none known)", i, v.RequestTPS)
		}
	}
}

// A finished-request counter gone for good froze the pod's request rate at its last value, served as
// fresh with every page's token rates.
func TestRequestRateLostIsUnknown(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	for i := 1; i <= 10; i++ {
		c.t = c.t.Add(time.Second)
		lines := []string{fmt.Sprintf("vllm:prompt_tokens_total %d", 5000*i), fmt.Sprintf("vllm:generation_tokens_total %d", 500*i),
			"vllm:num_requests_waiting 10", "vllm:num_requests_running 5"}
		if i <= 5 {
			lines = append(lines, fmt.Sprintf(`vllm:request_success_total{finished_reason="stop"} %d`, 5*i))
		}
		s.Record(pod, c.t, vllmText(t, lines...))
		v, err := s.Get(pod)
		if i == 1 {
			continue
		}
		if err != nil {
			t.Fatalf("page %d: %v (the token rates are known)", i, err)
		}
		if want := i <= 5; v.HasRequestRate != want {
			t.Fatalf("page %d: HasRequestRate %v (RequestTPS %g), want %v", i, v.HasRequestRate, v.RequestTPS, want)
		}
	}
}

// A latency window between two pages whose +Inf bucket and count disagree is unknown, never a share of
// misses: buckets above the count hid misses (a negative share clamped to 0), a count with no bucket
// holding it read every observation as a miss; a sum that fell is no window of one series either.
func TestInconsistentHistogramWindowIsUnknown(t *testing.T) {
	// buckets is a window's layout: observations up to 0.5 s, and all of them.
	buckets := func(fast, all float64) []engine.Bucket {
		return []engine.Bucket{{UpperBound: 0.5, Count: fast}, {UpperBound: math.Inf(1), Count: all}}
	}
	type hist struct {
		sum, count float64
		buckets    []engine.Bucket
	}
	for _, tc := range []struct {
		name   string
		a, b   hist
		usable bool
	}{
		{"consistent", hist{1, 100, buckets(50, 100)}, hist{2, 200, buckets(100, 200)}, true},
		{"buckets above the count", hist{1, 1000, buckets(50, 100)}, hist{2, 1100, buckets(200, 1100)}, false},
		{"count in no bucket", hist{1, 100, buckets(50, 100)}, hist{2, 1000, buckets(50, 100)}, false},
		{"sum fell", hist{5, 100, buckets(50, 100)}, hist{1, 200, buckets(100, 200)}, false},
		// Each page is consistent, the window is not: 10^6 observations moved below 0.5 s while 1,000 were
		// added, so the window's le=0.5 bucket counts 10^6 of its 1,000 (the share above 0.5 s read as 0).
		{"window not cumulative", hist{1, 1e6, buckets(0, 1e6)}, hist{2, 1e6 + 1000, buckets(1e6, 1e6+1000)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Unix(1000, 0)}
			s := New(Options{}, c.now)
			pod := PodKey{"ns", "p"}
			for i, h := range []hist{tc.a, tc.b} {
				c.t = c.t.Add(time.Second)
				snap := engine.NewSnapshot(engine.VLLM)
				snap.SetScalar(engine.PromptTokens, 1000*float64(i))
				snap.SetScalar(engine.GenerationTokens, 100*float64(i))
				snap.SetScalar(engine.RequestsWaiting, 0)
				snap.SetHist(engine.TTFT, h.sum, h.count, h.buckets)
				s.Record(pod, c.t, snap)
			}
			v, err := s.Get(pod)
			if err != nil {
				t.Fatal(err)
			}
			f, ok := FractionAbove(v.TTFT, 0.5)
			if v.TTFT.OK != tc.usable || ok != tc.usable {
				t.Fatalf("TTFT window %+v: usable %v, share above 0.5 s %v (%v); want usable %v", v.TTFT, v.TTFT.OK, f, ok, tc.usable)
			}
		})
	}
}

// Token counters are checked against the last page that had them: prompt 1000, a page without the
// prompt line, then 10^15 once passed unchecked (the last page had no prompt count to compare with) and
// the window, measured from the anchor, served 3·10^14 tokens/s.
func TestCounterJumpAcrossMissingLineIsImplausible(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	gauges := []string{"vllm:num_requests_waiting 0", "vllm:num_requests_running 3"}
	for i, p := range []struct {
		prompt, gen float64
		ok          bool // the page has the prompt line
	}{{1000, 100, true}, {0, 200, false}, {1e15, 300, true}, {1e15 + 1000, 400, true}} {
		c.t = c.t.Add(time.Second)
		lines := append([]string{fmt.Sprintf("vllm:generation_tokens_total %g", p.gen)}, gauges...)
		if p.ok {
			lines = append(lines, fmt.Sprintf("vllm:prompt_tokens_total %g", p.prompt))
		}
		s.Record(pod, c.t, vllmText(t, lines...))
		v, err := s.Get(pod)
		if i == 2 && !errors.Is(err, ErrImplausible) {
			t.Errorf("prompt 1000, no line, 1e15: err = %v (WindowPrefillTPS %g), want ErrImplausible", err, v.WindowPrefillTPS)
		}
		if err == nil && (v.WindowPrefillTPS > 1e7 || v.PrefillTPS > 1e7) {
			t.Fatalf("page %d: PrefillTPS %g, WindowPrefillTPS %g served: the jump reached the rates", i, v.PrefillTPS, v.WindowPrefillTPS)
		}
	}
}

// Latency histograms are checked against the last page that had them: a TTFT count of 100, a page
// without TTFT, then 10^9 observations all above the SLO once passed unchecked into the latency window.
func TestHistogramJumpAcrossMissingLineIsImplausible(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	for i, count := range []float64{100, -1, 1e9, 1e9 + 2} {
		c.t = c.t.Add(time.Second)
		n := float64(i + 1)
		lines := []string{fmt.Sprintf("vllm:prompt_tokens_total %g", 1000*n), fmt.Sprintf("vllm:generation_tokens_total %g", 100*n),
			"vllm:num_requests_waiting 0", "vllm:num_requests_running 3"}
		if count >= 0 {
			lines = append(lines, `vllm:time_to_first_token_seconds_bucket{le="0.5"} 100`,
				fmt.Sprintf(`vllm:time_to_first_token_seconds_bucket{le="+Inf"} %g`, count),
				fmt.Sprintf("vllm:time_to_first_token_seconds_count %g", count), "vllm:time_to_first_token_seconds_sum 10")
		}
		s.Record(pod, c.t, vllmText(t, lines...))
		v, err := s.Get(pod)
		if i == 2 && !errors.Is(err, ErrImplausible) {
			t.Fatalf("TTFT count 100, no line, 1e9: err = %v (TTFT window %g observations), want ErrImplausible", err, v.TTFT.Count)
		}
		if err == nil && v.TTFT.OK && v.TTFT.Count > 1e4 {
			t.Fatalf("page %d: a TTFT window of %g observations served", i, v.TTFT.Count)
		}
	}
}

// Running missing on two pages in a row is an unknown change on a pod that has shown the gauge, not the
// "no running gauge" of an engine without one: the arrival rate is held over the gap.
func TestRunningMissingTwiceHoldsRequestRate(t *testing.T) {
	if requestGauges[runningSeen] != engine.RequestsRunning {
		t.Fatalf("runningSeen = %d indexes %s", runningSeen, requestGauges[runningSeen])
	}
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	finished, held := 0.0, 0.0
	for i := 1; i <= 8; i++ {
		c.t = c.t.Add(time.Second)
		running := "vllm:num_requests_running 50"
		switch {
		case i <= 5:
			finished += 5
		case i == 6 || i == 7:
			finished += 50 // a burst finishes while the running line is missing
			running = ""
		default:
			finished += 5
			running = "vllm:num_requests_running 80"
		}
		lines := []string{fmt.Sprintf("vllm:prompt_tokens_total %d", 5000*i), fmt.Sprintf("vllm:generation_tokens_total %d", 500*i),
			fmt.Sprintf("vllm:request_success_total{finished_reason=\"stop\"} %g", finished), "vllm:num_requests_waiting 100"}
		if running != "" {
			lines = append(lines, running)
		}
		s.Record(pod, c.t, vllmText(t, lines...))
		v, err := s.Get(pod)
		if i == 1 {
			continue
		}
		if err != nil {
			t.Fatalf("page %d: %v", i, err)
		}
		switch {
		case i == 5:
			held = v.RequestTPS
		case i > 5:
			if v.RequestTPS != held {
				t.Fatalf("page %d: RequestTPS = %v, want %v held (running 50, missing, missing, 80 has no known change)", i, v.RequestTPS, held)
			}
		}
	}
}

// An interval whose finished-request counter rose faster than the token counters teaches no mean length:
// one page with 10^6 more finished requests dragged a learned prompt of 2,000 tokens to about 270, and
// the queued tokens with it.
func TestFinishedJumpTeachesNoLength(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	for i := range 5 {
		c.t = c.t.Add(time.Second)
		x := float64(i)
		done := x
		if i == 4 {
			done += 1e6
		}
		s.Record(pod, c.t, vllmText(t, fmt.Sprintf("vllm:prompt_tokens_total %g", 2000*x), fmt.Sprintf("vllm:generation_tokens_total %g", 200*x),
			"vllm:num_requests_waiting 10", "vllm:num_requests_running 3", fmt.Sprintf("vllm:request_success_total{finished_reason=\"stop\"} %g", done)))
		v, _ := s.Get(pod)
		if i == 3 && (v.MeanPromptTokens < 1900 || v.MeanOutputTokens < 190) {
			t.Fatalf("steady pod: mean prompt %v, output %v; want about 2000 and 200", v.MeanPromptTokens, v.MeanOutputTokens)
		}
		if i == 4 && (v.MeanPromptTokens < 1900 || v.MeanOutputTokens < 190 || v.QueuedTokens < 19000) {
			t.Fatalf("after 10^6 finished in a second of 2,200 tokens: mean prompt %v, output %v, queued %v; want about 2000, 200 and 20000",
				v.MeanPromptTokens, v.MeanOutputTokens, v.QueuedTokens)
		}
	}
}

// A page stamped ahead of this clock (Prometheus stamps samples with its own clock, and this one can
// step back) read as fresh, frozen, until this clock caught up with the stamp: an hour for an hour's step.
// It is stale once stamped further ahead than the staleness bound, or once this clock has seen no newer
// page for the bound.
func TestPageStampedAheadGoesStale(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{StaleAfter: 45 * time.Second}, c.now)
	pod := PodKey{"ns", "p"}
	for i := range 3 {
		c.t = c.t.Add(time.Second)
		s.Record(pod, c.t, page(t, 1000*float64(i), 100*float64(i), 0))
	}
	if _, err := s.Get(pod); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(-time.Hour) // this clock steps back
	s.RecordError(pod, c.t, errors.New("a sample is stamped 1h ahead of this clock"))
	if v, err := s.Get(pod); !errors.Is(err, ErrStale) || !strings.Contains(err.Error(), "ahead of this clock") {
		t.Fatalf("last page stamped an hour ahead: PrefillTPS %v, err %v; want stale naming the clocks", v.PrefillTPS, err)
	}

	// Stamped 40 s ahead, within the bound: stale 45 s after it was recorded, not 85 s.
	c = &clock{t: time.Unix(1000, 0)}
	s = New(Options{StaleAfter: 45 * time.Second}, c.now)
	for i := range 3 {
		c.t = c.t.Add(time.Second)
		s.Record(pod, c.t.Add(40*time.Second), page(t, 1000*float64(i), 100*float64(i), 0))
	}
	c.t = c.t.Add(44 * time.Second)
	if _, err := s.Get(pod); err != nil {
		t.Fatalf("44 s after the last page: %v", err)
	}
	c.t = c.t.Add(2 * time.Second)
	if v, err := s.Get(pod); !errors.Is(err, ErrStale) || !strings.Contains(err.Error(), "no newer page recorded") {
		t.Fatalf("46 s after the last page, stamped 40 s ahead: PrefillTPS %v, err %v; want stale", v.PrefillTPS, err)
	}
}

// The pages a pod's checks measure from are kept as counts once they are neither its last, previous nor
// anchor page: a pod whose pages each have a different line held up to eight whole pages (each with its
// histograms' buckets, about 450 KB for a hostile one) where three suffice. The checks still measure from
// the page that had the line: a TTFT count of 100, three pages without it, then 10^9 is refused.
func TestSeenPagesKeepNoBuckets(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	hist := func(name string, count float64) []string {
		var lines []string
		for b := 1; b <= 200; b++ {
			lines = append(lines, fmt.Sprintf(`%s_bucket{le="%d"} %g`, name, b, count*float64(b)/200))
		}
		return append(lines, fmt.Sprintf(`%s_bucket{le="+Inf"} %g`, name, count), fmt.Sprintf("%s_count %g", name, count), name+"_sum 10")
	}
	lines := func(i int, keep int) []string {
		n := float64(i + 1)
		parts := [][]string{
			{fmt.Sprintf("vllm:prompt_tokens_total %g", 1000*n)},
			{fmt.Sprintf("vllm:generation_tokens_total %g", 100*n)},
			{"vllm:num_requests_running 3"},
			hist("vllm:time_to_first_token_seconds", 10*n),
			hist("vllm:inter_token_latency_seconds", 100*n),
		}
		out := []string{"vllm:num_requests_waiting 0"} // required: a page without it is refused whole
		return append(out, parts[keep]...)
	}
	for i := range 30 {
		c.t = c.t.Add(time.Second)
		s.Record(pod, c.t, vllmText(t, lines(i, i%5)...)) // each page has one line the others lack
		st := s.pods[pod]
		withBuckets := map[*engine.Snapshot]bool{}
		for _, p := range []*engine.Snapshot{st.last, st.prev, st.anchor} {
			if p != nil {
				withBuckets[p] = true
			}
		}
		for _, seen := range append(append(st.seen[:], st.counterSeen[:]...), st.histSeen[:]...) {
			if seen.snap == nil {
				continue
			}
			for _, f := range latencyHists {
				if h, _ := seen.snap.Hist(f); len(h.Buckets) > 0 {
					withBuckets[seen.snap] = true
				}
			}
		}
		if len(withBuckets) > 3 {
			t.Fatalf("page %d: the pod holds %d pages with buckets, want at most 3 (last, previous, anchor)", i, len(withBuckets))
		}
	}

	s = New(Options{}, c.now)
	for i, count := range []float64{100, -1, -1, -1, 1e9} {
		c.t = c.t.Add(time.Second)
		n := float64(i + 1)
		page := []string{fmt.Sprintf("vllm:prompt_tokens_total %g", 1000*n), fmt.Sprintf("vllm:generation_tokens_total %g", 100*n),
			"vllm:num_requests_waiting 0", "vllm:num_requests_running 3"}
		if count >= 0 {
			page = append(page, hist("vllm:time_to_first_token_seconds", count)...)
		}
		s.Record(pod, c.t, vllmText(t, page...))
		if st := s.pods[pod]; i == 3 && !st.histSeen[0].counts && st.histSeen[0].snap != st.anchor {
			t.Fatalf("page %d: the page that had TTFT three pages ago is kept whole, not as the anchor", i)
		}
	}
	if _, err := s.Get(pod); !errors.Is(err, ErrImplausible) {
		t.Fatalf("TTFT count 100, three pages without it, then 1e9: err = %v, want ErrImplausible", err)
	}
}
