package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenscale/tokenscale/velocity/engine"
)

// `tokenscale-adapter inspect` reads through the bounded reader, as `tokenscale inspect` does
// (engine.TestReadPageFileIsBounded tests the bound): a page over the limit fails.
func TestInspectReadIsBounded(t *testing.T) {
	// A page the inspector would report on, padded past the limit with a comment: read unbounded, it
	// passes.
	page := "vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n# " + strings.Repeat("x", engine.MaxInspectPage) + "\n"
	big := filepath.Join(t.TempDir(), "big.txt")
	if err := os.WriteFile(big, []byte(page), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := inspect([]string{big}); code != 1 {
		t.Errorf("inspect of a page over the limit: exit %d, want 1", code)
	}
}
