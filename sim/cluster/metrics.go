package cluster

import (
	"math"
	"sort"
)

// Bucket bounds as vLLM exposes them, so the velocity code sees the resolution it sees in production.
var (
	TTFTBounds = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560}
	ITLBounds  = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}
)

// Histogram is a cumulative-since-start latency histogram like an engine's.
type Histogram struct {
	Bounds []float64 // upper bounds, +Inf implied
	counts []float64 // per bucket, not cumulative; len(Bounds)+1
	Sum    float64
	Count  float64
}

func newHistogram(bounds []float64) *Histogram {
	return &Histogram{Bounds: bounds, counts: make([]float64, len(bounds)+1)}
}

func (h *Histogram) observe(v, weight float64) {
	if weight <= 0 {
		return
	}
	i := sort.SearchFloat64s(h.Bounds, v) // first bound >= v: Prometheus buckets are le
	h.counts[i] += weight
	h.Sum += v * weight
	h.Count += weight
}

// observeRamp observes n values first, first+slope, …, each with weight, in one pass over the buckets.
func (h *Histogram) observeRamp(first, slope float64, n int64, weight float64) {
	if weight <= 0 || n <= 0 {
		return
	}
	for i, j := int64(0), sort.SearchFloat64s(h.Bounds, first); i < n; j++ {
		last := n - 1 // the last value in bucket j
		if j < len(h.Bounds) && slope > 0 {
			last = min(last, int64(math.Floor((h.Bounds[j]-first)/slope)))
		}
		if last >= i {
			h.counts[j] += float64(last-i+1) * weight
			i = last + 1
		}
	}
	x := float64(n)
	h.Sum += weight * (x*first + slope*x*(x-1)/2)
	h.Count += weight * x
}

// Cumulative returns (upper bound, cumulative count) pairs ending with +Inf.
func (h *Histogram) Cumulative() (bounds, cum []float64) {
	bounds = make([]float64, len(h.counts))
	cum = make([]float64, len(h.counts))
	acc := 0.0
	for i, c := range h.counts {
		acc += c
		cum[i] = acc
		if i < len(h.Bounds) {
			bounds[i] = h.Bounds[i]
		} else {
			bounds[i] = math.Inf(1)
		}
	}
	return bounds, cum
}

// InstanceStats is what an instance's /metrics page would say, plus the GPU busy time DCGM would give.
// Counters are cumulative since the instance started, as an engine's are.
type InstanceStats struct {
	Name string
	// PromptTokens, GenerationTokens and Finished are counters (vllm:prompt_tokens_total etc.).
	PromptTokens, GenerationTokens, Finished float64
	// Running and Waiting are request gauges; KVUsage is 0..1.
	Running, Waiting int
	KVUsage          float64
	// BusySeconds is cumulative GPU-busy time (DCGM_FI_DEV_GPU_UTIL integrates it).
	BusySeconds float64
	// Preemptions counts requests a decoder preempted for KV (vllm:num_preemptions_total).
	Preemptions float64
	// PrefixQueries and PrefixHits count prompt tokens looked up in, and found in, a prefiller's prefix
	// cache (vllm:prefix_cache_queries_total, vllm:prefix_cache_hits_total).
	PrefixQueries, PrefixHits float64
	// TTFT and ITL are the engine's histograms; callers must not modify them. A decoder's TTFT counts
	// from its own receipt of the request: the prompts it prefilled itself (converted) from their
	// arrival, the transferred ones from their prefill's end.
	TTFT, ITL *Histogram
	// Converted is true while the decoder takes prefill work.
	Converted bool
	// QueuedPromptTokens is a prefiller's in-flight prompt tokens, queued or in its step, less those
	// computed or found in its prefix cache (what llm-d's router reports as llm_d_epp_inflight_tokens).
	QueuedPromptTokens float64
}
