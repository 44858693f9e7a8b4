package main

import (
	"context"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/internal/kubedemo"
	"github.com/tokenscale/tokenscale/sim/demo"
)

// Every form the flag package reads as a boolean chooses the demo without Kubernetes; false ones do not.
func TestNoK8s(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"--no-k8s"}, true},
		{[]string{"-no-k8s"}, true},
		{[]string{"--speedup", "5", "--no-k8s=true"}, true},
		{[]string{"-no-k8s=1"}, true},
		{[]string{"--no-k8s=false"}, false},
		{[]string{"--no-k8s", "--no-k8s=false"}, false},
		{[]string{"--speedup", "5"}, false},
		{[]string{"--", "--no-k8s"}, false},
		{[]string{"no-k8s"}, false},
	} {
		if got := noK8s(c.args); got != c.want {
			t.Errorf("noK8s(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}

// Values the demos replaced by their defaults without a word are refused, naming the flag.
func TestCheckFlags(t *testing.T) {
	ok := map[string]time.Duration{"cold-start": time.Second, "hpa-sync": time.Second}
	if err := checkFlags(10, ok, 0); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for _, c := range []struct {
		speedup  float64
		positive map[string]time.Duration
		duration time.Duration
		want     string
	}{
		{0, ok, 0, "--speedup 0"},
		{-3, ok, 0, "--speedup -3"},
		{math.NaN(), ok, 0, "--speedup NaN"},
		{10, map[string]time.Duration{"cold-start": 0, "hpa-sync": time.Second}, 0, "--cold-start 0s"},
		{10, map[string]time.Duration{"cold-start": time.Second, "hpa-sync": -time.Second}, 0, "--hpa-sync -1s"},
		{10, ok, -time.Minute, "--duration -1m0s"},
	} {
		if err := checkFlags(c.speedup, c.positive, c.duration); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("checkFlags(%v, %v, %v) = %v, want an error naming %q", c.speedup, c.positive, c.duration, err, c.want)
		}
	}
}

// A --skip past the trace's last request is refused before anything starts: the Kubernetes demo built
// and started its control plane, then stopped at once with nothing shown.
func TestSkipPastTheTraceIsRefused(t *testing.T) {
	for _, skip := range []time.Duration{2 * time.Hour, -time.Second} {
		err := demo.Run(context.Background(), demo.Options{Skip: skip, Out: io.Discard})
		if err == nil || !strings.Contains(err.Error(), "--skip "+skip.String()) {
			t.Errorf("the loopback demo with --skip %s: %v, want it refused", skip, err)
		}
		err = kubedemo.Run(context.Background(), kubedemo.Options{Skip: skip, RepoRoot: t.TempDir(), Out: io.Discard, Progress: io.Discard})
		if err == nil || !strings.Contains(err.Error(), "--skip "+skip.String()) {
			t.Errorf("the Kubernetes demo with --skip %s: %v, want it refused before it starts", skip, err)
		}
	}
}
