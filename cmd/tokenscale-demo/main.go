// Command tokenscale-demo runs tokenscale end to end on this machine (what `make demo` runs): on a local
// Kubernetes control plane by default, or with --no-k8s without one. It links the local-cluster harness
// and the fake engines, so it is not shipped in an image.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tokenscale/tokenscale/internal/kubedemo"
	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/sim/demo"
)

func main() {
	if version.Requested(os.Args[1:]) {
		version.Print(os.Stdout, "tokenscale-demo")
		return
	}
	// SIGHUP too, unless it is ignored (nohup): a closed terminal must stop the control plane and delete
	// the demo's files (its CA keys and tokens) as Ctrl-C does.
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		sigs = append(sigs, syscall.SIGHUP)
	}
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, sigs...)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-ch
		cancel()
		fmt.Fprintln(os.Stderr, "tokenscale-demo: stopping... (Ctrl-C again to force)")
		// A second Ctrl-C or SIGTERM ends the demo at once (its children die with it); a closed terminal
		// sends SIGHUP more than once, and those must not cut the cleanup short.
		for s := range ch {
			if s != syscall.SIGHUP {
				os.Exit(130)
			}
		}
	}()
	err := runDemo(ctx, os.Args[1:])
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		// Stopped on purpose, during the build or start-up as well: not a failure.
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenscale-demo:", err)
		os.Exit(1)
	}
}

func runDemo(ctx context.Context, args []string) error {
	if noK8s(args) {
		return runLoopbackDemo(ctx, args)
	}
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	o := kubedemo.Options{Out: os.Stdout, Progress: os.Stderr}
	fs.Bool("no-k8s", false, "run the demo without Kubernetes")
	fs.DurationVar(&o.Duration, "duration", 0, "how long to run (0: until the trace ends or Ctrl-C)")
	fs.Float64Var(&o.Speedup, "speedup", 10, "trace seconds replayed per second")
	fs.DurationVar(&o.Skip, "skip", 500*time.Second, "trace time to skip at the start")
	fs.DurationVar(&o.ColdStart, "cold-start", 5*time.Second, "time before a new pod is Ready")
	fs.DurationVar(&o.HPASync, "hpa-sync", time.Second, "the HPA controller's sync period (Kubernetes' default is 15s)")
	fs.StringVar(&o.RepoRoot, "repo", ".", "the tokenscale checkout (manifests/, hack/, cmd/)")
	_ = fs.Parse(args)
	if err := checkFlags(o.Speedup, map[string]time.Duration{"cold-start": o.ColdStart, "hpa-sync": o.HPASync}, o.Duration); err != nil {
		return err
	}
	return kubedemo.Run(ctx, o)
}

// checkFlags refuses values the demos would otherwise replace by their defaults without a word: a speedup
// that is not a positive number, a positive duration (named) that is not, and a negative --duration.
func checkFlags(speedup float64, positive map[string]time.Duration, duration time.Duration) error {
	if !(speedup > 0 && speedup <= 1e6) {
		return fmt.Errorf("--speedup %v: want trace seconds per second above 0 (and at most 1e6)", speedup)
	}
	for _, name := range slices.Sorted(maps.Keys(positive)) {
		if d := positive[name]; d <= 0 {
			return fmt.Errorf("--%s %s: want a positive duration", name, d)
		}
	}
	if duration < 0 {
		return fmt.Errorf("--duration %s: want 0 (until the trace ends) or a positive duration", duration)
	}
	return nil
}

// noK8s says whether the arguments ask for the demo without Kubernetes, in any form the flag package
// reads a boolean (--no-k8s, -no-k8s, --no-k8s=true, =1, ...): only the bare forms were seen, so
// --no-k8s=true started the Kubernetes demo's build.
func noK8s(args []string) bool {
	on := false
	for _, a := range args {
		if a == "--" {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "no-k8s" {
			continue
		}
		on = true
		if hasVal {
			b, err := strconv.ParseBool(val)
			on = err == nil && b
		}
	}
	return on
}

func runLoopbackDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo --no-k8s", flag.ExitOnError)
	fs.Bool("no-k8s", true, "run the demo without Kubernetes")
	o := demo.Options{Out: os.Stdout}
	fs.DurationVar(&o.Duration, "duration", 90*time.Second, "how long to run")
	fs.Float64Var(&o.Speedup, "speedup", 3, "trace seconds replayed per second")
	fs.DurationVar(&o.ColdStart, "cold-start", 8*time.Second, "time before a new engine is Ready")
	fs.DurationVar(&o.Skip, "skip", 0, "trace time to skip at the start")
	_ = fs.Parse(args)
	if err := checkFlags(o.Speedup, map[string]time.Duration{"cold-start": o.ColdStart, "duration": o.Duration}, 0); err != nil {
		return err
	}
	return demo.Run(ctx, o)
}
