//go:build unix

package config

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A config path that is a FIFO is refused at once, at startup and on reload, rather than blocking until
// something writes to it.
func TestConfigFIFOIsRefused(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "config.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("this test needs a temporary directory that can hold a FIFO (mkfifo: %v); run it on a Linux or macOS local disk or tmpfs: go test ./velocity/config -run TestConfigFIFOIsRefused", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Load(fifo)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("a FIFO: %v, want it refused as not a regular file", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Load blocked on a FIFO for a minute")
	}
}
