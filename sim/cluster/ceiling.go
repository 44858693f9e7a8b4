package cluster

import (
	"math"
	"time"

	"github.com/tokenscale/tokenscale/sim/trace"
)

// BestLatency is a request's TTFT and TPOT with unlimited capacity Ready at once: its prompt prefilled
// alone on an idle prefiller, its KV sent over that prefiller's idle link, its first token from an
// idle decoder's step, then decoded alone, a batch of one whose context grows by a token a step.
//
// With unlimited prefillers and decoders nothing is converted, so the KV transfer is part of the best
// path. A converted decoder prefills without the transfer; a policy that converts decoders can therefore
// serve a few long prompts faster than this, which the report shows as attainment above the ceiling. An
// earlier ceiling took that path for every request and put the target out of every policy's reach on
// long-prompt traces (Mooncake: ceiling 88.3%, every policy at most 81.9% with 55 GPUs).
//
// Prefix caching is left out for the same reason: with every earlier request's blocks cached the
// Mooncake ceiling is 97.5%, while per-instance caches of a prefiller's KV size give every policy at
// most about 90%. Cache hits can therefore put a policy above the ceiling too.
func (h *Hardware) BestLatency(promptTokens, outputTokens int) (ttft, tpot float64) {
	in, out := float64(max(promptTokens, 1)), max(outputTokens, 1)
	ttft = h.PrefillTime(int(in)) + h.TransferTime(int(in)) + h.StepTime(1, in)
	if out > 1 {
		// Steps 2..out have contexts in+1 .. in+out-1, mean in + out/2.
		tpot = h.StepTime(1, in+float64(out)/2)
	}
	return ttft, tpot
}

// Ceiling is the joint SLO attainment of reqs (those arriving from scoreFrom) with unlimited capacity
// Ready at once: the share of requests whose SLOs are physically reachable on this hardware. A request
// that could not finish within drainLimit of the last arrival misses, as in Run. It is NaN for no
// scored requests.
func Ceiling(h Hardware, reqs []trace.Request, scoreFrom, drainLimit time.Duration) float64 {
	if drainLimit == 0 {
		drainLimit = 10 * time.Minute
	}
	if len(reqs) == 0 {
		return math.NaN()
	}
	deadline := reqs[len(reqs)-1].Arrival.Seconds() + drainLimit.Seconds()
	n, ok := 0, 0
	for _, r := range reqs {
		if r.Arrival < scoreFrom {
			continue
		}
		n++
		ttft, tpot := h.BestLatency(r.PromptTokens, r.OutputTokens)
		end := r.Arrival.Seconds() + ttft + tpot*float64(max(r.OutputTokens, 1)-1)
		if ttft <= TTFTSLO(max(r.PromptTokens, 1)) && tpot <= TPOTSLO && end <= deadline {
			ok++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return float64(ok) / float64(n)
}
