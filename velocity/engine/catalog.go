// Package engine turns one engine's Prometheus /metrics page into a Snapshot of the numbers tokenscale
// needs, whatever the engine (vLLM V0/V1, SGLang old/current, TensorRT-LLM) and version named them.
//
// Engine differences are data (the catalog below), not branches in code: each Field lists the metric names
// it may appear under, best source first, with the versions that use each name.
package engine

import "fmt"

// Kind names an inference engine.
type Kind string

const (
	// Auto asks Extract to detect the engine from the metric names on the page.
	Auto   Kind = ""
	VLLM   Kind = "vllm"
	SGLang Kind = "sglang"
	TRTLLM Kind = "trtllm"
)

// Kinds lists the engines tokenscale understands, for validation and messages.
var Kinds = []Kind{VLLM, SGLang, TRTLLM}

// ParseKind validates a user-supplied engine name; "" and "auto" mean Auto.
func ParseKind(s string) (Kind, error) {
	switch s {
	case "", "auto":
		return Auto, nil
	case string(VLLM), string(SGLang), string(TRTLLM):
		return Kind(s), nil
	}
	return Auto, fmt.Errorf("unknown engine %q: allowed values are auto, vllm, sglang, trtllm", s)
}

// Field identifies one quantity extracted from a page.
type Field int

// Scalar fields (counters and gauges). Counters are cumulative since engine start.
const (
	PromptTokens         Field = iota // counter, input tokens processed by prefill
	GenerationTokens                  // counter, output tokens generated
	PrefixCacheHits                   // counter, prompt tokens served from the prefix cache
	PrefixCacheQueries                // counter, prompt tokens looked up in the prefix cache
	ComputedPromptTokens              // counter, prompt tokens prefilled on the pod itself
	RequestsFinished                  // counter, requests finished (any reason)
	RequestsRunning                   // gauge, requests in the running batch
	RequestsWaiting                   // gauge, requests queued
	KVCacheUsage                      // gauge, KV cache utilisation 0..1
	KVTransferSpeed                   // gauge, KV transfer speed in bytes/s (SGLang P/D)
	numScalars
)

// Histogram fields.
const (
	TTFT       Field = iota + numScalars // time to first token, seconds
	ITL                                  // inter-token latency (time per output token), seconds
	KVXferTime                           // KV transfer time per transfer, seconds (vLLM NIXL)
	numFields
)

const numHists = int(numFields - numScalars)

// MetricType is the Prometheus type a Field is read as.
type MetricType int

const (
	TypeCounter MetricType = iota
	TypeGauge
	TypeHistogram
)

func (t MetricType) String() string {
	return [...]string{"counter", "gauge", "histogram"}[t]
}

// Alias is one name a Field may be exposed under.
type Alias struct {
	Name string
	// Match restricts the alias to series whose labels have these values (e.g. mode="decode"); a value
	// "a|b" accepts either, and the matching series are summed.
	Match map[string]string
	// Scale converts the exposed unit to the Field's unit (e.g. GiB/s to bytes/s); 0 means 1.
	Scale float64
	// Plus names further metrics of the same labels whose values are added to Name's: an engine that keeps
	// part of one quantity in separate queues (SGLang's P/D queues) still reads as one number.
	Plus []string
	// AbsentIsZero marks a metric whose labelled series the engine creates on its first increment: while
	// other series of Name are on the page, a missing matching one has counted nothing yet and reads 0,
	// instead of falling back to the next alias (and flipping back when it appears).
	AbsentIsZero bool
	// Note says which versions expose this name and any caveat; inspect prints it.
	Note string
}

func (a Alias) String() string {
	s := a.name()
	for _, p := range a.Plus {
		s += " + " + p
	}
	return s
}

func (a Alias) name() string {
	if len(a.Match) == 0 {
		return a.Name
	}
	s := a.Name + "{"
	first := true
	for _, k := range sortedKeys(a.Match) {
		if !first {
			s += ","
		}
		first = false
		s += k + "=\"" + a.Match[k] + "\""
	}
	return s + "}"
}

// Spec describes a Field: its name, type, why it matters, and its aliases per engine.
type Spec struct {
	Field Field
	Name  string
	Type  MetricType
	// Required fields are needed for token velocity; without them the pod's velocity is unknown.
	Required bool
	Why      string
	Aliases  map[Kind][]Alias
}

// Specs is the catalog, indexed by Field. Sources: the engines' own code and docs (vLLM loggers.py and
// metrics docs, SGLang collector.py and production-metrics docs, TensorRT-LLM collector.py).
var Specs = [numFields]Spec{
	PromptTokens: {
		Field: PromptTokens, Name: "prompt_tokens", Type: TypeCounter, Required: true,
		Why: "prefill token velocity (input tokens/s) and arrival velocity are computed from it",
		Aliases: map[Kind][]Alias{
			VLLM: {{Name: "vllm:prompt_tokens_total", Note: "all vLLM versions; V1 counts per engine step"}},
			SGLang: {
				{Name: "sglang:realtime_tokens_total", Match: map[string]string{"mode": "prefill_compute|prefill_cache"}, AbsentIsZero: true,
					Note: "current SGLang; computed plus cached prompt tokens, updated every scheduler log interval"},
				{Name: "sglang:prompt_tokens_total",
					Note: "older SGLang; only moves when a request finishes, so the rate lags by request duration"},
			},
			TRTLLM: {{Name: "trtllm_prompt_tokens_total", Note: "trtllm-serve (Prometheus text at /prometheus/metrics); moves when a request finishes"}},
		},
	},
	GenerationTokens: {
		Field: GenerationTokens, Name: "generation_tokens", Type: TypeCounter, Required: true,
		Why: "decode token velocity (output tokens/s) is computed from it",
		Aliases: map[Kind][]Alias{
			VLLM: {{Name: "vllm:generation_tokens_total", Note: "all vLLM versions"}},
			SGLang: {
				{Name: "sglang:realtime_tokens_total", Match: map[string]string{"mode": "decode"}, AbsentIsZero: true,
					Note: "current SGLang; updated every scheduler log interval"},
				{Name: "sglang:generation_tokens_total",
					Note: "older SGLang; only moves when a request finishes, so the rate lags by request duration"},
			},
			TRTLLM: {{Name: "trtllm_generation_tokens_total", Note: "trtllm-serve; moves when a request finishes, so the rate lags by request duration"}},
		},
	},
	PrefixCacheHits: {
		Field: PrefixCacheHits, Name: "prefix_cache_hits", Type: TypeCounter,
		Why: "separates cache-missed prefill work (what costs GPU time) from total prompt tokens",
		Aliases: map[Kind][]Alias{
			VLLM: {
				{Name: "vllm:prefix_cache_hits_total", Note: "vLLM V1 >= 0.9"},
				{Name: "vllm:gpu_prefix_cache_hits_total", Note: "vLLM V1 < 0.9 (deprecated name)"},
			},
			SGLang: {
				{Name: "sglang:realtime_tokens_total", Match: map[string]string{"mode": "prefill_cache"}, AbsentIsZero: true,
					Note: "current SGLang"},
				{Name: "sglang:cached_tokens_total", Note: "SGLang; moves when requests finish"},
			},
			TRTLLM: {{Name: "trtllm_prompt_cached_tokens_total", Note: "trtllm-serve"}},
		},
	},
	PrefixCacheQueries: {
		Field: PrefixCacheQueries, Name: "prefix_cache_queries", Type: TypeCounter,
		Why: "denominator of the prefix-cache hit ratio",
		Aliases: map[Kind][]Alias{
			VLLM: {
				{Name: "vllm:prefix_cache_queries_total", Note: "vLLM V1 >= 0.9"},
				{Name: "vllm:gpu_prefix_cache_queries_total", Note: "vLLM V1 < 0.9 (deprecated name)"},
			},
		},
	},
	ComputedPromptTokens: {
		Field: ComputedPromptTokens, Name: "computed_prompt_tokens", Type: TypeCounter,
		Why: "prompt tokens prefilled on the pod itself, without those its prefix cache, a KV transfer or a KV offload tier supplied: " +
			"the prefill work that costs GPU time (else prompt tokens less prefix-cache hits)",
		Aliases: map[Kind][]Alias{
			// vLLM increments it with prompt_tokens_total from the same step's stats (loggers.py), so the two
			// agree within a scrape.
			VLLM: {{Name: "vllm:prompt_tokens_by_source_total", Match: map[string]string{"source": "local_compute"},
				Note: "vLLM with PR #33290 (2026); tokens loaded from an offload tier or a KV transfer are not computed"}},
			SGLang: {{Name: "sglang:realtime_tokens_total", Match: map[string]string{"mode": "prefill_compute"}, AbsentIsZero: true,
				Note: "current SGLang"}},
		},
	},
	RequestsFinished: {
		Field: RequestsFinished, Name: "requests_finished", Type: TypeCounter,
		Why: "request completion rate; summed over the finish-reason label",
		Aliases: map[Kind][]Alias{
			VLLM:   {{Name: "vllm:request_success_total", Note: "summed over its finished_reason label"}},
			SGLang: {{Name: "sglang:num_requests_total", Note: "current SGLang"}},
			TRTLLM: {{Name: "trtllm_request_success_total", Note: "trtllm-serve"}},
		},
	},
	RequestsRunning: {
		Field: RequestsRunning, Name: "requests_running", Type: TypeGauge,
		Why: "decode batch size; convertible decoders are picked by fewest running requests",
		Aliases: map[Kind][]Alias{
			VLLM:   {{Name: "vllm:num_requests_running", Note: "all vLLM versions"}},
			SGLang: {{Name: "sglang:num_running_reqs", Note: "all SGLang versions"}},
			TRTLLM: {{Name: "trtllm_num_requests_running", Note: "trtllm-serve"}},
		},
	},
	RequestsWaiting: {
		Field: RequestsWaiting, Name: "requests_waiting", Type: TypeGauge, Required: true,
		Why: "queued work: arrival velocity includes the queue's growth, and backpressure is predicted from it",
		Aliases: map[Kind][]Alias{
			VLLM: {{Name: "vllm:num_requests_waiting", Note: "all vLLM versions"}},
			SGLang: {{Name: "sglang:num_queue_reqs",
				// vLLM counts a request waiting for KV room or for its KV transfer as waiting; SGLang's P/D
				// pods keep those in separate queues (metrics_collector.py), read here as part of the queue.
				Plus: []string{"sglang:num_prefill_bootstrap_queue_reqs", "sglang:num_prefill_prealloc_queue_reqs",
					"sglang:num_decode_prealloc_queue_reqs", "sglang:num_decode_transfer_queue_reqs"},
				Note: "all SGLang versions; on P/D pods plus the bootstrap (older: prealloc) queue of a prefill pod, and the prealloc and transfer queues of a decode pod"}},
			TRTLLM: {{Name: "trtllm_num_requests_waiting", Note: "trtllm-serve"}},
		},
	},
	KVCacheUsage: {
		Field: KVCacheUsage, Name: "kv_cache_usage", Type: TypeGauge,
		Why: "decode memory pressure and convertible-decoder headroom",
		Aliases: map[Kind][]Alias{
			VLLM: {
				{Name: "vllm:kv_cache_usage_perc", Note: "vLLM V1 >= 0.9 (0..1)"},
				{Name: "vllm:gpu_cache_usage_perc", Note: "vLLM V0 and V1 <= 0.10 (deprecated in 0.9, 0..1)"},
			},
			SGLang: {{Name: "sglang:token_usage", Note: "all SGLang versions (0..1)"}},
			TRTLLM: {{Name: "trtllm_kv_cache_utilization", Note: "trtllm-serve (0..1)"}},
		},
	},
	KVTransferSpeed: {
		Field: KVTransferSpeed, Name: "kv_transfer_speed", Type: TypeGauge,
		Why: "observed KV-transfer velocity V_N between prefill and decode (P/D deployments only)",
		Aliases: map[Kind][]Alias{
			// SGLang computes it as bytes / 2^30 / seconds, so its "GB" is a GiB.
			SGLang: {{Name: "sglang:kv_transfer_speed_gb_s", Scale: 1 << 30,
				Note: "SGLang disaggregation mode, a gauge in GiB/s; newer SGLang makes it a histogram, which is not read"}},
		},
	},
	TTFT: {
		Field: TTFT, Name: "time_to_first_token", Type: TypeHistogram,
		Why: "latency safety net: emergency scale-up steps fire when TTFT breaks its SLO; on vLLM decoders, the step for first tokens late on the decoders",
		Aliases: map[Kind][]Alias{
			VLLM:   {{Name: "vllm:time_to_first_token_seconds", Note: "all vLLM versions"}},
			SGLang: {{Name: "sglang:time_to_first_token_seconds", Note: "all SGLang versions"}},
			TRTLLM: {{Name: "trtllm_time_to_first_token_seconds", Note: "trtllm-serve"}},
		},
	},
	ITL: {
		Field: ITL, Name: "inter_token_latency", Type: TypeHistogram,
		Why: "latency safety net for decode: emergency steps fire when inter-token latency breaks its SLO",
		Aliases: map[Kind][]Alias{
			VLLM: {
				{Name: "vllm:inter_token_latency_seconds", Note: "vLLM >= 0.10.2"},
				{Name: "vllm:time_per_output_token_seconds", Note: "vLLM V0 and V1 <= 0.10.x (deprecated)"},
			},
			SGLang: {
				{Name: "sglang:inter_token_latency_seconds", Note: "current SGLang"},
				{Name: "sglang:time_per_output_token_seconds", Note: "older SGLang"},
			},
			TRTLLM: {{Name: "trtllm_time_per_output_token_seconds", Note: "trtllm-serve"}},
		},
	},
	KVXferTime: {
		Field: KVXferTime, Name: "kv_transfer_time", Type: TypeHistogram,
		Why: "KV-transfer latency between prefill and decode (vLLM with the NIXL connector only)",
		Aliases: map[Kind][]Alias{
			VLLM: {{Name: "vllm:nixl_xfer_time_seconds", Note: "vLLM with NixlConnector"}},
		},
	},
}

// String returns the Field's catalog name.
func (f Field) String() string {
	if f < 0 || f >= numFields {
		return fmt.Sprintf("field(%d)", int(f))
	}
	return Specs[f].Name
}

// Fields lists every Field in catalog order.
func Fields() []Field {
	fs := make([]Field, numFields)
	for i := range fs {
		fs[i] = Field(i)
	}
	return fs
}

// prefixes identify an engine's metrics for auto-detection.
var prefixes = map[Kind]string{VLLM: "vllm:", SGLang: "sglang:", TRTLLM: "trtllm_"}

// replicaLabels mark series that repeat the same work once per parallel rank (tensor, pipeline, expert
// parallel, or prometheus_client multiprocess pid): only one rank is read, so nothing is double counted.
// The lowest rank is kept, so a series stays the same one from scrape to scrape, except that copies of a
// gauge differing only in pid keep the largest value: a gauge in prometheus_client's multiprocess "all"
// mode is written only by the process that gets the engine's stats and reads 0 in the others (vLLM's
// kv_cache_usage_perc with --api-server-count > 1 before vLLM PR #28792). Any other label that differs
// (vLLM's data-parallel `engine`, finished_reason, model_name) is summed.
// pid is kept apart from these in a series' key (groupKey), as gauges and counters treat it differently.
var replicaLabels = map[string]bool{"tp_rank": true, "pp_rank": true, "moe_ep_rank": true, "attn_tp_rank": true}

// breakdownLabels mark series that split a total given beside them: SGLang with priority scheduling
// writes each queue's total under priority="" and its split under priority="<n>" (metrics_collector.py,
// _log_gauge_queue_count). Series with a value for such a label are read only when no total is on the
// page, so the split is not added to its own total.
var breakdownLabels = []string{"priority"}
