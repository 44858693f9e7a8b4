// Command tokenscale is the user's CLI: `inspect` explains what tokenscale reads from an engine's
// /metrics page. The demo is its own command (cmd/tokenscale-demo), so this binary links no test harness.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/velocity/collector"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
)

const usage = `usage: tokenscale <command> [flags]

commands:
  inspect [--engine auto|vllm|sglang|trtllm] [--config FILE] [--timeout 800ms] [--max-body-bytes N]
          [--ca-file F] [--server-name N] [--insecure-skip-verify] [--cert-file F --key-file F] FILE|URL|-
                                                           explain what a /metrics page gives tokenscale,
                                                           fetched as the adapter fetches it (--config: its
                                                           scrape settings); flags before the page; exit 1
                                                           when the adapter could not use the page, 3 when
                                                           it could not be read
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
		code := 1
		if errors.As(err, new(errRead)) {
			code = 3
		}
		// Errors can carry the page's or the server's bytes (a certificate's names): printable only.
		fmt.Fprintln(os.Stderr, "tokenscale:", engine.Printable(err.Error()))
		os.Exit(code)
	}
}

// errRead marks an inspect that could not read its page (exit 3), apart from a page the adapter could not
// use (exit 1): a script can tell a down pod from a bad page.
type errRead struct{ error }

func (e errRead) Unwrap() error { return e.error }

func inspect(ctx context.Context, args []string) error {
	def := config.Default().Scrape
	fs := flag.NewFlagSet("inspect", flag.ExitOnError)
	eng := fs.String("engine", "auto", "engine: auto, vllm, sglang, trtllm")
	cfgPath := fs.String("config", "", "the adapter's config file: its scrape.timeout, scrape.maxBodyBytes, scrape.compression and scrape.tls apply (a flag given here wins)")
	timeout := fs.Duration("timeout", def.Timeout.Duration, "the adapter's scrape.timeout: a page that takes longer fails, as the adapter's scrape of it does")
	maxBody := fs.Int64("max-body-bytes", def.MaxBodyBytes, "the adapter's scrape.maxBodyBytes: a larger page fails the check, as the adapter refuses it")
	var t config.ScrapeTLS
	fs.StringVar(&t.CAFile, "ca-file", "", "scrape.tls.caFile: PEM CAs an https page's certificate chains to (default the system's roots)")
	fs.StringVar(&t.ServerName, "server-name", "", "scrape.tls.serverName: the name checked in the certificate (default the URL's host)")
	fs.BoolVar(&t.InsecureSkipVerify, "insecure-skip-verify", false, "scrape.tls.insecureSkipVerify: accept any certificate")
	fs.StringVar(&t.CertFile, "cert-file", "", "scrape.tls.certFile: a PEM client certificate, with --key-file")
	fs.StringVar(&t.KeyFile, "key-file", "", "scrape.tls.keyFile: the client certificate's PEM key")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		// A usage error, as an unknown flag is (exit 2), not a page the adapter cannot use (1).
		fmt.Fprintf(os.Stderr, "tokenscale: inspect needs one FILE, URL or - (stdin), after its flags; got %q\n", engine.Printable(fmt.Sprint(fs.Args())))
		fs.Usage()
		os.Exit(2)
	}
	kind, err := engine.ParseKind(*eng)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	compression := false
	if *cfgPath != "" {
		c, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		if !set["timeout"] {
			*timeout = c.Scrape.Timeout.Duration
		}
		if !set["max-body-bytes"] {
			*maxBody = c.Scrape.MaxBodyBytes
		}
		compression = c.Scrape.Compression
		// The TLS flags replace the file's settings as a whole: mixing a flag's CA with the file's
		// client key would check a combination the adapter never uses.
		if t == (config.ScrapeTLS{}) {
			t = c.Scrape.TLS
		}
	}
	if *timeout <= 0 {
		return fmt.Errorf("--timeout %s: must be positive", *timeout)
	}
	// The adapter's bounds on both (velocity/config): outside them its config is refused, so a check
	// against such a value would say what no adapter does.
	if *timeout < config.MinScrapeTimeout {
		return fmt.Errorf("--timeout %s: the adapter's scrape.timeout is at least %s", *timeout, config.MinScrapeTimeout)
	}
	if *maxBody < config.MinScrapeBody || *maxBody > config.MaxScrapeBody {
		return fmt.Errorf("--max-body-bytes %d: the adapter's scrape.maxBodyBytes is %d to %d", *maxBody, config.MinScrapeBody, config.MaxScrapeBody)
	}
	tc, roots, err := t.ClientConfig()
	if err != nil {
		return err
	}
	var tlsOpt *collector.TLS
	if tc != nil {
		tlsOpt = &collector.TLS{Config: tc, Roots: roots}
	}
	start := time.Now()
	page, err := read(ctx, fs.Arg(0), collector.NewClient(tlsOpt, compression), *timeout, *maxBody)
	if errors.Is(err, engine.ErrPageTooLarge) {
		// Past what is read, which is at least the adapter's limit: the adapter refuses it (exit 1, not 3).
		return fmt.Errorf("%w; above scrape.maxBodyBytes (%d) too: the adapter refuses it", err, *maxBody)
	}
	if err != nil {
		return errRead{err}
	}
	if !isURL(fs.Arg(0)) {
		start = time.Now() // a file's or stdin's read is no scrape: the parse alone has the budget
	}
	if err := engine.ReportBefore(os.Stdout, page, kind, start.Add(*timeout)); err != nil {
		os.Exit(1) // the report already said why
	}
	// After the report, which says what the page holds, but failing the check: the adapter refuses every
	// scrape of a page past its limit, so a script must not read this page as usable.
	if int64(len(page)) > *maxBody {
		return fmt.Errorf("the page is %d bytes, above scrape.maxBodyBytes (%d): the adapter refuses it; raise scrape.maxBodyBytes (and pass it here as --max-body-bytes)", len(page), *maxBody)
	}
	return nil
}

// isURL says whether src is fetched rather than read as a file: a scheme is case-insensitive, so
// HTTP://pod:8000/metrics is a URL, not a file of that name.
func isURL(src string) bool {
	scheme, _, ok := strings.Cut(src, "://")
	return ok && (strings.EqualFold(scheme, "http") || strings.EqualFold(scheme, "https"))
}

// read fetches a URL with client, as the adapter's scraper fetches a pod's page (its client, its Accept
// header, its timeout), or reads a file or stdin; it reads at most the larger of engine.MaxInspectPage
// and maxBody, so that a page the adapter's limit takes is read whole.
func read(ctx context.Context, src string, client *http.Client, timeout time.Duration, maxBody int64) ([]byte, error) {
	limit := max(int64(engine.MaxInspectPage), maxBody)
	switch {
	case isURL(src):
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", collector.PageAccept)
		// A page that comes too late fails the adapter's scrape too: say so, with the setting that decides.
		late := func(err error) error {
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("%w: %s did not come within %s, the adapter's scrape.timeout, so its scrapes of the page fail too (a longer --timeout reads it anyway)", err, src, timeout)
			}
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, late(fmt.Errorf("fetching %s: %w", src, err))
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			return nil, fmt.Errorf("fetching %s: HTTP %d to %.200q: the adapter follows no redirect, so it would not read this page either; inspect the URL it scrapes",
				src, resp.StatusCode, resp.Header.Get("Location"))
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("fetching %s: HTTP %d", src, resp.StatusCode)
		}
		b, err := engine.ReadPageUpTo(resp.Body, src, limit)
		if err != nil {
			return nil, late(err)
		}
		return b, nil
	default:
		// Read apart from ctx's wait, so Ctrl-C ends an inspect of stdin typed at a terminal, or of a FIFO
		// no one writes.
		type page struct {
			b   []byte
			err error
		}
		done := make(chan page, 1)
		go func() {
			b, err := engine.ReadPageFileUpTo(src, limit)
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
