package adapter

import (
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/component-base/metrics"

	"github.com/tokenscale/tokenscale/converter"
	"github.com/tokenscale/tokenscale/internal/selfmetrics"
	"github.com/tokenscale/tokenscale/kedascaler"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// exportedFamilies is every metric family the adapter's /metrics has once it has scraped and answered:
// the monitor (scrape and request metrics) and the pool gauges, gathered from a real registry.
func exportedFamilies(t *testing.T) map[string]bool {
	t.Helper()
	reg := metrics.NewKubeRegistry()
	m := newMonitor(reg.MustRegister, time.Now)
	m.ObserveScrape("prefill", time.Millisecond, errors.New("refused"))
	m.ObserveScrape("prefill", time.Millisecond, nil) // the freshness gauge has a series from the first success
	m.ObserveRequest("custom", "object", time.Microsecond, nil)
	// A known pool of each role, as some numbers exist for one role only.
	known := &service.PoolView{Key: service.PoolKey{Namespace: "ns", Name: "prefill"}, Config: &config.Pool{Role: config.RolePrefill}, Desired: 1, HasDesired: true}
	decode := &service.PoolView{Key: service.PoolKey{Namespace: "ns", Name: "decode"}, Config: &config.Pool{Role: config.RoleDecode}, Desired: 1, HasDesired: true}
	unknown := &service.PoolView{Key: service.PoolKey{Namespace: "ns", Name: "other"}, Err: errors.New("stale")}
	snap := &service.Snapshot{Pools: map[service.PoolKey]*service.PoolView{known.Key: known, decode.Key: decode, unknown.Key: unknown}}
	reg.CustomMustRegister(selfmetrics.NewPools(func() *service.Snapshot { return snap }, nil))
	// The converter's and the KEDA scaler's families, which the dashboard's other rows read.
	cm := converter.NewMetrics(reg.MustRegister)
	cm.GPU(converter.GPUReading{UUID: "GPU-1", MemFree: 1, MemTotal: 2, UtilisationKnown: true})
	cm.Flipped("convert", time.Millisecond)
	cm.Refused("memory-short")
	kreg := metrics.NewKubeRegistry()
	kedascaler.RegisterMetrics(kreg.MustRegister)
	kmfs, err := kreg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range append(mfs, kmfs...) {
		out[mf.GetName()] = true
	}
	return out
}

var (
	promStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeywords  = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true}
	histoSuffixes = []string{"_bucket", "_sum", "_count"}
	labelValues   = regexp.MustCompile(`^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)
)

// metricNames returns the metric names a PromQL expression reads: identifiers that are not functions,
// aggregations, keywords, label names or strings.
func metricNames(expr string) []string {
	e := promStrings.ReplaceAllString(expr, `""`)
	e = promMatchers.ReplaceAllString(e, "")
	e = promRanges.ReplaceAllString(e, "")
	e = promGrouping.ReplaceAllString(e, "")
	var names []string
	for _, m := range promIdent.FindAllStringSubmatch(e, -1) {
		if m[1] != "" || promKeywords[m[0]] { // a call: a function or an aggregation
			continue
		}
		names = append(names, m[0])
	}
	return names
}

func TestMetricNamesOfPromQL(t *testing.T) {
	got := metricNames(`histogram_quantile(0.99, sum by (le, pool) (rate(tokenscale_scrape_duration_seconds_bucket{namespace=~"$ns"}[5m]))) or time() - up`)
	if strings.Join(got, ",") != "tokenscale_scrape_duration_seconds_bucket,up" {
		t.Errorf("metricNames = %v", got)
	}
}

// The Grafana dashboard parses, every panel has queries, and every query (and template variable) reads
// only metrics the adapter exports.
func TestGrafanaDashboardUsesExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile("../manifests/grafana/tokenscale-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title, UID string
		Panels     []struct {
			Type, Title string
			Targets     []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name, Type string
				Definition string
			}
		}
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Error("dashboard needs a title and a uid")
	}
	exported := exportedFamilies(t)
	check := func(where, expr string) {
		// Every adapter replica exports the pool gauges: a panel must not show (or sum) them twice.
		if strings.Contains(expr, "tokenscale_pool_") && !strings.HasPrefix(expr, "max by (") && !strings.HasPrefix(where, "variable") {
			t.Errorf("%s: %q reads pool gauges without max by (...): two replicas would show twice", where, expr)
		}
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: %q reads no metric", where, expr)
		}
		for _, n := range names {
			base := n
			for _, s := range histoSuffixes {
				if b, ok := strings.CutSuffix(n, s); ok && exported[b] {
					base = b
				}
			}
			if !exported[base] {
				t.Errorf("%s: %q reads %s, which tokenscale does not export", where, expr, n)
			}
		}
	}
	queries := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, tg := range p.Targets {
			check("panel "+p.Title, tg.Expr)
			queries++
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		// Grafana's label_values(metric, label): the label is not a metric.
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
			check("variable "+v.Name, m[1])
		} else {
			check("variable "+v.Name, v.Definition)
		}
	}
	if queries < 14 {
		t.Errorf("%d queries; want the pools (velocity, capacity, backpressure, desired vs ready, conversions), adapter health, the converter and the KEDA scaler", queries)
	}
}
