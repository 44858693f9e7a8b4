package converter

import (
	"errors"
	"testing"
	"time"
)

type fakeSession struct {
	fail   error
	closed bool
}

func (f *fakeSession) Read([]string) ([]GPUReading, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	return []GPUReading{{UUID: "GPU-1"}}, nil
}
func (f *fakeSession) Close() error { f.closed = true; return nil }

// NVML that fails to open is retried with a growing backoff, and a session that fails a read is closed
// and replaced on the next read.
func TestReopeningGPUsRetriesAndRecovers(t *testing.T) {
	clk := &clock{t: t0}
	opens := 0
	openErr := errors.New("NVML init: ERROR_DRIVER_NOT_LOADED")
	var sessions []*fakeSession
	r := &ReopeningGPUs{Now: clk.Now, MinBackoff: time.Second, MaxBackoff: 4 * time.Second, Open: func() (GPUSession, error) {
		opens++
		if openErr != nil {
			return nil, openErr
		}
		s := &fakeSession{}
		sessions = append(sessions, s)
		return s, nil
	}}
	read := func() error { _, err := r.Read([]string{"GPU-1"}); return err }
	// Opens at 0 s, 1 s, 3 s, 7 s, 11 s (backoff 1, 2, 4, 4); reads between them do not open.
	for _, at := range []time.Duration{0, 500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second, 6 * time.Second, 7 * time.Second, 11 * time.Second} {
		clk.Set(t0.Add(at))
		if err := read(); !errors.Is(err, openErr) {
			t.Fatalf("read at %s: %v, want the open error", at, err)
		}
	}
	if opens != 5 {
		t.Fatalf("%d opens in 11 s of failures; want 5 (backoff 1, 2, 4, 4 s)", opens)
	}
	// The driver comes back: the next try opens and reads.
	openErr = nil
	clk.Set(t0.Add(15 * time.Second))
	if err := read(); err != nil {
		t.Fatalf("after the driver came back: %v", err)
	}
	// The session breaks (GPU reset): that read fails, the session is closed, the next read reopens.
	sessions[0].fail = errors.New("NVML memory of GPU-1: ERROR_GPU_IS_LOST")
	if err := read(); err == nil || !sessions[0].closed {
		t.Fatalf("broken session: err %v, closed %v", err, sessions[0].closed)
	}
	if err := read(); err != nil || len(sessions) != 2 {
		t.Fatalf("after the break: %v, %d sessions; want a second one", err, len(sessions))
	}
	if err := r.Close(); err != nil || !sessions[1].closed {
		t.Fatalf("Close: %v", err)
	}
}

// blockingSession's Read signals that it started and waits for release, as a hung NVML call would.
type blockingSession struct{ started, release chan struct{} }

func (b *blockingSession) Read([]string) ([]GPUReading, error) {
	close(b.started)
	<-b.release
	return nil, nil
}
func (b *blockingSession) Close() error { return nil }

// Closing while a read hangs does not wait for it: a stopping agent, its pods reverted, must exit.
func TestReopeningGPUsCloseDoesNotWaitForAHungRead(t *testing.T) {
	b := &blockingSession{started: make(chan struct{}), release: make(chan struct{})}
	r := &ReopeningGPUs{Open: func() (GPUSession, error) { return b, nil }}
	go func() { _, _ = r.Read([]string{"GPU-1"}) }()
	<-b.started
	if err := r.Close(); err == nil {
		t.Error("Close during a hung read reported nothing")
	}
	close(b.release)
}
