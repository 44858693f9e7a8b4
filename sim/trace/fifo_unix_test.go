//go:build unix

package trace

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A ServeGen folder's member that is a FIFO is refused at once, naming it, rather than blocking the read
// until something writes to it.
func TestServeGenFIFOMemberIsRefused(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "chunk-1-trace.csv"), 0o600); err != nil {
		t.Skipf("this test needs a temporary directory that can hold a FIFO (mkfifo: %v); run it on a Linux or macOS local disk or tmpfs: go test ./sim/trace -run TestServeGenFIFOMemberIsRefused", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "chunk-0-trace.csv"), []byte("0,1,1,Exponential,0,0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := readServeGen(os.DirFS(dir), dir, []Request{{PromptTokens: 1, OutputTokens: 1}}, Options{})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "chunk-1-trace.csv is not a regular file") {
			t.Fatalf("a FIFO in the folder: %v; want it refused, named", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("reading a folder holding a FIFO still blocked after a minute")
	}
}
