//go:build unix

package cluster

import (
	"path/filepath"
	"syscall"
	"testing"
)

// A FIFO given as --profiles is refused at once: a plain open would block until a writer came.
func TestLoadProfilesRefusesAFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("this test needs a temporary directory that can hold a FIFO (mkfifo: %v); run it on a Linux or macOS local disk or tmpfs: go test ./sim/cluster -run TestLoadProfilesRefusesAFIFO", err)
	}
	checkLoadRefused(t, fifo, "not a regular file")
}
