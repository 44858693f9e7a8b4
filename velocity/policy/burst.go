package policy

import (
	"math"
	"time"
)

// burstColdStarts is how many cold starts of arrivals the burst sizing replays: the bunching of the last
// few minutes is what the pods ordered now will meet once Ready. Two cold starts forgot the Azure code
// trace's bursts between them (83% joint attainment at the default scale-down window against 93% with
// five, for about the same GPU-hours in the simulator).
const burstColdStarts = 5

// sample is a pool's fast arrival velocity (tokens/s) and request rate (requests/s) at one decision; r
// is NaN where the request rate was unknown (no pod gave one that round).
type sample struct {
	t    time.Time
	v, r float64
}

// lateShare replays recorded arrivals through a fluid queue served at capacity c (tokens/s) and returns
// the share of the requests that arrived while the queue was longer than c·budget, i.e. would wait past
// the TTFT queueing budget (seconds); the share of the work where no sample of the pool recorded a request
// rate (the choice is the pool's, as one share cannot mix the units). Arrivals are charged to the interval
// ending at their sample, its requests bringing at most the replay's cap each on average (see replay).
// The result is in [0, 1].
//
// Requests, not tokens, because attainment is counted per request: weighted by tokens, one long prompt
// was a bunch whose own tokens were late at any pod count short of draining it within the budget, and
// with production length mixes (ServeGen's, heavy-tailed) a few such prompts held many pods for the whole
// burst memory while the requests arriving beside them were few (docs/evaluation.md measures it).
func lateShare(h []sample, c, budget, own float64) float64 {
	return replayed(h, own).lateShare(c, budget)
}

// lateShare is the package's lateShare on a replay built once for several capacities.
func (a replay) lateShare(c, budget float64) float64 {
	var q, late, total float64
	for i := 1; i < len(a.h); i++ {
		dt := a.h[i].t.Sub(a.h[i-1].t).Seconds()
		w := a.weight(i) * dt
		total += w
		q = math.Max(0, q+a.tokens(i)*dt-c*dt)
		if q > c*budget {
			late += w
		}
	}
	if !(total > 0) {
		return 0
	}
	if share := late / total; share >= 0 { // NaN (rates so large they overflow) fails this
		return math.Min(share, 1)
	}
	return 1
}

// replay is a history as the burst sizing replays it. The pool sends each prompt whole to one pod, so a
// prompt longer than a pod prefills within the TTFT SLO misses it on any number of pods and holds only
// the pod it runs on; through one shared queue its tokens made every request behind it late until the
// pool could drain them within the budget (docs/metrics.md measures a case). So where request rates were
// recorded each interval's requests bring at most cap tokens each on average to the queue: the history's
// mean prompt plus what one pod prefills within the budget, a sum near what a pod prefills within the
// SLO, as the budget is the SLO less the mean prompt's own prefill. An interval with tokens and no
// request (a long prompt's prefill spanning seconds, neither arriving nor finishing in them) brings none:
// its prompt holds its pod. Bunches of prompts of ordinary length are replayed whole, since more pods do
// serve them sooner.
type replay struct {
	h []sample
	// counted: some sample recorded a request rate, so the late share counts requests.
	counted bool
	// perToken is the requests per token of the samples with a known request rate: a sample without one
	// (a round whose pods' request gauges flapped) counts its tokens at that rate rather than as no
	// requests, which erased its interval from the replay, queue and count alike.
	perToken float64
	// cap is the most tokens a request brings to the queue on average over an interval; +Inf where no
	// sample recorded a request rate (nothing to count them by) or the sums overflow.
	cap float64
}

// replayed returns h as the burst sizing replays it, own being what one pod prefills within the budget
// (tokens; its velocity, not the share of it the sizing plans on, times the queueing budget).
func replayed(h []sample, own float64) replay {
	var tokens, requests float64
	for i := 1; i < len(h); i++ {
		if math.IsNaN(h[i].r) {
			continue
		}
		dt := h[i].t.Sub(h[i-1].t).Seconds()
		tokens += h[i].v * dt
		requests += h[i].r * dt
	}
	a := replay{h: h, counted: requests > 0, cap: math.Inf(1)}
	if limit := tokens/requests + own; a.counted && limit > 0 && limit <= math.MaxFloat64 {
		a.cap = limit
		if tokens > 0 {
			a.perToken = requests / tokens
		}
	}
	return a
}

// r is sample i's request rate, estimated from its tokens where it was unknown.
func (a replay) r(i int) float64 {
	if r := a.h[i].r; !math.IsNaN(r) {
		return r
	}
	return a.h[i].v * a.perToken
}

// tokens is the velocity (tokens/s) the replay charges to sample i's interval.
func (a replay) tokens(i int) float64 {
	if math.IsInf(a.cap, 1) {
		return a.h[i].v
	}
	return math.Min(a.h[i].v, a.r(i)*a.cap)
}

// weight is what sample i's interval counts toward the late share per second: its requests, or its tokens
// where the pool recorded no request rate.
func (a replay) weight(i int) float64 {
	if a.counted {
		return a.r(i)
	}
	return a.h[i].v
}

// burstPods is the least number of pods, at least from, whose capacity n·perPod keeps all but a share
// miss of the recorded arrivals within the queueing budget; own is what one pod prefills within the budget
// at its full velocity (tokens; see replay). It sizes for the bunching a window average
// hides: a pool whose mean load fits one instance can still need two when prompts arrive in bunches.
// A decision the sizing's answer already covers costs one replay; otherwise the count is bisected (the
// late share falls as capacity grows), so a few replays find it however far it is.
func burstPods(h []sample, budget, miss, perPod, own float64, from int) int {
	if len(h) < 2 || !(budget > 0) || !(perPod > 0) {
		return from
	}
	a := replayed(h, own)
	var peak float64
	for i := 1; i < len(h); i++ {
		peak = max(peak, a.tokens(i))
	}
	// At the peak velocity nothing ever queues, so the count stops there.
	top := ceilDiv(peak, perPod)
	ok := func(n int) bool { return n > 0 && a.lateShare(float64(n)*perPod, budget) <= miss }
	lo := max(from, 0)
	if lo >= top || ok(lo) {
		return lo
	}
	// lo fails and top meets the share: find the least n in (lo, top] that meets it.
	hi := top
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if ok(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// maxHistory bounds the samples burst sizing keeps and replays per pool: at the defaults (five minutes of
// 1 s decisions) it keeps 300, but the longest cold start at the shortest interval (1 h, 100 ms) would
// keep 180,000 and replay them several times a decision.
const maxHistory = 20000

// unknownGap is how many decision intervals without a sample make a gap whose arrivals are unknown: a
// round or two late (a busy adapter) still speaks for the time since the last.
const unknownGap = 5

// record appends the pool's fast arrival velocity and request rate and drops samples older than the
// window. A sample spanning less than window/maxHistory takes the next one in, over both spans (their
// time-weighted mean, so the arrivals the replay counts are the same).
func (c *Controller) record(now time.Time, pool string, v, r float64, window time.Duration) []sample {
	h := c.history[pool]
	if n := len(h); n > 0 && !now.After(h[n-1].t) {
		h = h[:0] // time went backwards (a restarted simulation): start over
	}
	v, r = math.Max(0, v), math.Max(0, r)
	if n, step := len(h), c.interval(); n > 0 && now.Sub(h[n-1].t) > unknownGap*step {
		// Rounds without this pool's velocity (unknown, no Ready pod, the group not decided): their arrivals
		// are unknown, so the gap carries none and the new velocity speaks for one interval. Spread over the
		// whole gap, a replacement pod's first rate read as minutes of overload and held pods for them.
		h = append(h, sample{t: now.Add(-step)})
	}
	if n := len(h); n > 1 && h[n-1].t.Sub(h[n-2].t) < window/maxHistory {
		// The newest sample spans (h[n-2].t, h[n-1].t], less than its share of the window: stretch it to now.
		old, added := h[n-1].t.Sub(h[n-2].t).Seconds(), now.Sub(h[n-1].t).Seconds()
		last := &h[n-1]
		last.v = (last.v*old + v*added) / (old + added)
		switch { // over the span it is known on: one unknown round does not make the merged sample unknown
		case math.IsNaN(last.r):
			last.r = r
		case !math.IsNaN(r):
			last.r = (last.r*old + r*added) / (old + added)
		}
		last.t = now
	} else {
		h = append(h, sample{now, v, r})
	}
	cut := 0
	for cut < len(h) && now.Sub(h[cut].t) > window {
		cut++
	}
	// Resliced, not copied down: append moves the live samples to a new array when it grows, so the
	// dropped ones cost no copy per decision.
	h = h[cut:]
	c.history[pool] = h
	return h
}
