package engine

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	page, _ := os.ReadFile("testdata/vllm-v1-docs-design-metrics_llama3.1-8b.txt")
	var out bytes.Buffer
	err := Report(&out, page, Auto)
	s := out.String()
	if err == nil {
		t.Error("an elided page without prompt tokens must not get a clean verdict")
	}
	for _, want := range []string{"engine: vllm", "generation_tokens", "REQUIRED; looked for vllm:prompt_tokens_total", "why it matters", "UNKNOWN"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	out.Reset()
	page, _ = os.ReadFile("testdata/synthetic-sglang.txt")
	if err := Report(&out, page, Auto); err != nil || !strings.Contains(out.String(), "engine role (engine_type label): unified") {
		t.Errorf("sglang report: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := Report(&out, []byte("up 1\n"), Auto); err == nil || !strings.Contains(out.String(), "hint:") {
		t.Errorf("unknown engine report: %v\n%s", err, out.String())
	}
}
