// Package cluster simulates a disaggregated LLM serving cluster (prefill instances, KV transfer, decode
// instances, cold starts, drains and convertible decoders) replaying a request trace under an
// autoscaler, and measures every request's TTFT and TPOT against TokenScale's SLOs.
//
// It is an event simulation in float64 seconds. It has no randomness, so a run is a pure function of
// the trace (whose sampling takes the seed), the config and the autoscaler.
package cluster

import (
	"container/heap"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/tokenscale/tokenscale/sim/trace"
)

// Target is what an autoscaler asks for: spec replicas per pool and decoders taking prefill work.
type Target struct {
	Prefill, Decode, Conversions int
}

// View is what an autoscaler sees at one tick: the Ready instances' metrics (what a scraper of their
// /metrics would read), replica counts, and router-side arrival counters.
type View struct {
	Now time.Duration
	// Prefill and Decode hold Ready, not draining, instances in a stable order.
	Prefill, Decode []InstanceStats
	// PrefillReplicas and DecodeReplicas are spec replicas: Ready plus starting, not draining.
	PrefillReplicas, DecodeReplicas int
	// Arrived counts requests and their tokens at the router since the start.
	ArrivedRequests, ArrivedPromptTokens, ArrivedOutputTokens float64
	Hardware                                                  *Hardware
}

// Autoscaler decides replicas. The cluster calls Decide every Interval and applies the Target at once;
// any HPA-like delay is the autoscaler's own.
type Autoscaler interface {
	Interval() time.Duration
	Decide(v *View) Target
}

// ReadyTimer is an Autoscaler whose new instances take their own time to become Ready (BlitzScale's
// live scaling loads weights from a running peer in seconds); the config's ColdStart applies otherwise.
type ReadyTimer interface {
	ReadyAfter() time.Duration
}

// Config sets up a run.
type Config struct {
	Hardware Hardware
	// ColdStart is how long a new instance takes to be Ready (model load). Default 60s.
	ColdStart time.Duration
	// RouterDelay is how long a conversion takes to reach the router. Default 1s.
	RouterDelay time.Duration
	// MinFlipInterval is the converter agent's --min-flip-interval: a decoder converted or released within
	// it is not converted again (the agent would refuse it as too soon; releasing is never delayed).
	// Default 30s, the agent's; negative: no minimum.
	MinFlipInterval time.Duration
	// ConvertChunkTokens caps the prefill tokens a converted decoder adds to one step; ConvertStepBudget
	// caps that step's duration (TokenScale's SLO-aware restricted chunked prefill). Defaults 512 and 50ms.
	ConvertChunkTokens int
	ConvertStepBudget  time.Duration
	// ConvertSwitch converts decoders as the converter's sglang actuator does (SGLang's pd_role_switch):
	// only an idle decoder switches (nothing running, waiting or on its way to it), it then prefills as a
	// prefiller does and sends the KV to another decoder, decoding nothing, and a released one finishes
	// the prompts it took before it decodes again. The chunk settings above then play no part.
	ConvertSwitch bool
	// InitialPrefill and InitialDecode instances are Ready at time 0. Default 1 each.
	InitialPrefill, InitialDecode int
	// MaxPrefill and MaxDecode cap spec replicas. Default 64 each.
	MaxPrefill, MaxDecode int
	// SampleEvery is the time-series resolution. Default 10s.
	SampleEvery time.Duration
	// DrainLimit bounds the run after the last arrival; requests unfinished by then miss. Default 10m.
	DrainLimit time.Duration
	// ScoreFrom starts the scored window: requests arriving earlier are replayed (they warm the cluster
	// and the autoscaler up) but not scored, and GPU time before it is not counted. Default 0.
	ScoreFrom time.Duration
	// Progress, when set, is called with the fraction of the trace replayed.
	Progress func(frac float64)
	// Outcomes keeps each scored request's outcome in the result (Result.Outcomes); off, a sweep's
	// hundreds of runs do not each hold a list only the hindsight reference reads.
	Outcomes bool
	// MergeSteps is the longest run of decode steps simulated as one event while a decoder's batch does
	// not change (no admission, no finish, no prefill chunk): the steps' durations and histogram
	// observations are those of single steps, and a request arriving in the run cuts it at the step in
	// progress. It makes a simulated day of decoding about a hundred times cheaper. Default 250ms;
	// negative: one event per step.
	MergeSteps time.Duration
}

func (c *Config) defaults() error {
	if err := c.Hardware.Validate(); err != nil {
		return fmt.Errorf("hardware: %w", err)
	}
	setD := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	setD(&c.ColdStart, 60*time.Second)
	setD(&c.RouterDelay, time.Second)
	setD(&c.MinFlipInterval, 30*time.Second)
	setD(&c.ConvertStepBudget, 50*time.Millisecond)
	setD(&c.SampleEvery, 10*time.Second)
	setD(&c.DrainLimit, 10*time.Minute)
	setD(&c.MergeSteps, 250*time.Millisecond)
	setI := func(p *int, def int) {
		if *p == 0 {
			*p = def
		}
	}
	setI(&c.ConvertChunkTokens, 512)
	setI(&c.InitialPrefill, 1)
	setI(&c.InitialDecode, 1)
	setI(&c.MaxPrefill, 64)
	setI(&c.MaxDecode, 64)
	if c.MergeSteps < 0 {
		c.MergeSteps = 0
	}
	if c.MinFlipInterval < 0 {
		c.MinFlipInterval = 0
	}
	if c.ColdStart < 0 || c.ScoreFrom < 0 || c.RouterDelay < 0 || c.ConvertStepBudget < 0 || c.SampleEvery < 0 || c.DrainLimit < 0 {
		return errors.New("durations must not be negative")
	}
	if c.InitialPrefill < 1 || c.InitialDecode < 1 || c.MaxPrefill < c.InitialPrefill || c.MaxDecode < c.InitialDecode || c.ConvertChunkTokens < 1 {
		return errors.New("need 1 <= initial <= max replicas per pool and convertChunkTokens >= 1")
	}
	return nil
}

type role int

const (
	rolePrefill role = iota
	roleDecode
)

type request struct {
	idx        int
	arrival    float64
	in, out    int
	remaining  int       // prompt tokens left to compute, once its prefill has started
	started    bool      // its prefill has started: its cache hits are known
	firstToken float64   // -1 until the first token
	dest       *instance // the decoder its KV is on its way to
	gen        int       // output tokens generated before its current admission (after a preemption)
	blocks     []uint64  // prompt block hashes, when the trace has them
	cached     int       // prompt tokens its prefill found in the prefix cache of the instance that ran it
	admitStep  int64
	finishStep int64
	// When its prefill finished, its KV landed on a decoder and it first joined a decoder's batch (0:
	// not yet), for the report's breakdown of missed first tokens.
	prefilled, landed, admitted float64
}

type instance struct {
	id       int
	name     string
	role     role
	created  float64
	readyAt  float64
	ready    bool
	draining bool
	gone     bool
	dueSeq   int // the sequence number of the instance's latest queued event

	// cache holds the prompt blocks whose KV the instance has: a prefiller's computed prompts; a
	// decoder's received and (converted) computed ones, as vLLM's prefix cache covers every KV block.
	cache *prefixCache
	// Prefill: FCFS engine steps of up to PrefillBatchTokens prompt tokens (vLLM's chunked prefill),
	// skipping the blocks its prefix cache holds. The step in flight covers the first len(takes) queued
	// prompts, takes[i] tokens of each (stepTokens in all), and ends at busyUntil.
	queue      []*request
	qTokens    float64 // prompt tokens queued or in service, less those computed or found cached
	takes      []int
	stepTokens int
	busyUntil  float64
	// fullBatch: the decode step in flight started with requests left waiting by a full batch.
	fullBatch bool
	// linkFree is when the instance's KV link is next free: a prefiller's for sending, a decoder's for
	// receiving.
	linkFree float64
	// incoming is the KV (prompt tokens) of transfers on their way to this decoder, incomingN their count.
	incoming  float64
	incomingN int

	// Decode: continuous batching.
	waiting  []*request
	batch    finishHeap
	step     int64
	stepping bool
	stepEnd  float64
	// The steps in flight: stepN steps from stepStart, the first taking stepDur and each next one
	// stepSlope longer (the context grows by the batch each step).
	stepStart float64
	stepDur   float64
	stepSlope float64
	stepN     int64
	sumIn     float64
	sumAdmit  float64
	newly     []*request

	// Convertible decoder: a local prefill queue served in capped chunks inside decode steps.
	converted   bool
	convertFrom float64 // the router sends prefill work from this time
	// flippedAt is when the instance was last converted or released (flipped says it has been).
	flippedAt float64
	flipped   bool
	// switched: converted in ConvertSwitch mode, or released and still finishing its prompts; it runs
	// prefill engine steps on queue as a prefiller does.
	switched bool
	pq       []*request
	pqTokens float64
	chunk    int

	stats InstanceStats
}

type finishHeap []*request

func (h finishHeap) Len() int           { return len(h) }
func (h finishHeap) Less(i, j int) bool { return h[i].finishStep < h[j].finishStep }
func (h finishHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *finishHeap) Push(x any)        { *h = append(*h, x.(*request)) }
func (h *finishHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// due is an instance's self-driven event in the event queue; it is stale once the instance has queued a
// later one (seq) or its next event has moved.
type due struct {
	at  float64
	in  *instance
	seq int
}

type transfer struct {
	at  float64
	req *request
}

// queue is a binary min-heap; unlike container/heap it does not box each element in an interface,
// which cost a quarter of a multi-day simulation's time in allocations.
type queue[T any] struct {
	items []T
	less  func(a, b T) bool
}

func (q *queue[T]) push(x T) {
	q.items = append(q.items, x)
	for i := len(q.items) - 1; i > 0; {
		p := (i - 1) / 2
		if !q.less(q.items[i], q.items[p]) {
			break
		}
		q.items[i], q.items[p] = q.items[p], q.items[i]
		i = p
	}
}

func (q *queue[T]) pop() T {
	top := q.items[0]
	n := len(q.items) - 1
	q.items[0] = q.items[n]
	var zero T
	q.items[n] = zero
	q.items = q.items[:n]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < n && q.less(q.items[l], q.items[m]) {
			m = l
		}
		if r := l + 1; r < n && q.less(q.items[r], q.items[m]) {
			m = r
		}
		if m == i {
			break
		}
		q.items[i], q.items[m] = q.items[m], q.items[i]
		i = m
	}
	return top
}

// dueFirst orders events by time, then by instance creation, as a scan of the instances would.
func dueFirst(a, b due) bool { return a.at < b.at || a.at == b.at && a.in.id < b.in.id }

type sim struct {
	cfg     Config
	hw      *Hardware
	now     float64
	insts   []*instance
	nextID  int
	xfers   queue[transfer]
	dues    queue[due]
	pendP   []*request // arrivals with no prefill capacity yet
	pendD   []*request // prefilled requests with no decoder yet
	res     *Result
	reqs    []request
	arrived [3]float64
	// GPU-seconds integration.
	lastT     float64
	allocated int
	convSecs  float64
	converted int
}

// Run replays reqs through a cluster under a. It returns an error only for a bad config.
func Run(cfg Config, reqs []trace.Request, a Autoscaler) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if a == nil || a.Interval() <= 0 {
		return nil, errors.New("autoscaler with a positive interval is required")
	}
	if rt, ok := a.(ReadyTimer); ok && rt.ReadyAfter() > 0 {
		cfg.ColdStart = rt.ReadyAfter()
	}
	s := &sim{cfg: cfg, hw: &cfg.Hardware, res: newResult(len(reqs))}
	s.dues.less = dueFirst
	s.xfers.less = func(a, b transfer) bool { return a.at < b.at }
	s.reqs = make([]request, len(reqs))
	for i, r := range reqs {
		s.reqs[i] = request{idx: i, arrival: r.Arrival.Seconds(), in: max(r.PromptTokens, 1), out: max(r.OutputTokens, 1), firstToken: -1, blocks: r.Blocks}
	}
	for range cfg.InitialPrefill {
		s.add(rolePrefill, true)
	}
	for range cfg.InitialDecode {
		s.add(roleDecode, true)
	}
	s.loop(a)
	return s.res, nil
}

func (s *sim) add(r role, ready bool) *instance {
	in := &instance{id: s.nextID, role: r, created: s.now, readyAt: s.now + s.cfg.ColdStart.Seconds(), ready: ready,
		cache: newPrefixCache(s.hw.KVCapacityTokens)}
	prefix := "prefill"
	if r == roleDecode {
		prefix = "decode"
	}
	in.name = fmt.Sprintf("%s-%d", prefix, in.id)
	in.stats = InstanceStats{Name: in.name, TTFT: newHistogram(TTFTBounds), ITL: newHistogram(ITLBounds)}
	s.nextID++
	s.account()
	s.allocated++
	s.insts = append(s.insts, in)
	s.schedule(in)
	return in
}

// schedule queues the instance's next self-driven event; call it whenever that time is set.
func (s *sim) schedule(in *instance) {
	if at := in.nextEvent(); !math.IsInf(at, 1) {
		in.dueSeq++
		s.dues.push(due{at: at, in: in, seq: in.dueSeq})
	}
}

// nextDue is the earliest live instance event, dropping stale ones.
func (s *sim) nextDue() (float64, *instance) {
	for len(s.dues.items) > 0 {
		d := s.dues.items[0]
		if d.seq == d.in.dueSeq && d.at == d.in.nextEvent() {
			return d.at, d.in
		}
		s.dues.pop()
	}
	return math.Inf(1), nil
}

// account integrates allocated GPUs and converted decoders up to now, from the scored window's start.
func (s *sim) account() {
	dt := s.now - math.Max(s.lastT, s.cfg.ScoreFrom.Seconds())
	if dt > 0 {
		s.res.GPUSeconds += dt * float64(s.allocated*s.hw.GPUsPerInstance)
		s.convSecs += dt * float64(s.converted)
	}
	s.lastT = s.now
}

func (s *sim) loop(a Autoscaler) {
	interval := a.Interval().Seconds()
	sample := s.cfg.SampleEvery.Seconds()
	nextTick, nextSample := 0.0, 0.0
	next := 0 // next arrival
	lastArrival := 0.0
	if len(s.reqs) > 0 {
		lastArrival = s.reqs[len(s.reqs)-1].arrival
	}
	deadline := lastArrival + s.cfg.DrainLimit.Seconds()
	progressEvery, nextProgress := max(lastArrival/100, 1), 0.0
	for {
		t := math.Inf(1)
		if next < len(s.reqs) {
			t = s.reqs[next].arrival
		}
		t = math.Min(t, nextTick)
		t = math.Min(t, nextSample)
		if len(s.xfers.items) > 0 {
			t = math.Min(t, s.xfers.items[0].at)
		}
		// Instance events go after arrivals, transfers and ticks due at the same time.
		var ev *instance
		if it, in := s.nextDue(); it < t {
			t, ev = it, in
			s.dues.pop()
		}
		if next >= len(s.reqs) && s.res.done == len(s.reqs) || t > deadline {
			s.now = math.Min(math.Max(t, s.now), deadline)
			break
		}
		s.now = t
		s.res.events++
		switch {
		case ev != nil:
			s.handle(ev)
		case len(s.xfers.items) > 0 && s.xfers.items[0].at == t:
			s.landed(s.xfers.pop().req)
		case next < len(s.reqs) && s.reqs[next].arrival == t:
			r := &s.reqs[next]
			next++
			s.arrived[0]++
			s.arrived[1] += float64(r.in)
			s.arrived[2] += float64(r.out)
			s.route(r)
		case t == nextSample:
			s.sample()
			nextSample += sample
		default:
			s.apply(a.Decide(s.view()))
			nextTick += interval
		}
		if s.cfg.Progress != nil && s.now >= nextProgress && lastArrival > 0 {
			s.cfg.Progress(math.Min(1, s.now/lastArrival))
			nextProgress = s.now + progressEvery
		}
	}
	s.account()
	// GPU-seconds are counted from the scored window's start, so the mean over the run is over that span.
	s.res.Duration = math.Max(0, s.now-s.cfg.ScoreFrom.Seconds())
	s.res.ConvertedSeconds = s.convSecs
	s.res.finish(s.reqs, s.cfg.ScoreFrom.Seconds(), s.cfg.Outcomes)
}

// prefills says the instance runs prefill engine steps: a prefiller, or a decoder switched to prefill.
func (in *instance) prefills() bool { return in.role == rolePrefill || in.switched }

// nextEvent is the instance's next self-driven event time.
func (in *instance) nextEvent() float64 {
	switch {
	case in.gone:
		return math.Inf(1)
	case !in.ready:
		return in.readyAt
	case in.prefills() && len(in.takes) > 0:
		return in.busyUntil
	case in.role == roleDecode && in.stepping:
		return in.stepEnd
	}
	return math.Inf(1)
}

func (s *sim) handle(in *instance) {
	switch {
	case !in.ready:
		in.ready = true
		s.flushPending()
	case in.prefills():
		s.prefillDone(in)
	default:
		s.stepDone(in)
	}
}

// route sends an arrival to the prefill instance (or converted decoder) that would finish it first.
func (s *sim) route(r *request) {
	var best *instance
	bestT := math.Inf(1)
	for _, in := range s.insts {
		if !in.ready || in.draining || in.gone {
			continue
		}
		var t float64
		switch {
		case in.role == rolePrefill || in.switched && in.converted && s.now >= in.convertFrom:
			t = in.qTokens / s.hw.PrefillTPS
			if len(in.takes) > 0 {
				t = (in.qTokens-float64(in.stepTokens))/s.hw.PrefillTPS + in.busyUntil - s.now
			}
			// Prefix-aware, as llm-d's scheduler is: the blocks an instance holds are work it skips.
			t -= float64(in.cache.hit(r.blocks, r.in, false)) / s.hw.PrefillTPS
		case in.converted && s.now >= in.convertFrom:
			rate := s.chunkRate(in)
			if rate <= 0 {
				continue
			}
			t = (in.pqTokens + float64(r.in-in.cache.hit(r.blocks, r.in, false))) / rate
			// Finishing on a decoder saves the transfer; compare like with like.
			t -= s.hw.TransferTime(r.in)
		default:
			continue
		}
		if t < bestT {
			best, bestT = in, t
		}
	}
	if best == nil {
		s.pendP = append(s.pendP, r)
		return
	}
	s.assignPrefill(best, r)
}

// chunkRate is the prefill tokens/s a converted decoder gives at its current batch.
func (s *sim) chunkRate(in *instance) float64 {
	c := float64(s.chunkFor(in))
	return c / (s.hw.StepTime(in.batch.Len(), in.ctx()) + c/s.hw.PrefillTPS)
}

func (s *sim) chunkFor(in *instance) int {
	budget := s.cfg.ConvertStepBudget.Seconds() - s.hw.StepTime(in.batch.Len(), in.ctx())
	c := int(budget * s.hw.PrefillTPS)
	// A floor keeps prefill moving on a busy decoder; the cap keeps decode steps short.
	return min(max(c, 64), s.cfg.ConvertChunkTokens)
}

func (s *sim) assignPrefill(in *instance, r *request) {
	if in.prefills() {
		in.queue = append(in.queue, r)
		in.qTokens += float64(r.in)
		in.stats.Waiting++
		if len(in.takes) == 0 {
			s.startPrefill(in)
		}
		return
	}
	r.cached = in.cache.hit(r.blocks, r.in, true)
	in.stats.PrefixQueries += float64(r.in)
	in.stats.PrefixHits += float64(r.cached)
	r.remaining = r.in - r.cached
	in.pq = append(in.pq, r)
	in.pqTokens += float64(r.remaining)
	in.stats.Waiting++
	s.cut(in)
	s.startStep(in)
}

// startPrefill starts the next engine step: the queue's prompts in order, each as far as the token
// budget goes (a long prompt's chunks fill whole steps; short ones behind it share its last), taking
// StepBase plus its tokens at V_P. A profile without a budget prefills one whole prompt per step at V_P.
func (s *sim) startPrefill(in *instance) {
	if len(in.queue) == 0 {
		if in.switched && !in.converted {
			s.unswitch(in)
		}
		if in.draining {
			s.remove(in)
		}
		return
	}
	budget, base := s.hw.PrefillBatchTokens, s.hw.StepBase
	whole := budget <= 0
	if whole {
		base = 0
	}
	tokens := 0
	for i, r := range in.queue {
		if whole && i > 0 || !whole && budget == 0 {
			break
		}
		if !r.started {
			r.started = true
			r.cached = in.cache.hit(r.blocks, r.in, true)
			r.remaining = r.in - r.cached
			in.qTokens -= float64(r.cached)
			in.stats.PrefixQueries += float64(r.in)
			in.stats.PrefixHits += float64(r.cached)
			in.stats.Waiting--
		}
		take := r.remaining
		if !whole {
			take = min(budget, take)
			budget -= take
		}
		in.takes = append(in.takes, take)
		tokens += take
	}
	in.stepTokens = tokens
	in.stats.Running = len(in.takes)
	d := base + float64(tokens)/s.hw.PrefillTPS
	in.busyUntil = s.now + d
	s.schedule(in)
	in.stats.BusySeconds += d
}

// prefillDone ends a step: its tokens count (vLLM V1 counts prompt tokens per step), and the prompts it
// finished emit their first token and send their KV.
func (s *sim) prefillDone(in *instance) {
	done := 0
	for i, take := range in.takes {
		r := in.queue[i]
		r.remaining -= take
		in.qTokens -= float64(take)
		in.stats.PromptTokens += float64(take)
		if r.remaining == 0 {
			done = i + 1
		}
	}
	finished := in.queue[:done]
	in.queue = in.queue[done:]
	in.takes = in.takes[:0]
	in.stats.Running = 0
	for _, r := range finished {
		s.firstToken(in, r)
	}
	clear(finished)
	s.startPrefill(in)
}

// firstToken finishes a prompt on a prefiller: its first token, its blocks cached, its KV sent.
func (s *sim) firstToken(in *instance, r *request) {
	in.stats.PromptTokens += float64(r.cached) // cached tokens included, as vLLM counts them
	in.cache.add(r.blocks)
	in.stats.GenerationTokens++ // a prefill pod emits the first token (max_tokens=1), as vLLM's P/D does
	in.stats.Finished++
	in.stats.TTFT.observe(s.now-r.arrival, 1)
	r.prefilled = s.now
	// The transfer holds the sender's link and the receiving decoder's (NIXL/RDMA reads land on one NIC):
	// two prefillers finishing together for one decoder take turns.
	start := math.Max(s.now, in.linkFree)
	if d := s.pickDecoder(); d != nil {
		start = math.Max(start, d.linkFree)
		d.linkFree = start + s.hw.TransferTime(r.in)
		d.incoming += float64(r.in)
		d.incomingN++
		r.dest = d
	}
	in.linkFree = start + s.hw.TransferTime(r.in)
	s.xfers.push(transfer{at: in.linkFree, req: r})
}

// pickDecoder is the Ready decoder with the most free KV, counting what is on its way to it; nil if none.
func (s *sim) pickDecoder() *instance {
	var best *instance
	bestFree := math.Inf(-1)
	for _, in := range s.insts {
		if in.role != roleDecode || in.switched || !in.ready || in.draining || in.gone {
			continue
		}
		free := s.hw.KVCapacityTokens - s.kvNow(in) - in.waitingTokens() - in.incoming
		if free > bestFree {
			best, bestFree = in, free
		}
	}
	return best
}

// landed takes a transfer's arrival: the request joins the decoder it was sent to, or, if that one has
// gone or started draining meanwhile (or there was none), the best decoder now.
func (s *sim) landed(r *request) {
	r.landed = s.now
	d := r.dest
	r.dest = nil
	if d == nil {
		s.toDecode(r)
		return
	}
	d.incoming -= float64(r.in)
	d.incomingN--
	if !d.ready || d.draining || d.gone {
		s.toDecode(r)
		return
	}
	s.admitTo(d, r)
}

// toDecode hands a prefilled request to the decoder with the most free KV.
func (s *sim) toDecode(r *request) {
	best := s.pickDecoder()
	if best == nil {
		s.pendD = append(s.pendD, r)
		return
	}
	s.admitTo(best, r)
}

// admitTo queues a prefilled request on a decoder, whose KV now holds the prompt's blocks.
func (s *sim) admitTo(best *instance, r *request) {
	best.cache.add(r.blocks)
	best.waiting = append(best.waiting, r)
	best.stats.Waiting++
	s.cut(best)
	s.startStep(best)
}

// heldTokens is the KV the waiting requests already hold: a prefilled prompt waiting for a slot keeps
// the blocks it was pulled (or prefilled) into, as in vLLM; a preempted one dropped its KV.
func (in *instance) heldTokens() float64 {
	t := 0.0
	for _, r := range in.waiting {
		if r.gen == 0 {
			t += float64(r.in)
		}
	}
	return t
}

// waitingTokens is the KV the waiting requests need to be admitted.
func (in *instance) waitingTokens() float64 {
	t := 0.0
	for _, r := range in.waiting {
		t += float64(r.in + r.gen)
	}
	return t
}

func (in *instance) ctx() float64 {
	return in.sumIn + float64(in.batch.Len())*float64(in.step) - in.sumAdmit
}

// startStep begins a decode step if the decoder is idle and has work.
func (s *sim) startStep(in *instance) {
	if in.stepping || !in.ready || in.gone {
		return
	}
	// KV holds each running request's context so far and grows a token per step, as vLLM allocates it;
	// a request is admitted when its context and this step's tokens fit.
	recompute := 0.0
	// Every step of this event starts so: merged steps end at the next finish or at new work.
	in.fullBatch = len(in.waiting) > 0 && in.batch.Len() >= s.hw.MaxBatch
	for len(in.waiting) > 0 && in.batch.Len() < s.hw.MaxBatch {
		r := in.waiting[0]
		need := float64(r.in + r.gen)
		if in.ctx()+need+float64(in.batch.Len()+1) > s.hw.KVCapacityTokens && in.batch.Len() > 0 {
			break
		}
		if r.admitted == 0 {
			r.admitted = s.now
		}
		in.waiting[0] = nil
		in.waiting = in.waiting[1:]
		in.stats.Waiting--
		if r.gen > 0 {
			recompute += need // a preempted request's KV was dropped: vLLM recomputes it
		}
		in.sumIn += need
		r.admitStep = in.step
		r.finishStep = in.step + int64(r.out-r.gen)
		in.sumAdmit += float64(in.step)
		heap.Push(&in.batch, r)
		in.newly = append(in.newly, r)
	}
	// When the batch's growth fills the KV, the latest admitted requests are preempted (vLLM V1's
	// recompute preemption) and wait at the front of the queue, keeping the tokens they have.
	for in.batch.Len() > 1 && in.ctx()+float64(in.batch.Len()) > s.hw.KVCapacityTokens {
		s.preemptLatest(in)
	}
	in.chunk = 0
	if len(in.pq) > 0 { // a released decoder still finishes the prompts it took
		in.chunk = min(s.chunkFor(in), int(in.pqTokens))
	}
	if in.batch.Len() == 0 && in.chunk == 0 {
		if in.draining && len(in.waiting) == 0 && len(in.pq) == 0 {
			s.remove(in)
		}
		return
	}
	d := (float64(in.chunk) + recompute) / s.hw.PrefillTPS
	b := in.batch.Len()
	if b > 0 {
		d += s.hw.StepTime(b, in.ctx())
	}
	in.stepping = true
	in.stepStart, in.stepDur, in.stepSlope, in.stepN = s.now, d, float64(b)*s.hw.StepPerCtxToken, 1
	if merge := s.cfg.MergeSteps.Seconds(); in.chunk == 0 && len(in.newly) == 0 && b > 0 && d < merge {
		// Steps until the next finish, or until the KV is full, change nothing else but the context; one
		// event covers them.
		room := int64((s.hw.KVCapacityTokens - in.ctx()) / float64(b))
		in.stepN = max(1, min(in.batch[0].finishStep-in.step, int64(merge/d), room))
		for in.stepN > 1 && in.stepsTime(in.stepN) > merge {
			in.stepN--
		}
	}
	in.stepEnd = s.now + in.stepsTime(in.stepN)
	s.schedule(in)
	in.stats.BusySeconds += in.stepEnd - s.now
	in.stats.Running = in.batch.Len()
	in.stats.KVUsage = math.Min(1, in.ctx()/s.hw.KVCapacityTokens)
}

// kvNow is the decoder's KV in use now, counting merged steps in flight as far as they got.
func (s *sim) kvNow(in *instance) float64 {
	return in.ctx() + float64(in.batch.Len())*float64(in.stepsDone(s.now))
}

// preemptLatest sends the most recently admitted request of a decoder's batch back to the front of its
// queue, dropping its KV.
func (s *sim) preemptLatest(in *instance) {
	k := 0
	for i, r := range in.batch {
		if r.admitStep > in.batch[k].admitStep || r.admitStep == in.batch[k].admitStep && r.idx > in.batch[k].idx {
			k = i
		}
	}
	r := heap.Remove(&in.batch, k).(*request)
	in.sumIn -= float64(r.in + r.gen)
	in.sumAdmit -= float64(r.admitStep)
	r.gen += int(in.step - r.admitStep)
	in.waiting = append([]*request{r}, in.waiting...)
	in.stats.Waiting++
	in.stats.Preemptions++
	for i, n := range in.newly {
		if n == r {
			in.newly = append(in.newly[:i], in.newly[i+1:]...)
			break
		}
	}
}

// stepsTime is how long the first n steps in flight take.
func (in *instance) stepsTime(n int64) float64 {
	x := float64(n)
	return x*in.stepDur + in.stepSlope*x*(x-1)/2
}

// stepsDone is how many steps in flight have finished by t.
func (in *instance) stepsDone(t float64) int64 {
	if !in.stepping || in.stepN <= 1 {
		return 0
	}
	n := min(in.stepN-1, int64((t-in.stepStart)/in.stepDur))
	for n > 0 && in.stepsTime(n) > t-in.stepStart {
		n--
	}
	return max(n, 0)
}

// cut ends merged steps in flight at the step in progress, so work arriving now is taken at the same
// step boundary as with one event per step.
func (s *sim) cut(in *instance) {
	if !in.stepping || in.stepN <= 1 {
		return
	}
	n := in.stepsDone(s.now) + 1
	end := in.stepStart + in.stepsTime(n)
	in.stats.BusySeconds -= in.stepEnd - end
	in.stepN, in.stepEnd = n, end
	s.schedule(in)
}

func (s *sim) stepDone(in *instance) {
	in.stepping = false
	b := in.batch.Len()
	if in.fullBatch && s.now >= s.cfg.ScoreFrom.Seconds() {
		s.res.MissedTTFT.FullBatchSteps += int(in.stepN)
	}
	if b > 0 {
		in.step += in.stepN
		in.stats.GenerationTokens += float64(b) * float64(in.stepN)
		in.stats.ITL.observe(in.stepDur, float64(b-len(in.newly)))
		in.stats.ITL.observeRamp(in.stepDur+in.stepSlope, in.stepSlope, in.stepN-1, float64(b))
		for _, r := range in.newly {
			if r.firstToken < 0 {
				r.firstToken = s.now
				if r.landed > 0 {
					// vLLM's P/D proxies send a request to its decoder when the prefiller returns, so the
					// decoder's TTFT covers the KV pull, the wait for a slot or KV room and the first step.
					in.stats.TTFT.observe(s.now-r.prefilled, 1)
				}
			}
		}
		in.newly = in.newly[:0]
		for in.batch.Len() > 0 && in.batch[0].finishStep <= in.step {
			r := heap.Pop(&in.batch).(*request)
			in.sumIn -= float64(r.in + r.gen)
			in.sumAdmit -= float64(r.admitStep)
			in.stats.Finished++
			s.res.record(r, s.now)
		}
	}
	// Apply the step's prefill chunk: finished prompts join this decoder's own queue (no transfer).
	c := in.chunk
	for c > 0 && len(in.pq) > 0 {
		r := in.pq[0]
		take := min(c, r.remaining)
		r.remaining -= take
		c -= take
		in.pqTokens -= float64(take)
		in.stats.PromptTokens += float64(take)
		if r.remaining == 0 {
			in.pq[0] = nil
			in.pq = in.pq[1:]
			in.stats.PromptTokens += float64(r.cached) // vLLM counts cached prompt tokens too
			in.cache.add(r.blocks)
			in.stats.TTFT.observe(s.now-r.arrival, 1)
			in.waiting = append(in.waiting, r) // already counted as waiting
		}
	}
	in.chunk = 0
	in.stats.Running = in.batch.Len()
	in.stats.KVUsage = math.Min(1, in.ctx()/s.hw.KVCapacityTokens)
	s.startStep(in)
}

func (s *sim) remove(in *instance) {
	if in.gone {
		return
	}
	s.account()
	in.gone = true
	s.allocated--
	if in.converted {
		in.converted = false
		s.converted--
	}
}

// flushPending hands queued work to instances that just became Ready.
func (s *sim) flushPending() {
	p, d := s.pendP, s.pendD
	s.pendP, s.pendD = nil, nil
	for _, r := range p {
		s.route(r)
	}
	for _, r := range d {
		s.toDecode(r)
	}
}

func (s *sim) view() *View {
	v := &View{Now: time.Duration(s.now * float64(time.Second)), Hardware: s.hw,
		ArrivedRequests: s.arrived[0], ArrivedPromptTokens: s.arrived[1], ArrivedOutputTokens: s.arrived[2]}
	for _, in := range s.insts {
		if in.gone || in.draining {
			continue
		}
		if in.role == rolePrefill {
			v.PrefillReplicas++
		} else {
			v.DecodeReplicas++
		}
		if !in.ready {
			continue
		}
		st := in.stats
		st.Converted = in.converted
		// Merged steps count as far as they got, the step in progress whole as a single step counts; their
		// ITL observations land when the run ends (at most MergeSteps late).
		if in.stepping && in.stepN > 1 {
			done := in.stepsDone(s.now)
			st.GenerationTokens += float64(in.batch.Len()) * float64(done)
			st.BusySeconds -= in.stepsTime(in.stepN) - in.stepsTime(done+1)
			st.KVUsage = math.Min(1, s.kvNow(in)/s.hw.KVCapacityTokens)
		}
		if in.role == rolePrefill {
			st.QueuedPromptTokens = math.Max(0, in.qTokens)
			v.Prefill = append(v.Prefill, st)
		} else {
			// vLLM's NIXL connector takes a request in from the pull's start: it waits in the scheduler's
			// waiting queue (WAITING_FOR_REMOTE_KVS) on blocks already allocated, so its gauges count the
			// pulls in flight, and a landed request waiting for a slot keeps its blocks.
			st.Waiting += in.incomingN
			st.KVUsage = math.Min(1, st.KVUsage+(in.incoming+in.heldTokens())/s.hw.KVCapacityTokens)
			v.Decode = append(v.Decode, st)
		}
	}
	return v
}

// apply moves the cluster toward a target: new instances start cold; removed ones stop taking work and
// drain (starting ones are cancelled first); conversions reach the router after RouterDelay.
func (s *sim) apply(t Target) {
	s.scale(rolePrefill, min(max(t.Prefill, 1), s.cfg.MaxPrefill))
	s.scale(roleDecode, min(max(t.Decode, 1), s.cfg.MaxDecode))
	s.convert(max(t.Conversions, 0))
}

func (s *sim) scale(r role, want int) {
	var live []*instance
	for _, in := range s.insts {
		if in.role == r && !in.gone && !in.draining {
			live = append(live, in)
		}
	}
	for n := len(live); n < want; n++ {
		s.add(r, false)
	}
	for n := len(live); n > want; n-- {
		// Cancel the newest starting instance first, else drain the one with the least work.
		var pick *instance
		for _, in := range live {
			if in.draining || in.gone {
				continue
			}
			if !in.ready {
				if pick == nil || pick.ready || in.created > pick.created {
					pick = in
				}
				continue
			}
			if pick == nil || (pick.ready && s.load(in) < s.load(pick)) {
				pick = in
			}
		}
		if !pick.ready {
			s.remove(pick)
			continue
		}
		pick.draining = true
		if pick.converted {
			s.account()
			pick.converted = false
			s.converted--
		}
		if pick.prefills() {
			if len(pick.queue) == 0 {
				s.remove(pick)
			} // else startPrefill removes it once its queue is done
		} else {
			s.startStep(pick) // removes it at once when idle
			if !pick.gone && !pick.stepping && pick.batch.Len() == 0 {
				s.remove(pick)
			}
		}
	}
	s.compact()
}

func (s *sim) load(in *instance) float64 {
	if in.prefills() {
		return in.qTokens
	}
	return s.kvNow(in) + in.waitingTokens() + in.pqTokens + in.incoming
}

// convert moves the number of converted decoders to want as the converter's controller and agents do
// (converter.Choose): a decoder flipped within MinFlipInterval is not a candidate, candidates go least
// recently flipped first, then oldest first (the controller orders by name), and releases take the newest
// converted decoders first (the controller keeps the first names' leases).
func (s *sim) convert(want int) {
	var conv, cands []*instance
	minFlip := s.cfg.MinFlipInterval.Seconds()
	for _, in := range s.insts {
		if in.role != roleDecode || in.gone || in.draining || !in.ready {
			continue
		}
		switch {
		case in.converted:
			conv = append(conv, in)
		case s.cfg.ConvertSwitch && !s.idle(in):
			// SGLang answers "not idle" and the agent tries again later.
		case !in.flipped || s.now-in.flippedAt >= minFlip:
			cands = append(cands, in)
		}
	}
	want = min(want, len(conv)+len(cands))
	if want == len(conv) {
		return
	}
	s.account()
	for len(conv) > want {
		i := 0
		for j, in := range conv {
			if in.id > conv[i].id {
				i = j
			}
		}
		conv[i].converted = false
		conv[i].flipped, conv[i].flippedAt = true, s.now
		s.converted--
		if in := conv[i]; in.switched && len(in.queue) == 0 {
			s.unswitch(in)
		}
		conv = append(conv[:i], conv[i+1:]...)
	}
	for len(conv) < want {
		i := 0
		for j, in := range cands {
			if earlierFlip(in, cands[i]) {
				i = j
			}
		}
		in := cands[i]
		in.converted = true
		in.switched = s.cfg.ConvertSwitch
		in.flipped, in.flippedAt = true, s.now
		in.convertFrom = s.now + s.cfg.RouterDelay.Seconds()
		s.converted++
		s.res.Conversions++
		conv = append(conv, in)
		cands = append(cands[:i], cands[i+1:]...)
	}
}

// idle says a decoder has nothing to decode, now or on its way: the only state SGLang switches in.
func (s *sim) idle(in *instance) bool {
	return in.batch.Len() == 0 && len(in.waiting) == 0 && in.incomingN == 0 && !in.stepping && len(in.pq) == 0 && !in.switched
}

// unswitch makes a released switched decoder, its prompts done, a decoder again; requests that found no
// decoder meanwhile are handed out.
func (s *sim) unswitch(in *instance) {
	in.switched = false
	s.flushPending()
}

// earlierFlip orders conversion candidates: never flipped first, then least recently flipped, then oldest.
func earlierFlip(a, b *instance) bool {
	if a.flipped != b.flipped {
		return !a.flipped
	}
	if a.flipped && a.flippedAt != b.flippedAt {
		return a.flippedAt < b.flippedAt
	}
	return a.id < b.id
}

// compact drops removed instances from the scan list.
func (s *sim) compact() {
	k := 0
	for _, in := range s.insts {
		if !in.gone {
			s.insts[k] = in
			k++
		}
	}
	clear(s.insts[k:])
	s.insts = s.insts[:k]
}

// sample records one point of the time series.
func (s *sim) sample() {
	p := Sample{T: s.now}
	for _, in := range s.insts {
		if in.gone {
			continue
		}
		if in.role == rolePrefill {
			p.PrefillAllocated++
			if in.ready && !in.draining {
				p.PrefillReady++
			}
		} else {
			p.DecodeAllocated++
			if in.ready && !in.draining {
				p.DecodeReady++
			}
			if in.converted {
				p.Converted++
			}
		}
	}
	s.res.Series = append(s.res.Series, p)
}
