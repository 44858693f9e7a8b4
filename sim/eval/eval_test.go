package eval

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/sim/autoscale"
	"github.com/tokenscale/tokenscale/sim/cluster"
	"github.com/tokenscale/tokenscale/sim/trace"
)

var update = flag.Bool("update", false, "rewrite testdata/golden-*.md")

func codeWindow(t testing.TB, d time.Duration) []trace.Request {
	tr, err := trace.Embedded("code", trace.Options{Duration: d, RateScale: 2, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Requests
}

func evaluate(t testing.TB, reqs []trace.Request, workers int) *Report {
	hw, err := cluster.Profile("llama3.1-8b-h100")
	if err != nil {
		t.Fatal(err)
	}
	// Statistics from the first 4 minutes, tuning chosen on the next 3, the last 3 scored; every run
	// replays 2 minutes unscored first.
	rep, err := Evaluate("code", reqs, autoscale.Policies(), Options{Cluster: cluster.Config{Hardware: hw}, Workers: workers,
		History: 4 * time.Minute, Tune: 3 * time.Minute, Warmup: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

var (
	sharedOnce sync.Once
	sharedRep  *Report
)

// shared is one evaluation of the 10-minute window, for the tests that only read a report.
func shared(t testing.TB) *Report {
	sharedOnce.Do(func() { sharedRep = evaluate(t, codeWindow(t, 10*time.Minute), 2) })
	if sharedRep == nil {
		t.Fatal("shared evaluation failed")
	}
	return sharedRep
}

// A fixed seed reproduces the same table, whatever the parallelism. Run with -update after a deliberate
// model or policy change, and say why in the commit.
func TestGoldenTable(t *testing.T) {
	reqs := codeWindow(t, 10*time.Minute)
	var a, b bytes.Buffer
	evaluate(t, reqs, 1).WriteTable(&a, true)
	evaluate(t, reqs, 4).WriteTable(&b, true)
	if a.String() != b.String() {
		t.Fatalf("same seed, different tables:\n%s\n---\n%s", a.String(), b.String())
	}
	const golden = "testdata/golden-code-10m.md"
	if *update {
		if err := os.WriteFile(golden, a.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./sim/eval -run TestGoldenTable -update)", err)
	}
	if a.String() != string(want) {
		t.Errorf("table differs from %s:\n%s", golden, a.String())
	}
}

// The JSON report has no NaN or Inf (encoding would fail) and keeps a series for each chosen tuning.
func TestJSONReport(t *testing.T) {
	rep := shared(t)
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Chosen) != len(autoscale.Policies()) || len(back.Chosen[0].Series) == 0 {
		t.Errorf("chosen %d, series %d", len(back.Chosen), len(back.Chosen[0].Series))
	}
	for _, s := range back.Chosen {
		if s.JointAttainment < 0 || s.JointAttainment > 1 || s.GPUHours <= 0 {
			t.Errorf("%s: attainment %v, GPU-hours %v", s.Policy, s.JointAttainment, s.GPUHours)
		}
		if len(s.Frontier) == 0 {
			t.Errorf("%s: no frontier", s.Policy)
		}
	}
	if !(back.Ceiling > 0 && back.Ceiling <= 1) || back.Target != math.Min(back.Goal, back.Ceiling-0.01) {
		t.Errorf("ceiling %v, target %v", back.Ceiling, back.Target)
	}
	// costAtTarget is always present, null when unreachable.
	var raw []map[string]any
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil || json.Unmarshal(top["chosen"], &raw) != nil {
		t.Fatal(err)
	}
	for _, c := range raw {
		if _, ok := c["costAtTarget"]; !ok {
			t.Errorf("%v: no costAtTarget", c["policy"])
		}
	}
}

// The frontier keeps only non-dominated tunings, and the cost at a target is read off it: between two
// points by linear interpolation, the cheapest point's cost when it already reaches the target, nil
// above the best point.
func TestFrontierAndCostAtTarget(t *testing.T) {
	rs := []Summary{
		{Tuning: "a", JointAttainment: 0.90, GPUHours: 2},
		{Tuning: "b", JointAttainment: 0.85, GPUHours: 3}, // dominated by a
		{Tuning: "c", JointAttainment: 0.98, GPUHours: 4, Edge: true},
		{Tuning: "d", JointAttainment: 0.94, GPUHours: 3},
		{Tuning: "e", JointAttainment: 0.98, GPUHours: 5}, // dominated by c
		{Tuning: "f", JointAttainment: 0.80, GPUHours: 1},
	}
	f := Frontier(rs)
	var names string
	for _, p := range f {
		names += p.Tuning
	}
	if names != "fadc" {
		t.Fatalf("frontier %q, want fadc", names)
	}
	c, edge := CostAt(f, 0.96) // halfway from d (0.94, 3) to c (0.98, 4)
	if c == nil || math.Abs(*c-3.5) > 1e-12 || !edge {
		t.Errorf("cost at 96%%: %v (edge %v), want 3.5 from an edge point", c, edge)
	}
	if c, _ := CostAt(f, 0.75); c == nil || *c != 1 {
		t.Errorf("cost at 75%%: %v, want the cheapest point's 1", c)
	}
	if c, _ := CostAt(f, 0.99); c != nil {
		t.Errorf("cost at 99%%: %v, want nil (unreachable)", *c)
	}
}

// The cost at the target mixes whichever two tunings are cheapest there, not only the frontier's
// neighbours around it: a point just below the target that costs almost as much as the one above it does
// not hide a cheaper mix of points further apart (the lower convex hull).
func TestCostAtMixesAcrossTheHull(t *testing.T) {
	f := Frontier([]Summary{
		{Tuning: "x", JointAttainment: 0.90, GPUHours: 2, Edge: true},
		{Tuning: "y", JointAttainment: 0.95, GPUHours: 3.9},
		{Tuning: "z", JointAttainment: 0.98, GPUHours: 4},
	})
	if h := Hull(f); len(h) != 2 || h[0].Tuning != "x" || h[1].Tuning != "z" {
		t.Fatalf("hull %+v, want x and z (y lies above their chord)", h)
	}
	// Neighbours y and z give 3.9 + 0.1/3; x and z, two thirds of the way from x to z, give 3.5.
	c, edge := CostAt(f, 0.96)
	if c == nil || math.Abs(*c-3.5) > 1e-12 || !edge {
		t.Errorf("cost at 96%%: %v (edge %v), want 3.5 from mixing the edge point x with z", c, edge)
	}
	// A point that reaches the target alone is still taken when no mix is cheaper.
	if c, edge := CostAt(f, 0.98); c == nil || *c != 4 || edge {
		t.Errorf("cost at 98%%: %v (edge %v), want z's 4", c, edge)
	}
	// A point on the chord between two others stays on the hull: at its attainment the cost is its own,
	// not a mix carrying the edge mark of the point below it.
	f = Frontier([]Summary{
		{Tuning: "a", JointAttainment: 0.5, GPUHours: 1, Edge: true},
		{Tuning: "b", JointAttainment: 0.75, GPUHours: 2},
		{Tuning: "c", JointAttainment: 1, GPUHours: 3},
	})
	if c, edge := CostAt(f, 0.75); c == nil || *c != 2 || edge {
		t.Errorf("cost at 75%% on a straight frontier: %v (edge %v), want b's 2, not at an edge", c, edge)
	}
}

// The report ranks by cost at the target and gives each policy's ratio to the cheapest other policy,
// leaving tokenscale's ablations out of "other".
func TestRatioToCheapestOther(t *testing.T) {
	cost := func(x float64) *float64 { return &x }
	r := &Report{Chosen: []PolicyResult{
		{Summary: Summary{Policy: "tokenscale"}, CostAtTarget: cost(3)},
		{Summary: Summary{Policy: "ts-prefill"}, CostAtTarget: cost(1)},
		{Summary: Summary{Policy: "static"}, CostAtTarget: cost(2)},
		{Summary: Summary{Policy: "hpa-gpu"}},
		{Summary: Summary{Policy: "aibrix"}, CostAtTarget: cost(6)},
	}}
	r.rank()
	ts := r.Chosen[0]
	if ts.Cheapest != "static" || ts.Ratio == nil || *ts.Ratio != 1.5 {
		t.Errorf("tokenscale: cheapest other %q, ratio %v; want static, 1.5", ts.Cheapest, ts.Ratio)
	}
	if st := r.Chosen[2]; st.Cheapest != "tokenscale" || *st.Ratio != 2.0/3 {
		t.Errorf("static: cheapest other %q ratio %v; want tokenscale, 2/3", st.Cheapest, *st.Ratio)
	}
	if r.Chosen[3].Ratio != nil {
		t.Error("an unreachable policy has a ratio")
	}
}

func TestPlotWritesPNGs(t *testing.T) {
	rep := shared(t)
	files, err := rep.Plot(t.TempDir() + "/code")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || !bytes.HasPrefix(data, []byte("\x89PNG")) {
			t.Errorf("%s: not a PNG (%v)", f, err)
		}
	}
}

func TestEmptyTrace(t *testing.T) {
	if _, err := Evaluate("x", nil, autoscale.Policies(), Options{Cluster: cluster.Config{Hardware: cluster.Profiles()[0]}}); err == nil {
		t.Error("empty trace accepted")
	}
}

// Negative windows are refused, not read as none (statistics quietly in sample).
func TestNegativeWindowsRefused(t *testing.T) {
	reqs := []trace.Request{{PromptTokens: 10, OutputTokens: 10}, {Arrival: time.Minute, PromptTokens: 10, OutputTokens: 10}}
	for _, o := range []Options{{History: -time.Minute}, {History: time.Minute, Tune: -time.Second}, {Warmup: -time.Second}} {
		o.Cluster = cluster.Config{Hardware: cluster.Profiles()[0]}
		if _, err := Evaluate("x", reqs, autoscale.Policies()[:1], o); err == nil || !strings.Contains(err.Error(), "must not be negative") {
			t.Errorf("%+v: err = %v", o, err)
		}
	}
}

// parallel starts no more goroutines than it has calls, whatever Workers says.
func TestParallelStartsNoMoreWorkersThanCalls(t *testing.T) {
	base := runtime.NumGoroutine()
	most := 0
	var mu sync.Mutex
	parallel(3, 10_000, func(int) {
		mu.Lock()
		most = max(most, runtime.NumGoroutine()-base)
		mu.Unlock()
	})
	if most > 3 {
		t.Errorf("%d goroutines for 3 calls", most)
	}
}

// BenchmarkHourOfTrace simulates the whole one-hour Azure code and conv traces (at 1x and 4x) under tokenscale (the adapter's
// velocity code scraping every instance each second) on one goroutine. The bar is < 30 s on one core:
// go test ./sim/eval -run '^$' -bench HourOfTrace -cpu 1
func BenchmarkHourOfTrace(b *testing.B) {
	for _, c := range []struct {
		name string
		rate float64
	}{{"code", 1}, {"conv", 1}, {"code", 4}, {"conv", 4}} {
		name := fmt.Sprintf("%s-x%g", c.name, c.rate)
		tr, err := trace.Embedded(c.name, trace.Options{RateScale: c.rate, Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		hw := cluster.Profiles()[0]
		env, err := NewEnv(tr.Requests, hw, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := cluster.Run(cluster.Config{Hardware: hw}, tr.Requests, autoscale.NewTokenScale(env, 0.8, time.Minute, true)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestSplitHistory(t *testing.T) {
	reqs := []trace.Request{{Arrival: 0}, {Arrival: 10 * time.Second}, {Arrival: 40 * time.Second}, {Arrival: 70 * time.Second}}
	h, s, err := SplitHistory(reqs, 30*time.Second)
	if err != nil || len(h) != 2 || len(s) != 2 || s[0].Arrival != 10*time.Second || s[1].Arrival != 40*time.Second {
		t.Errorf("history %v, scored %v, err %v", h, s, err)
	}
	if _, _, err := SplitHistory(reqs, time.Hour); err == nil {
		t.Error("a history covering the whole trace accepted")
	}
	if _, _, err := SplitHistory(nil, time.Minute); err == nil {
		t.Error("an empty trace accepted")
	}
}
