package converter

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// GPUSession is an open GPU reader that holds a library handle (NVML) until closed.
type GPUSession interface {
	GPUReader
	Close() error
}

// ReopeningGPUs is a GPUReader that opens its session on first use and again after any failure, so an
// agent started before the driver was ready, or one whose NVML broke (driver reload, GPU reset), recovers
// without a restart. Failed opens back off exponentially from MinBackoff to MaxBackoff; until the next try
// a read fails at once with the last error.
type ReopeningGPUs struct {
	Open       func() (GPUSession, error)
	MinBackoff time.Duration // default 1s
	MaxBackoff time.Duration // default 5m
	Now        func() time.Time

	mu      sync.Mutex
	cur     GPUSession
	lastErr error
	next    time.Time
	backoff time.Duration
}

// Read reads the GPUs through the current session, opening one if needed; an error closes the session so
// that the next read starts from a fresh one.
func (r *ReopeningGPUs) Read(uuids []string) ([]GPUReading, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil {
		if err := r.open(); err != nil {
			return nil, err
		}
	}
	out, err := r.cur.Read(uuids)
	if err != nil {
		if cerr := r.cur.Close(); cerr != nil {
			klog.V(2).InfoS("Closing the GPU session after a read error", "err", cerr)
		}
		r.cur = nil // reopened on the next read, without waiting: it opened fine last time
		return nil, err
	}
	return out, nil
}

func (r *ReopeningGPUs) open() error {
	now := r.now()
	if now.Before(r.next) {
		return fmt.Errorf("%w (retrying in %s)", r.lastErr, r.next.Sub(now).Round(time.Second))
	}
	s, err := r.Open()
	if err != nil {
		lo, hi := r.MinBackoff, r.MaxBackoff
		if lo <= 0 {
			lo = time.Second
		}
		if hi <= 0 {
			hi = 5 * time.Minute
		}
		r.backoff = min(max(2*r.backoff, lo), hi)
		r.lastErr, r.next = err, now.Add(r.backoff)
		klog.ErrorS(err, "GPU library unavailable; conversions on this node are refused (nvml-error) until it opens", "retryIn", r.backoff)
		return err
	}
	if r.lastErr != nil {
		klog.InfoS("GPU library opened after failures", "lastErr", r.lastErr.Error())
	}
	r.cur, r.lastErr, r.backoff, r.next = s, nil, 0, time.Time{}
	return nil
}

func (r *ReopeningGPUs) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

// Close closes the current session, if any.
func (r *ReopeningGPUs) Close() error {
	// A read hung in the library holds the lock and cannot be stopped: waiting for it here would keep a
	// stopping agent alive until it is killed, after it has reverted its pods. The process is exiting.
	if !r.mu.TryLock() {
		return errors.New("a GPU read is still in flight; the GPU library is left open")
	}
	defer r.mu.Unlock()
	if r.cur == nil {
		return nil
	}
	err := r.cur.Close()
	r.cur = nil
	return err
}
