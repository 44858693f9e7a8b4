package adapter

import (
	"context"
	"math"
	"net/http"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// A value too large for a milli-quantity is a 503 naming it, never a wrapped negative number.
func TestHugeValueIsAnErrorNotAWrappedQuantity(t *testing.T) {
	src := fixture()
	p1 := store.PodKey{Namespace: "llm", Name: "p1"}
	src.snap.PodResults[p1].PrefillTPS = 1e308
	p := NewProvider(src, nil)
	ctx := context.Background()
	_, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "p1"}, info("pods", PrefillVelocity), labels.Everything())
	if status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "p1") {
		t.Fatalf("pod at 1e308: err = %v, want a 503 naming the pod", err)
	}
	// By selector the pod is left out, the others are served.
	sel, _ := labels.Parse("llm-d.ai/role=prefill")
	list, err := p.GetMetricBySelector(ctx, "llm", sel, info("pods", PrefillVelocity), labels.Everything())
	if err != nil || len(list.Items) != 1 || list.Items[0].DescribedObject.Name != "p2" {
		t.Fatalf("selector: %v, %+v, want only p2", err, list)
	}
	for _, it := range list.Items {
		if it.Value.MilliValue() < 0 {
			t.Fatalf("served %v", it.Value.String())
		}
	}

	pool := src.snap.Pools[service.PoolKey{Namespace: "llm", Name: "prefill"}]
	pool.Status.Arrival = 1e300
	_, err = p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "llama-prefill"}, info("deployments.apps", ArrivalVelocity), labels.Everything())
	if status(err) != http.StatusServiceUnavailable {
		t.Fatalf("pool arrival at 1e300: err = %v, want 503", err)
	}
	sel, _ = labels.Parse("pool=prefill")
	_, err = NewExternal(src).GetExternalMetric(ctx, "llm", sel, provider.ExternalMetricInfo{Metric: ArrivalVelocity})
	if status(err) != http.StatusServiceUnavailable {
		t.Fatalf("external arrival at 1e300: err = %v, want 503", err)
	}
}

func TestQuantityBounds(t *testing.T) {
	for _, v := range []float64{0, 1, 0.0004, 12345.678, service.MaxValue} {
		q, err := quantity(v)
		if err != nil || math.Abs(float64(q.MilliValue())-v*1000) > 1 {
			t.Errorf("quantity(%g) = %v, %v", v, q.String(), err)
		}
	}
	for _, v := range []float64{-1, math.NaN(), math.Inf(1), service.MaxValue * 1.01, 1e308} {
		if q, err := quantity(v); err == nil {
			t.Errorf("quantity(%g) = %v, want an error", v, q.String())
		}
	}
}
