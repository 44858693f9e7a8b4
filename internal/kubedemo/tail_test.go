package kubedemo

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A failed control-plane build shows the end of its output, however long the build wrote.
func TestTailBufferKeepsTheEnd(t *testing.T) {
	var b tailBuffer
	for i := 0; i < 1000; i++ {
		if _, err := b.Write([]byte(strings.Repeat("x", 99) + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = b.Write([]byte("go: downloading failed: no space left on device\n"))
	if s := b.String(); len(s) > 4096 || !strings.HasSuffix(s, "no space left on device\n") {
		t.Errorf("kept %d bytes ending %q, want at most 4096 ending with the last line", len(s), s[max(0, len(s)-60):])
	}
}

// A Ctrl-C during the control-plane build ends the build script and what it runs, and says it was
// interrupted, not that the build failed (which pointed at make demo-no-k8s).
func TestControlPlaneBuildStopsWithItsContext(t *testing.T) {
	t.Setenv("TOKENSCALE_K8S_BIN", "")
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "hack"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The script's child (sleep) keeps its output pipe open: the build returns only once the whole
	// process group is gone.
	started := filepath.Join(root, "started")
	script := "#!/usr/bin/env bash\ntouch " + started + "\nsleep 600\n"
	if err := os.WriteFile(filepath.Join(root, "hack", "build-control-plane.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := ControlPlaneBinaries(ctx, root, io.Discard)
		done <- err
	}()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the build script did not start within a minute")
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(time.Minute): // a hang guard: the build is killed at once
		t.Fatal("the build script still runs a minute after its context ended")
	}
}
