package engine

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func extractFile(t *testing.T, name string, kind Kind) *Snapshot {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := Extract(f, kind)
	if err != nil {
		t.Fatalf("Extract(%s): %v", name, err)
	}
	return s
}

func wantScalar(t *testing.T, s *Snapshot, f Field, want float64, source string) {
	t.Helper()
	got, ok := s.Scalar(f)
	if !ok {
		t.Fatalf("%v missing; problems %v", f, s.Problems)
	}
	if math.Abs(got.Value-want) > 1e-9*math.Max(1, math.Abs(want)) {
		t.Errorf("%v = %v, want %v", f, got.Value, want)
	}
	if source != "" && got.Source != source {
		t.Errorf("%v source = %q, want %q", f, got.Source, source)
	}
}

func wantAbsent(t *testing.T, s *Snapshot, f Field) {
	t.Helper()
	if src, ok := s.Found(f); ok {
		t.Errorf("%v found under %q, want absent", f, src)
	}
}

// Real capture from SGLang's production-metrics doc. The page repeats the prompt_tokens_total sample;
// it must be read once, not summed.
func TestRealSGLangDocsCapture(t *testing.T) {
	s := extractFile(t, "sglang-docs-production-metrics_llama3.1-8b.txt", Auto)
	if s.Engine != SGLang {
		t.Fatalf("engine = %q, want sglang", s.Engine)
	}
	wantScalar(t, s, PromptTokens, 8.128902e+06, "sglang:prompt_tokens_total")
	wantScalar(t, s, GenerationTokens, 7.557572e+06, "sglang:generation_tokens_total")
	wantScalar(t, s, RequestsRunning, 162, "")
	wantScalar(t, s, RequestsWaiting, 2826, "")
	wantScalar(t, s, KVCacheUsage, 0.28, "sglang:token_usage")
	ttft, ok := s.Hist(TTFT)
	if !ok || ttft.Count != 11008 || math.Abs(ttft.Sum-2.3518979474117756e+06) > 1e-3 {
		t.Errorf("TTFT = %+v", ttft)
	}
	itl, ok := s.Hist(ITL)
	if !ok || itl.Source != "sglang:time_per_output_token_seconds" || itl.Count != 7.400757e+06 {
		t.Errorf("ITL = %+v, want old name time_per_output_token_seconds", itl)
	}
	if len(ttft.Buckets) == 0 || ttft.Buckets[len(ttft.Buckets)-1].UpperBound != math.Inf(1) {
		t.Errorf("TTFT buckets should end at +Inf: %+v", ttft.Buckets)
	}
	if err := s.Err(); err != nil {
		t.Errorf("Err() = %v", err)
	}
}

// Real capture from vLLM's V1 design doc (elided by its authors: prompt tokens and waiting are absent).
func TestRealVLLMV1DesignCapture(t *testing.T) {
	s := extractFile(t, "vllm-v1-docs-design-metrics_llama3.1-8b.txt", Auto)
	if s.Engine != VLLM {
		t.Fatalf("engine = %q", s.Engine)
	}
	wantScalar(t, s, GenerationTokens, 27453, "vllm:generation_tokens_total")
	wantScalar(t, s, RequestsRunning, 8, "")
	wantScalar(t, s, RequestsFinished, 132, "") // stop 1 + length 131 + abort 0, summed over finished_reason
	// The doc elides TTFT's _sum: the histogram is still usable for quantiles, without a mean.
	if h, ok := s.Hist(TTFT); !ok || h.Count != 140 || h.HasSum || len(h.Buckets) != 8 {
		t.Errorf("TTFT = %+v, %v", h, ok)
	}
	err := s.Err()
	if err == nil || !strings.Contains(err.Error(), "prompt_tokens") || !strings.Contains(err.Error(), "vllm:prompt_tokens_total") {
		t.Errorf("Err() = %v, want it to name the missing prompt_tokens alias", err)
	}
}

// Real capture from vLLM's usage doc: only one histogram, which we do not read.
func TestRealVLLMUsageCapture(t *testing.T) {
	s := extractFile(t, "vllm-docs-usage-metrics_llama3.2-1b.txt", Auto)
	if s.Engine != VLLM {
		t.Fatalf("engine = %q", s.Engine)
	}
	for _, f := range Fields() {
		wantAbsent(t, s, f)
	}
	if s.Err() == nil {
		t.Error("a page with no token counters must not claim to give velocity")
	}
}

// Dynamo's runtime page carries no engine metrics: auto-detection must say so, not return zeros.
func TestDynamoRuntimePageIsNotAnEngine(t *testing.T) {
	f, _ := os.Open("testdata/dynamo-runtime-docs-example.txt")
	defer f.Close()
	_, err := Extract(f, Auto)
	if !errors.Is(err, ErrUnknownEngine) {
		t.Fatalf("err = %v, want ErrUnknownEngine", err)
	}
}

// Two data-parallel engines are summed (counters, histograms) or averaged (KV usage).
func TestVLLMV1DataParallelEnginesSummed(t *testing.T) {
	s := extractFile(t, "synthetic-vllm-v1.txt", Auto)
	// Each engine series carries half; read the page's own per-engine values to build the expectation.
	raw, _ := os.ReadFile("testdata/synthetic-vllm-v1.txt")
	want := sumSeries(t, string(raw), "vllm:prompt_tokens_total{")
	wantScalar(t, s, PromptTokens, want, "vllm:prompt_tokens_total")
	wantScalar(t, s, RequestsWaiting, sumSeries(t, string(raw), "vllm:num_requests_waiting{"), "")
	kvSum := sumSeries(t, string(raw), "vllm:kv_cache_usage_perc{")
	wantScalar(t, s, KVCacheUsage, kvSum/2, "vllm:kv_cache_usage_perc")
	itl, _ := s.Hist(ITL)
	if itl.Source != "vllm:inter_token_latency_seconds" {
		t.Errorf("ITL source = %q, want the new name preferred over time_per_output_token_seconds", itl.Source)
	}
	if c := sumSeries(t, string(raw), "vllm:inter_token_latency_seconds_count{"); itl.Count != c {
		t.Errorf("ITL count = %v, want %v", itl.Count, c)
	}
}

// Tensor-parallel ranks repeat the same scheduler numbers: read once, never doubled.
func TestSGLangTPRanksNotDoubleCounted(t *testing.T) {
	s := extractFile(t, "synthetic-sglang.txt", Auto)
	raw, _ := os.ReadFile("testdata/synthetic-sglang.txt")
	rank0 := func(prefix string) float64 {
		var v float64
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, prefix) && strings.Contains(line, `tp_rank="0"`) {
				v += lastField(t, line)
			}
		}
		return v
	}
	wantScalar(t, s, PromptTokens, rank0(`sglang:realtime_tokens_total{mode="prefill_`), `sglang:realtime_tokens_total{mode="prefill_compute|prefill_cache"}`)
	wantScalar(t, s, GenerationTokens, rank0(`sglang:realtime_tokens_total{mode="decode"`), "")
	wantScalar(t, s, PrefixCacheHits, rank0(`sglang:realtime_tokens_total{mode="prefill_cache"`), "")
	wantScalar(t, s, RequestsRunning, rank0("sglang:num_running_reqs{"), "")
	if s.EngineRole != "unified" {
		t.Errorf("EngineRole = %q, want unified (from engine_type)", s.EngineRole)
	}
}

func TestOldFlavorsUseOldNames(t *testing.T) {
	v0 := extractFile(t, "synthetic-vllm-v0.txt", Auto)
	if src, _ := v0.Found(KVCacheUsage); src != "vllm:gpu_cache_usage_perc" {
		t.Errorf("vLLM V0 KV source = %q", src)
	}
	if src, _ := v0.Found(ITL); src != "vllm:time_per_output_token_seconds" {
		t.Errorf("vLLM V0 ITL source = %q", src)
	}
	sg := extractFile(t, "synthetic-sglang-old.txt", Auto)
	if src, _ := sg.Found(PromptTokens); src != "sglang:prompt_tokens_total" {
		t.Errorf("old SGLang prompt source = %q", src)
	}
}

func TestEdgeCases(t *testing.T) {
	cases := []struct {
		name    string
		page    string
		kind    Kind
		wantErr string
		check   func(t *testing.T, s *Snapshot)
	}{
		{
			name: "NaN counter is a problem, not a value",
			page: "vllm:prompt_tokens_total NaN\nvllm:generation_tokens_total 5\nvllm:num_requests_waiting 1\n",
			check: func(t *testing.T, s *Snapshot) {
				wantAbsent(t, s, PromptTokens)
				if len(s.Problems) != 1 || s.Problems[0].Field != PromptTokens {
					t.Errorf("problems = %v", s.Problems)
				}
			},
		},
		{
			name: "negative and infinite values rejected",
			page: "vllm:num_requests_waiting -1\nvllm:num_requests_running +Inf\nvllm:prompt_tokens_total 1\n",
			check: func(t *testing.T, s *Snapshot) {
				wantAbsent(t, s, RequestsWaiting)
				wantAbsent(t, s, RequestsRunning)
				if len(s.Problems) != 2 {
					t.Errorf("problems = %v", s.Problems)
				}
			},
		},
		{
			name: "KV usage above 1 rejected",
			page: "vllm:kv_cache_usage_perc 57\nvllm:prompt_tokens_total 1\n",
			check: func(t *testing.T, s *Snapshot) {
				wantAbsent(t, s, KVCacheUsage)
			},
		},
		{
			// One engine's 1.6 beside another's 0.2 averaged to a plausible 0.9.
			name: "KV usage above 1 on one data-parallel engine rejected",
			page: "vllm:kv_cache_usage_perc{engine=\"0\"} 1.6\nvllm:kv_cache_usage_perc{engine=\"1\"} 0.2\nvllm:prompt_tokens_total 1\n",
			check: func(t *testing.T, s *Snapshot) {
				wantAbsent(t, s, KVCacheUsage)
				if len(s.Problems) != 1 || !strings.Contains(s.Problems[0].Msg, "1.6 on one of its 2 series") {
					t.Errorf("problems = %v, want one naming the engine's 1.6", s.Problems)
				}
			},
		},
		{
			name: "new and deprecated KV names: new wins",
			page: "vllm:gpu_cache_usage_perc 0.9\nvllm:kv_cache_usage_perc 0.4\n",
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, KVCacheUsage, 0.4, "vllm:kv_cache_usage_perc")
			},
		},
		{
			name: "any finish-reason label is summed (trtllm-serve's early exporter wrote finish_reason)",
			page: "vllm:request_success_total{finish_reason=\"stop\"} 3\nvllm:request_success_total{finish_reason=\"length\"} 4\n",
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, RequestsFinished, 7, "")
			},
		},
		{
			name: "lowest tensor-parallel rank wins whatever the order",
			page: "sglang:num_running_reqs{tp_rank=\"10\"} 7\nsglang:num_running_reqs{tp_rank=\"2\"} 6\nsglang:num_running_reqs{tp_rank=\"0\"} 5\nsglang:num_running_reqs{tp_rank=\"1\"} 9\n",
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, RequestsRunning, 5, "")
			},
		},
		{
			name: "histogram with non-cumulative buckets is a problem",
			page: "vllm:time_to_first_token_seconds_bucket{le=\"0.1\"} 5\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\nvllm:time_to_first_token_seconds_sum 1\nvllm:time_to_first_token_seconds_count 3\n",
			check: func(t *testing.T, s *Snapshot) {
				wantAbsent(t, s, TTFT)
				if len(s.Problems) != 1 {
					t.Errorf("problems = %v", s.Problems)
				}
			},
		},
		{
			// Found by FuzzScanMatchesExpfmt: expfmt hides such a _count, so only refusing the page's histogram
			// gives one answer whichever parser reads it.
			name: "histogram with buckets above its _count is a problem",
			page: "vllm:time_to_first_token_seconds_bucket{le=\"0.5\"} 4\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 5\nvllm:time_to_first_token_seconds_count 3\nvllm:prompt_tokens_total 1\n",
			check: func(t *testing.T, s *Snapshot) {
				wantAbsent(t, s, TTFT)
				if len(s.Problems) != 1 || !strings.Contains(s.Problems[0].Msg, "bucket counts exceed _count") {
					t.Errorf("problems = %v", s.Problems)
				}
			},
		},
		{
			// A window of two such pages had buckets above its count (misses hidden) or 900 observations
			// and no bucket holding them (every one read as an SLO miss).
			name: "histogram whose +Inf bucket differs from its _count is a problem",
			page: "vllm:time_to_first_token_seconds_bucket{le=\"0.5\"} 50\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 100\nvllm:time_to_first_token_seconds_count 1000\nvllm:time_to_first_token_seconds_sum 1\nvllm:prompt_tokens_total 1\n",
			check: func(t *testing.T, s *Snapshot) {
				wantAbsent(t, s, TTFT)
				if len(s.Problems) != 1 || !strings.Contains(s.Problems[0].Msg, "le=+Inf") {
					t.Errorf("problems = %v", s.Problems)
				}
			},
		},
		{
			name: "histogram whose +Inf bucket and _count differ by rounding is read",
			page: "vllm:time_to_first_token_seconds_bucket{le=\"0.5\"} 50\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 999999999999\nvllm:time_to_first_token_seconds_count 1e12\nvllm:time_to_first_token_seconds_sum 1\n",
			check: func(t *testing.T, s *Snapshot) {
				if h, ok := s.Hist(TTFT); !ok || h.Count != 1e12 {
					t.Errorf("TTFT = %+v, %v; want read with count 1e12", h, ok)
				}
			},
		},
		{
			// The mirror of the case above: the 10^-9 tolerance works both ways, not only for a +Inf bucket
			// below _count (5·10^-10 above it was refused by the 10^-12 check on buckets above the count).
			name: "histogram whose +Inf bucket is above _count by rounding is read",
			page: "vllm:time_to_first_token_seconds_bucket{le=\"0.5\"} 50\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 1e12\nvllm:time_to_first_token_seconds_count 999999999500\nvllm:time_to_first_token_seconds_sum 1\n",
			check: func(t *testing.T, s *Snapshot) {
				if h, ok := s.Hist(TTFT); !ok || h.Count != 999999999500 {
					t.Errorf("TTFT = %+v, %v; problems %v; want read with count 999999999500", h, ok, s.Problems)
				}
			},
		},
		{
			name: "histogram without _count is a problem",
			page: "vllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\nvllm:time_to_first_token_seconds_sum 1\nvllm:prompt_tokens_total 1\n",
			check: func(t *testing.T, s *Snapshot) {
				wantAbsent(t, s, TTFT)
			},
		},
		{
			// vLLM PR #28792's page (--api-server-count 8): only the process that got the engine's stats
			// writes the gauge, the others read 0.
			name: "a gauge per multiprocess pid reads the live process",
			page: `vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-VL-8B-Instruct",pid="277"} 0.0
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-VL-8B-Instruct",pid="275"} 0.0
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-VL-8B-Instruct",pid="273"} 0.6530455880475035
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-VL-8B-Instruct",pid="271"} 0.0
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-VL-8B-Instruct",pid="272"} 0.0
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-VL-8B-Instruct",pid="271"} 4
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-VL-8B-Instruct",pid="272"} 0
vllm:prompt_tokens_total{engine="0",model_name="Qwen/Qwen3-VL-8B-Instruct"} 10
`,
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, KVCacheUsage, 0.6530455880475035, "")
				wantScalar(t, s, RequestsRunning, 4, "")
			},
		},
		{
			name: "a gauge's tensor-parallel copies still read the lowest rank beside pid",
			page: "sglang:num_running_reqs{tp_rank=\"1\",pid=\"9\"} 8\nsglang:num_running_reqs{tp_rank=\"0\",pid=\"7\"} 5\nsglang:num_running_reqs{tp_rank=\"0\",pid=\"8\"} 6\n",
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, RequestsRunning, 6, "")
			},
		},
		{
			name: "the rank is chosen before the pid, whatever the order",
			page: "sglang:num_running_reqs{tp_rank=\"0\",pid=\"7\"} 5\nsglang:num_running_reqs{tp_rank=\"0\",pid=\"9\"} 6\nsglang:num_running_reqs{tp_rank=\"1\",pid=\"8\"} 8\n",
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, RequestsRunning, 6, "")
			},
		},
		{
			name: "a gauge repeated for one pid is a duplicate, whichever pid is kept",
			page: "vllm:kv_cache_usage_perc{pid=\"1\"} 0.5\nvllm:kv_cache_usage_perc{pid=\"2\"} 0\nvllm:kv_cache_usage_perc{pid=\"2\"} 0.7\nvllm:prompt_tokens_total 1\n",
			check: func(t *testing.T, s *Snapshot) {
				wantAbsent(t, s, KVCacheUsage)
				if len(s.Problems) != 1 || !strings.Contains(s.Problems[0].Msg, "duplicate series") {
					t.Errorf("problems = %v", s.Problems)
				}
			},
		},
		{
			name: "a counter per pid reads the lowest pid",
			page: "vllm:prompt_tokens_total{pid=\"12\"} 5\nvllm:prompt_tokens_total{pid=\"3\"} 4\nvllm:prompt_tokens_total{pid=\"7\"} 9\n",
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, PromptTokens, 4, "")
			},
		},
		{
			// SGLang with --enable-priority-scheduling (metrics_collector.py, _log_gauge_queue_count).
			name: "a queue's split by priority is not added to its total",
			page: `sglang:num_queue_reqs{model_name="m",priority="",dp_rank="0"} 10
sglang:num_queue_reqs{model_name="m",priority="0",dp_rank="0"} 7
sglang:num_queue_reqs{model_name="m",priority="1",dp_rank="0"} 3
sglang:num_queue_reqs{model_name="m",priority="",dp_rank="1"} 2
sglang:num_queue_reqs{model_name="m",priority="5",dp_rank="1"} 2
sglang:num_running_reqs{model_name="m",priority="3"} 4
sglang:num_running_reqs{model_name="m",priority="5"} 1
sglang:prompt_tokens_total{model_name="m"} 1
`,
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, RequestsWaiting, 12, "")
				wantScalar(t, s, RequestsRunning, 5, "") // a split without its total is the total
			},
		},
		{
			// Every TP rank exporting, rank 1 first on the page.
			name: "a priority split stays a split when a lower rank replaces its series",
			page: `sglang:num_queue_reqs{priority="",tp_rank="1"} 10
sglang:num_queue_reqs{priority="1",tp_rank="1"} 7
sglang:num_queue_reqs{priority="2",tp_rank="1"} 3
sglang:num_queue_reqs{priority="",tp_rank="0"} 10
sglang:num_queue_reqs{priority="1",tp_rank="0"} 7
sglang:num_queue_reqs{priority="2",tp_rank="0"} 3
sglang:prompt_tokens_total 1
`,
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, RequestsWaiting, 10, "")
			},
		},
		{
			name: "P/D queues without the queue itself are not requests_waiting, and their errors name them",
			page: "sglang:num_decode_prealloc_queue_reqs 3\nsglang:num_decode_transfer_queue_reqs NaN\nsglang:prompt_tokens_total 1\n",
			check: func(t *testing.T, s *Snapshot) {
				wantAbsent(t, s, RequestsWaiting)
			},
		},
		{
			name: "a P/D queue's bad value spoils requests_waiting under its own name",
			page: "sglang:num_queue_reqs 1\nsglang:num_decode_transfer_queue_reqs NaN\nsglang:prompt_tokens_total 1\n",
			check: func(t *testing.T, s *Snapshot) {
				wantAbsent(t, s, RequestsWaiting)
				if len(s.Problems) != 1 || !strings.Contains(s.Problems[0].Msg, "sglang:num_decode_transfer_queue_reqs has invalid value") {
					t.Errorf("problems = %v", s.Problems)
				}
			},
		},
		{
			name: "SGLang P/D queues count as waiting, as vLLM counts them",
			page: `sglang:num_queue_reqs{engine_type="decode",priority=""} 2
sglang:num_decode_prealloc_queue_reqs{engine_type="decode",priority=""} 3
sglang:num_decode_prealloc_queue_reqs{engine_type="decode",priority="1"} 3
sglang:num_decode_transfer_queue_reqs{engine_type="decode",priority=""} 1
sglang:num_prefill_inflight_queue_reqs{engine_type="decode",priority=""} 50
sglang:realtime_tokens_total{engine_type="decode",mode="decode"} 100
`,
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, RequestsWaiting, 6, "sglang:num_queue_reqs + sglang:num_prefill_bootstrap_queue_reqs + sglang:num_prefill_prealloc_queue_reqs + sglang:num_decode_prealloc_queue_reqs + sglang:num_decode_transfer_queue_reqs")
			},
		},
		{
			// Current SGLang skips zero increments, so a decode pod's page has no prefill modes.
			name: "a realtime mode absent beside others has counted nothing",
			page: `sglang:realtime_tokens_total{engine_type="decode",mode="decode"} 100
sglang:prompt_tokens_total{engine_type="decode"} 5000
sglang:cached_tokens_total{engine_type="decode",cache_source="device"} 900
sglang:generation_tokens_total{engine_type="decode"} 80
sglang:num_queue_reqs{engine_type="decode"} 0
`,
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, PromptTokens, 0, `sglang:realtime_tokens_total{mode="prefill_compute|prefill_cache"}`)
				wantScalar(t, s, PrefixCacheHits, 0, `sglang:realtime_tokens_total{mode="prefill_cache"}`)
				wantScalar(t, s, GenerationTokens, 100, `sglang:realtime_tokens_total{mode="decode"}`)
			},
		},
		{
			name: "without realtime counters SGLang falls back to the finish-time ones",
			page: "sglang:prompt_tokens_total 5000\nsglang:generation_tokens_total 80\nsglang:num_queue_reqs 0\n",
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, PromptTokens, 5000, "sglang:prompt_tokens_total")
				wantScalar(t, s, GenerationTokens, 80, "sglang:generation_tokens_total")
			},
		},
		{
			// Found by FuzzScanMatchesExpfmt: expfmt reads it, so the scanner must.
			name: "blanks between a name and its label set",
			page: "vllm:prompt_tokens_total {engine=\"0\"} 5\nvllm:prompt_tokens_total\t{engine=\"1\"}2\n",
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, PromptTokens, 7, "")
			},
		},
		{name: "a JSON array page (trtllm-serve's /metrics)", page: `[{"gpuMemUsage": 1024, "iter": 7}]`, wantErr: "the page is JSON"},
		{name: "a JSON object page", page: "{\"metrics\": {}}\n", wantErr: "the page is JSON"},
		{
			name: "SGLang GiB/s transfer speed scaled to bytes/s",
			page: "sglang:kv_transfer_speed_gb_s{engine_type=\"prefill\"} 2.5\n",
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, KVTransferSpeed, 2.5*(1<<30), "")
				if s.EngineRole != "prefill" {
					t.Errorf("role = %q", s.EngineRole)
				}
			},
		},
		{name: "empty page", page: "", wantErr: "no vLLM"},
		{name: "not exposition text", page: "<html>502</html>\n", wantErr: "parsing metrics text"},
		{name: "forced engine with no such metrics", page: "vllm:prompt_tokens_total 1\n", kind: SGLang, wantErr: "forced engine sglang"},
		{
			name: "forced engine reads only its own names",
			page: "vllm:prompt_tokens_total 1\nsglang:prompt_tokens_total 9\nsglang:generation_tokens_total 2\nsglang:num_queue_reqs 0\n",
			kind: VLLM,
			check: func(t *testing.T, s *Snapshot) {
				wantScalar(t, s, PromptTokens, 1, "vllm:prompt_tokens_total")
				wantAbsent(t, s, GenerationTokens)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Extract(strings.NewReader(tc.page), tc.kind)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

func TestParseKind(t *testing.T) {
	for _, ok := range []string{"", "auto", "vllm", "sglang", "trtllm"} {
		if _, err := ParseKind(ok); err != nil {
			t.Errorf("ParseKind(%q) = %v", ok, err)
		}
	}
	if _, err := ParseKind("vLLM"); err == nil || !strings.Contains(err.Error(), "allowed values") {
		t.Errorf("ParseKind(vLLM) = %v, want an error listing allowed values", err)
	}
}

func sumSeries(t *testing.T, page, prefix string) float64 {
	t.Helper()
	var v float64
	n := 0
	for _, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, prefix) {
			v += lastField(t, line)
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no series %s in page", prefix)
	}
	return v
}

func lastField(t *testing.T, line string) float64 {
	t.Helper()
	f := strings.Fields(line)
	var v float64
	if _, err := fmt.Sscan(f[len(f)-1], &v); err != nil {
		t.Fatalf("bad value in %q", line)
	}
	return v
}
