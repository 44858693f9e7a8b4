package eval

import (
	"fmt"
	"math"
	"time"

	"github.com/tokenscale/tokenscale/sim/autoscale"
	"github.com/tokenscale/tokenscale/sim/cluster"
)

// Hindsight is a reference beyond any autoscaler's means: the scored window cut into segments, and each
// segment served by whichever fixed pool size meets the target most cheaply overall, chosen knowing the
// whole window in advance, resized between segments at no cost and with no cold start. It answers how
// much any policy could save over the static pool on a trace: a goal below it is out of reach of every
// policy that picks among these sizes.
//
// It is an estimate, not a proof: a segment's outcome is read from a run of that size over the whole
// window, so the queue a smaller size left at a segment's end is not carried into the next, and a
// policy that converts decoders serves prefill with capacity no fixed size has.
type Hindsight struct {
	// Segment is how often the pools may be resized.
	Segment time.Duration `json:"segment"`
	// Sizes is how many (prefill, decode) sizes each segment chooses from: every prefill count up to the
	// static grid's largest, with the grid's decode counts.
	Sizes int `json:"sizes"`
	// CostAtTarget is the GPU-hours at the target, between the two cheapest mixes around it; nil when no
	// mix of the sizes reaches it.
	CostAtTarget *float64 `json:"costAtTarget"`
}

// sizeRun is one fixed size's record over the segments: met requests and GPU-seconds per segment.
type sizeRun struct {
	met  []int
	cost []float64
}

// hindsightSizes is every prefill count from 1 to the static grid's largest, with the grid's decode
// counts: the grid's coarse prefill steps would make the reference dearer than it need be.
func hindsightSizes(env autoscale.Env) []autoscale.Static {
	ps, ds := autoscale.StaticSizes(env)
	var out []autoscale.Static
	for p := 1; p <= ps[len(ps)-1]; p++ {
		for _, d := range ds {
			out = append(out, autoscale.Static{P: p, D: d})
		}
	}
	return out
}

// segmentRun splits one fixed size's run (its scored outcomes, mean GPU count and scored span in
// seconds) into n segments of seg seconds from scoreFrom: the requests met in each, by arrival, and the
// GPU-seconds spent there, the last segment running to the run's end.
func segmentRun(outs []cluster.Outcome, meanGPUs, duration, scoreFrom, seg float64, n int) sizeRun {
	s := sizeRun{met: make([]int, n), cost: make([]float64, n)}
	for _, o := range outs {
		if k := segmentOf(o.Arrival-scoreFrom, seg, n); o.Met {
			s.met[k]++
		}
	}
	for k := range n {
		length := seg
		if k == n-1 {
			length = duration - seg*float64(n-1)
		}
		s.cost[k] = meanGPUs * math.Max(0, length)
	}
	return s
}

func segmentOf(t, seg float64, n int) int {
	return min(max(int(t/seg), 0), n-1)
}

// cheapestMix is the least cost at which one size per segment meets need requests in all, over the
// mixes on the lower convex hull of (met, cost): a Lagrangian search for the price per met request at
// which the need is first met, interpolated between the mixes on either side of it, as the policies'
// frontiers are. ok is false when no mix meets the need.
func cheapestMix(runs []sizeRun, need float64) (cost float64, ok bool) {
	if len(runs) == 0 {
		return 0, false
	}
	segments := len(runs[0].met)
	pick := func(price float64) (met, cost float64) {
		for k := range segments {
			best, bestScore := 0, runs[0].cost[k]-price*float64(runs[0].met[k])
			for i := 1; i < len(runs); i++ {
				score := runs[i].cost[k] - price*float64(runs[i].met[k])
				if score < bestScore || score == bestScore && runs[i].cost[k] < runs[best].cost[k] {
					best, bestScore = i, score
				}
			}
			met += float64(runs[best].met[k])
			cost += runs[best].cost[k]
		}
		return met, cost
	}
	lo, hi := 0.0, 1.0
	for _, r := range runs {
		for _, c := range r.cost {
			hi += c // a request is never worth more than the whole bill
		}
	}
	if m, c := pick(lo); m >= need {
		return c, true
	}
	if m, _ := pick(hi); m < need {
		return 0, false
	}
	for range 200 {
		mid := lo + (hi-lo)/2
		if mid == lo || mid == hi {
			break
		}
		if m, _ := pick(mid); m >= need {
			hi = mid
		} else {
			lo = mid
		}
	}
	mLo, cLo := pick(lo)
	mHi, cHi := pick(hi)
	if mHi == mLo {
		return cHi, true
	}
	return cLo + (need-mLo)/(mHi-mLo)*(cHi-cLo), true
}

// describeHindsight is the report's line for the reference, beside the swept static pool's cost.
func (r *Report) describeHindsight() string {
	h := r.Hindsight
	if h == nil {
		return ""
	}
	head := fmt.Sprintf("Hindsight reference (not a policy): %d fixed sizes, resized every %s with the whole window known and no cold start,", h.Sizes, h.Segment)
	if h.CostAtTarget == nil {
		return head + " do not reach T."
	}
	line := fmt.Sprintf("%s reach T for %.2f GPU-h", head, *h.CostAtTarget)
	if s := r.costOf("static"); s != nil {
		line += fmt.Sprintf(", %.2f× the swept static pool", *h.CostAtTarget / *s)
	}
	if t := r.costOf("tokenscale"); t != nil {
		line += fmt.Sprintf("; tokenscale costs %.2f× it", *t / *h.CostAtTarget)
	}
	return line + "."
}
