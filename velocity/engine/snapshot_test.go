package engine

import (
	"math"
	"strings"
	"testing"
)

// A built snapshot must read like a parsed page of the same engine: same values and same sources, so
// rate code treats the two alike. A built field reads as one series without labels.
func TestNewSnapshotMatchesParsedPage(t *testing.T) {
	page := `# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total 1200
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total 340
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting 3
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1"} 2
vllm:time_to_first_token_seconds_bucket{le="+Inf"} 5
vllm:time_to_first_token_seconds_sum 1.5
vllm:time_to_first_token_seconds_count 5
`
	parsed, err := Extract(strings.NewReader(page), VLLM)
	if err != nil {
		t.Fatal(err)
	}
	built := NewSnapshot(VLLM)
	built.SetScalar(PromptTokens, 1200)
	built.SetScalar(GenerationTokens, 340)
	built.SetScalar(RequestsWaiting, 3)
	built.SetHist(TTFT, 1.5, 5, []Bucket{{0.1, 2}, {math.Inf(1), 5}})
	for _, f := range []Field{PromptTokens, GenerationTokens, RequestsWaiting} {
		a, okA := parsed.Scalar(f)
		b, okB := built.Scalar(f)
		if !okA || !okB || a != b {
			t.Errorf("%s: parsed %+v (%v), built %+v (%v)", f, a, okA, b, okB)
		}
	}
	a, _ := parsed.Hist(TTFT)
	b, ok := built.Hist(TTFT)
	if !ok || a.Source != b.Source || a.Count != b.Count || a.Sum != b.Sum || len(a.Buckets) != len(b.Buckets) {
		t.Errorf("TTFT: parsed %+v, built %+v", a, b)
	}
	if built.Err() != nil {
		t.Errorf("built snapshot with both counters: %v", built.Err())
	}
	if NewSnapshot(VLLM).Err() == nil {
		t.Error("empty snapshot should lack required metrics")
	}
}
