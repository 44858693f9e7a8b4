package store

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/engine"
)

func page(t *testing.T, prompt, gen, waiting float64) *engine.Snapshot {
	t.Helper()
	s, err := engine.Extract(strings.NewReader(fmt.Sprintf(
		"vllm:prompt_tokens_total %g\nvllm:generation_tokens_total %g\nvllm:num_requests_waiting %g\nvllm:num_requests_running 3\n",
		prompt, gen, waiting)), engine.VLLM)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestRatesResetNeverNegativeOrSpiked(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	prompt := 0.0
	for i := 0; i < 30; i++ {
		c.t = c.t.Add(time.Second)
		prompt += 1000
		if i == 15 {
			prompt = 40 // restart: the counter starts again from a small value
		}
		s.Record(pod, c.t, page(t, prompt, prompt/10, 0))
		v, err := s.Get(pod)
		if i == 0 {
			if !errors.Is(err, ErrWarmingUp) {
				t.Fatalf("first scrape: err = %v, want warming up", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("scrape %d: %v", i, err)
		}
		if v.PrefillTPS < 0 || math.IsNaN(v.PrefillTPS) || v.PrefillTPS > 1000*1.0001 {
			t.Fatalf("scrape %d: PrefillTPS = %v, want within [0, 1000]", i, v.PrefillTPS)
		}
		if i > 3 && math.Abs(v.PrefillTPS-1000) > 1 {
			t.Fatalf("scrape %d: PrefillTPS = %v, want 1000 (reset held, not spiked or dipped)", i, v.PrefillTPS)
		}
	}
	v, _ := s.Get(pod)
	if v.Resets != 1 {
		t.Errorf("Resets = %d, want 1", v.Resets)
	}
}

func TestRatesFastAndUnbiased(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	prompt := 0.0
	step := func(rate float64) Velocity {
		c.t = c.t.Add(time.Second)
		prompt += rate
		s.Record(pod, c.t, page(t, prompt, 0, 0))
		v, err := s.Get(pod)
		if err != nil && !errors.Is(err, ErrWarmingUp) {
			t.Fatal(err)
		}
		return v
	}
	for i := 0; i < 5; i++ {
		step(1000)
	}
	step(5000)
	if got := step(5000).PrefillTPS; got < 0.9*5000 {
		t.Errorf("two scrapes after a step up: %v, want >= 90%% of 5000", got)
	}
	for i := 0; i < 25; i++ {
		step(5000)
	}
	step(1000)
	if got := step(1000).PrefillTPS; got > 1.1*1000 {
		t.Errorf("two scrapes after a step down: %v, want <= 110%% of 1000 (holding capacity is the policy's job)", got)
	}
	// A noisy rate (Poisson-like swings of ±60% around 3000) must be estimated without bias: a slower fall
	// than rise would sit near the top of the swings. The window average must be unbiased and steadier.
	rng := rand.New(rand.NewPCG(3, 4))
	var sumFast, sumWin, sqFast, sqWin, n float64
	for i := 0; i < 400; i++ {
		v := step(3000 * (0.4 + 1.2*rng.Float64()))
		if i < 30 {
			continue
		}
		sumFast += v.PrefillTPS
		sumWin += v.WindowPrefillTPS
		sqFast += (v.PrefillTPS - 3000) * (v.PrefillTPS - 3000)
		sqWin += (v.WindowPrefillTPS - 3000) * (v.WindowPrefillTPS - 3000)
		n++
	}
	if m := sumFast / n; math.Abs(m-3000) > 0.03*3000 {
		t.Errorf("mean smoothed rate %.0f, want 3000 ± 3%%", m)
	}
	if m := sumWin / n; math.Abs(m-3000) > 0.03*3000 {
		t.Errorf("mean window rate %.0f, want 3000 ± 3%%", m)
	}
	if sqWin >= sqFast/2 {
		t.Errorf("window rate spread %.0f not well below the smoothed rate's %.0f", math.Sqrt(sqWin/n), math.Sqrt(sqFast/n))
	}
}

func TestStaleIsAnErrorNotZero(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{StaleAfter: 3 * time.Second}, c.now)
	pod := PodKey{"ns", "p"}
	s.Record(pod, c.t, page(t, 0, 0, 0))
	c.t = c.t.Add(time.Second)
	s.Record(pod, c.t, page(t, 100, 10, 0))
	if _, err := s.Get(pod); err != nil {
		t.Fatal(err)
	}
	s.RecordError(pod, c.t.Add(time.Second), errors.New("connection refused"))
	c.t = c.t.Add(4 * time.Second)
	_, err := s.Get(pod)
	if !errors.Is(err, ErrStale) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v, want stale with the last scrape error", err)
	}
}

// A pod back after its scrapes failed for longer than StaleAfter serves no rate over the gap: that is the
// gap's average, and smoothed over so long an interval it replaced the current rate at once, while the
// window rates and latency histograms spanned the gap for two more intervals; nor does it smooth from the
// rate it had before the gap.
func TestNoRateAcrossAStaleGap(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{StaleAfter: 3 * time.Second}, c.now)
	pod := PodKey{"ns", "p"}
	prompt := 0.0
	for range 5 {
		s.Record(pod, c.t, page(t, prompt, prompt/10, 0))
		c.t = c.t.Add(time.Second)
		prompt += 1000
	}
	for range 600 {
		s.RecordError(pod, c.t, errors.New("connection refused"))
		c.t = c.t.Add(time.Second)
	}
	prompt += 600 * 100 // 100 tokens/s while unread, 10,000 once back
	s.Record(pod, c.t, page(t, prompt, prompt/10, 0))
	if _, err := s.Get(pod); err == nil || !strings.Contains(err.Error(), "spans") {
		t.Fatalf("the page after a 10-minute gap: err = %v, want no rate over the gap", err)
	}
	for i := range 3 {
		c.t = c.t.Add(time.Second)
		prompt += 10000
		s.Record(pod, c.t, page(t, prompt, prompt/10, 0))
		v, err := s.Get(pod)
		if err != nil {
			t.Fatalf("interval %d after the gap: %v", i+1, err)
		}
		for name, r := range map[string]float64{"PrefillTPS": v.PrefillTPS, "WindowPrefillTPS": v.WindowPrefillTPS} {
			if math.Abs(r-10000) > 1 {
				t.Errorf("interval %d after the gap: %s = %.0f, want about 10,000, the rate since the pod came back", i+1, name, r)
			}
		}
	}
}

func TestRemoveAndRetain(t *testing.T) {
	s := New(Options{}, nil)
	now := time.Now()
	for _, n := range []string{"a", "b", "c"} {
		s.Record(PodKey{"ns", n}, now, page(t, 1, 1, 0))
	}
	s.Remove(PodKey{"ns", "a"})
	s.Retain(func(k PodKey) bool { return k.Name != "b" })
	if s.Len() != 1 {
		t.Fatalf("Len = %d, want 1", s.Len())
	}
	if _, err := s.Get(PodKey{"ns", "a"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed pod: err = %v", err)
	}
}

func TestMissingRequiredMetricIsUnknown(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	for i := 0; i < 3; i++ {
		c.t = c.t.Add(time.Second)
		snap, _ := engine.Extract(strings.NewReader(fmt.Sprintf("vllm:generation_tokens_total %d\n", i*10)), engine.VLLM)
		s.Record(pod, c.t, snap)
	}
	if _, err := s.Get(pod); err == nil || !strings.Contains(err.Error(), "prompt_tokens") {
		t.Fatalf("err = %v, want one naming the missing prompt token counter", err)
	}
}

func TestQueueGrowthAndLatencyWindow(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod := PodKey{"ns", "p"}
	for i := 0; i < 5; i++ {
		c.t = c.t.Add(time.Second)
		s.Record(pod, c.t, page(t, float64(i)*100, 0, float64(i*2)))
	}
	v, err := s.Get(pod)
	if err != nil {
		t.Fatal(err)
	}
	// Two more requests of 1000 tokens queue each second.
	if math.Abs(v.QueueGrowthTPS-2000) > 100 {
		t.Errorf("QueueGrowthTPS = %v, want about 2000", v.QueueGrowthTPS)
	}
}

// RequestTPS counts arrivals: requests finished plus the growth of waiting and running. Each second 5
// finish, the queue grows by 2 and the batch by 1, so 8 arrive; a page without the finished counter
// leaves it 0; a finished counter rising faster than the token counters is clipped to them.
func TestRequestRateCountsArrivals(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	pod, bare, glitch := PodKey{"ns", "p"}, PodKey{"ns", "bare"}, PodKey{"ns", "glitch"}
	vllm := func(prompt, waiting, running, done float64) *engine.Snapshot {
		snap, err := engine.Extract(strings.NewReader(fmt.Sprintf(
			"vllm:prompt_tokens_total %g\nvllm:generation_tokens_total 0\nvllm:num_requests_waiting %g\nvllm:num_requests_running %g\nvllm:request_success_total{finished_reason=\"stop\"} %g\n",
			prompt, waiting, running, done)), engine.VLLM)
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	for i := range 8 {
		c.t = c.t.Add(time.Second)
		x := float64(i)
		s.Record(pod, c.t, vllm(x*5000, x*2, 3+x, x*5))
		s.Record(bare, c.t, page(t, x*5000, 0, x*2))
		s.Record(glitch, c.t, vllm(x*50, 0, 3, x*1e15))
	}
	v, err := s.Get(pod)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(v.RequestTPS-8) > 0.01 {
		t.Errorf("RequestTPS = %v, want 8", v.RequestTPS)
	}
	if v, err := s.Get(bare); err != nil || v.RequestTPS != 0 {
		t.Errorf("without a finished-request counter RequestTPS = %v (%v), want 0", v.RequestTPS, err)
	}
	if v, err := s.Get(glitch); err != nil || v.RequestTPS > 50.01 {
		t.Errorf("a finished counter rising 1e15/s beside 50 prompt tokens/s: RequestTPS = %v (%v), want at most 50", v.RequestTPS, err)
	}
}

func TestFractionAbove(t *testing.T) {
	h := engine.Histogram{OK: true, Count: 100, Buckets: []engine.Bucket{{UpperBound: 0.1, Count: 50}, {UpperBound: 0.5, Count: 90}, {UpperBound: 1, Count: 100}, {UpperBound: math.Inf(1), Count: 100}}}
	for _, tc := range []struct{ x, want float64 }{{0.05, 0.75}, {0.1, 0.5}, {0.3, 0.3}, {1, 0}, {5, 0}} {
		got, ok := FractionAbove(h, tc.x)
		if !ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("FractionAbove(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
	if _, ok := FractionAbove(engine.Histogram{OK: true}, 1); ok {
		t.Error("empty histogram must be unknown")
	}
}

// A +Inf bucket alone says nothing about where the observations lie: the share above a bound is unknown,
// not 1 (every observation an SLO miss).
func TestFractionAboveWithoutFiniteBoundIsUnknown(t *testing.T) {
	if f, ok := FractionAbove(engine.Histogram{OK: true, Count: 10, Buckets: []engine.Bucket{{UpperBound: math.Inf(1), Count: 10}}}, 1); ok {
		t.Fatalf("FractionAbove of a +Inf bucket alone = %v, want unknown", f)
	}
}

// Each must say of every key, in order, what Get says: known values, warming up, missing metrics, gone.
func TestEachAgreesWithGet(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := New(Options{}, c.now)
	known, warming, broken, gone := PodKey{"ns", "known"}, PodKey{"ns", "warming"}, PodKey{"ns", "broken"}, PodKey{"ns", "gone"}
	s.Record(known, c.t, page(t, 0, 0, 0))
	s.Record(warming, c.t, page(t, 0, 0, 0))
	bad, _ := engine.Extract(strings.NewReader("vllm:generation_tokens_total 10\n"), engine.VLLM)
	s.Record(broken, c.t, bad)
	c.t = c.t.Add(time.Second)
	s.Record(known, c.t, page(t, 1000, 100, 0))
	keys := []PodKey{gone, known, broken, warming}
	var got []PodKey
	var vals []Velocity
	var errs []error
	s.Each(keys, func(v *Velocity, err error) {
		got, vals, errs = append(got, v.Pod), append(vals, *v), append(errs, err)
	})
	for i, k := range got {
		want, wantErr := s.Get(k)
		if (errs[i] == nil) != (wantErr == nil) || (wantErr != nil && errs[i].Error() != wantErr.Error()) {
			t.Errorf("%s: Each says %v, Get says %v", k, errs[i], wantErr)
		}
		if wantErr == nil && vals[i].PrefillTPS != want.PrefillTPS {
			t.Errorf("%s: Each reads %g prompt tok/s, Get %g", k, vals[i].PrefillTPS, want.PrefillTPS)
		}
	}
	if errs[1] != nil || vals[1].PrefillTPS <= 0 {
		t.Errorf("known pod: %v, %g prompt tok/s", errs[1], vals[1].PrefillTPS)
	}
	if fmt.Sprint(got) != fmt.Sprint(keys) {
		t.Fatalf("Each visited %v, want %v", got, keys)
	}
}

// Computed prefill is the engine's own count of locally prefilled tokens where it gives one (vLLM's
// prompt_tokens_by_source_total): tokens loaded from a KV offload tier are no prefix-cache hits, so
// prompt less hits counted them as computed. Without it, prompt less hits.
func TestComputedPrefillFromTheEnginesCount(t *testing.T) {
	for _, tc := range []struct {
		name     string
		perPage  string
		computed float64
	}{
		// Per second: 1000 prompt tokens, 100 local prefix hits, 500 loaded from an offload tier.
		{"by source", "vllm:prefix_cache_hits_total %[2]g\nvllm:prompt_tokens_by_source_total{source=\"local_compute\"} %[3]g\nvllm:prompt_tokens_by_source_total{source=\"local_cache_hit\"} %[2]g\nvllm:prompt_tokens_by_source_total{source=\"external_kv_transfer\"} %[4]g\n", 400},
		{"hits only", "vllm:prefix_cache_hits_total %[2]g\n", 900},
		// A count a step ahead of the prompt tokens (scraped between the engine's two increments) is capped.
		{"computed ahead", "vllm:prefix_cache_hits_total %[2]g\nvllm:prompt_tokens_by_source_total{source=\"local_compute\"} %[5]g\n", 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Unix(1000, 0)}
			s := New(Options{}, c.now)
			pod := PodKey{"ns", "p"}
			var v Velocity
			for i := 1; i <= 40; i++ {
				c.t = c.t.Add(time.Second)
				n := float64(i)
				text := fmt.Sprintf("vllm:prompt_tokens_total %[1]g\nvllm:generation_tokens_total 0\nvllm:num_requests_waiting 0\n"+tc.perPage, 1000*n, 100*n, 400*n, 500*n, 1100*n)
				snap, err := engine.Extract(strings.NewReader(text), engine.VLLM)
				if err != nil {
					t.Fatal(err)
				}
				s.Record(pod, c.t, snap)
				v, _ = s.Get(pod)
			}
			if math.Abs(v.ComputedPrefillTPS-tc.computed) > 1 || math.Abs(v.WindowComputedPrefillTPS-tc.computed) > 1 || math.Abs(v.PrefillTPS-1000) > 1 {
				t.Errorf("computed %v (window %v), prefill %v; want %v computed of 1000", v.ComputedPrefillTPS, v.WindowComputedPrefillTPS, v.PrefillTPS, tc.computed)
			}
		})
	}
}

// Each kind of rate follows its own time constant: the counters' rates RiseTau/FallTau, the queues'
// growth GrowthTau, the learned lengths LengthTau (the adapter smooths the noisier two longer). With
// constants far apart, one scrape after a step shows each moved by its own 1-e^(-1s/τ).
func TestEachRateFollowsItsOwnTimeConstant(t *testing.T) {
	o := Options{RiseTau: 100 * time.Millisecond, FallTau: 100 * time.Millisecond, GrowthTau: time.Second, LengthTau: 3 * time.Second}
	moved := func(tau time.Duration) float64 { return 1 - math.Exp(-time.Second.Seconds()/tau.Seconds()) }
	vllm := func(prompt, waiting, done float64) *engine.Snapshot {
		snap, err := engine.Extract(strings.NewReader(fmt.Sprintf(
			"vllm:prompt_tokens_total %g\nvllm:generation_tokens_total 0\nvllm:num_requests_waiting %g\nvllm:num_requests_running 3\nvllm:request_success_total{finished_reason=\"stop\"} %g\n",
			prompt, waiting, done)), engine.VLLM)
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	c := &clock{t: time.Unix(1000, 0)}
	s := New(o, c.now)
	pod := PodKey{"ns", "p"}
	// Ten seconds of 1,000 prompt tokens/s in requests of 1,000 tokens and a steady queue of 4, then one
	// second of 5,000 tokens/s in requests of 2,500 tokens and the queue growing by 2.
	prompt, done := 0.0, 0.0
	for range 10 {
		c.t = c.t.Add(time.Second)
		prompt, done = prompt+1000, done+1
		s.Record(pod, c.t, vllm(prompt, 4, done))
	}
	before, err := s.Get(pod)
	if err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(time.Second)
	s.Record(pod, c.t, vllm(prompt+5000, 6, done+2))
	v, err := s.Get(pod)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, got, from, to float64, tau time.Duration) {
		t.Helper()
		if want := from + (to-from)*moved(tau); math.Abs(got-want) > 0.01*math.Abs(to-from) {
			t.Errorf("%s = %.0f one scrape after a step from %.0f to %.0f, want %.0f (τ %s)", name, got, from, to, want, tau)
		}
	}
	check("PrefillTPS", v.PrefillTPS, before.PrefillTPS, 5000, o.RiseTau)
	check("MeanPromptTokens", v.MeanPromptTokens, before.MeanPromptTokens, 2500, o.LengthTau)
	// The queue is sized with the mean learned before this scrape: 6×mean − 4×mean, per second.
	check("QueueGrowthTPS", v.QueueGrowthTPS, before.QueueGrowthTPS, (6-4)*before.MeanPromptTokens, o.GrowthTau)
}
