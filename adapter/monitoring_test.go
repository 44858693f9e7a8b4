package adapter

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/testutil"

	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/tokenscale/tokenscale/velocity/service"
)

func TestMonitorAndFreshness(t *testing.T) {
	now := time.Unix(100, 0)
	var snap *service.Snapshot
	get := func() *service.Snapshot { return snap }
	reg := metrics.NewKubeRegistry()
	m := newMonitor(reg.MustRegister, func() time.Time { return now })
	m.ObserveScrape("prefill", 20*time.Millisecond, nil)
	m.ObserveScrape("prefill", 800*time.Millisecond, errors.New("timeout"))
	want := `
# HELP tokenscale_scrape_errors_total [ALPHA] Failed engine /metrics scrapes (and failed Prometheus polls), and pods a round had no time to scrape, per pool.
# TYPE tokenscale_scrape_errors_total counter
tokenscale_scrape_errors_total{pool="prefill"} 1
`
	want += `# HELP tokenscale_last_scrape_timestamp_seconds [ALPHA] Unix time of the last successful engine scrape of any pod (no series before one); time() minus this is the freshness of the newest numbers, not of every pool's.
# TYPE tokenscale_last_scrape_timestamp_seconds gauge
tokenscale_last_scrape_timestamp_seconds 100
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenscale_scrape_errors_total", "tokenscale_last_scrape_timestamp_seconds"); err != nil {
		t.Error(err)
	}
	f := freshness{snapshot: get, maxAge: 3 * time.Second, now: func() time.Time { return now }}
	if err := f.Check(nil); err == nil {
		t.Error("not ready without a snapshot")
	}
	snap = &service.Snapshot{Time: now.Add(-time.Second)}
	if err := f.Check(nil); err != nil {
		t.Errorf("fresh snapshot: %v", err)
	}
	snap = &service.Snapshot{Time: now.Add(-10 * time.Second)}
	if err := f.Check(nil); err == nil || !strings.Contains(err.Error(), "10s old") {
		t.Errorf("stale snapshot: %v", err)
	}
}

// Every answer of the providers is counted with its outcome.
func TestRequestsAreObserved(t *testing.T) {
	reg := metrics.NewKubeRegistry()
	m := newMonitor(reg.MustRegister, time.Now)
	p := NewProvider(fixture(), nil)
	p.Observe(m)
	ctx := context.Background()
	sel := labels.SelectorFromSet(labels.Set{"llm-d.ai/role": "prefill"})
	if _, err := p.GetMetricBySelector(ctx, "llm", sel, provider.CustomMetricInfo{GroupResource: podsGR, Metric: PrefillVelocity}, nil); err != nil {
		t.Fatal(err)
	}
	_, _ = p.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "nope"}, provider.CustomMetricInfo{GroupResource: workloadGRs["Deployment"], Metric: ArrivalVelocity}, nil)
	e := NewExternal(fixture())
	e.Observe(m)
	_, _ = e.GetExternalMetric(ctx, "llm", labels.Everything(), provider.ExternalMetricInfo{Metric: ArrivalVelocity})
	for _, c := range []struct{ api, target, outcome string }{{"custom", "pods", "ok"}, {"custom", "object", "not_found"}, {"external", "object", "unavailable"}} {
		n, err := testutil.GetHistogramMetricCount(m.requests.WithLabelValues(c.api, c.target, c.outcome))
		if err != nil || n != 1 {
			t.Errorf("%v: %d observations (%v), want 1", c, n, err)
		}
	}
}
