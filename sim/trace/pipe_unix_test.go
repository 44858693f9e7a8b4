//go:build unix

package trace

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A trace in a pipe (`--trace <(zcat trace.csv.gz)`) has its format guessed without seeking back.
func TestReadFileFromAPipe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.csv")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("this test needs a temporary directory that can hold a FIFO (mkfifo: %v); run it on a Linux or macOS local disk or tmpfs: go test ./sim/trace -run TestReadFileFromAPipe", err)
	}
	wrote := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			wrote <- err
			// Unblock the reader's open, which waits for a writer.
			if w, werr := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); werr == nil {
				w.Close()
			}
			return
		}
		_, err = f.WriteString(burstHeader + "5,ChatGPT,472,18,490,Conversation log\n7,ChatGPT,100,20,120,Conversation log\n")
		f.Close()
		wrote <- err
	}()
	type result struct {
		tr  *Trace
		err error
	}
	done := make(chan result, 1)
	go func() { tr, err := ReadFile(path, Options{}); done <- result{tr, err} }()
	select {
	case r := <-done:
		if err := <-wrote; err != nil {
			t.Fatalf("writing the FIFO: %v", err)
		}
		if r.err != nil || len(r.tr.Requests) != 2 || r.tr.Requests[1].Arrival != 2*time.Second {
			t.Fatalf("from a FIFO: %+v, %v", r.tr, r.err)
		}
	case <-time.After(time.Minute):
		t.Fatal("reading the FIFO did not finish within a minute")
	}
}
