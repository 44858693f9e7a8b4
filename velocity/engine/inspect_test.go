package engine

import (
	"bytes"
	"os"
	"path/filepath"
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

// The inspectors read a page whole or fail naming the source: a page over the limit (or /dev/zero) is
// an error, never its first 16 MiB reported as if it were all there.
func TestReadPageFileIsBounded(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "page.txt")
	if err := os.WriteFile(small, []byte("vllm:num_requests_running 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadPageFile(small); err != nil || len(b) != 28 {
		t.Fatalf("small page: %d bytes, %v", len(b), err)
	}
	big := filepath.Join(dir, "big.txt")
	if err := os.WriteFile(big, make([]byte, MaxInspectPage+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPageFile(big); err == nil || !strings.Contains(err.Error(), big+" is larger than") {
		t.Errorf("page over the limit: %v", err)
	}
	if _, err := os.Stat("/dev/zero"); err == nil {
		if _, err := ReadPageFile("/dev/zero"); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("/dev/zero: %v", err)
		}
	}
}
