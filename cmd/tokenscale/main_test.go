package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/collector"
	"github.com/tokenscale/tokenscale/velocity/engine"
)

// scraper is the client inspect fetches with when no TLS setting is given.
var scraper = collector.NewClient(nil, false)

// inspect reads a file through the bounded reader (engine.TestReadPageFileIsBounded tests the bound).
func TestReadIsBounded(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big.txt")
	if err := os.WriteFile(big, make([]byte, engine.MaxInspectPage+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := read(context.Background(), big, scraper, time.Second, 4<<20); err == nil || !strings.Contains(err.Error(), big+" is larger than") {
		t.Errorf("page over the limit: %v", err)
	}
	// Past the adapter's body limit too, so the check fails as for a page read whole (exit 1, not 3).
	if err := inspect(context.Background(), []string{big}); err == nil || errors.As(err, new(errRead)) || !strings.Contains(err.Error(), "the adapter refuses it") {
		t.Errorf("inspect of a page over both limits: %v; want the adapter's refusal (exit 1)", err)
	}
}

// A redirect is reported, not followed: the adapter's scraper refuses one, so the page behind it is not
// what the adapter reads.
func TestReadDoesNotFollowRedirects(t *testing.T) {
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("vllm:num_requests_waiting 0\n"))
	}))
	defer page.Close()
	moved := httptest.NewServer(http.RedirectHandler(page.URL+"/metrics", http.StatusFound))
	defer moved.Close()
	_, err := read(context.Background(), moved.URL, scraper, time.Minute, 4<<20)
	if err == nil || !strings.Contains(err.Error(), "HTTP 302") || !strings.Contains(err.Error(), "follows no redirect") {
		t.Fatalf("a redirect: %v; want it reported, not followed", err)
	}
	if !strings.Contains(err.Error(), page.URL+"/metrics") {
		t.Errorf("a redirect: %v; want it to name where it points", err)
	}
	if b, err := read(context.Background(), page.URL, scraper, time.Minute, 4<<20); err != nil || !strings.Contains(string(b), "num_requests_waiting") {
		t.Errorf("the page itself: %q, %v", b, err)
	}
}

// The page is fetched as the adapter fetches it: the scraper's Accept header, no compression asked for,
// and no proxy from the environment (one answered for the pod on a laptop behind a corporate proxy; Go
// never proxies loopback, so the transport's setting is checked instead of a proxy server).
func TestReadFetchesAsTheAdapterDoes(t *testing.T) {
	headers := make(chan [2]string, 1)
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case headers <- [2]string{r.Header.Get("Accept"), r.Header.Get("Accept-Encoding")}:
		default:
		}
		_, _ = w.Write([]byte("vllm:num_requests_waiting 0\n"))
	}))
	defer page.Close()
	if b, err := read(context.Background(), page.URL, scraper, time.Minute, 4<<20); err != nil || !strings.Contains(string(b), "num_requests_waiting") {
		t.Fatalf("the page: %q, %v", b, err)
	}
	if h := <-headers; h[0] != "text/plain;version=0.0.4" || h[1] != "" {
		accept, encoding := h[0], h[1]
		t.Errorf("Accept %q, Accept-Encoding %q; want the scraper's text/plain;version=0.0.4 and none", accept, encoding)
	}
	if tr, ok := scraper.Transport.(*http.Transport); !ok || tr.Proxy != nil {
		t.Errorf("the client's transport %T takes a proxy from the environment; the adapter reads pods directly", scraper.Transport)
	}
}

// A page past the adapter's body limit fails the check after the report (it only warned, and exited 0):
// the adapter refuses every scrape of it.
func TestInspectFailsAPagePastTheBodyLimit(t *testing.T) {
	page := vllmPage
	if err := inspect(context.Background(), []string{"--max-body-bytes", "1024", page}); err == nil || !strings.Contains(err.Error(), "the adapter refuses it") {
		t.Errorf("a page past --max-body-bytes 1024: %v; want the check to fail", err)
	}
	if err := inspect(context.Background(), []string{page}); err != nil {
		t.Errorf("the same page under the default limit: %v", err)
	}
}

// An https page is checked as the adapter checks it: with the CA it is given by flag or by the adapter's
// config file (scrape.tls), and a page that cannot be read exits 3, apart from a page the adapter cannot
// use (exit 1). inspect could read no https page whose certificate the system does not trust.
func TestInspectChecksHTTPSAsTheAdapterDoes(t *testing.T) {
	page, err := os.ReadFile(vllmPage)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(page) }))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	withCA := writeConfig(t, dir, "{scheme: https, tls: {caFile: "+ca+"}}")
	withoutCA := writeConfig(t, dir, "{scheme: https}")
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no CA", nil, "certificate"},
		{"the config without a CA", []string{"--config", withoutCA}, "certificate"},
		{"--ca-file", []string{"--ca-file", ca}, ""},
		{"the config's scrape.tls.caFile", []string{"--config", withCA}, ""},
		{"--insecure-skip-verify", []string{"--insecure-skip-verify"}, ""},
		{"a name the certificate does not carry", []string{"--ca-file", ca, "--server-name", "engine.llm.svc"}, "engine.llm.svc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A long timeout: a handshake on a loaded machine must not read as a refused certificate.
			err := inspect(context.Background(), append(append([]string{"--timeout", "1m"}, tc.args...), srv.URL+"/metrics"))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("inspect: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("inspect: %v, want an error mentioning %q", err, tc.wantErr)
			case tc.wantErr != "" && !errors.As(err, new(errRead)):
				t.Fatalf("inspect: %v is not a read error (exit 3)", err)
			}
		})
	}
}

// A page that does not come within the adapter's scrape.timeout fails as the adapter's scrape of it
// does, naming the timeout in force (the flag's, else the config's), and a config's maxBodyBytes applies.
// The engine never answers, so the outcome depends on no machine's speed.
func TestInspectTakesTheAdaptersLimits(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer srv.Close()
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "{timeout: 150ms, maxBodyBytes: 1024}")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--timeout", "50ms"}, "within 50ms, the adapter's scrape.timeout"},
		{[]string{"--config", cfg}, "within 150ms, the adapter's scrape.timeout"},
		{[]string{"--config", cfg, "--timeout", "60ms"}, "within 60ms"},
	} {
		err := inspect(context.Background(), append(tc.args, srv.URL))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, new(errRead)) {
			t.Errorf("inspect %q of a page that never comes: %v, want a read error mentioning %q", tc.args, err, tc.want)
		}
	}
	if err := inspect(context.Background(), []string{"--config", cfg, vllmPage}); err == nil || !strings.Contains(err.Error(), "above scrape.maxBodyBytes (1024)") {
		t.Errorf("a page past the config's maxBodyBytes: %v; want the check to fail", err)
	}
	if err := inspect(context.Background(), []string{"--timeout", "0s", vllmPage}); err == nil || !strings.Contains(err.Error(), "must be positive") {
		t.Errorf("--timeout 0s: %v", err)
	}
}

var vllmPage = filepath.Join("..", "..", "velocity", "engine", "testdata", "synthetic-vllm-v1.txt")

// writeConfig writes an adapter config with the scrape section given (flow YAML) and one pool.
func writeConfig(t *testing.T, dir, scrape string) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "config-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	body := "version: tokenscale.io/v1alpha1\nscrape: " + scrape + "\npools:\n- {name: prefill, namespace: llm, role: prefill, selector: {a: b}}\n"
	if _, err := f.WriteString(body); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// A page the adapter's limit takes is read whole: past inspect's own 16 MiB, up to a config's 64 MiB, it
// was a read failure (exit 3) for a page the adapter reads.
func TestInspectReadsWhatTheAdaptersLimitTakes(t *testing.T) {
	page, err := os.ReadFile(vllmPage)
	if err != nil {
		t.Fatal(err)
	}
	// The page, then comments to past 16 MiB: still a page the adapter reads with maxBodyBytes 32 MiB.
	pad := bytes.Repeat([]byte("# padding the page past inspect's own limit\n"), (engine.MaxInspectPage+len(page))/44+1)
	big := filepath.Join(t.TempDir(), "big.txt")
	if err := os.WriteFile(big, append(append([]byte{}, page...), pad...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := inspect(context.Background(), []string{"--timeout", "1m", "--max-body-bytes", fmt.Sprint(32 << 20), big}); err != nil {
		t.Errorf("a %d-byte page under a 32 MiB maxBodyBytes: %v; want it read and usable", len(page)+len(pad), err)
	}
}

// The flags take the adapter's bounds: a check against a limit no adapter can have says nothing.
func TestInspectRefusesLimitsTheAdapterRefuses(t *testing.T) {
	for _, args := range [][]string{
		{"--max-body-bytes", "0"}, {"--max-body-bytes", "-1"}, {"--max-body-bytes", fmt.Sprint(65 << 20)}, {"--timeout", "1ns"},
	} {
		err := inspect(context.Background(), append(args, vllmPage))
		if err == nil || !strings.Contains(err.Error(), "the adapter's scrape.") {
			t.Errorf("inspect %q: %v; want a refusal naming the adapter's bound", args, err)
		}
	}
}

// A URL's scheme is case-insensitive: HTTP:// was read as a file of that name.
func TestIsURL(t *testing.T) {
	for src, want := range map[string]bool{
		"http://pod:8000/metrics": true, "HTTP://pod:8000/metrics": true, "Https://pod/metrics": true,
		"metrics.txt": false, "-": false, "ftp://pod/metrics": false, "./http://x": false,
	} {
		if got := isURL(src); got != want {
			t.Errorf("isURL(%q) = %v, want %v", src, got, want)
		}
	}
}
