package engine

import (
	"os"
	"testing"
)

// BenchmarkExtract measures parse+extract per page: the collector's per-pod cost at each scrape.
// The vLLM page is the fake engine's V1 page with two data-parallel engines (about 76 KB, 730 lines,
// every histogram family vLLM 0.10.2 exposes, plus the API server's HTTP and process families).
func BenchmarkExtract(b *testing.B) {
	for _, tc := range []struct{ name, file string }{
		{"vllm-v1-76KB", "synthetic-vllm-v1.txt"},
		{"vllm-v0-36KB", "synthetic-vllm-v0.txt"},
		{"sglang-12KB", "synthetic-sglang.txt"},
		{"sglang-docs-capture", "sglang-docs-production-metrics_llama3.1-8b.txt"},
	} {
		page, err := os.ReadFile("testdata/" + tc.file)
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range []struct {
			name  string
			parse func([]byte, sampleSink) error
		}{
			{"fast", parseBytes}, // the collector's path: the page is already in a pooled buffer
			{"expfmt", func(buf []byte, s sampleSink) error { return parseExpfmt(buf, s) }},
		} {
			b.Run(tc.name+"/"+p.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(page)))
				for b.Loop() {
					e := newExtractor(Auto)
					if err := p.parse(page, e); err != nil {
						b.Fatal(err)
					}
					if _, err := e.finish(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
