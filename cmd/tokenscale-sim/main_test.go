package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.csv")
	if err := os.WriteFile(bad, []byte("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,x,44\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--policies", "tokenscale,magic"}, "unknown policies [magic]"},
		{[]string{"--goal", "1.5"}, "--goal"},
		{[]string{"--hardware", "tpu"}, "unknown hardware profile"},
		{[]string{"--trace", bad}, "bad.csv:3"},
		{[]string{"--trace", "nope"}, "nope"},
		{[]string{"extra"}, "unexpected arguments"},
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
