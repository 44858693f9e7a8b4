// Package collector feeds the velocity store: a scrape round over targets the caller supplies (per-target
// timeout, bounded concurrency, body size limit, partial results kept; the caller, velocity/service,
// runs a round every scrape.interval), and a Prometheus source for users who already run Prometheus,
// Thanos or Mimir. Readers of the store never wait for either.
package collector

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"net/http"
	"runtime/debug"
	"slices"
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
	// Limit is how fast the pod's token counters can plausibly grow (policy.RateLimit of its pool); a
	// scrape implying more is a glitch for the store. Zero: the store's absolute cap.
	Limit store.Limit
}

// RateLimiter is what a Recorder may also offer: a per-pod plausible rate (store.Store has it).
type RateLimiter interface {
	SetRateLimit(pod store.PodKey, l store.Limit)
}

// Recorder is the part of the store the collector writes to.
type Recorder interface {
	Record(pod store.PodKey, t time.Time, snap *engine.Snapshot)
	RecordError(pod store.PodKey, t time.Time, err error)
	Retain(keep func(store.PodKey) bool)
}

// Options tune a scrape round.
type Options struct {
	Timeout      time.Duration // per target, default 800ms
	Concurrency  int           // default 64
	MaxBodyBytes int64         // default 4 MiB
	// Compression asks engines for gzip. Off by default: prometheus_client compresses only when asked,
	// and a plain page costs the adapter less CPU (no gunzip) for about 12x the bytes on the network.
	Compression bool
	// Spread starts a round's scrapes evenly over this long instead of all at once, each pod in a slot
	// fixed by a hash of its name (after a round that had a pod time out or left one waiting, the slots
	// follow order instead). Off (0) by default: a spread round smooths the adapter's CPU and cut
	// its serving p90 by a fifth to a half at 1,000 pods, but the round ends later, so the decisions made
	// after it see data up to Spread older (docs/performance.md).
	Spread time.Duration
	// RoundDeadline is how long into a round scrapes may still start (0: no deadline, every pod waits for
	// a slot): pods still waiting then are not scraped this round, so a round ends within RoundDeadline +
	// Timeout however many pods hang. The adapter's loop sets it (velocity/service).
	RoundDeadline time.Duration
	// TLS checks https pages (nil: Go's defaults, the system's roots and the pod's IP as the name).
	TLS    *TLS
	Client *http.Client // default: a client with keep-alives sized to Concurrency
}

// Observer is told about every scrape, for the binaries' own /metrics, and about every pod a round had
// no time for (d 0, err wrapping ErrNotScraped). It may be nil.
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
	// after starts the round's dispatch deadline (time.After; tests close their own channel instead).
	after func(time.Duration) <-chan time.Time
	// sched holds, per pod, whether its last scrape timed out and the round it was last started in (or
	// first listed in), which order reads; round counts rounds.
	schedMu sync.Mutex
	sched   map[store.PodKey]podSched
	round   uint64
	skipped bool // some pod was not started last round
}

type podSched struct {
	slow bool
	// last is the round the pod's scrape last started in, or, until one has, the round it was first
	// listed in: a new pod waits its turn like a pod scraped then.
	last uint64
}

// maxPooledBuf is the largest page buffer returned to the pool: a buffer grown for one huge page is
// dropped rather than kept, so the pool holds about Concurrency typical pages, not the worst ever seen.
const maxPooledBuf = 1 << 20

// maxErrText bounds the error text kept for a pod: a target decides what its page holds.
const maxErrText = 300

// NewScraper returns a scraper over the targets function's current list.
func NewScraper(opts Options, rec Recorder, targets func() []Target, obs Observer) *Scraper {
	if opts.Timeout <= 0 {
		opts.Timeout = 800 * time.Millisecond
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 64
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 4 << 20
	}
	if opts.RoundDeadline > 0 {
		// A spread round's slots all come before its deadline.
		opts.RoundDeadline = max(opts.RoundDeadline, opts.Spread)
	}
	if opts.Client == nil {
		opts.Client = NewClient(opts.TLS, opts.Compression)
	}
	if opts.Client.CheckRedirect == nil {
		c := *opts.Client
		c.CheckRedirect = noRedirect
		opts.Client = &c
	}
	return &Scraper{opts: opts, rec: rec, targets: targets, obs: obs, now: time.Now, after: time.After, sched: map[store.PodKey]podSched{},
		bufs: sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}}
}

// NewClient returns the client a scraper reads pages with when given none: one kept-alive connection per
// engine, no proxy, bounded headers, gzip only when asked for, https checked as t says, redirects answered
// as they are. `tokenscale inspect` fetches with it too, so it reads a page as the adapter would.
func NewClient(t *TLS, compression bool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// One kept-alive connection per engine, however many engines: a pool capped below the number of
	// targets closes and re-dials most of them every round, which cost a quarter of the scrape CPU.
	tr.MaxIdleConnsPerHost = 1
	tr.MaxIdleConns = 0
	tr.IdleConnTimeout = 90 * time.Second
	// A scrape request is a few hundred bytes; the default 4 KiB write buffer per connection is waste.
	tr.WriteBufferSize = 1024
	tr.DisableCompression = !compression
	// Pods are scraped where they are: an HTTP(S)_PROXY meant for egress would route every scrape, and
	// every pod's numbers, through a proxy, and turn the proxy's errors into the pods'.
	tr.Proxy = nil
	// A page's headers are a few hundred bytes; Go's 10 MiB default would let a pod spend that much of
	// the memory bound outside maxBodyBytes on every scrape.
	tr.MaxResponseHeaderBytes = maxHeaderBytes
	return &http.Client{Transport: t.transport(tr), CheckRedirect: noRedirect}
}

// noRedirect answers a redirect as it is: a pod's page is read where the pod is, and a redirect could
// send the scraper to any host and show that host's answer in the pod's error.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// PageAccept is the Accept header of a scrape: the text format, which every engine serves.
const PageAccept = "text/plain;version=0.0.4"

// timedOut says whether a scrape used up its timeout: no answer in time, or a page still parsing at the
// deadline (abandoned as engine.ErrParseTimeout), which held its slot as long. Such pods start last in
// the next round.
func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, engine.ErrParseTimeout)
}

func (s *Scraper) getBuf() *[]byte { return s.bufs.Get().(*[]byte) }

func (s *Scraper) putBuf(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	s.bufs.Put(b)
}

// ErrNotScraped is what the Observer hears of a pod a round had no time for: the round's deadline
// passed before its scrape could start (pods hanging until their timeout held the slots).
var ErrNotScraped = errors.New("not scraped this round: the round's deadline passed before its scrape could start")

// ScrapeOnce scrapes every current target once, in parallel up to Concurrency, and forgets pods that
// are no longer targets. Each target's outcome is recorded on its own: one bad pod spoils nothing else.
// No scrape starts later than RoundDeadline into the round, so a round ends within RoundDeadline +
// Timeout however many pods hang. A pod a round had no time for keeps its last data, which ages into
// stale as any pod's does (the Observer hears ErrNotScraped), and order gives it its turn.
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
	targets = s.order(targets, keep)
	limiter, _ := s.rec.(RateLimiter)
	roundStart := time.Now()
	var deadline <-chan time.Time // nil, never ready, without a deadline
	if s.opts.RoundDeadline > 0 {
		deadline = s.after(s.opts.RoundDeadline)
	}
	sem := make(chan struct{}, s.opts.Concurrency)
	var wg sync.WaitGroup
	var waiting []Target
dispatch:
	for i, t := range targets {
		if slot > 0 && !sleepUntil(ctx, roundStart.Add(time.Duration(i)*slot)) {
			break // shutting down: the pods keep their last data
		}
		// A deadline already passed, or shutdown, wins over a free slot (a select would pick either).
		if ctx.Err() != nil {
			break
		}
		select {
		case <-deadline:
			waiting = targets[i:]
			break dispatch
		default:
		}
		select {
		case sem <- struct{}{}:
		case <-deadline:
			waiting = targets[i:]
			break dispatch
		case <-ctx.Done():
			break dispatch // shutting down: the pods keep their last data
		}
		s.schedMu.Lock()
		ps := s.sched[t.Pod]
		ps.last = s.round
		s.sched[t.Pod] = ps
		s.schedMu.Unlock()
		wg.Add(1)
		go func(t Target) {
			defer func() { <-sem; wg.Done() }()
			start := s.now()
			// A scrape is stamped with the time its answer arrived, not when it was asked for (see scrape).
			snap, at, err := s.scrapeContained(ctx, t)
			if s.obs != nil {
				s.obs.ObserveScrape(t.Pool, s.now().Sub(start), err)
			}
			slow := timedOut(err)
			s.schedMu.Lock()
			ps := s.sched[t.Pod]
			ps.slow = slow
			s.sched[t.Pod] = ps
			s.schedMu.Unlock()
			if err != nil {
				klog.V(4).InfoS("Scrape failed", "pod", t.Pod, "url", t.URL, "err", err)
				s.rec.RecordError(t.Pod, start, err)
				return
			}
			if limiter != nil && t.Limit != (store.Limit{}) {
				limiter.SetRateLimit(t.Pod, t.Limit)
			}
			s.rec.Record(t.Pod, at, snap)
		}(t)
	}
	s.schedMu.Lock()
	wasSkipped := s.skipped
	s.skipped = len(waiting) > 0
	s.schedMu.Unlock()
	// Logged at Info when rounds start or stop reaching their deadline, not every second in between.
	switch {
	case len(waiting) > 0:
		logger := klog.V(2)
		if !wasSkipped {
			logger = klog.V(0)
		}
		logger.InfoS("Scrape round reached its deadline; the remaining pods keep their last data until their turn (counted in tokenscale_scrape_errors_total)",
			"notStarted", len(waiting), "pods", len(targets), "concurrency", s.opts.Concurrency, "deadline", s.opts.RoundDeadline)
		if s.obs != nil {
			for _, t := range waiting {
				s.obs.ObserveScrape(t.Pool, 0, fmt.Errorf("scrape %s: %w", t.Pod, ErrNotScraped))
			}
		}
	case wasSkipped:
		klog.InfoS("Scrape rounds start every pod before their deadline again", "pods", len(targets))
	}
	wg.Wait()
}

// SetClock makes the scraper stamp scrapes with now instead of the wall clock, for tests that drive
// engines on a clock of their own.
func (s *Scraper) SetClock(now func() time.Time) { s.now = now }

// order starts a round: it counts it, forgets pods that are no longer targets (so the schedule stays
// bounded by them), notes new pods, and, when the last round had a pod time out or left one waiting,
// returns the targets in the order that bounds the harm (otherwise it keeps their order):
//   - first, with two or more slots, the one timed-out pod least recently tried, so that pods that hang
//     are retried in turn even when the others fill the round (with one slot it would hold the only one
//     and could keep every other pod waiting, round after round);
//   - then the pods that did not time out, least recently started first, new pods counted as started
//     in the round they appeared: pods a round had no time for start before those it started;
//   - last, the other timed-out pods, least recently tried first, so that they hold slots only after
//     every other pod has started and cannot delay the others' results, recorded as each arrives.
func (s *Scraper) order(targets []Target, keep map[store.PodKey]bool) []Target {
	s.schedMu.Lock()
	defer s.schedMu.Unlock()
	s.round++
	if len(s.sched) > len(targets) {
		maps.DeleteFunc(s.sched, func(k store.PodKey, _ podSched) bool { return !keep[k] })
	}
	anySlow := false
	for _, t := range targets {
		ps, seen := s.sched[t.Pod]
		if !seen {
			s.sched[t.Pod] = podSched{last: s.round}
		}
		anySlow = anySlow || ps.slow
	}
	if !anySlow && !s.skipped {
		return targets // the usual round: every pod started last round and none timed out
	}
	out := slices.Clone(targets)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := s.sched[out[i].Pod], s.sched[out[j].Pod]
		if a.slow != b.slow {
			return !a.slow
		}
		return a.last < b.last
	})
	// The slow pods now sit at the end, least recently tried first: move the first of them to the front.
	if first := sort.Search(len(out), func(i int) bool { return s.sched[out[i].Pod].slow }); first < len(out) && first > 0 && s.opts.Concurrency > 1 {
		retry := out[first]
		copy(out[1:first+1], out[:first])
		out[0] = retry
	}
	return out
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

// scrapeContained is scrape with a panic turned into the pod's error: the page is the pod's to choose,
// and reading one must not take the process down (a page once reached a panic in expfmt).
func (s *Scraper) scrapeContained(ctx context.Context, t Target) (snap *engine.Snapshot, at time.Time, err error) {
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(nil, "Recovered from a panic reading a pod's page", "pod", t.Pod, "url", t.URL, "panic", r, "stack", string(debug.Stack()))
			snap, err = nil, fmt.Errorf("reading %s failed: %v", t.URL, r)
		}
	}()
	return s.scrape(ctx, t)
}

// scrape reads and extracts one pod's page; at is when its headers arrived. prometheus_client builds the
// whole page before it sends the headers, so that is when the counters were read: stamped with the
// request's start instead, a page that took 0.7 s to come made a steady 1,000 tokens/s read as 1,700
// over the interval it ended and 300 over the next.
func (s *Scraper) scrape(ctx context.Context, t Target) (snap *engine.Snapshot, at time.Time, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return nil, at, fmt.Errorf("scrape %s: %w", t.Pod, err)
	}
	req.Header.Set("Accept", PageAccept)
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return nil, at, fmt.Errorf("scrape %s: %w", t.Pod, clip(err))
	}
	at = s.now()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The body is drained a little for connection reuse, never shown: it is the target's to choose.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			return nil, at, fmt.Errorf("scrape %s (%s): HTTP %d: redirects are not followed", t.Pod, t.URL, resp.StatusCode)
		}
		return nil, at, fmt.Errorf("scrape %s (%s): HTTP %d", t.Pod, t.URL, resp.StatusCode)
	}
	buf := s.getBuf()
	defer s.putBuf(buf)
	page, err := readLimited(resp.Body, (*buf)[:0], s.opts.MaxBodyBytes, resp.ContentLength)
	*buf = page[:0]
	if err != nil {
		return nil, at, fmt.Errorf("scrape %s: %w", t.Pod, clip(err))
	}
	deadline, _ := ctx.Deadline()
	snap, err = engine.ExtractBytesBefore(page, t.Engine, deadline)
	if err != nil {
		return nil, at, fmt.Errorf("scrape %s: %w", t.Pod, clip(err))
	}
	return snap, at, nil
}

// maxHeaderBytes bounds a scrape reply's headers.
const maxHeaderBytes = 64 << 10

// maxPrealloc bounds what an announced Content-Length allocates before its bytes arrive: a pod announcing
// the limit and then stalling would otherwise cost the whole limit for no bytes.
const maxPrealloc = 256 << 10

// readLimited reads r into buf, failing as soon as more than limit bytes arrive; the buffer grows to at
// most limit+1 bytes (not to the next power of two), so a page over the limit costs no more than that.
func readLimited(r io.Reader, buf []byte, limit, contentLength int64) ([]byte, error) {
	if contentLength > limit {
		return buf, fmt.Errorf("%w (%d bytes announced, limit %d)", ErrBodyTooLarge, contentLength, limit)
	}
	if contentLength > 0 && int64(cap(buf)) < contentLength+1 {
		buf = make([]byte, 0, min(contentLength+1, maxPrealloc))
	}
	for {
		if len(buf) == cap(buf) {
			n := min(int64(max(2*cap(buf), 4096)), limit+1)
			if int64(cap(buf)) >= n {
				return buf, fmt.Errorf("%w (limit %d bytes)", ErrBodyTooLarge, limit)
			}
			nb := make([]byte, len(buf), n)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return buf, fmt.Errorf("%w (limit %d bytes)", ErrBodyTooLarge, limit)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, fmt.Errorf("reading body: %w", err)
		}
	}
}

// clippedError is an error whose text was made printable and cut to maxErrText; Unwrap keeps errors.Is
// working for the sentinels callers test (deadline, body limit) while the long text, and the error
// holding it, go.
type clippedError struct {
	msg      string
	sentinel error
}

func (e *clippedError) Error() string { return e.msg }
func (e *clippedError) Unwrap() error { return e.sentinel }

// clip bounds an error's text and makes it printable, so what a target sent is never kept, logged or
// served at length or as it is (klog writes a value holding a newline unescaped).
func clip(err error) error {
	msg := err.Error()
	shown := engine.PrintableWithin(msg, maxErrText)
	if shown == msg {
		return err
	}
	c := &clippedError{msg: shown}
	for _, target := range []error{context.DeadlineExceeded, context.Canceled, ErrBodyTooLarge, engine.ErrUnknownEngine, engine.ErrParseTimeout} {
		if errors.Is(err, target) {
			c.sentinel = target
			break
		}
	}
	return c
}
