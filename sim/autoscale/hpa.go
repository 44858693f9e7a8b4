// Package autoscale holds the policies the simulator compares: tokenscale (the velocity code the adapter
// runs) with its ablations, and the baselines as their sources describe them, plus the Kubernetes HPA
// algorithm the metric-driven ones act through.
package autoscale

import (
	"math"
	"slices"
	"time"

	"github.com/tokenscale/tokenscale/velocity/policy"
)

// HPA is the Kubernetes HorizontalPodAutoscaler's replica algorithm (pkg/controller/podautoscaler):
// every Sync it turns a usage ratio into ceil(ratio × replicas), skips changes within Tolerance (as
// Kubernetes 1.33 and later compare it: 11 desired over 10 is held), stabilises (scale-down to the
// highest recommendation of DownWindow, scale-up to the lowest of UpWindow) and limits scale-up to
// max(2×, +4 pods) per sync, the default behaviour's policies.
type HPA struct {
	Sync                 time.Duration
	Tolerance            float64
	UpWindow, DownWindow time.Duration
	Min, Max             int
	// UpPods and DownPods, when set, replace the default scale-up limit with a behavior's Pods policies:
	// at most UpPods added per UpPeriod, DownPods removed per DownPeriod (counted from the replicas at
	// the period's start, as the HPA's normalizeDesiredReplicasWithBehaviors does).
	UpPods, DownPods     int
	UpPeriod, DownPeriod time.Duration

	next   float64
	recs   []hpaRec
	events []hpaRec // replica changes the HPA made: n is the change, + up or − down
}

type hpaRec struct {
	t float64
	n int
}

// NewHPA returns an HPA with Kubernetes' defaults: 15 s sync, 10% tolerance, 5 min scale-down window.
func NewHPA() *HPA {
	return &HPA{Sync: 15 * time.Second, Tolerance: 0.1, DownWindow: 5 * time.Minute, Min: 1, Max: 64}
}

// Step returns the spec replicas after a tick at now. ratio is current usage over target, measured over
// base replicas (the HPA's ready pods); ok is false when the metric is unavailable, which holds the
// replicas as the HPA does.
func (h *HPA) Step(now float64, current, base int, ratio float64, ok bool) int {
	if now < h.next {
		return current
	}
	h.next = now + h.Sync.Seconds()
	if !ok || math.IsNaN(ratio) || math.IsInf(ratio, 0) || ratio < 0 {
		return current
	}
	return h.apply(now, current, h.Proposal(current, base, ratio))
}

// Proposal is one metric's replica proposal: ceil(ratio × base), or current within the tolerance.
func (h *HPA) Proposal(current, base int, ratio float64) int {
	if policy.WithinTolerance(ratio, h.Tolerance) {
		return current
	}
	return int(math.Ceil(ratio*float64(base) - 1e-9))
}

// StepProposals is Step for an HPA with several metrics (computeReplicasForMetrics): it takes the
// largest proposal; when some metric is unavailable it refuses a scale-down of the others (no
// recommendation recorded), and holds when every one is.
func (h *HPA) StepProposals(now float64, current int, proposals []int, allOK bool) int {
	if now < h.next {
		return current
	}
	h.next = now + h.Sync.Seconds()
	if len(proposals) == 0 {
		return current
	}
	rec := slices.Max(proposals)
	if !allOK && rec < current {
		return current // Kubernetes refuses a scale-down with a metric missing, and records the rest
	}
	return h.apply(now, current, rec)
}

// apply stabilises a recommendation and applies the scaling limits.
func (h *HPA) apply(now float64, current, rec int) int {
	h.recs = append(h.recs, hpaRec{now, rec})
	keep := math.Max(h.UpWindow.Seconds(), h.DownWindow.Seconds())
	cut := 0
	for cut < len(h.recs) && now-h.recs[cut].t > keep {
		cut++
	}
	h.recs = h.recs[cut:]
	up, down := rec, rec
	for _, r := range h.recs {
		age := now - r.t
		if age <= h.UpWindow.Seconds() {
			up = min(up, r.n)
		}
		if age <= h.DownWindow.Seconds() {
			down = max(down, r.n)
		}
	}
	n := current
	if n < up {
		n = up
	}
	if n > down {
		n = down
	}
	switch {
	case n > current && h.UpPods > 0:
		n = min(n, max(current, h.periodStart(now, current, h.UpPeriod)+h.UpPods))
	case n > current:
		n = min(n, max(2*current, current+4))
	case n < current && h.DownPods > 0:
		n = max(n, min(current, h.periodStart(now, current, h.DownPeriod)-h.DownPods))
	}
	n = min(max(n, h.Min), h.Max)
	if n != current && (h.UpPods > 0 || h.DownPods > 0) {
		h.events = append(h.events, hpaRec{now, n - current})
	}
	return n
}

// periodStart is the replicas at the start of the last period: current less what the HPA added within
// it plus what it removed, counting an event strictly inside the period as Kubernetes does
// (calculateScaleUpLimitWithScalingRules, calculateScaleDownLimitWithBehaviors).
func (h *HPA) periodStart(now float64, current int, period time.Duration) int {
	cut := 0
	for cut < len(h.events) && now-h.events[cut].t >= max(h.UpPeriod, h.DownPeriod).Seconds() {
		cut++
	}
	h.events = h.events[cut:]
	start := current
	for _, e := range h.events {
		if now-e.t < period.Seconds() {
			start -= e.n
		}
	}
	return start
}

// counterRate turns per-instance cumulative counters into a pool rate over the interval since the last
// call, pairing instances by name so that instances coming and going neither jump nor go negative.
type counterRate struct {
	prev  map[string]float64
	prevT float64
}

// rate returns Σ Δcounter / Δt over instances seen both times; ok is false on the first call.
func (c *counterRate) rate(now float64, names []string, values []float64) (float64, bool) {
	cur := make(map[string]float64, len(names))
	sum, paired := 0.0, 0
	for i, n := range names {
		cur[n] = values[i]
		if p, ok := c.prev[n]; ok && values[i] >= p {
			sum += values[i] - p
			paired++
		}
	}
	dt := now - c.prevT
	first := c.prev == nil
	c.prev, c.prevT = cur, now
	if first || dt <= 0 || paired == 0 {
		return 0, false
	}
	// Instances without a previous value carry the paired ones' mean.
	return sum / dt * float64(len(names)) / float64(paired), true
}
