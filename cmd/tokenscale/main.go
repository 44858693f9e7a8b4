// Command tokenscale is the user's CLI: `inspect` explains what tokenscale reads from an engine's
// /metrics page. The demo is its own command (cmd/tokenscale-demo), so this binary links no test harness.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
)

const usage = `usage: tokenscale <command> [flags]

commands:
  inspect [--engine auto|vllm|sglang|trtllm] [--timeout 5s] FILE|URL|-
                                                           explain what a /metrics page gives tokenscale
                                                           (flags before the page)
  version                                                  print the version, commit and build date

The demo is a separate command: go run ./cmd/tokenscale-demo --help
`

func main() {
	if version.Requested(os.Args[1:]) {
		version.Print(os.Stdout, "tokenscale")
		return
	}
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
		return fmt.Errorf("inspect needs one FILE, URL or - (stdin), after its flags; got %q", fs.Args())
	}
	kind, err := engine.ParseKind(*eng)
	if err != nil {
		return err
	}
	page, err := read(ctx, fs.Arg(0), *timeout)
	if err != nil {
		return err
	}
	if limit := config.Default().Scrape.MaxBodyBytes; int64(len(page)) > limit {
		fmt.Fprintf(os.Stderr, "warning: the page is %d bytes, above the adapter's default scrape.maxBodyBytes (%d): raise it, or the adapter refuses this page\n", len(page), limit)
	}
	if err := engine.Report(os.Stdout, page, kind); err != nil {
		os.Exit(1) // the report already said why
	}
	return nil
}

// noRedirects answers a redirect as it is: the adapter's scraper treats one as an error, and a page read
// behind one would report what the adapter never reads.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func read(ctx context.Context, src string, timeout time.Duration) ([]byte, error) {
	switch {
	case len(src) > 7 && (src[:7] == "http://" || src[:8] == "https://"):
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, err
		}
		resp, err := noRedirects.Do(req)
		if err != nil {
			return nil, fmt.Errorf("fetching %s: %w", src, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			return nil, fmt.Errorf("fetching %s: HTTP %d to %.200q: the adapter follows no redirect, so it would not read this page either; inspect the URL it scrapes",
				src, resp.StatusCode, resp.Header.Get("Location"))
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("fetching %s: HTTP %d", src, resp.StatusCode)
		}
		return engine.ReadPage(resp.Body, src)
	default:
		return engine.ReadPageFile(src)
	}
}
