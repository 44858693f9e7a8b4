// Package fakeengine is a stand-in for a vLLM or SGLang pod: a small queueing model of one engine that
// serves /metrics with the same names, labels and histogram layouts as the real engines (vLLM V0/V1,
// SGLang old/current), driven by a load the caller controls. Demos, the collector tests and the e2e suite
// scrape it over real HTTP.
package fakeengine

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Flavor selects which engine and version the /metrics page imitates.
type Flavor string

const (
	VLLMV1      Flavor = "vllm-v1"    // vLLM >= 0.10.2: engine label, kv_cache_usage_perc, inter_token_latency_seconds
	VLLMV0      Flavor = "vllm-v0"    // vLLM V0: gpu_cache_usage_perc, time_per_output_token_seconds, no engine label
	SGLang      Flavor = "sglang"     // current SGLang: realtime_tokens_total{mode}, engine_type, tp_rank
	SGLangOld   Flavor = "sglang-old" // 2024 SGLang: model_name only, finish-time token counters
	DefaultFlav        = VLLMV1
)

// Flavors lists the supported flavors.
var Flavors = []Flavor{VLLMV1, VLLMV0, SGLang, SGLangOld}

// Config describes one fake engine's capacity. Zero fields take the defaults in withDefaults.
type Config struct {
	Flavor Flavor
	Model  string
	// Role is the P/D role SGLang reports in engine_type (prefill, decode, unified).
	Role string
	// Engines is the number of data-parallel engines on the page (vLLM's engine label).
	Engines int
	// TPRanks is how many tensor-parallel ranks report scheduler metrics (SGLang's tp_rank); each repeats
	// the same numbers, as real ranks do.
	TPRanks int
	// PrefillTokensPerSec is the engine's prefill velocity V_P.
	PrefillTokensPerSec float64
	// DecodeTokensPerSec is the engine's decode velocity V_D at a full batch.
	DecodeTokensPerSec float64
	// KVCapacityTokens is the KV cache size in tokens.
	KVCapacityTokens float64
	// BaseITL is the inter-token latency of a lightly loaded batch.
	BaseITL time.Duration
	// PrefixHitRatio is the share of prompt tokens served from the prefix cache, in [0, 1); they cost no
	// prefill time, as in vLLM. Default 0: no shared prefixes.
	PrefixHitRatio float64
}

func (c Config) withDefaults() Config {
	if c.Flavor == "" {
		c.Flavor = DefaultFlav
	}
	if c.Model == "" {
		c.Model = "meta-llama/Llama-3.1-8B-Instruct"
	}
	if c.Role == "" {
		c.Role = "unified"
	}
	if c.Engines <= 0 {
		c.Engines = 1
	}
	if c.TPRanks <= 0 {
		c.TPRanks = 1
	}
	if c.PrefillTokensPerSec <= 0 {
		c.PrefillTokensPerSec = 10000
	}
	if c.DecodeTokensPerSec <= 0 {
		c.DecodeTokensPerSec = 2500
	}
	if c.KVCapacityTokens <= 0 {
		c.KVCapacityTokens = 200000
	}
	if c.BaseITL <= 0 {
		c.BaseITL = 20 * time.Millisecond
	}
	c.PrefixHitRatio = min(max(c.PrefixHitRatio, 0), 0.99)
	return c
}

// Load is the work offered to an engine.
type Load struct {
	// PromptTokensPerSec arriving for prefill.
	PromptTokensPerSec float64
	// OutputTokensPerSec demanded from decode.
	OutputTokensPerSec float64
	// MeanPromptTokens and MeanOutputTokens shape requests (defaults 1000 and 200).
	MeanPromptTokens, MeanOutputTokens float64
}

// Engine is one fake engine. It is safe for concurrent use.
type Engine struct {
	mu   sync.Mutex
	cfg  Config
	load Load

	promptTokens, generationTokens, cacheHits, cacheQueries float64
	finished                                                map[string]float64
	queuedTokens                                            float64 // prefill backlog
	decodeBacklog                                           float64 // output tokens owed
	running, waiting                                        float64
	kvUsage                                                 float64
	ttft, itl, e2e, queueTime, promptLen, genLen, iter      *hist
	started                                                 float64
	// Garbage makes the page unparseable; Hang makes /metrics block until the request's context ends.
	garbage, hang bool
}

// New returns an idle engine.
func New(cfg Config) *Engine {
	cfg = cfg.withDefaults()
	e := &Engine{cfg: cfg, started: float64(time.Now().Unix())}
	e.reset()
	return e
}

func (e *Engine) reset() {
	e.promptTokens, e.generationTokens, e.cacheHits, e.cacheQueries = 0, 0, 0, 0
	e.finished = map[string]float64{"stop": 0, "length": 0, "abort": 0}
	e.queuedTokens, e.decodeBacklog, e.running, e.waiting, e.kvUsage = 0, 0, 0, 0, 0
	e.ttft = newHist(ttftBuckets)
	e.itl = newHist(itlBuckets)
	e.e2e = newHist(latencyBuckets)
	e.queueTime = newHist(latencyBuckets)
	e.promptLen = newHist(tokenBuckets)
	e.genLen = newHist(tokenBuckets)
	e.iter = newHist(iterBuckets)
}

// Config returns the engine's configuration with defaults applied.
func (e *Engine) Config() Config { return e.cfg }

// SetLoad changes the offered load from the next Advance on.
func (e *Engine) SetLoad(l Load) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.load = l
}

// Restart zeroes every counter, as an engine restart does.
func (e *Engine) Restart() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reset()
	e.started = float64(time.Now().Unix())
}

// Counters returns the prompt and generation tokens served so far (the ground truth tests compare to).
func (e *Engine) Counters() (prompt, generation float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.promptTokens, e.generationTokens
}

// SetGarbage makes /metrics serve text that is not valid exposition (true) or the normal page (false).
func (e *Engine) SetGarbage(on bool) { e.mu.Lock(); e.garbage = on; e.mu.Unlock() }

// SetHang makes /metrics hang until the client gives up (true), or answer normally (false).
func (e *Engine) SetHang(on bool) { e.mu.Lock(); e.hang = on; e.mu.Unlock() }

// Advance moves the model forward by dt under the current load.
func (e *Engine) Advance(dt time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := dt.Seconds()
	if s <= 0 {
		return
	}
	l := e.load
	meanIn, meanOut := l.MeanPromptTokens, l.MeanOutputTokens
	if meanIn <= 0 {
		meanIn = 1000
	}
	if meanOut <= 0 {
		meanOut = 200
	}
	c := e.cfg

	// Prefill: a FIFO token queue whose computed (cache-missed) tokens are served at V_P.
	miss := 1 - c.PrefixHitRatio
	e.queuedTokens += l.PromptTokensPerSec * s
	served := math.Min(e.queuedTokens, c.PrefillTokensPerSec*s/miss)
	e.queuedTokens -= served
	e.promptTokens += served
	e.cacheHits += served * c.PrefixHitRatio
	e.cacheQueries += served
	reqs := served / meanIn
	wait := e.queuedTokens * miss / c.PrefillTokensPerSec
	ttft := wait + meanIn*miss/c.PrefillTokensPerSec
	e.ttft.observeN(ttft, reqs)
	e.queueTime.observeN(wait, reqs)
	e.promptLen.observeN(meanIn, reqs)
	e.waiting = math.Ceil(e.queuedTokens / meanIn)

	// Decode: output tokens owed, served at up to V_D; the batch slows as it fills.
	e.decodeBacklog += l.OutputTokensPerSec * s
	gen := math.Min(e.decodeBacklog, c.DecodeTokensPerSec*s)
	e.decodeBacklog -= gen
	e.generationTokens += gen
	util := 0.0
	if c.DecodeTokensPerSec > 0 {
		util = gen / (c.DecodeTokensPerSec * s)
	}
	itl := c.BaseITL.Seconds() * (1 + 2*util*util)
	if e.decodeBacklog > c.DecodeTokensPerSec { // more than a second owed: the batch is saturated
		itl *= 1 + e.decodeBacklog/(c.DecodeTokensPerSec*10)
	}
	e.itl.observeN(itl, gen)
	e.running = math.Round(gen / s * itl)
	done := gen / meanOut
	e.finished["stop"] += done * 0.8
	e.finished["length"] += done * 0.2
	e.e2e.observeN(ttft+meanOut*itl, done)
	e.genLen.observeN(meanOut, done)
	e.iter.observeN(math.Max(1, (served+gen)/math.Max(1, s/itl)), s/itl)
	e.kvUsage = math.Min(1, (e.running*(meanIn+meanOut/2)+e.decodeBacklog)/c.KVCapacityTokens)
}

// ServeHTTP serves /metrics.
func (e *Engine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	hang, garbage := e.hang, e.garbage
	e.mu.Unlock()
	if hang {
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	if garbage {
		writeGarbage(w)
		return
	}
	page := e.render()
	defer pages.Put(page)
	w.Header().Set("Content-Length", strconv.Itoa(page.Len()))
	_, _ = w.Write(page.Bytes())
}

// Run advances the engine every tick until stop is closed.
func (e *Engine) Run(tick time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(tick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			e.Advance(now.Sub(last))
			last = now
		}
	}
}
