package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/sim/trace"
)

func TestRunErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.csv")
	if err := os.WriteFile(bad, []byte("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,x,44\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dup := filepath.Join(t.TempDir(), "profiles.yaml")
	one := "- {name: x, gpusPerInstance: 1, maxBatch: 8, prefillTokensPerSecond: 1000, kvBytesPerToken: 1000, kvLinkBytesPerSecond: 1e9, kvCapacityTokens: 1000, decodeStepBaseSeconds: 0.01}\n"
	if err := os.WriteFile(dup, []byte("profiles:\n"+one+one), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--policies", "tokenscale,magic"}, "unknown policies [magic]"},
		{[]string{"--goal", "1.5"}, "--goal"},
		{[]string{"--mean-rate", "-3"}, "--mean-rate"},
		{[]string{"--mean-rate", "NaN"}, "--mean-rate"},
		{[]string{"--hindsight", "-1m"}, "--hindsight"},
		{[]string{"--hindsight", "1ms"}, "--hindsight"},
		{[]string{"--scrape-interval", "50ms"}, "--scrape-interval"},
		{[]string{"--scrape-interval", "2m"}, "--scrape-interval"},
		{[]string{"--hardware", "tpu"}, "unknown hardware profile"},
		{[]string{"--trace", bad}, bad + ":3"},
		{[]string{"--trace", "nope"}, "nope"},
		// A negative window or one ending past the longest Duration is refused, not replayed whole.
		{[]string{"--trace", "nope", "--start", "-73h", "--duration", "72h"}, "--start -73h0m0s and --duration 72h0m0s must not be negative"},
		{[]string{"--trace", "nope", "--duration", "-1h"}, "--start 0s and --duration -1h0m0s must not be negative"},
		{[]string{"--trace", "nope", "--start", "2562047h", "--duration", "1h"}, "--start 2562047h0m0s plus --duration 1h0m0s is past the longest time"},
		{[]string{"extra"}, "unexpected arguments"},
		// Negative windows and delays, and a worker count past the bound, are refused naming the flag (before
		// the trace "nope" is looked for).
		{[]string{"--trace", "nope", "--history", "-1m"}, "--history -1m0s must not be negative"},
		{[]string{"--trace", "nope", "--tune-window", "-5m"}, "--tune-window -5m0s must not be negative"},
		{[]string{"--trace", "nope", "--warmup", "-1s"}, "--warmup -1s must not be negative"},
		{[]string{"--trace", "nope", "--cold-start", "-1s"}, "--cold-start -1s must not be negative"},
		{[]string{"--trace", "nope", "--router-delay", "-1s"}, "--router-delay -1s must not be negative"},
		{[]string{"--trace", "nope", "--cold-start", "0s"}, "--cold-start 0s and --router-delay 1s must be positive"},
		{[]string{"--trace", "nope", "--router-delay", "0s"}, "--cold-start 1m0s and --router-delay 0s must be positive"},
		{[]string{"--trace", "nope", "--convert-chunk-tokens", "0"}, "--convert-chunk-tokens 0 must be 64 to 1048576"},
		{[]string{"--trace", "nope", "--convert-step-budget", "0s"}, "--convert-step-budget 0s positive"},
		{[]string{"--trace", "nope", "--workers", "-1"}, "--workers -1 must be between 0 (GOMAXPROCS) and 1024"},
		{[]string{"--trace", "nope", "--workers", "1000000000"}, "--workers 1000000000 must be between"},
		{[]string{"--trace", "nope", "--profiles", dup}, dup + ": profiles[1] (x): name already used by profiles[0]"},
		{[]string{"--trace", "nope", "--profiles", t.TempDir()}, "is not a regular file"},
		{[]string{"--trace", t.TempDir()}, "a ServeGen model folder needs --format servegen"},
		{[]string{"--trace", "servegen", "--lengths", "servegen"}, "--lengths: ServeGen load has no token lengths of its own"},
		{[]string{"--trace", "servegen", "--lengths", bad}, "--lengths: " + bad + ":3"},
		{[]string{"--trace", "code", "--history", "5h", "--policies", "static-mean"}, "has no requests"},
	} {
		var out, errb bytes.Buffer
		err := run(c.args, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want it to mention %q", c.args, err, c.want)
		}
	}
	// With --skip-bad the bad line is counted, not fatal.
	var out, errb bytes.Buffer
	if err := run([]string{"--trace", bad, "--skip-bad", "--history", "0", "--tune-window", "0", "--warmup", "0", "--policies", "static-mean", "--progress=false"}, &out, &errb); err != nil {
		t.Fatalf("--skip-bad: %v", err)
	}
	if !strings.Contains(errb.String(), "skipped 1 malformed lines") {
		t.Errorf("stderr should count the skipped line: %q", errb.String())
	}
}

// A trace shorter than the default windows gets a third each (and says so), not an empty window.
func TestShortTraceGetsThirds(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"--trace", "code", "--duration", "30m", "--policies", "static-mean", "--progress=false"}, &out, &errb); err != nil {
		t.Fatalf("30 minutes of code: %v", err)
	}
	if !strings.Contains(errb.String(), "shorter than the windows") || !strings.Contains(errb.String(), "9m56s each") {
		t.Errorf("stderr should say the windows became thirds: %q", errb.String())
	}
}

// A trace whose scored span is longer than half a day is announced before the long run starts.
func TestRunWarnsOfALongScoredSpan(t *testing.T) {
	long := filepath.Join(t.TempDir(), "long.csv")
	if err := os.WriteFile(long, []byte("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n0,m,100,10,110,x\n46800,m,100,10,110,x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	args := []string{"--trace", long, "--history", "0", "--policies", "static-mean", "--progress=false"}
	if err := run(args, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errb.String(), "scoring 13h0m0s of trace time") {
		t.Errorf("13 h scored: stderr %q, want the note", errb.String())
	}
	errb.Reset()
	if err := run(append(args, "--duration", "1h"), &out, &errb); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(errb.String(), "scoring") {
		t.Errorf("one request in an hour: stderr %q, want no note", errb.String())
	}
}

func TestRunJSONAndPlots(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	err := run([]string{"--trace", "conv", "--duration", "2m", "--history", "0", "--tune-window", "0", "--warmup", "0", "--policies", "tokenscale,static-peak", "--json", "--plots", dir, "--progress=false"}, &out, &errb)
	if err != nil {
		t.Fatal(err)
	}
	var reps []struct {
		Trace  string
		Chosen []struct {
			Policy          string
			JointAttainment float64
		}
	}
	if err := json.Unmarshal(out.Bytes(), &reps); err != nil {
		t.Fatalf("JSON: %v\n%s", err, out.String())
	}
	if len(reps) != 1 || len(reps[0].Chosen) != 2 || reps[0].Chosen[0].Policy != "tokenscale" {
		t.Errorf("report %+v", reps)
	}
	for _, f := range []string{"conv-instances.png", "conv-ttft.png"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

// The embedded Mooncake trace gets its own windows unless a window flag is given.
func TestMooncakeWindows(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"--trace", "mooncake", "--policies", "static-mean", "--progress=false"}, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	if !strings.Contains(out.String(), "statistics from 0s–5m0s") || !strings.Contains(out.String(), "replays the 2m0s before") {
		t.Errorf("mooncake's preset windows not used:\n%.400s", out.String())
	}
	out.Reset()
	if err := run([]string{"--trace", "mooncake", "--history", "4m", "--tune-window", "4m", "--warmup", "1m", "--policies", "static-mean", "--progress=false"}, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	if !strings.Contains(out.String(), "statistics from 0s–4m0s") {
		t.Errorf("explicit windows not used:\n%.400s", out.String())
	}
}

// A ServeGen folder gets the multi-day defaults: its span in thirds for history, tuning and score, the
// rate scaled to --mean-rate after the time scale, and a header saying so; --rate-scale overrides the mean.
func TestServeGenFolderDefaults(t *testing.T) {
	const dir = "../../sim/trace/testdata/servegen" // two hours of two clients
	var out, errb bytes.Buffer
	if err := run([]string{"--trace", dir, "--format", "servegen", "--mean-rate", "4", "--policies", "static-mean", "--json", "--progress=false"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	var reps []struct {
		Load          string
		Requests      int
		History, Tune struct{ From, To time.Duration }
		Scored        struct{ From, To time.Duration }
	}
	if err := json.Unmarshal(out.Bytes(), &reps); err != nil || len(reps) != 1 {
		t.Fatalf("JSON: %v\n%s", err, out.String())
	}
	r := reps[0]
	// Two hours at time scale 8 are 15 minutes: about 5 minutes each.
	for name, w := range map[string]struct{ From, To time.Duration }{"history": r.History, "tune": r.Tune, "scored": r.Scored} {
		if d := w.To - w.From; d < 4*time.Minute || d > 6*time.Minute {
			t.Errorf("%s window %v–%v, want about 5 min", name, w.From, w.To)
		}
	}
	// The rate scale is the one giving a mean of 4/s after the time scale: 4 × 7200 s / 8 over the folder's
	// expected request count. (Its clients are too bursty for the realised count to be a test.)
	want := 0.0
	for _, f := range []string{"chunk-0-trace.csv", "chunk-15-trace.csv"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		ws, err := trace.ParseServeGenClient(bytes.NewReader(b), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			want += w.Rate * trace.ServeGenWindowSeconds
		}
	}
	want = 4 * 7200 / 8 / want
	var k float64
	if _, err := fmt.Sscanf(r.Load[strings.Index(r.Load, "rate scale ")+len("rate scale "):], "%g", &k); err != nil || math.Abs(k-want) > 1e-3*want {
		t.Errorf("rate scale %v (%v), want %.4g: %s", k, err, want, r.Load)
	}
	// The folder has client 0's chunk-0-dataset.json and not client 15's: lengths come from the dataset
	// where there is one, and the header counts the client that drew from conv.
	for _, want := range []string{"replayed 8× faster", "2h0m0s of trace time", "lengths drawn from each client's chunk-<n>-dataset.json distributions (1 of 2 clients have none and draw from conv)"} {
		if !strings.Contains(r.Load, want) {
			t.Errorf("load %q does not say %q", r.Load, want)
		}
	}
	out.Reset()
	if err := run([]string{"--trace", dir, "--format", "servegen", "--rate-scale", "0.5", "--time-scale", "1", "--lengths", "conv", "--policies", "static-mean", "--json", "--progress=false"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"rate scale 0.5,", "token lengths drawn from conv"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--rate-scale 0.5 --lengths conv should be used as given (%q): %.300s", want, out.String())
		}
	}
	out.Reset()
	if err := run([]string{"--trace", "conv, servegen", "--lengths", "dataset", "--policies", "static-mean", "--progress=false"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "embedded") || out.Len() > 0 {
		t.Errorf("--lengths dataset on the embedded days: %v after %d bytes of report, want an error saying they carry none, before any trace runs", err, out.Len())
	}
}

// The header says the time scale the load was replayed at, below 1 too (a slower replay): it read
// "1× faster" for 0.5, and halved the trace time.
func TestServeGenLoadSaysTheTimeScale(t *testing.T) {
	tr := &trace.Trace{Requests: []trace.Request{{Arrival: 0}, {Arrival: 2 * time.Hour}}, RateScale: 1}
	for _, c := range []struct {
		scale float64
		want  string
	}{
		{0.5, "for 1h0m0s of trace time, replayed 0.5× faster"},
		{0, "for 2h0m0s of trace time, replayed 1× faster"},
		{8, "for 16h0m0s of trace time, replayed 8× faster"},
	} {
		if got := serveGenLoad(trace.Options{TimeScale: c.scale}, tr, "conv"); !strings.Contains(got, c.want) {
			t.Errorf("time scale %g: %q, want %q", c.scale, got, c.want)
		}
	}
}
