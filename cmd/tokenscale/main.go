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
  inspect [--engine auto|vllm|sglang|trtllm] [--timeout 5s] [--max-body-bytes N] FILE|URL|-
                                                           explain what a /metrics page gives tokenscale
                                                           (flags before the page; exit 1 when the adapter
                                                           could not use it)
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
	if ctx.Err() != nil {
		os.Exit(130) // interrupted
	}
	if err != nil {
		// Errors can carry the page's or the server's bytes (a certificate's names): printable only.
		fmt.Fprintln(os.Stderr, "tokenscale:", engine.Printable(err.Error()))
		os.Exit(1)
	}
}

func inspect(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("inspect", flag.ExitOnError)
	eng := fs.String("engine", "auto", "engine: auto, vllm, sglang, trtllm")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout when fetching a URL")
	maxBody := fs.Int64("max-body-bytes", config.Default().Scrape.MaxBodyBytes, "the adapter's scrape.maxBodyBytes: a larger page fails the check, as the adapter refuses it")
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
	if err := engine.Report(os.Stdout, page, kind); err != nil {
		os.Exit(1) // the report already said why
	}
	// After the report, which says what the page holds, but failing the check: the adapter refuses every
	// scrape of a page past its limit, so a script must not read this page as usable.
	if int64(len(page)) > *maxBody {
		return fmt.Errorf("the page is %d bytes, above scrape.maxBodyBytes (%d): the adapter refuses it; raise scrape.maxBodyBytes (and pass it here as --max-body-bytes)", len(page), *maxBody)
	}
	return nil
}

// noRedirects fetches a page as the adapter's scraper does: a redirect is answered as it is (the scraper
// treats one as an error, and a page read behind one would report what the adapter never reads), no
// proxy from the environment (the adapter reads pods directly: a laptop's proxy answered for the pod), no
// compression asked for, and headers bounded as the scraper bounds them.
var noRedirects = func() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DisableCompression = true
	tr.MaxResponseHeaderBytes = 64 << 10
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}()

func read(ctx context.Context, src string, timeout time.Duration) ([]byte, error) {
	switch {
	case len(src) > 7 && (src[:7] == "http://" || src[:8] == "https://"):
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "text/plain;version=0.0.4")
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
		// Read apart from ctx's wait, so Ctrl-C ends an inspect of stdin typed at a terminal, or of a FIFO
		// no one writes.
		type page struct {
			b   []byte
			err error
		}
		done := make(chan page, 1)
		go func() {
			b, err := engine.ReadPageFile(src)
			done <- page{b, err}
		}()
		select {
		case p := <-done:
			return p.b, p.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
