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
