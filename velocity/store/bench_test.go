package store

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/engine"
)

func loadPage(b *testing.B) []byte {
	page, err := os.ReadFile("../engine/testdata/synthetic-vllm-v0.txt")
	if err != nil {
		b.Fatal(err)
	}
	return page
}

// BenchmarkRecord is the store's cost per pod per scrape (rates and latency-window deltas), and reports
// the heap retained per tracked pod with 10,000 pods, each holding its own snapshots of a full vLLM page
// (last, previous and latency-window anchor, as in steady state).
func BenchmarkRecord(b *testing.B) {
	page := loadPage(b)
	snap, err := engine.ExtractBytes(page, engine.Auto)
	if err != nil {
		b.Fatal(err)
	}
	const pods = 10000
	keys := make([]PodKey, pods)
	for i := range keys {
		keys[i] = PodKey{Namespace: "ns", Name: fmt.Sprintf("pod-%d", i)}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t0 := time.Unix(0, 0)
	s := New(Options{}, func() time.Time { return t0 })
	for round := 0; round < 3; round++ {
		for _, k := range keys {
			// Each scrape yields a new Snapshot, as the collector does.
			c, err := engine.ExtractBytes(page, engine.Auto)
			if err != nil {
				b.Fatal(err)
			}
			s.Record(k, t0.Add(time.Duration(round)*time.Second), c)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heapPerPod := float64(after.HeapAlloc-before.HeapAlloc) / pods
	b.ResetTimer()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := *snap
		s.Record(keys[i%pods], t0.Add(time.Duration(3+i/pods)*time.Second), &c)
		i++
	}
	b.ReportMetric(heapPerPod, "heap-B/pod")
}

// BenchmarkGet1000 is the serving path's read of 1,000 pods, as one HPA selector call over a 1,000-pod
// pool makes it (docs/performance.md).
func BenchmarkGet1000(b *testing.B) {
	page := loadPage(b)
	const pods = 1000
	keys := make([]PodKey, pods)
	t0 := time.Now()
	s := New(Options{}, func() time.Time { return t0.Add(3 * time.Second) })
	for i := range keys {
		keys[i] = PodKey{Namespace: "ns", Name: fmt.Sprintf("pod-%d", i)}
		for round := 0; round < 2; round++ {
			c, err := engine.ExtractBytes(page, engine.Auto)
			if err != nil {
				b.Fatal(err)
			}
			s.Record(keys[i], t0.Add(time.Duration(round)*time.Second), c)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, k := range keys {
			if _, err := s.Get(k); err != nil {
				b.Fatal(err)
			}
		}
	}
}
