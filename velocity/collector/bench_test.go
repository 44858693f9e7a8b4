package collector

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
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

// BenchmarkPrometheusPollAtTheBound is one poll of the Prometheus source on a reply just under
// MaxPrometheusReply (series of three 15 s samples, a thousand of them in pools), and on one 6× over it,
// which is refused. It reports the peak heap above the poll's start (sampled every 5 ms), the figure the
// bound is chosen by: docs/metrics.md quotes it.
// go test ./velocity/collector -run '^$' -bench PrometheusPollAtTheBound -benchtime 1x
func BenchmarkPrometheusPollAtTheBound(b *testing.B) {
	for _, c := range []struct {
		name string
		size int
	}{{"under", MaxPrometheusReply - 1<<20}, {"over", 6 * MaxPrometheusReply}} {
		b.Run(c.name, func(b *testing.B) {
			body := []byte(`{"status":"success","data":{"resultType":"matrix","result":[`)
			for i := 0; len(body) < c.size; i++ {
				body = fmt.Appendf(body, `{"metric":{"__name__":"vllm:prompt_tokens_total","namespace":"ns","pod":"p%d","instance":"10.0.0.1:8000","job":"x"},"values":[[1700000000,"1"],[1700000015,"2"],[1700000030,"3"]]},`, i)
			}
			body = append(body, `{"metric":{},"values":[]}]}}`...)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(body)
			}))
			defer srv.Close()
			q, err := NewPrometheusQuerier(srv.URL, 0, nil)
			if err != nil {
				b.Fatal(err)
			}
			var peak uint64
			for b.Loop() {
				src := NewPrometheusSource(q, store.New(store.Options{}, nil), time.Second, 45*time.Second, engine.Auto,
					func(k store.PodKey) bool { return len(k.Name) <= 4 })
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				base, top := ms.HeapInuse, atomic.Uint64{}
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() {
					defer close(done)
					for {
						var m runtime.MemStats
						runtime.ReadMemStats(&m)
						if m.HeapInuse > top.Load() {
							top.Store(m.HeapInuse)
						}
						select {
						case <-stop:
							return
						case <-time.After(5 * time.Millisecond):
						}
					}
				}()
				err := src.PollOnce(context.Background())
				close(stop)
				<-done
				if (err != nil) != (c.size > MaxPrometheusReply) {
					b.Fatalf("a %d-byte reply: %v", len(body), err)
				}
				peak = max(peak, top.Load()-min(top.Load(), base))
			}
			b.ReportMetric(float64(len(body))/(1<<20), "reply-MiB")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}
