package eval

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
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
	rep, err := Evaluate("code", reqs, autoscale.Policies(), Options{Cluster: cluster.Config{Hardware: hw}, Workers: workers})
	if err != nil {
		t.Fatal(err)
	}
	return rep
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
	rep := evaluate(t, codeWindow(t, 3*time.Minute), 2)
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
	}
}

func TestPlotWritesPNGs(t *testing.T) {
	rep := evaluate(t, codeWindow(t, 3*time.Minute), 2)
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
}
