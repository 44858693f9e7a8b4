// Package store keeps the last snapshots of every scraped pod and turns them into rates: token velocity
// per pod, with counter resets, staleness and vanished pods handled so that no negative, NaN, Inf or
// made-up zero value ever leaves it. Reads take a read lock only; scrapes happen outside the store.
package store

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tokenscale/tokenscale/velocity/engine"
)

// Errors a read can return; callers map them to "unknown" (never to 0).
var (
	ErrNotFound  = errors.New("pod not tracked")
	ErrWarmingUp = errors.New("warming up: a rate needs two scrapes")
	ErrStale     = errors.New("stale: no successful scrape within the staleness bound")
	// ErrImplausible marks a sample no engine could produce (a rate above the pod's limit, a gauge or
	// counter out of range): that interval is unknown for the pod and its state is left as it was.
	ErrImplausible = errors.New("implausible sample")
)

// Bounds on what a sample may say; beyond them it is a glitch or a hostile page, not an engine.
const (
	// maxCounter is 2^53: above it a float64 no longer counts by one, so token increments vanish and a
	// rate would read as 0.
	maxCounter = 1 << 53
	// maxMeanTokens bounds the learned mean prompt and output lengths (10M tokens, beyond any context).
	maxMeanTokens = 1e7
	// glitchRebase is how many implausible intervals in a row, from one base, make the store take the
	// new level as a reset: a counter that really jumped (and stays) is then followed again.
	glitchRebase = 3
	// maxErrText bounds the text of a scrape error kept per pod: a target's error can be any size.
	maxErrText = 512
	// histSlack is how many latency observations a vLLM interval may count beyond its tokens' worth.
	histSlack = 1000
	// histTolerance is the relative difference the engine package allows between a histogram's +Inf
	// bucket and its _count; a window between two pages may differ by that much at each end.
	histTolerance = 1e-9
)

// requestGauges are the request-count gauges whose jumps checkInterval bounds.
var requestGauges = [...]engine.Field{engine.RequestsWaiting, engine.RequestsRunning}

// runningSeen is RequestsRunning's index in requestGauges (and podState.seen).
const runningSeen = 1

// tokenCounters and latencyHists are the counters and histograms whose growth checkInterval bounds.
var (
	tokenCounters = [...]engine.Field{engine.PromptTokens, engine.GenerationTokens}
	latencyHists  = [...]engine.Field{engine.TTFT, engine.ITL}
)

// pageSeen is the last kept page that had a field, and its time (snap nil: none yet). Once the page is
// no longer the pod's last, previous or anchor page, snap is its Counts (counts says so): the checks read
// only counts and sources, and the page whole kept a pod whose pages each lack a different line at nine
// pages with their buckets (about 450 KB for a hostile one) where three suffice.
type pageSeen struct {
	snap   *engine.Snapshot
	t      time.Time
	counts bool
}

// PodKey names a pod.
type PodKey struct{ Namespace, Name string }

func (k PodKey) String() string { return k.Namespace + "/" + k.Name }

// Options tune rate computation.
type Options struct {
	// StaleAfter: a pod whose last good scrape is older than this is unknown, as is one whose last good
	// scrape is stamped further ahead of the store's clock, or was recorded longer ago by it. Default 5s.
	StaleAfter time.Duration
	// RiseTau and FallTau are the smoothing time constants for rising and falling counter rates (tokens
	// and requests). Both default to 0.5s; the adapter sets a quarter of its scrape interval, under which
	// a burst shows within two scrapes at any phase. Equal constants keep the rate unbiased (a slower fall sat near
	// the top of a noisy rate: +54% on the Azure conv trace in the simulator).
	// Holding capacity through a lull is the policy's scale-down window's job, not the rate's.
	RiseTau, FallTau time.Duration
	// GrowthTau smooths the queues' growth rates, which difference sampled gauges (waiting requests), and
	// LengthTau the learned mean prompt and output lengths, which average the few requests finishing in an
	// interval: both noisier than the counters' rates, so the adapter smooths them twice as long. Both
	// default to 0.5s.
	GrowthTau, LengthTau time.Duration
	// LatencyWindow is the span over which TTFT/ITL histograms are differenced. Default 10s.
	LatencyWindow time.Duration
	// DefaultPromptTokens sizes a queued request until the pod's own mean prompt length is observed.
	// Default 1000.
	DefaultPromptTokens float64
	// DefaultOutputTokens sizes a decoder's queued request until its mean output length is observed.
	// Default 256.
	DefaultOutputTokens float64
	// MaxTokensPerSecond is the absolute cap on a pod's token rate over one interval; a sample implying
	// more is a glitch (ErrImplausible). Default 1e7, about 50x the fastest single engine's prefill.
	// SetRateLimit tightens it per pod from the pool's profile.
	MaxTokensPerSecond float64
	// MaxRequests caps the waiting and running request gauges. Default 1e6.
	MaxRequests float64
}

func (o Options) withDefaults() Options {
	if o.StaleAfter <= 0 {
		o.StaleAfter = 5 * time.Second
	}
	if o.RiseTau <= 0 {
		o.RiseTau = 500 * time.Millisecond
	}
	if o.FallTau <= 0 {
		o.FallTau = 500 * time.Millisecond
	}
	if o.GrowthTau <= 0 {
		o.GrowthTau = 500 * time.Millisecond
	}
	if o.LengthTau <= 0 {
		o.LengthTau = 500 * time.Millisecond
	}
	if o.LatencyWindow <= 0 {
		o.LatencyWindow = 10 * time.Second
	}
	if o.DefaultPromptTokens <= 0 {
		o.DefaultPromptTokens = 1000
	}
	if o.DefaultOutputTokens <= 0 {
		o.DefaultOutputTokens = 256
	}
	if !(o.MaxTokensPerSecond > 0) || o.MaxTokensPerSecond > 1e12 {
		o.MaxTokensPerSecond = 1e7
	}
	if !(o.MaxRequests > 0) || o.MaxRequests > 1e9 {
		o.MaxRequests = 1e6
	}
	return o
}

// Velocity is what the store knows about one pod. Rates are tokens per second, smoothed.
type Velocity struct {
	Pod  PodKey
	Time time.Time // time of the last good scrape
	// Engine and EngineRole come from the page (EngineRole: SGLang's engine_type, or "").
	Engine     engine.Kind
	EngineRole string
	// PrefillTPS is prompt tokens/s processed; ComputedPrefillTPS those the pod prefilled itself (the
	// engine's computed count, else prompt tokens less prefix-cache hits; PrefillTPS where it reports neither).
	PrefillTPS, ComputedPrefillTPS float64
	// DecodeTPS is output tokens/s generated.
	DecodeTPS float64
	// QueueGrowthTPS is the smoothed rate of change of QueuedTokens (negative while the queue drains).
	QueueGrowthTPS float64
	// Waiting and Running are request counts; QueuedTokens = Waiting x MeanPromptTokens.
	Waiting, Running, QueuedTokens, MeanPromptTokens float64
	// MeanOutputTokens is the pod's learned output length per finished request; OwedOutputGrowthTPS is
	// the smoothed rate of change of Waiting x MeanOutputTokens, the output work a decoder's queue owes
	// (a decode queue measured in prompt tokens would be in the wrong unit for decode velocity).
	MeanOutputTokens, OwedOutputGrowthTPS float64
	// RequestTPS is the smoothed rate of requests arriving: finished plus the growth of waiting and
	// running. HasRequestRate says the last interval computed it: false where the engine reports no
	// finished-request counter, or a page lacked it or a request gauge (the rate was frozen at its last
	// value for as long as the line stayed away).
	RequestTPS     float64
	HasRequestRate bool
	// KVUsage is 0..1; HasKV is false when the engine does not report it.
	KVUsage float64
	HasKV   bool
	// WindowPrefillTPS, WindowDecodeTPS and WindowQueueGrowthTPS are plain averages over the latency
	// window (LatencyWindow..2xLatencyWindow): slower than the smoothed rates but far less noisy, what
	// sizing for sustained load wants. WindowOwedOutputGrowthTPS is the decode queue's counterpart.
	// They equal the smoothed rates until the window has two scrapes. WindowComputedPrefillTPS is
	// the window's computed prefill, counted as ComputedPrefillTPS is.
	WindowPrefillTPS, WindowComputedPrefillTPS, WindowDecodeTPS, WindowQueueGrowthTPS, WindowOwedOutputGrowthTPS float64
	// TTFT and ITL hold the histogram increase over the last LatencyWindow..2xLatencyWindow.
	TTFT, ITL engine.Histogram
	// Resets counts counter resets (engine restarts) seen.
	Resets int
}

type podState struct {
	last, prev   *engine.Snapshot
	lastT, prevT time.Time
	// recordedAt is this process's clock (with its monotonic reading) when last was recorded: lastT is
	// the source's stamp, which a source with a clock of its own (Prometheus) can put ahead of this one.
	recordedAt  time.Time
	lastSnapErr error            // last.Err(), worked out once per scrape rather than on every read
	anchor      *engine.Snapshot // start of the latency window
	anchorT     time.Time
	v           Velocity
	rates       int // rate updates so far
	lastErr     error
	lastErrT    time.Time
	// glitch is the last sample's reason to be rejected (nil when it was accepted); glitches counts
	// rejected intervals in a row (a page refused on its own, by checkSnapshot, is not one).
	glitch   error
	glitches int
	// held is shown until the next computed rate: the engine changed, or counters reset twice in a row.
	held     error
	resetRun int   // intervals in a row that were counter resets
	limit    Limit // the pod's own rate limits (0: the absolute cap)
	// seen is each of requestGauges on the last kept page that had it: a page without the line in
	// between must not let the next one's level pass as a jump from nothing.
	seen [len(requestGauges)]pageSeen
	// counterSeen and histSeen are the last kept pages that had each of tokenCounters and latencyHists:
	// a page lacking the line must not let the next one's jump pass unchecked into the window and latency
	// maths, which measure from the anchor.
	counterSeen [len(tokenCounters)]pageSeen
	histSeen    [len(latencyHists)]pageSeen
}

// Store holds per-pod state. It is safe for concurrent use.
type Store struct {
	opts Options
	mu   sync.RWMutex
	pods map[PodKey]*podState
	now  func() time.Time
}

// New returns an empty store. now may be nil (time.Now).
func New(opts Options, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{opts: opts.withDefaults(), pods: map[PodKey]*podState{}, now: now}
}

// Options returns the store's options with defaults applied.
func (s *Store) Options() Options { return s.opts }

// Record adds a successful scrape of pod taken at t. A sample that no engine could produce is not
// kept: the pod reads as ErrImplausible until a sane sample, measured from the last good one, arrives.
func (s *Store) Record(pod PodKey, t time.Time, snap *engine.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.podLocked(pod)
	defer st.compactSeen()
	if st.last != nil && !t.After(st.lastT) {
		return // out of order or duplicate
	}
	if st.last != nil && snap.Engine != st.last.Engine {
		// Rates across two engines' counters mean nothing, and treating the change as a reset would
		// serve the held rate as fresh for as long as the engine keeps changing.
		err := fmt.Errorf("engine changed from %s to %s between scrapes", st.last.Engine, snap.Engine)
		*st = podState{v: Velocity{Pod: pod, Resets: st.v.Resets + 1}, limit: st.limit, held: err}
	}
	if err := s.checkSnapshot(snap); err != nil {
		// A page out of any engine's range says nothing about the level the counters moved to, so it
		// does not count towards taking that level as a reset: only rejected intervals do.
		st.glitch, st.lastErr, st.lastErrT = err, err, t
		return
	}
	err := s.checkInterval(st, t, snap)
	rebase := err != nil && st.glitches+1 >= glitchRebase
	if err != nil && !rebase {
		st.glitch, st.lastErr, st.lastErrT = err, err, t
		st.glitches++
		return
	}
	st.glitch, st.glitches = nil, 0
	st.prev, st.prevT = st.last, st.lastT
	st.last, st.lastT, st.recordedAt = snap, t, s.now()
	for i, f := range requestGauges {
		if _, ok := snap.Scalar(f); ok {
			st.seen[i] = pageSeen{snap: snap, t: t}
		}
	}
	for i, f := range tokenCounters {
		if _, ok := snap.Scalar(f); ok {
			st.counterSeen[i] = pageSeen{snap: snap, t: t}
		}
	}
	for i, f := range latencyHists {
		if _, ok := snap.Hist(f); ok {
			st.histSeen[i] = pageSeen{snap: snap, t: t}
		}
	}
	st.lastSnapErr = snap.Err()
	st.lastErr = nil
	if rebase {
		// The new level persisted: take it as a reset (latency window restarted). No rate is served until
		// the next interval computes one: under a limit the pod really exceeds, every third page rebases,
		// and serving the held rate with this page's time passed a rate from before the jumps as fresh.
		st.v.Resets++
		st.anchor, st.anchorT = snap, t
		st.held = fmt.Errorf("counters moved implausibly on %d scrapes in a row; the new level is taken as a restart: no rate yet", glitchRebase)
		s.gauges(st)
		return
	}
	s.update(st)
}

// compactSeen replaces each page a pageSeen holds that is no longer the last, previous or anchor page
// by its Counts, one copy per page however many fields saw it.
func (st *podState) compactSeen() {
	var done [len(requestGauges) + len(tokenCounters) + len(latencyHists)][2]*engine.Snapshot // page, copy
	n := 0
	compact := func(p *pageSeen) {
		if p.snap == nil || p.counts || p.snap == st.last || p.snap == st.prev || p.snap == st.anchor {
			return
		}
		for _, d := range done[:n] {
			if d[0] == p.snap {
				p.snap, p.counts = d[1], true
				return
			}
		}
		done[n] = [2]*engine.Snapshot{p.snap, p.snap.Counts()}
		p.snap, p.counts = done[n][1], true
		n++
	}
	for i := range st.seen {
		compact(&st.seen[i])
	}
	for i := range st.counterSeen {
		compact(&st.counterSeen[i])
	}
	for i := range st.histSeen {
		compact(&st.histSeen[i])
	}
}

// Limit is the highest rate at which a pod's token counters can plausibly grow (tokens/s), e.g. k times
// its pool's profiled capacity; 0, or a value above the store's cap, leaves the absolute cap.
type Limit struct {
	// Tokens bounds the prompt and the generated tokens.
	Tokens float64
	// Prompt, when > 0, bounds the prompt tokens in Tokens' place: a decoder's prompt counter may count
	// the prompts it receives by KV transfer, which the whole prefill side can send it, far above what
	// the decoder itself computes.
	Prompt float64
}

// SetRateLimit sets how fast pod's token counters can plausibly grow.
func (s *Store) SetRateLimit(pod PodKey, l Limit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.podLocked(pod).limit = l
}

// limitOf is a pod's rate limit for token counter f.
func (s *Store) limitOf(st *podState, f engine.Field) float64 {
	l := st.limit.Tokens
	if f == engine.PromptTokens && st.limit.Prompt > 0 {
		l = st.limit.Prompt
	}
	if l > 0 && l < s.opts.MaxTokensPerSecond {
		return l
	}
	return s.opts.MaxTokensPerSecond
}

// checkSnapshot rejects values out of any engine's range, whatever came before.
func (s *Store) checkSnapshot(snap *engine.Snapshot) error {
	for _, f := range [...]engine.Field{engine.PromptTokens, engine.GenerationTokens, engine.PrefixCacheHits, engine.ComputedPromptTokens, engine.RequestsFinished} {
		if x, ok := snap.Scalar(f); ok && !(x.Value >= 0 && x.Value <= maxCounter) {
			return fmt.Errorf("%w: counter %s is %g, outside 0..2^53 where a float64 still counts", ErrImplausible, f, x.Value)
		}
	}
	for _, f := range [...]engine.Field{engine.RequestsWaiting, engine.RequestsRunning} {
		if x, ok := snap.Scalar(f); ok && !(x.Value >= 0 && x.Value <= s.opts.MaxRequests) {
			return fmt.Errorf("%w: gauge %s is %g, outside 0..%g", ErrImplausible, f, x.Value, s.opts.MaxRequests)
		}
	}
	if x, ok := snap.Scalar(engine.KVCacheUsage); ok && !(x.Value >= 0 && x.Value <= 1.0001) {
		return fmt.Errorf("%w: gauge %s is %g, outside 0..1", ErrImplausible, engine.KVCacheUsage, x.Value)
	}
	for _, f := range [...]engine.Field{engine.TTFT, engine.ITL} {
		h, ok := snap.Hist(f)
		if !ok {
			continue
		}
		if !(h.Count >= 0 && h.Count <= maxCounter) || !(math.Abs(h.Sum) <= math.MaxFloat64) {
			return fmt.Errorf("%w: histogram %s has count %g, sum %g", ErrImplausible, f, h.Count, h.Sum)
		}
		for _, b := range h.Buckets {
			if !(b.Count >= 0 && b.Count <= maxCounter) {
				return fmt.Errorf("%w: histogram %s has a bucket count of %g", ErrImplausible, f, b.Count)
			}
		}
	}
	return nil
}

// checkInterval rejects a sample whose rates since the last good one exceed the pod's limit.
func (s *Store) checkInterval(st *podState, t time.Time, snap *engine.Snapshot) error {
	if st.last == nil {
		return nil
	}
	// Each counter and histogram is measured from the last kept page that had it (the last page, when
	// every page carries the line): a page lacking it does not let the next one's jump pass unchecked.
	for i, f := range tokenCounters {
		a := st.counterSeen[i]
		if a.snap == nil {
			continue
		}
		since := t.Sub(a.t).Seconds()
		if d, ok, _ := delta(a.snap, snap, f); ok && d/since > s.limitOf(st, f) {
			limit := s.limitOf(st, f)
			return fmt.Errorf("%w: %s rose by %g in %s (%.4g/s, above the pod's limit of %g/s)",
				ErrImplausible, f, d, time.Duration(since*float64(time.Second)), d/since, limit)
		}
	}
	// A latency histogram observes at most one value per request (TTFT) or per generated token (ITL); a
	// pod claiming far more would outweigh every other pod in the pool's share of SLO misses. No engine
	// observes more latencies a second than the token cap allows; vLLM counts its tokens when it observes
	// them, so its histograms are held to the interval's tokens too (the slack covers a scrape between two
	// increments). SGLang's token counters move only when a request finishes or its scheduler logs, while
	// its inter-token histogram grows with every streamed chunk, so only the cap applies to it.
	for i, f := range latencyHists {
		seen := st.histSeen[i]
		if seen.snap == nil {
			continue
		}
		a, okA := seen.snap.Hist(f)
		b, okB := snap.Hist(f)
		if !okA || !okB || a.Source != b.Source || a.Series != b.Series {
			continue
		}
		// The tokens are counted over the same span, from the page that had the histogram.
		since := t.Sub(seen.t).Seconds()
		work := 0.0
		for _, c := range tokenCounters {
			if d, ok, _ := delta(seen.snap, snap, c); ok {
				work += d
			}
		}
		histLimit := s.opts.MaxTokensPerSecond * since
		if snap.Engine == engine.VLLM {
			histLimit = min(histLimit, 2*work+histSlack)
		}
		if b.Count-a.Count > histLimit {
			return fmt.Errorf("%w: histogram %s counted %g observations in %s, more than the %g allowed (%g tokens processed)",
				ErrImplausible, f, b.Count-a.Count, time.Duration(since*float64(time.Second)), histLimit, work)
		}
	}
	// Waiting feeds the queue and, with running, the request arrival rate: neither may jump further than
	// the pod could take in tokens. The jump is measured from the last page that had the gauge, so a page
	// lacking the line does not make the next one's level pass unchecked.
	for i, f := range requestGauges {
		seen := st.seen[i]
		if seen.snap == nil {
			continue
		}
		a, _ := seen.snap.Scalar(f)
		b, okB := snap.Scalar(f)
		if !okB {
			continue
		}
		since := t.Sub(seen.t).Seconds()
		growth := math.Abs(b.Value-a.Value) * max(st.v.MeanPromptTokens, st.v.MeanOutputTokens, s.opts.DefaultPromptTokens) / since
		if growth > s.opts.MaxTokensPerSecond {
			return fmt.Errorf("%w: %s went from %g to %g in %s (%.4g queued tokens/s, above %g/s)",
				ErrImplausible, f, a.Value, b.Value, time.Duration(since*float64(time.Second)), growth, s.opts.MaxTokensPerSecond)
		}
	}
	return nil
}

// RecordError notes a failed scrape; the pod keeps its last values until they go stale.
func (s *Store) RecordError(pod PodKey, t time.Time, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.podLocked(pod)
	st.lastErr, st.lastErrT = clipErr(err), t
}

// clippedError keeps a bounded prefix of an error's text (and drops the error, which may hold more).
type clippedError string

func (e clippedError) Error() string { return string(e) }

// clipErr bounds the text kept for err, so a target's huge error message is not held per pod.
func clipErr(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if len(msg) <= maxErrText {
		return err
	}
	return clippedError(strings.ToValidUTF8(msg[:maxErrText], "") + "… (truncated)")
}

// podLocked returns pod's state, creating it; s.mu must be held for writing.
func (s *Store) podLocked(pod PodKey) *podState {
	st := s.pods[pod]
	if st == nil {
		st = &podState{v: Velocity{Pod: pod}}
		s.pods[pod] = st
	}
	return st
}

// Remove forgets a pod at once (deleted, not Ready, or no longer in any pool).
func (s *Store) Remove(pod PodKey) {
	s.mu.Lock()
	delete(s.pods, pod)
	s.mu.Unlock()
}

// Retain removes every pod for which keep returns false.
func (s *Store) Retain(keep func(PodKey) bool) {
	s.mu.Lock()
	for k := range s.pods {
		if !keep(k) {
			delete(s.pods, k)
		}
	}
	s.mu.Unlock()
}

// Len returns the number of tracked pods.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.pods)
}

// Get returns a pod's velocity, or an error saying why it is unknown.
func (s *Store) Get(pod PodKey) (Velocity, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.pods[pod]
	if st == nil {
		return Velocity{Pod: pod}, fmt.Errorf("%s: %w", pod, ErrNotFound)
	}
	return st.v, s.state(st)
}

// Each calls fn with each pod's velocity, or why it is unknown, in the order of keys, under one read
// lock: a selector over a large pool reads hundreds of pods per request, and taking the lock per pod
// queues the request behind every scrape recorded meanwhile. fn must not keep v or call the store.
func (s *Store) Each(keys []PodKey, fn func(v *Velocity, err error)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, k := range keys {
		st := s.pods[k]
		if st == nil {
			fn(&Velocity{Pod: k}, fmt.Errorf("%s: %w", k, ErrNotFound))
			continue
		}
		fn(&st.v, s.state(st))
	}
}

// Result is one pod's velocity or the reason it is unknown.
type Result struct {
	Velocity
	Err error
}

// List returns every tracked pod that match accepts (nil: all), sorted by key.
func (s *Store) List(match func(PodKey) bool) []Result {
	s.mu.RLock()
	out := make([]Result, 0, len(s.pods))
	for k, st := range s.pods {
		if match != nil && !match(k) {
			continue
		}
		out = append(out, Result{Velocity: st.v, Err: s.state(st)})
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pod.Namespace != out[j].Pod.Namespace {
			return out[i].Pod.Namespace < out[j].Pod.Namespace
		}
		return out[i].Pod.Name < out[j].Pod.Name
	})
	return out
}

// state says whether a pod's values are usable now.
func (s *Store) state(st *podState) error {
	pod := st.v.Pod
	if st.last == nil {
		if st.held != nil {
			return fmt.Errorf("%s: %w", pod, st.held)
		}
		if st.lastErr != nil {
			return fmt.Errorf("%s: scrape failed: %w", pod, st.lastErr)
		}
		return fmt.Errorf("%s: %w", pod, ErrWarmingUp)
	}
	stale := func(why string) error {
		if st.lastErr != nil {
			return fmt.Errorf("%s: %w (%s; last error: %w)", pod, ErrStale, why, st.lastErr)
		}
		return fmt.Errorf("%s: %w (%s)", pod, ErrStale, why)
	}
	now := s.now()
	switch age := now.Sub(st.lastT); {
	case age > s.opts.StaleAfter:
		return stale(fmt.Sprintf("last good scrape %s ago", age.Round(time.Millisecond)))
	case age < -s.opts.StaleAfter:
		// A page stamped ahead of this clock (this clock stepped back, or the source's is ahead) would
		// read as fresh, frozen, until this clock caught up with its stamp.
		return stale(fmt.Sprintf("last good scrape stamped %s ahead of this clock: the clocks of the source and this process differ", (-age).Round(time.Millisecond)))
	case now.Sub(st.recordedAt) > s.opts.StaleAfter:
		// The same by this process's own clock, which a step of the wall clock does not move: a page
		// stamped a little ahead goes stale when no newer one has come for the bound.
		return stale(fmt.Sprintf("no newer page recorded for %s by this process's clock", now.Sub(st.recordedAt).Round(time.Millisecond)))
	}
	if st.glitch != nil {
		return fmt.Errorf("%s: %w", pod, st.glitch)
	}
	// What the last page itself lacks says more than why the interval before it has no rate.
	if err := st.lastSnapErr; err != nil {
		return fmt.Errorf("%s: %w", pod, err)
	}
	if st.held != nil {
		return fmt.Errorf("%s: %w", pod, st.held)
	}
	if st.rates == 0 {
		return fmt.Errorf("%s: %w", pod, ErrWarmingUp)
	}
	return nil
}

// gauges copies the latest snapshot's gauges into the pod's velocity.
func (s *Store) gauges(st *podState) {
	cur := st.last
	v := &st.v
	v.Time, v.Engine, v.EngineRole = st.lastT, cur.Engine, cur.EngineRole
	gauge := func(f engine.Field) (float64, bool) {
		x, ok := cur.Scalar(f)
		return x.Value, ok
	}
	v.Waiting, _ = gauge(engine.RequestsWaiting)
	v.Running, _ = gauge(engine.RequestsRunning)
	v.KVUsage, v.HasKV = gauge(engine.KVCacheUsage)
	if v.MeanPromptTokens == 0 {
		v.MeanPromptTokens = s.opts.DefaultPromptTokens
	}
	if v.MeanOutputTokens == 0 {
		v.MeanOutputTokens = s.opts.DefaultOutputTokens
	}
	v.QueuedTokens = v.Waiting * v.MeanPromptTokens
}

// update recomputes a pod's velocity after a new snapshot.
func (s *Store) update(st *podState) {
	cur := st.last
	v := &st.v
	// The fast queue growth is the derivative of the queued-token estimate (waiting × learned mean prompt),
	// so it integrates to the estimate's change: when longer prompts than the mean are queued, learning
	// them shows as growth. One mean for both ends (as the window does) was measured in the simulator and
	// made the policy dearer at equal attainment (ServeGen 7.49 → 7.88 GPU-h, code 4× 4.20 → 4.58): the
	// estimate's rise is early evidence of the longer work queued (docs/metrics.md).
	prevQueued := v.QueuedTokens
	s.gauges(st)
	// Owed output takes one length for both ends: decode sizing counts it as arrivals of tokens owed.
	meanOut := v.MeanOutputTokens
	if st.prev == nil {
		st.anchor, st.anchorT = cur, st.lastT
		return
	}
	gap := st.lastT.Sub(st.prevT)
	dt := gap.Seconds()
	if gap > s.opts.StaleAfter {
		// The pod was unknown between its two pages (its scrapes failing, or the source holding an old
		// sample): a rate over the gap is its average, not the rate now, and smoothed over so long an
		// interval it would replace the current rate at once. The smoothed rates start again from the next
		// interval's, as a new pod's do (those from before the gap are as old as it), and the latency
		// window restarts here.
		st.anchor, st.anchorT = cur, st.lastT
		st.rates = 0
		st.held = fmt.Errorf("no rate for the last interval: it spans %s since the pod's previous good page, past the %s after which a pod is unknown",
			gap.Round(time.Millisecond), s.opts.StaleAfter)
		return
	}
	prompt, okP, resetP := delta(st.prev, cur, engine.PromptTokens)
	gen, okG, resetG := delta(st.prev, cur, engine.GenerationTokens)
	done, okD, _ := delta(st.prev, cur, engine.RequestsFinished)
	if resetP || resetG {
		// An engine restart: the interval's work is unknown, so the smoothed rates are held, not
		// fed a negative or a spike, and the latency window restarts.
		v.Resets++
		st.anchor, st.anchorT = cur, st.lastT
		st.resetRun++
		if st.resetRun >= 2 {
			// Held once is a restart; held again and again would serve an old rate as fresh.
			st.held = fmt.Errorf("counters reset on %d scrapes in a row: no rate", st.resetRun)
		}
		return
	}
	st.resetRun = 0
	if seriesChanged(st.prev, cur, engine.PromptTokens) || seriesChanged(st.prev, cur, engine.GenerationTokens) {
		// The work is unknown, not negative or a spike; the latency window restarts from the new set, as
		// measuring across the change would count it.
		st.anchor, st.anchorT = cur, st.lastT
		st.held = errors.New("no rate for the last interval: the series summed for a token counter changed between scrapes")
		return
	}
	if !okP || !okG {
		// The previous or this scrape lacked a token counter (an error page, a page cut short): the
		// interval's rate is unknown, and the last rate stamped with this scrape's time would pass for fresh.
		st.held = errors.New("no rate for the last interval: a scrape lacked a token counter")
		return
	}
	// A gauge's change is known only when both pages have it: a missing line read as 0 made a queue of
	// 100 vanish and come back as growth and arrivals that never happened. Running is optional, so an
	// engine without it at either end adds no change; waiting is required.
	w0, okW0 := st.prev.Scalar(engine.RequestsWaiting)
	w1, okW1 := cur.Scalar(engine.RequestsWaiting)
	r0, okR0 := st.prev.Scalar(engine.RequestsRunning)
	r1, okR1 := cur.Scalar(engine.RequestsRunning)
	// Running missing at both ends means "no gauge" only on a pod that has never shown it: one whose
	// line went missing for two pages in a row has an unknown change, not 0.
	// A summed gauge whose series came or went between the pages (one data-parallel engine's line missing)
	// changed by what that series held, not by requests arriving or leaving: its change is unknown.
	okW := okW0 && okW1 && sameSeries(w0, w1)
	okR := (okR0 && okR1 && sameSeries(r0, r1)) || (!okR0 && !okR1 && st.seen[runningSeen].snap == nil)
	dWaiting, dRunning := w1.Value-w0.Value, r1.Value-r0.Value
	first := st.rates == 0
	if first && (!okW || (okD && !okR)) {
		// Later intervals hold what they cannot compute; the first has nothing to hold but zeros.
		st.held = errors.New("no rate for the last interval: a scrape lacked a request gauge")
		return
	}
	// Each request finishing in the interval computed or generated a token in it, so a finished counter
	// rising faster than the token counters is wrong, and such an interval teaches no length: one page
	// whose count jumped by 10^6 dragged a learned prompt of 2,000 tokens to about 270.
	learn := okD && done >= 1 && done <= prompt+gen
	if learn && prompt > 0 {
		// Learn the pod's mean prompt length (prefill pods finish a request per prefill).
		v.MeanPromptTokens = min(maxMeanTokens, smooth(v.MeanPromptTokens, prompt/done, dt, s.opts.LengthTau, s.opts.LengthTau))
	}
	if learn && gen > 0 {
		v.MeanOutputTokens = min(maxMeanTokens, smooth(v.MeanOutputTokens, gen/done, dt, s.opts.LengthTau, s.opts.LengthTau))
	}
	computed := computedPrompt(st.prev, cur, prompt)
	v.PrefillTPS = s.rate(first, v.PrefillTPS, prompt/dt, dt)
	v.ComputedPrefillTPS = s.rate(first, v.ComputedPrefillTPS, computed/dt, dt)
	v.DecodeTPS = s.rate(first, v.DecodeTPS, gen/dt, dt)
	v.HasRequestRate = okD && okW && okR
	if v.HasRequestRate {
		// Every request that arrived since the last scrape has finished or is still waiting or running. A
		// finished counter rising faster than the token counters is clipped to them here (see learn
		// above; it is no plausibility check's).
		done = min(done, prompt+gen)
		v.RequestTPS = s.rate(first, v.RequestTPS, math.Max(0, done+dWaiting+dRunning)/dt, dt)
	}
	if okW {
		growth := (v.QueuedTokens - prevQueued) / dt
		owed := dWaiting * meanOut / dt
		if first {
			v.QueueGrowthTPS = growth
			v.OwedOutputGrowthTPS = owed
		} else {
			v.OwedOutputGrowthTPS = smooth(v.OwedOutputGrowthTPS, owed, dt, s.opts.GrowthTau, s.opts.GrowthTau)
			// Queue growth is signed; it follows rises and falls alike quickly so a burst shows at once.
			v.QueueGrowthTPS = smooth(v.QueueGrowthTPS, growth, dt, s.opts.GrowthTau, s.opts.GrowthTau)
		}
	}
	st.rates++
	st.held = nil

	s.window(st, meanOut)
	// Latency histograms over a window of LatencyWindow..2xLatencyWindow.
	v.TTFT = histDelta(st.anchor, cur, engine.TTFT)
	v.ITL = histDelta(st.anchor, cur, engine.ITL)
	if st.lastT.Sub(st.anchorT) >= s.opts.LatencyWindow {
		st.anchor, st.anchorT = st.prev, st.prevT
	}
}

// computedPrompt is how many of an interval's prompt tokens the pod prefilled itself: the engine's own
// count where it gives one (tokens loaded from a KV offload tier or a transfer are no prefix-cache hits,
// so prompt less hits counted them as computed), else prompt tokens less prefix-cache hits; never more
// than the prompt tokens.
func computedPrompt(from, to *engine.Snapshot, prompt float64) float64 {
	if c, ok, _ := delta(from, to, engine.ComputedPromptTokens); ok {
		// A scrape between the engine's two increments can put the computed count a step ahead of the
		// prompt count; capped, it stays this definition rather than switching for one interval.
		return min(c, prompt)
	}
	if hits, ok, _ := delta(from, to, engine.PrefixCacheHits); ok && hits <= prompt {
		return prompt - hits
	}
	return prompt
}

// window sets the window averages from the latency window's anchor to the latest snapshot.
func (s *Store) window(st *podState, meanOut float64) {
	v := &st.v
	v.WindowPrefillTPS, v.WindowComputedPrefillTPS, v.WindowDecodeTPS = v.PrefillTPS, v.ComputedPrefillTPS, v.DecodeTPS
	v.WindowQueueGrowthTPS, v.WindowOwedOutputGrowthTPS = v.QueueGrowthTPS, v.OwedOutputGrowthTPS
	dt := st.lastT.Sub(st.anchorT).Seconds()
	if st.anchor == nil || st.anchor == st.last || dt <= 0 {
		return
	}
	prompt, okP, resetP := delta(st.anchor, st.last, engine.PromptTokens)
	gen, okG, resetG := delta(st.anchor, st.last, engine.GenerationTokens)
	if !okP || !okG || resetP || resetG {
		return
	}
	v.WindowPrefillTPS, v.WindowComputedPrefillTPS, v.WindowDecodeTPS = prompt/dt, computedPrompt(st.anchor, st.last, prompt)/dt, gen/dt
	// Without the waiting gauge at both ends the window's queue change is unknown: the smoothed values stand.
	w0, ok0 := st.anchor.Scalar(engine.RequestsWaiting)
	w1, ok1 := st.last.Scalar(engine.RequestsWaiting)
	if ok0 && ok1 && sameSeries(w0, w1) {
		v.WindowQueueGrowthTPS = (w1.Value - w0.Value) * v.MeanPromptTokens / dt
		v.WindowOwedOutputGrowthTPS = (w1.Value - w0.Value) * meanOut / dt
	}
}

// rate smooths a new non-negative observation into the old value.
func (s *Store) rate(first bool, old, obs, dt float64) float64 {
	if math.IsNaN(obs) || math.IsInf(obs, 0) || obs < 0 {
		return old
	}
	if first {
		return obs
	}
	return smooth(old, obs, dt, s.opts.RiseTau, s.opts.FallTau)
}

// smooth is an exponentially weighted average with separate time constants for rising and falling.
func smooth(old, obs, dt float64, rise, fall time.Duration) float64 {
	tau := rise.Seconds()
	if obs < old {
		tau = fall.Seconds()
	}
	a := 1 - math.Exp(-dt/tau)
	return old + a*(obs-old)
}

// delta returns cur-prev of a counter; reset is true when it went down or changed source.
func delta(prev, cur *engine.Snapshot, f engine.Field) (d float64, ok, reset bool) {
	a, okA := prev.Scalar(f)
	b, okB := cur.Scalar(f)
	if !okA || !okB {
		return 0, false, false
	}
	if a.Series != b.Series && a.Source == b.Source {
		// A summed series came or went (a data-parallel engine's line missing from one page): the totals
		// count different things, so the interval's work is unknown, and no restart either.
		return 0, false, false
	}
	if a.Source != b.Source || b.Value < a.Value {
		return 0, false, true
	}
	return b.Value - a.Value, true, false
}

// sameSeries reports whether two pages' values of a field are read from the same metric over the same
// series, so that their difference is a change of what they count.
func sameSeries(a, b engine.Scalar) bool { return a.Source == b.Source && a.Series == b.Series }

// seriesChanged reports whether a counter is on both pages, read from the same metric, but summed over
// different series.
func seriesChanged(prev, cur *engine.Snapshot, f engine.Field) bool {
	a, okA := prev.Scalar(f)
	b, okB := cur.Scalar(f)
	return okA && okB && a.Source == b.Source && a.Series != b.Series
}

// histDelta returns the increase of a histogram between two snapshots; not OK on reset or absence.
func histDelta(prev, cur *engine.Snapshot, f engine.Field) engine.Histogram {
	if prev == nil {
		return engine.Histogram{}
	}
	a, okA := prev.Hist(f)
	b, okB := cur.Hist(f)
	if !okA || !okB || a.Source != b.Source || a.Series != b.Series || b.Count < a.Count || len(a.Buckets) != len(b.Buckets) {
		return engine.Histogram{}
	}
	out := engine.Histogram{Sum: b.Sum - a.Sum, Count: b.Count - a.Count, HasSum: a.HasSum && b.HasSum, Source: b.Source, OK: true}
	if out.HasSum && !(out.Sum >= 0 && out.Sum <= math.MaxFloat64) {
		// Durations only add up: a sum that fell (or overflowed) means the two pages are not one series.
		return engine.Histogram{}
	}
	if !out.HasSum {
		out.Sum = 0 // a page without _sum, or with it on some engines only, gives no window sum (not a negative one)
	}
	out.Buckets = make([]engine.Bucket, len(b.Buckets))
	for i := range b.Buckets {
		if a.Buckets[i].UpperBound != b.Buckets[i].UpperBound || b.Buckets[i].Count < a.Buckets[i].Count {
			return engine.Histogram{}
		}
		out.Buckets[i] = engine.Bucket{UpperBound: b.Buckets[i].UpperBound, Count: b.Buckets[i].Count - a.Buckets[i].Count}
	}
	// Each page's buckets are cumulative and within its count, but a window between two pages need not be
	// (a lower bucket that grew more than the one above it): a window bucket below the one before it or
	// above the window's count made FractionAbove negative, clamped to 0 (misses hidden), and a +Inf
	// bucket below the count left observations in no bucket (read as misses). Differences within the
	// pages' rounding are evened out, so the window served is exactly cumulative and within its count.
	tol := histTolerance * (a.Count + b.Count)
	for i := range out.Buckets {
		c, lo := out.Buckets[i].Count, 0.0
		if i > 0 {
			lo = out.Buckets[i-1].Count
		}
		if c > out.Count+tol || c < lo-tol {
			return engine.Histogram{}
		}
		out.Buckets[i].Count = min(max(c, lo), out.Count)
	}
	if n := len(out.Buckets); n > 0 && math.IsInf(out.Buckets[n-1].UpperBound, 1) {
		if out.Buckets[n-1].Count < out.Count-tol {
			return engine.Histogram{}
		}
		out.Buckets[n-1].Count = out.Count
	}
	return out
}

// FractionAbove estimates the share of a histogram's observations above x (linear within a bucket).
// ok is false when the histogram is empty or has no finite bound.
func FractionAbove(h engine.Histogram, x float64) (frac float64, ok bool) {
	f, ok := fractionAbove(h, x)
	if !ok {
		return 0, false
	}
	return math.Max(0, math.Min(1, f)), true
}

// fractionAbove is FractionAbove before the result is held to 0..1, which only rounding may leave for a
// window the store serves (FuzzPageSequence checks it).
func fractionAbove(h engine.Histogram, x float64) (frac float64, ok bool) {
	if !h.OK || h.Count <= 0 || len(h.Buckets) == 0 {
		return 0, false
	}
	if !slices.ContainsFunc(h.Buckets, func(b engine.Bucket) bool { return !math.IsInf(b.UpperBound, 0) }) {
		// A +Inf bucket alone says nothing about where the observations lie; reading all as above x
		// made every one an SLO miss.
		return 0, false
	}
	below := 0.0
	lower, lowerCount := 0.0, 0.0
	for _, b := range h.Buckets {
		if x < b.UpperBound {
			// Interpolation needs two finite bounds: a page's le="-Inf" bucket below a finite one made it
			// Inf/Inf, a NaN that switched off the pool's latency checks.
			if !math.IsInf(b.UpperBound, 0) && !math.IsInf(lower, 0) && b.UpperBound > lower {
				below = lowerCount + (b.Count-lowerCount)*(x-lower)/(b.UpperBound-lower)
			} else {
				below = lowerCount
			}
			break
		}
		lower, lowerCount = b.UpperBound, b.Count
		below = b.Count
	}
	f := 1 - below/h.Count
	if math.IsNaN(f) {
		return 0, false
	}
	return f, true
}
