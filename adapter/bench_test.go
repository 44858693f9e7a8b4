package adapter

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// BenchmarkPodsBySelector1000 is the adapter's own share of the HPA's Pods-metric call over 1,000 pods
// (a label selector, one value per pod), without the network and the aggregator: what is left of the
// serving-latency budget for everything else (docs/performance.md).
func BenchmarkPodsBySelector1000(b *testing.B) {
	p, src := benchProvider()
	_ = src
	sel, _ := labels.Parse("llm-d.ai/role=decode")
	mi := info("pods", DecodeVelocity)
	b.ReportAllocs()
	for b.Loop() {
		list, err := p.GetMetricBySelector(context.Background(), "llm", sel, mi, labels.Everything())
		if err != nil || len(list.Items) != 1000 {
			b.Fatalf("%v, %d items", err, len(list.Items))
		}
	}
}

// benchProvider serves 1,000 decode pods among 1,000 prefill pods of one namespace.
func benchProvider() (*Provider, *fakeSource) {
	now := time.Now()
	src := &fakeSource{
		snap: &service.Snapshot{Time: now, PodLabels: map[store.PodKey]map[string]string{}, PodResults: map[store.PodKey]*store.Result{}},
	}
	for i := 0; i < 1000; i++ {
		k := store.PodKey{Namespace: "llm", Name: fmt.Sprintf("llama-decode-%d", i)}
		src.snap.PodLabels[k] = map[string]string{"llm-d.ai/role": "decode", "app": "llama"}
		src.snap.PodResults[k] = &store.Result{Velocity: store.Velocity{Pod: k, Time: now, DecodeTPS: 2000 + float64(i)}}
	}
	// Some other pods in the namespace that the selector must skip.
	for i := 0; i < 1000; i++ {
		k := store.PodKey{Namespace: "llm", Name: fmt.Sprintf("llama-prefill-%d", i)}
		src.snap.PodLabels[k] = map[string]string{"llm-d.ai/role": "prefill", "app": "llama"}
	}
	return NewProvider(src, nil), src
}
