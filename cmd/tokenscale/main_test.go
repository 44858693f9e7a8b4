package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/engine"
)

// inspect reads a page whole or fails naming the source: a page over the limit (or /dev/zero) is an
// error, never its first 16 MiB reported as if it were all there.
func TestReadIsBounded(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "page.txt")
	if err := os.WriteFile(small, []byte("vllm:num_requests_running 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := read(context.Background(), small, time.Second); err != nil || len(b) != 28 {
		t.Fatalf("small page: %d bytes, %v", len(b), err)
	}
	big := filepath.Join(dir, "big.txt")
	if err := os.WriteFile(big, make([]byte, engine.MaxInspectPage+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := read(context.Background(), big, time.Second); err == nil || !strings.Contains(err.Error(), big+" is larger than") {
		t.Errorf("page over the limit: %v", err)
	}
	if _, err := os.Stat("/dev/zero"); err == nil {
		if _, err := read(context.Background(), "/dev/zero", time.Second); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("/dev/zero: %v", err)
		}
	}
}
