// Package collector feeds the velocity store: a scrape loop over targets the caller supplies (default
// every 1 s, per-target timeout, bounded concurrency, body size limit, partial results kept), and a
// Prometheus source for users who already run Prometheus, Thanos or Mimir. Readers of the store never
// wait for either.
package collector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// Target is one pod to scrape.
type Target struct {
	Pod    store.PodKey
	Pool   string
	URL    string // e.g. http://10.0.0.7:8000/metrics
	Engine engine.Kind
}

// Recorder is the part of the store the collector writes to.
type Recorder interface {
	Record(pod store.PodKey, t time.Time, snap *engine.Snapshot)
	RecordError(pod store.PodKey, t time.Time, err error)
	Retain(keep func(store.PodKey) bool)
}

// Options tune the scrape loop.
type Options struct {
	Interval     time.Duration // default 1s
	Timeout      time.Duration // per target, default 800ms
	Concurrency  int           // default 64
	MaxBodyBytes int64         // default 4 MiB
	// Compression asks engines for gzip. Off by default: prometheus_client compresses only when asked,
	// and a plain page costs the adapter less CPU (no gunzip) for about 12x the bytes on the network.
	Compression bool
	// Spread starts a round's scrapes evenly over this long instead of all at once, each pod in a slot
	// fixed by a hash of its name. Off (0) by default: a spread round smooths the adapter's CPU and cut
	// its serving p90 by a fifth to a half at 1,000 pods, but the round ends later, so the decisions made
	// after it see data up to Spread older (docs/performance.md).
	Spread time.Duration
	Client *http.Client // default: a client with keep-alives sized to Concurrency
}

// Observer is told about every scrape, for the binaries' own /metrics. It may be nil.
type Observer interface {
	ObserveScrape(pool string, d time.Duration, err error)
}

// Scraper scrapes targets into a Recorder.
type Scraper struct {
	opts    Options
	rec     Recorder
	targets func() []Target
	obs     Observer
	bufs    sync.Pool
	now     func() time.Time
}

// NewScraper returns a scraper over the targets function's current list.
func NewScraper(opts Options, rec Recorder, targets func() []Target, obs Observer) *Scraper {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 800 * time.Millisecond
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 64
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 4 << 20
	}
	if opts.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// One kept-alive connection per engine, however many engines: a pool capped below the number of
		// targets closes and re-dials most of them every round, which cost a quarter of the scrape CPU.
		tr.MaxIdleConnsPerHost = 1
		tr.MaxIdleConns = 0
		tr.IdleConnTimeout = 90 * time.Second
		// A scrape request is a few hundred bytes; the default 4 KiB write buffer per connection is waste.
		tr.WriteBufferSize = 1024
		tr.DisableCompression = !opts.Compression
		opts.Client = &http.Client{Transport: tr}
	}
	return &Scraper{opts: opts, rec: rec, targets: targets, obs: obs, now: time.Now,
		bufs: sync.Pool{New: func() any { return new(bytes.Buffer) }}}
}

// ScrapeOnce scrapes every current target once, in parallel up to Concurrency, and forgets pods that
// are no longer targets. Each target's outcome is recorded on its own: one bad pod spoils nothing else.
func (s *Scraper) ScrapeOnce(ctx context.Context) {
	targets := s.targets()
	keep := make(map[store.PodKey]bool, len(targets))
	for _, t := range targets {
		keep[t.Pod] = true
	}
	s.rec.Retain(func(k store.PodKey) bool { return keep[k] })

	var slot time.Duration
	if s.opts.Spread > 0 && len(targets) > 1 {
		targets = bySlot(targets)
		slot = s.opts.Spread / time.Duration(len(targets))
	}
	roundStart := time.Now()
	sem := make(chan struct{}, s.opts.Concurrency)
	var wg sync.WaitGroup
	for i, t := range targets {
		if slot > 0 && !sleepUntil(ctx, roundStart.Add(time.Duration(i)*slot)) {
			break // shutting down: the pods keep their last data
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(t Target) {
			defer func() { <-sem; wg.Done() }()
			start := s.now()
			snap, err := s.scrape(ctx, t)
			if s.obs != nil {
				s.obs.ObserveScrape(t.Pool, s.now().Sub(start), err)
			}
			if err != nil {
				klog.V(4).InfoS("Scrape failed", "pod", t.Pod, "url", t.URL, "err", err)
				s.rec.RecordError(t.Pod, start, err)
				return
			}
			s.rec.Record(t.Pod, start, snap)
		}(t)
	}
	wg.Wait()
}

// bySlot returns a copy of targets ordered by a hash of each pod's key, so that with Spread a pod keeps
// about the same offset into the round as other pods come and go, as Prometheus does for its targets.
func bySlot(targets []Target) []Target {
	type keyed struct {
		h uint64
		t Target
	}
	ks := make([]keyed, len(targets))
	for i, t := range targets {
		h := fnv.New64a()
		_, _ = h.Write([]byte(t.Pod.Namespace + "/" + t.Pod.Name))
		ks[i] = keyed{h.Sum64(), t}
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].h < ks[j].h })
	out := make([]Target, len(ks))
	for i := range ks {
		out[i] = ks[i].t
	}
	return out
}

// sleepUntil waits until t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// ErrBodyTooLarge is returned for pages over MaxBodyBytes; they are rejected whole, never truncated.
var ErrBodyTooLarge = errors.New("metrics page exceeds the body size limit")

func (s *Scraper) scrape(ctx context.Context, t Target) (*engine.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", t.URL, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", t.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("scrape %s: HTTP %d", t.URL, resp.StatusCode)
	}
	buf := s.bufs.Get().(*bytes.Buffer)
	defer s.bufs.Put(buf)
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, s.opts.MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("scrape %s: reading body: %w", t.URL, err)
	}
	if n > s.opts.MaxBodyBytes {
		return nil, fmt.Errorf("scrape %s: %w (%d bytes)", t.URL, ErrBodyTooLarge, s.opts.MaxBodyBytes)
	}
	snap, err := engine.ExtractBytes(buf.Bytes(), t.Engine)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", t.URL, err)
	}
	return snap, nil
}
