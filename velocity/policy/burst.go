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

// sample is a pool's fast arrival velocity at one decision.
type sample struct {
	t time.Time
	v float64
}

// burstNeed is the prefill capacity (tokens/s) that would have kept all but a share miss of the recent
// arrivals' work within the TTFT queueing budget (seconds): the recorded arrival velocities are replayed
// through a fluid queue served at capacity C, and the least C that meets the budget is found by bisection.
// It sizes for the burstiness a window average hides: a pool whose mean load fits one instance can still
// need two when prompts arrive in bunches. Arrivals are charged to the interval that ends at their sample.
func burstNeed(h []sample, budget, miss float64) float64 {
	if len(h) < 2 || !(budget > 0) {
		return 0
	}
	var total, peak float64
	for i := 1; i < len(h); i++ {
		dt := h[i].t.Sub(h[i-1].t).Seconds()
		total += h[i].v * dt
		peak = max(peak, h[i].v)
	}
	if !(total > 0) || math.IsInf(total, 0) {
		return 0
	}
	late := func(c float64) float64 {
		q, late := 0.0, 0.0
		for i := 1; i < len(h); i++ {
			dt := h[i].t.Sub(h[i-1].t).Seconds()
			a := h[i].v * dt
			q = math.Max(0, q+a-c*dt)
			if q > c*budget {
				late += a
			}
		}
		return late / total
	}
	// At the peak velocity nothing ever queues; bisect between nothing and it.
	lo, hi := 0.0, peak
	for range 40 {
		mid := (lo + hi) / 2
		if late(mid) > miss {
			lo = mid
		} else {
			hi = mid
		}
		if hi-lo <= 1e-3*hi {
			break
		}
	}
	return hi
}

// record appends the pool's fast arrival velocity and drops samples older than the window.
func (c *Controller) record(now time.Time, pool string, v float64, window time.Duration) []sample {
	h := c.history[pool]
	if n := len(h); n > 0 && !now.After(h[n-1].t) {
		h = h[:0] // time went backwards (a restarted simulation): start over
	}
	h = append(h, sample{now, math.Max(0, v)})
	cut := 0
	for cut < len(h) && now.Sub(h[cut].t) > window {
		cut++
	}
	h = append(h[:0], h[cut:]...)
	c.history[pool] = h
	return h
}
