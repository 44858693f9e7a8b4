package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenscale/tokenscale/velocity/engine"
)

// `tokenscale-adapter inspect` reads a page whole or fails naming it, as `tokenscale inspect` does: a
// page over the limit, or /dev/zero, is an error, never its first part reported as the whole.
func TestInspectReadIsBounded(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.txt")
	if err := os.WriteFile(big, make([]byte, engine.MaxInspectPage+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readPage(big); err == nil || !strings.Contains(err.Error(), big+" is larger than") {
		t.Errorf("page over the limit: %v", err)
	}
	if _, err := os.Stat("/dev/zero"); err == nil {
		if _, err := readPage("/dev/zero"); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("/dev/zero: %v", err)
		}
	}
	small := filepath.Join(dir, "page.txt")
	if err := os.WriteFile(small, []byte("vllm:num_requests_running 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := readPage(small); err != nil || len(b) != 28 {
		t.Errorf("small page: %d bytes, %v", len(b), err)
	}
	if code := inspect([]string{big}); code != 1 {
		t.Errorf("inspect of a page over the limit: exit %d, want 1", code)
	}
}
