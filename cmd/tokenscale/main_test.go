package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/engine"
)

// inspect reads a file through the bounded reader (engine.TestReadPageFileIsBounded tests the bound).
func TestReadIsBounded(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big.txt")
	if err := os.WriteFile(big, make([]byte, engine.MaxInspectPage+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := read(context.Background(), big, time.Second); err == nil || !strings.Contains(err.Error(), big+" is larger than") {
		t.Errorf("page over the limit: %v", err)
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
	_, err := read(context.Background(), moved.URL, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "HTTP 302") || !strings.Contains(err.Error(), "follows no redirect") {
		t.Fatalf("a redirect: %v; want it reported, not followed", err)
	}
	if !strings.Contains(err.Error(), page.URL+"/metrics") {
		t.Errorf("a redirect: %v; want it to name where it points", err)
	}
	if b, err := read(context.Background(), page.URL, 5*time.Second); err != nil || !strings.Contains(string(b), "num_requests_waiting") {
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
	if b, err := read(context.Background(), page.URL, 5*time.Second); err != nil || !strings.Contains(string(b), "num_requests_waiting") {
		t.Fatalf("the page: %q, %v", b, err)
	}
	if h := <-headers; h[0] != "text/plain;version=0.0.4" || h[1] != "" {
		accept, encoding := h[0], h[1]
		t.Errorf("Accept %q, Accept-Encoding %q; want the scraper's text/plain;version=0.0.4 and none", accept, encoding)
	}
	if tr, ok := noRedirects.Transport.(*http.Transport); !ok || tr.Proxy != nil {
		t.Errorf("the client's transport %T takes a proxy from the environment; the adapter reads pods directly", noRedirects.Transport)
	}
}

// A page past the adapter's body limit fails the check after the report (it only warned, and exited 0):
// the adapter refuses every scrape of it.
func TestInspectFailsAPagePastTheBodyLimit(t *testing.T) {
	page := filepath.Join("..", "..", "velocity", "engine", "testdata", "synthetic-vllm-v1.txt")
	if err := inspect(context.Background(), []string{"--max-body-bytes", "1000", page}); err == nil || !strings.Contains(err.Error(), "the adapter refuses it") {
		t.Errorf("a page past --max-body-bytes 1000: %v; want the check to fail", err)
	}
	if err := inspect(context.Background(), []string{page}); err != nil {
		t.Errorf("the same page under the default limit: %v", err)
	}
}
