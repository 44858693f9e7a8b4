package selfmetrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/testutil"

	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/velocity/collector"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/policy"
	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// Known pool numbers are gauges; unknown ones have no series (never 0) and are flagged instead.
func TestPoolsExportKnownValuesOnly(t *testing.T) {
	prefill := &config.Pool{Name: "prefill", Role: config.RolePrefill}
	decode := &config.Pool{Name: "decode", Role: config.RoleDecode}
	var snap *service.Snapshot
	reg := metrics.NewKubeRegistry()
	reg.CustomMustRegister(NewPools(func() *service.Snapshot { return snap }, nil))
	if got, err := count(reg, ""); err != nil || got != 0 {
		t.Fatalf("before the first snapshot: %d series (%v); want none", got, err)
	}
	snap = &service.Snapshot{Time: time.Unix(100, 0), Pools: map[service.PoolKey]*service.PoolView{
		{Namespace: "llm-d", Name: "prefill"}: {
			Key: service.PoolKey{Namespace: "llm-d", Name: "prefill"}, Config: prefill,
			Pods:    []store.PodKey{{Namespace: "llm-d", Name: "p-1"}, {Namespace: "llm-d", Name: "p-2"}},
			Status:  policy.PoolStatus{Arrival: 12000, Capacity: 20000, Utilisation: 0.6, Backpressure: 0.25, QueuedTokens: 300},
			Desired: 2, HasDesired: true,
		},
		{Namespace: "llm-d", Name: "decode"}: {
			Key: service.PoolKey{Namespace: "llm-d", Name: "decode"}, Config: decode,
			Err: errors.New("no pod has fresh velocities"),
		},
	}}
	want := `
# HELP tokenscale_pool_arrival_tokens_per_second [ALPHA] Arrival token velocity λ of the pool (tokens/s).
# TYPE tokenscale_pool_arrival_tokens_per_second gauge
tokenscale_pool_arrival_tokens_per_second{namespace="llm-d",pool="prefill",role="prefill"} 12000
# HELP tokenscale_pool_desired_replicas [ALPHA] Replicas the policy wants for the pool.
# TYPE tokenscale_pool_desired_replicas gauge
tokenscale_pool_desired_replicas{namespace="llm-d",pool="prefill",role="prefill"} 2
# HELP tokenscale_pool_ready_pods [ALPHA] Ready pods tokenscale assigns to the pool.
# TYPE tokenscale_pool_ready_pods gauge
tokenscale_pool_ready_pods{namespace="llm-d",pool="decode",role="decode"} 0
tokenscale_pool_ready_pods{namespace="llm-d",pool="prefill",role="prefill"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenscale_pool_arrival_tokens_per_second",
		"tokenscale_pool_desired_replicas", "tokenscale_pool_ready_pods"); err != nil {
		t.Error(err)
	}
	// The decode pool's 6 numbers (it has no queued prompt tokens) are unknown: flagged, and absent from
	// every gauge; the prefill pool has every number but conversions wanted.
	if n, err := count(reg, "tokenscale_pool_value_unknown"); err != nil || n != 6 {
		t.Errorf("unknown flags: %d (%v); want 6", n, err)
	}
	for _, g := range poolGauges {
		want := 1
		if g.metric == service.Conversions {
			want = 0
		}
		if n, _ := count(reg, "tokenscale_pool_"+g.name); n != want {
			t.Errorf("tokenscale_pool_%s: %d series; want %d (prefill only)", g.name, n, want)
		}
	}
}

// A number a pool's role does not have (a decode pool's queued prompt tokens, a prefill pool's
// conversions) has no series and is not flagged unknown: both were a constant 0.
func TestPoolsExportOnlyTheirRolesNumbers(t *testing.T) {
	snap := &service.Snapshot{Time: time.Unix(100, 0), Pools: map[service.PoolKey]*service.PoolView{}}
	for _, role := range []config.Role{config.RolePrefill, config.RoleDecode, config.RoleBoth} {
		k := service.PoolKey{Namespace: "llm-d", Name: string(role)}
		snap.Pools[k] = &service.PoolView{Key: k, Config: &config.Pool{Name: k.Name, Role: role},
			Pods: []store.PodKey{{Namespace: "llm-d", Name: "p"}}, Status: policy.PoolStatus{Arrival: 1000, Capacity: 2000, Utilisation: 0.5},
			Desired: 1, HasDesired: true, Conversions: 1}
	}
	reg := metrics.NewKubeRegistry()
	reg.CustomMustRegister(NewPools(func() *service.Snapshot { return snap }, nil))
	want := `
# HELP tokenscale_pool_conversions_wanted [ALPHA] Decoders the policy wants to take prefill work (on decode pools).
# TYPE tokenscale_pool_conversions_wanted gauge
tokenscale_pool_conversions_wanted{namespace="llm-d",pool="decode",role="decode"} 1
# HELP tokenscale_pool_queued_tokens [ALPHA] Prompt tokens queued in the pool (prefill and both-roles pools).
# TYPE tokenscale_pool_queued_tokens gauge
tokenscale_pool_queued_tokens{namespace="llm-d",pool="both",role="both"} 0
tokenscale_pool_queued_tokens{namespace="llm-d",pool="prefill",role="prefill"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenscale_pool_conversions_wanted", "tokenscale_pool_queued_tokens", "tokenscale_pool_value_unknown"); err != nil {
		t.Error(err)
	}
}

// A pool whose pods are all not Ready has no instance in the snapshot, and the API answers 503 for it:
// /metrics says the same, 0 Ready pods and every number it has unknown, where it had no series at all.
func TestPoolsWithNoReadyPodsAreUnknown(t *testing.T) {
	cfg := config.Default()
	k := service.PoolKey{Namespace: "llm-d", Name: "decode"}
	snap := &service.Snapshot{Time: time.Unix(100, 0), Pools: map[service.PoolKey]*service.PoolView{},
		ConfigPools: cfg.Pools, Matching: map[service.PoolKey]int{k: 3, {Namespace: "llm-d", Name: "prefill"}: 0}}
	reg := metrics.NewKubeRegistry()
	reg.CustomMustRegister(NewPools(func() *service.Snapshot { return snap }, nil))
	want := `
# HELP tokenscale_pool_ready_pods [ALPHA] Ready pods tokenscale assigns to the pool.
# TYPE tokenscale_pool_ready_pods gauge
tokenscale_pool_ready_pods{namespace="llm-d",pool="decode",role="decode"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenscale_pool_ready_pods"); err != nil {
		t.Error(err)
	}
	if n, err := count(reg, "tokenscale_pool_value_unknown"); err != nil || n != len(poolGauges)-1 {
		t.Errorf("unknown flags: %d (%v); want one for each of decode's %d numbers", n, err, len(poolGauges)-1)
	}
}

// count is the number of series of the named family (all families for "").
func count(reg metrics.KubeRegistry, name string) (int, error) {
	mfs, err := reg.Gather()
	n := 0
	for _, mf := range mfs {
		if name == "" || mf.GetName() == name {
			n += len(mf.GetMetric())
		}
	}
	return n, err
}

func TestBuildInfo(t *testing.T) {
	reg := metrics.NewKubeRegistry()
	NewBuildInfo(reg.MustRegister, version.Info{Version: "v0.1.0", Commit: "0123456", BuildDate: "2026-11-30T00:00:00Z", GoVersion: "go1.26.8"})
	want := `
# HELP tokenscale_build_info [ALPHA] A metric with a constant '1' value labeled by the version, commit and Go version tokenscale was built from.
# TYPE tokenscale_build_info gauge
tokenscale_build_info{commit="0123456",go_version="go1.26.8",version="v0.1.0"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenscale_build_info"); err != nil {
		t.Error(err)
	}
}

func TestConfigReloadGauges(t *testing.T) {
	reg := metrics.NewKubeRegistry()
	s := NewScrape(reg.MustRegister, func() time.Time { return time.Unix(1700000000, 0) })
	s.ConfigReloaded(nil)
	s.ConfigReloaded(errors.New("config reload rejected"))
	want := `
# HELP tokenscale_config_last_reload_success_timestamp_seconds [ALPHA] Unix time of the last config load or reload that was applied.
# TYPE tokenscale_config_last_reload_success_timestamp_seconds gauge
tokenscale_config_last_reload_success_timestamp_seconds 1.7e+09
# HELP tokenscale_config_last_reload_successful [ALPHA] 1 if the config file's last load or reload was applied, 0 if it was rejected (the previous config stays in force).
# TYPE tokenscale_config_last_reload_successful gauge
tokenscale_config_last_reload_successful 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenscale_config_last_reload_successful", "tokenscale_config_last_reload_success_timestamp_seconds"); err != nil {
		t.Error(err)
	}
}

// Only a successful scrape moves the freshness gauge, and a scrape cut short by shutdown is no error.
func TestScrapeFreshnessOnlyOnSuccess(t *testing.T) {
	reg := metrics.NewKubeRegistry()
	now := time.Unix(1700000000, 0)
	s := NewScrape(reg.MustRegister, func() time.Time { return now })
	// Before any success the time is unknown: no series, not 0 (the Unix epoch).
	s.ObserveScrape("prefill", time.Millisecond, errors.New("connection refused"))
	if err := testutil.GatherAndCompare(reg, strings.NewReader(""), "tokenscale_last_scrape_timestamp_seconds"); err != nil {
		t.Errorf("before a successful scrape: %v", err)
	}
	s.ObserveScrape("prefill", time.Millisecond, nil)
	now = now.Add(time.Hour)
	s.ObserveScrape("prefill", time.Millisecond, errors.New("connection refused"))
	s.ObserveScrape("prefill", time.Millisecond, fmt.Errorf("scrape: %w", context.Canceled))
	// A pod the round had no time for is an error that took no scrape time.
	s.ObserveScrape("prefill", 0, fmt.Errorf("scrape ns/p: %w", collector.ErrNotScraped))
	want := `
# HELP tokenscale_last_scrape_timestamp_seconds [ALPHA] Unix time of the last successful engine scrape of any pod (no series before one); time() minus this is the freshness of the newest numbers, not of every pool's.
# TYPE tokenscale_last_scrape_timestamp_seconds gauge
tokenscale_last_scrape_timestamp_seconds 1.7e+09
# HELP tokenscale_scrape_errors_total [ALPHA] Failed engine /metrics scrapes (and failed Prometheus polls), and pods a round had no time to scrape, per pool.
# TYPE tokenscale_scrape_errors_total counter
tokenscale_scrape_errors_total{pool="prefill"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenscale_last_scrape_timestamp_seconds", "tokenscale_scrape_errors_total"); err != nil {
		t.Error(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var timed uint64
	for _, f := range families {
		if f.GetName() == "tokenscale_scrape_duration_seconds" {
			for _, m := range f.GetMetric() {
				timed += m.GetHistogram().GetSampleCount()
			}
		}
	}
	if timed != 4 {
		t.Errorf("scrape durations observed: %d, want 4 (the pod not scraped takes no time)", timed)
	}
}

// The plain-HTTP endpoints bound a client's connection: idle, reading, writing and its headers.
func TestEndpointServerIsBounded(t *testing.T) {
	srv := newServer(http.NotFoundHandler())
	if srv.IdleTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.ReadHeaderTimeout <= 0 || srv.MaxHeaderBytes <= 0 || srv.MaxHeaderBytes > 64<<10 {
		t.Fatalf("unbounded endpoint server: idle %v, read %v, write %v, header %v, header bytes %d",
			srv.IdleTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.ReadHeaderTimeout, srv.MaxHeaderBytes)
	}
}

// A snapshot too old to serve exports no numbers: every one is flagged unknown, as the API's 503s say,
// rather than its last values read as current.
func TestPoolsOfAStaleSnapshotAreUnknown(t *testing.T) {
	prefill := &config.Pool{Name: "prefill", Role: config.RolePrefill}
	snap := &service.Snapshot{Time: time.Unix(100, 0), Pools: map[service.PoolKey]*service.PoolView{
		{Namespace: "llm-d", Name: "prefill"}: {
			Key: service.PoolKey{Namespace: "llm-d", Name: "prefill"}, Config: prefill,
			Pods:    []store.PodKey{{Namespace: "llm-d", Name: "p-1"}},
			Status:  policy.PoolStatus{Arrival: 12000, Capacity: 20000, Utilisation: 0.6, Backpressure: 0.25, QueuedTokens: 300},
			Desired: 2, HasDesired: true,
		},
	}}
	now := time.Unix(101, 0)
	reg := metrics.NewKubeRegistry()
	reg.CustomMustRegister(NewPools(func() *service.Snapshot { return snap }, func(s *service.Snapshot) error { return service.Fresh(s, now, 3*time.Second) }))
	if n, err := count(reg, "tokenscale_pool_desired_replicas"); err != nil || n != 1 {
		t.Fatalf("a fresh snapshot: %d desired-replicas series (%v), want 1", n, err)
	}
	now = time.Unix(3700, 0)
	for _, name := range []string{"tokenscale_pool_desired_replicas", "tokenscale_pool_arrival_tokens_per_second", "tokenscale_pool_ready_pods"} {
		if n, err := count(reg, name); err != nil || n != 0 {
			t.Errorf("an hour-old snapshot: %d %s series (%v), want none", n, name, err)
		}
	}
	if n, err := count(reg, "tokenscale_pool_value_unknown"); err != nil || n != len(poolGauges)-1 {
		t.Errorf("an hour-old snapshot: %d unknown flags (%v), want one per number a prefill pool has (%d)", n, err, len(poolGauges)-1)
	}
}
