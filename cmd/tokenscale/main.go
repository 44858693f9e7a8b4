// Command tokenscale is the project's CLI: `inspect` explains what tokenscale reads from an engine's
// /metrics page, and `demo` runs tokenscale end to end on this machine, on a local Kubernetes control
// plane (default) or, with --no-k8s, without one.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tokenscale/tokenscale/internal/kubedemo"
	"github.com/tokenscale/tokenscale/sim/demo"
	"github.com/tokenscale/tokenscale/velocity/engine"
)

const usage = `usage: tokenscale <command> [flags]

commands:
  inspect [--engine auto|vllm|sglang|trtllm] FILE|URL|-   explain what a /metrics page gives tokenscale
  demo    [--duration 0] [--speedup 10] [--skip 500s] [--cold-start 5s] [--hpa-sync 1s]
                                                          a local control plane, the adapter, fake engines
                                                          replaying the Azure trace and the real HPA, live
  demo --no-k8s [--duration 90s] [--speedup 3] [--cold-start 8s] [--skip 0s]
                                                          fake engines, the scraper and the policy, no Kubernetes
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "inspect":
		err = inspect(ctx, os.Args[2:])
	case "demo":
		err = runDemo(ctx, os.Args[2:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenscale:", err)
		os.Exit(1)
	}
}

func inspect(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("inspect", flag.ExitOnError)
	eng := fs.String("engine", "auto", "engine: auto, vllm, sglang, trtllm")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout when fetching a URL")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return fmt.Errorf("inspect needs one FILE, URL or - (stdin)")
	}
	kind, err := engine.ParseKind(*eng)
	if err != nil {
		return err
	}
	page, err := read(ctx, fs.Arg(0), *timeout)
	if err != nil {
		return err
	}
	if err := engine.Report(os.Stdout, page, kind); err != nil {
		os.Exit(1) // the report already said why
	}
	return nil
}

func read(ctx context.Context, src string, timeout time.Duration) ([]byte, error) {
	const limit = 16 << 20
	switch {
	case src == "-":
		return io.ReadAll(io.LimitReader(os.Stdin, limit))
	case len(src) > 7 && (src[:7] == "http://" || src[:8] == "https://"):
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("fetching %s: %w", src, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("fetching %s: HTTP %d", src, resp.StatusCode)
		}
		return io.ReadAll(io.LimitReader(resp.Body, limit))
	default:
		return os.ReadFile(src)
	}
}

func runDemo(ctx context.Context, args []string) error {
	for _, a := range args {
		if a == "--no-k8s" || a == "-no-k8s" {
			return runLoopbackDemo(ctx, args)
		}
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
	return kubedemo.Run(ctx, o)
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
	return demo.Run(ctx, o)
}
