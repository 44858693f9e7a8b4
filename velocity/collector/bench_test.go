package collector

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"testing"
)

// BenchmarkGunzipPage is what scrape.compression adds per scrape: decompressing a 36 KB vLLM page that the
// engine gzipped (prometheus_client compresses at level 9 when asked). It reports the compressed size.
func BenchmarkGunzipPage(b *testing.B) {
	page, err := os.ReadFile("../engine/testdata/synthetic-vllm-v0.txt")
	if err != nil {
		b.Fatal(err)
	}
	var z bytes.Buffer
	w, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
	_, _ = w.Write(page)
	_ = w.Close()
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	out := bytes.NewBuffer(make([]byte, 0, len(page)))
	for b.Loop() {
		r, err := gzip.NewReader(bytes.NewReader(z.Bytes()))
		if err != nil {
			b.Fatal(err)
		}
		out.Reset()
		if _, err := io.Copy(out, r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(z.Len()), "gzip-bytes")
}
