//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

// Reaction times as a distribution, not one run: repeated load steps up and down on two fake vLLM
// engines, each timed from the step until (a) tokenscale_arrival_tokens_per_second through the aggregator
// covers 90% of the step and (b) tokenscale_desired_replicas shows the new size. 4 steps each way by
// default (each step down waits for the burst sizing to let the high load go, up to 25 s);
// TOKENSCALE_PERF=full runs 30.
func TestReactionTimeDistribution(t *testing.T) {
	const ns, low, high = "reaction", 5000.0, 15000.0
	n := 4
	if os.Getenv("TOKENSCALE_PERF") == "full" {
		n = 30
	}
	k := namespace(t, ns)
	deployment(t, ns, "llama-prefill", "prefill", fakeengine.VLLMV1, 2)
	// The suite's profile is 10000 tok/s per pod at 0.85: 5000 → 1 replica, 15000 → 2 replicas.
	wantReplicas := map[float64]float64{low: 1, high: 2}
	set := func(v float64) { k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: v, OutputTokensPerSec: 5}) }
	set(low)
	settled := func(level float64) {
		eventually(t, 60*time.Second, fmt.Sprintf("settled at %g", level), func() error {
			v, err := objectValue(ns, "llama-prefill", "tokenscale_arrival_tokens_per_second")
			if err != nil {
				return err
			}
			if err := within(v, level, 0.05); err != nil {
				return err
			}
			d, err := objectValue(ns, "llama-prefill", "tokenscale_desired_replicas")
			if err != nil {
				return err
			}
			if d != wantReplicas[level] {
				return fmt.Errorf("desired %g, want %g", d, wantReplicas[level])
			}
			return nil
		})
	}
	settled(low)
	var signal, decision [2][]time.Duration // [0] up, [1] down
	for i := 0; i < 2*n; i++ {
		from, to, dir := low, high, 0
		if i%2 == 1 {
			from, to, dir = high, low, 1
		}
		threshold := from + 0.9*(to-from)
		set(to)
		start := time.Now()
		var sig, dec time.Duration
		for (sig == 0 || dec == 0) && time.Since(start) < 60*time.Second {
			if v, err := objectValue(ns, "llama-prefill", "tokenscale_arrival_tokens_per_second"); err == nil && sig == 0 &&
				(dir == 0 && v >= threshold || dir == 1 && v <= threshold) {
				sig = time.Since(start)
			}
			if d, err := objectValue(ns, "llama-prefill", "tokenscale_desired_replicas"); err == nil && dec == 0 && d == wantReplicas[to] {
				dec = time.Since(start)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if sig == 0 || dec == 0 {
			t.Fatalf("step %d (%g→%g): signal %v, decision %v within 60 s", i, from, to, sig, dec)
		}
		signal[dir] = append(signal[dir], sig)
		decision[dir] = append(decision[dir], dec)
		settled(to)
	}
	for dir, name := range []string{"up", "down"} {
		s, d := quantiles(signal[dir]), quantiles(decision[dir])
		t.Logf("%d steps %-4s signal at 90%%: p50 %s p90 %s max %s; desired replicas: p50 %s p90 %s max %s",
			n, name, s[0], s[1], s[2], d[0], d[1], d[2])
		// Scale-down is held by the suite's 5 s scaleDownWindow and the burst sizing's memory (5 cold
		// starts); scale-up must be fast. The suite's 5 s cold start is also the sizing rate's smoothing
		// time constant (docs/metrics.md): 1 → 2 replicas needs the smoothed rate past 8,500 tok/s, about
		// 0.4 of it after the window average moves, so the bound is a cold start plus 3 s.
		if dir == 0 && d[1] > 8*time.Second {
			t.Errorf("p90 of scale-up decisions %s, want <= 8 s", d[1])
		}
	}
}

// quantiles returns nearest-rank p50, p90 and max, rounded to 10 ms.
func quantiles(ds []time.Duration) [3]time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)].Round(10 * time.Millisecond)
	}
	return [3]time.Duration{at(0.5), at(0.9), s[len(s)-1].Round(10 * time.Millisecond)}
}
