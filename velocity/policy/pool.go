// Package policy turns per-pod velocities into per-pool figures (arrival velocity, capacity,
// utilisation, predicted backpressure) and decides replicas for prefill and decode pools together,
// plus how many decoders should take prefill work now (convertible decoders).
package policy

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// ErrNoData means no pod of the pool has a known velocity: the pool's figures are unknown, not zero.
var ErrNoData = errors.New("no pod of the pool has a known velocity")

// PoolStatus is a pool's state at one instant. Velocities are tokens/s.
type PoolStatus struct {
	Name string
	Role config.Role
	// Pods is the number of pods in the pool; Known of them have fresh velocities.
	Pods, Known int
	// Running counts the pods the pool runs, Ready or starting (its selector's count, terminating pods
	// left out): what earlier decisions scaled it to, where Pods counts the Ready ones only. 0 where the
	// caller does not know; Pods then stands in.
	Running int
	// Arrival λ: tokens/s demanded of the pool's stage, served + queue growth. Prefill figures count
	// computed prompt tokens: those the prefix cache served are left out (docs/metrics.md).
	Arrival float64
	// RequestArrival is requests/s arriving, from the pods' finished-request counters: the pods whose
	// last interval gave no request rate count as the mean of those that did. NoRequestArrival is true
	// where none did: RequestArrival is then 0, and unknown.
	RequestArrival   float64
	NoRequestArrival bool
	// Sustained is λ from the latency-window averages: steadier than Arrival, which follows a burst
	// within a scrape or two; replicas are sized on it, smoothed over a cold start, unless Backpressure
	// has said the SLO is about to break on several decisions in a row (Controller.sizingRate).
	Sustained float64
	// Served: tokens/s the pool is processing now; SustainedServed the same over the latency window.
	Served, SustainedServed float64
	// PerPod is the per-instance velocity V used (profile, or calibrated).
	PerPod float64
	// Capacity N·V with N = Pods.
	Capacity float64
	// Utilisation ρ = λ / (N·V).
	Utilisation float64
	// QueuedTokens waiting across the pool.
	QueuedTokens float64
	// Backpressure is the predicted queueing delay at the horizon as a fraction of the SLO's queueing
	// budget: 1 means the TTFT SLO is predicted to break within the horizon. See docs/metrics.md.
	Backpressure float64
	// SecondsToBreach: predicted time until queued work breaks the TTFT SLO (+Inf: not at current rates).
	SecondsToBreach float64
	// QueueBudget is how long a request may queue within the TTFT SLO: the SLO less the mean request's own
	// prefill (seconds; prefill pools only).
	QueueBudget float64
	// Waiting is the requests waiting across the pool (on a vLLM decoder: for a batch slot or KV room, and
	// for its KV pull, which vLLM counts as waiting).
	Waiting float64
	// FirstTokenLate is the share of a decode pool's recent first tokens (its vLLM pods' TTFT over the
	// latency window) later than half the pool's TTFT SLO; -1 when unknown. Only vLLM decoders count:
	// behind a P/D proxy that sends a request on once its prefill returns, their TTFT starts at the
	// decoder, while SGLang's router sends each request to both servers at once, so its decoders' TTFT
	// includes the prefill (TensorRT-LLM's is not established here).
	FirstTokenLate float64
	// KVUsage is the mean KV-cache usage (0..1) of the known pods that report it; -1 when none does.
	KVUsage float64
	// SLOMissFraction is the share of recent requests over the latency SLO (TTFT for prefill and both,
	// inter-token latency for decode); -1 when unknown.
	SLOMissFraction float64
	// Errors lists pods whose velocity is unknown, with the reason.
	Errors []error
}

// perPod returns the per-instance velocity for the pool's stage.
func perPod(p *config.Pool, cal float64) float64 {
	v := p.Profile.DecodeTPS
	if p.Role != config.RoleDecode {
		v = p.Profile.PrefillTPS
		if p.Profile.KVTransferTPS > 0 {
			v = math.Min(v, p.Profile.KVTransferTPS) // TokenScale: min(V_P, V_N)
		}
	}
	if cal > 0 {
		// Calibration stays within [0.5, 2]× the profile in force: a value calibrated against the profile
		// (or role) before a reload is bounded by the new one at once, not after a saturation streak.
		return math.Min(math.Max(cal, 0.5*v), 2*v)
	}
	return v
}

// PlausibleFactor bounds a pod's token rate at this many times its pool's profiled per-pod velocity
// (docs/metrics.md): calibration moves V by at most 2x, so 10x leaves room for a wrong profile and still
// catches a glitched counter before it sizes the pool.
const PlausibleFactor = 10

// RateLimit is how fast a pod of p's token counters can plausibly grow, for store.SetRateLimit; Tokens
// is zero when the profile gives no velocity (the store's absolute cap applies). A decoder's prompt tokens are
// held to the absolute cap only: it may count every prompt it receives by KV transfer (engines differ,
// docs/metrics.md), which a prefill pool many times its size sends it, far past its own profile.
func RateLimit(p *config.Pool) store.Limit {
	l := store.Limit{Tokens: PlausibleFactor * max(p.Profile.PrefillTPS, p.Profile.DecodeTPS, p.Profile.KVTransferTPS)}
	if p.Role == config.RoleDecode {
		l.Prompt = math.Inf(1)
	}
	return l
}

// plausible says why a pod's numbers cannot be used for the pool, or nil. limit is the pool's rate limit
// from its profile or calibration (0: none), as the store applies it.
func plausible(v *store.Velocity, limit store.Limit) error {
	for _, x := range [...]float64{v.PrefillTPS, v.ComputedPrefillTPS, v.DecodeTPS, v.WindowPrefillTPS, v.WindowComputedPrefillTPS, v.WindowDecodeTPS,
		v.QueuedTokens, v.MeanPromptTokens, v.MeanOutputTokens, v.RequestTPS} {
		if !(x >= 0 && x <= math.MaxFloat64) {
			return fmt.Errorf("%s: %w: a rate or count is %v", v.Pod, store.ErrImplausible, x)
		}
	}
	for _, x := range [...]float64{v.QueueGrowthTPS, v.OwedOutputGrowthTPS, v.WindowQueueGrowthTPS, v.WindowOwedOutputGrowthTPS} {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%s: %w: a queue growth is %v", v.Pod, store.ErrImplausible, x)
		}
	}
	if limit.Tokens > 0 {
		check := []float64{v.DecodeTPS, v.WindowDecodeTPS}
		if limit.Prompt <= 0 {
			check = append(check, v.PrefillTPS, v.WindowPrefillTPS)
		}
		for _, x := range check {
			if x > limit.Tokens {
				return fmt.Errorf("%s: %w: %.4g tokens/s is above the pool's limit of %g, %d times its largest profiled or calibrated velocity", v.Pod, store.ErrImplausible, x, limit.Tokens, PlausibleFactor)
			}
		}
	}
	return nil
}

// Aggregate computes a pool's status from its pods' store results. calibrated overrides the profile's
// per-pod velocity when > 0. horizon is the backpressure look-ahead.
func Aggregate(p *config.Pool, pods []store.Result, calibrated float64, horizon time.Duration) (PoolStatus, error) {
	st := PoolStatus{Name: p.Name, Role: p.Role, Pods: len(pods), SLOMissFraction: -1, KVUsage: -1, FirstTokenLate: -1}
	var missW, missN, kvSum, kvN, lateW, lateN float64
	var meanPrompt float64
	requestN := 0 // known pods with a request rate
	limit := RateLimit(p)
	limit.Tokens = max(limit.Tokens, PlausibleFactor*calibrated)
	for _, r := range pods {
		if r.Err != nil {
			st.Errors = append(st.Errors, r.Err)
			continue
		}
		if err := plausible(&r.Velocity, limit); err != nil {
			// One pod's glitch must not size the pool: it counts as a pod of unknown velocity.
			st.Errors = append(st.Errors, err)
			continue
		}
		st.Known++
		v := r.Velocity
		st.Waiting += v.Waiting
		switch p.Role {
		case config.RoleDecode:
			st.Served += v.DecodeTPS
			st.SustainedServed += v.WindowDecodeTPS
			// A decoder's queue is requests waiting for KV room (or, on a converted decoder, for their
			// prefill): the output tokens they owe, at the pod's mean output length, grow with it.
			st.Arrival += v.DecodeTPS + math.Max(0, v.OwedOutputGrowthTPS)
			st.Sustained += v.WindowDecodeTPS + math.Max(0, v.WindowOwedOutputGrowthTPS)
			if v.Engine == engine.VLLM {
				if f, ok := store.FractionAbove(v.TTFT, p.SLO.TTFT.Seconds()/2); ok {
					lateW += f * v.TTFT.Count
					lateN += v.TTFT.Count
				}
			}
		default:
			// Computed tokens: prompt tokens the prefix cache served cost no prefill time, so sizing on
			// all prompt tokens held capacity for work the cache does (the simulator's Mooncake trace).
			// Queued prompts are expected to hit the cache at the pod's recent rate.
			miss, windowMiss := missRatio(v.ComputedPrefillTPS, v.PrefillTPS), missRatio(v.WindowComputedPrefillTPS, v.WindowPrefillTPS)
			st.Served += v.ComputedPrefillTPS
			st.SustainedServed += v.WindowComputedPrefillTPS
			st.Arrival += v.ComputedPrefillTPS + v.QueueGrowthTPS*miss
			if v.HasRequestRate {
				st.RequestArrival += v.RequestTPS
				requestN++
			}
			st.Sustained += v.WindowComputedPrefillTPS + v.WindowQueueGrowthTPS*windowMiss
			st.QueuedTokens += v.QueuedTokens * miss
			meanPrompt += v.MeanPromptTokens * miss // a request's own prefill is its computed tokens
		}
		if v.HasKV {
			kvSum += v.KVUsage
			kvN++
		}
		h, slo := v.TTFT, p.SLO.TTFT.Seconds()
		if p.Role == config.RoleDecode {
			h, slo = v.ITL, p.SLO.ITL.Seconds()
		}
		if f, ok := store.FractionAbove(h, slo); ok {
			missW += f * h.Count
			missN += h.Count
		}
	}
	if st.Known == 0 {
		if len(st.Errors) > 0 {
			return st, fmt.Errorf("pool %s: %w (first: %w)", p.Name, ErrNoData, st.Errors[0])
		}
		return st, fmt.Errorf("pool %s: %w (no pods)", p.Name, ErrNoData)
	}
	if missN > 0 {
		st.SLOMissFraction = missW / missN
	}
	if kvN > 0 {
		st.KVUsage = math.Min(1, kvSum/kvN)
	}
	if lateN > 0 {
		st.FirstTokenLate = lateW / lateN
	}
	// Pods with unknown velocity still hold capacity; their demand is estimated as the known pods' mean.
	if st.Known < st.Pods {
		scale := float64(st.Pods) / float64(st.Known)
		st.Arrival *= scale
		st.Sustained *= scale
		st.Served *= scale
		st.SustainedServed *= scale
		st.QueuedTokens *= scale
		st.Waiting *= scale
	}
	if requestN > 0 {
		st.RequestArrival *= float64(st.Pods) / float64(requestN)
	} else {
		st.NoRequestArrival = true
	}
	st.Arrival = math.Max(0, st.Arrival)
	st.Sustained = math.Max(0, st.Sustained)
	st.PerPod = perPod(p, calibrated)
	st.Capacity = float64(st.Pods) * st.PerPod
	st.Utilisation = ratio(st.Arrival, st.Capacity)
	meanPrompt /= float64(st.Known)
	if p.Role != config.RoleDecode {
		st.QueueBudget = queueBudget(p.SLO.TTFT.Seconds(), meanPrompt, st.PerPod)
	}
	st.Backpressure, st.SecondsToBreach = backpressure(st, horizon.Seconds())
	return st, nil
}

// queueBudget is the TTFT SLO less a mean request's own prefill, and at least a tenth of the SLO, so
// pressure is flagged early rather than never where prompts alone nearly fill it. The floor applies from a
// tenth up: applied only once prompts overfilled the SLO, the budget fell towards 0 as they neared it
// (any queue a breach) and then jumped a hundredfold (2 ms to 200 ms at a 2 s SLO).
func queueBudget(slo, meanPrompt, perPod float64) float64 {
	b := slo - meanPrompt/perPod
	if !(b > slo*0.1) {
		b = slo * 0.1
	}
	return b
}

// backpressure predicts queueing at the horizon. A request's TTFT is about Q/C + prompt/V (drain the
// queue, then its own prefill), so the SLO leaves a queueing budget of B = SLO − prompt/V seconds and
// breaks when Q > C·B. With λ > C the queue grows at λ − C. Backpressure = (Q + max(0, λ−C)·H) / (C·B):
// it rises the moment λ exceeds C, before any request has waited (TTFT lags by the queue's fill time).
func backpressure(st PoolStatus, horizon float64) (bp, secondsToBreach float64) {
	if st.Role == config.RoleDecode {
		// Decode has no prefill queue; its pressure is utilisation relative to 1 at the horizon.
		return math.Max(0, st.Utilisation), math.Inf(1)
	}
	c := st.Capacity
	if c <= 0 {
		if st.Arrival > 0 || st.QueuedTokens > 0 {
			return maxBackpressure, 0
		}
		return 0, math.Inf(1)
	}
	limit := c * st.QueueBudget
	growth := st.Arrival - c
	bp = (st.QueuedTokens + math.Max(0, growth)*horizon) / limit
	switch {
	case st.QueuedTokens >= limit:
		secondsToBreach = 0
	case growth > 0:
		secondsToBreach = (limit - st.QueuedTokens) / growth
	default:
		secondsToBreach = math.Inf(1)
	}
	return math.Min(bp, maxBackpressure), secondsToBreach
}

// missRatio is the share of prompt tokens the prefix cache missed: computed over prompt, in [0, 1]; 1
// when no prompt tokens were seen (nothing says the cache will help).
func missRatio(computed, prompt float64) float64 {
	if !(prompt > 0) {
		return 1
	}
	return math.Min(1, math.Max(0, computed/prompt))
}

// maxBackpressure caps the figure so it stays a finite, comparable number.
const maxBackpressure = 1000

func ratio(a, b float64) float64 {
	if b <= 0 {
		if a > 0 {
			return maxBackpressure
		}
		return 0
	}
	return a / b
}

// running is the pods the pool runs, starting ones included where the caller counted them: a replica with
// no history holds them, since pods ordered by a peer's decision and still in their cold start are part of
// what that peer holds.
func (st *PoolStatus) running() int { return max(st.Pods, st.Running) }
