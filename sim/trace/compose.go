package trace

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Mixed is the TokenScale paper's mixed workload: the Azure conv and code traces at equal request rates.
// conv (19,366 requests in its hour) is thinned to code's count (8,819), each request kept with the same
// probability, chosen by seed, and the two are merged on one timeline. o windows and scales the result.
func Mixed(o Options) (*Trace, error) {
	code, err := Embedded("code", Options{})
	if err != nil {
		return nil, err
	}
	conv, err := Embedded("conv", Options{})
	if err != nil {
		return nil, err
	}
	keep := float64(len(code.Requests)) / float64(len(conv.Requests))
	reqs := append(append([]Request(nil), code.Requests...), scaleRate(conv.Requests, keep, o.Seed)...)
	slices.SortStableFunc(reqs, byArrival)
	reqs, err = shape("mixed", reqs, o)
	if err != nil {
		return nil, err
	}
	return &Trace{Requests: reqs}, nil
}

// BurstStart and BurstLength place the burst test's spike: 45 minutes in, inside the window the
// simulator scores by default (after 20 min of history and 20 of tuning), so no policy was tuned on it.
const (
	BurstStart  = 45 * time.Minute
	BurstLength = 30 * time.Second
	BurstFactor = 10
)

// Burst is the burst test: the Azure conv trace with its request rate multiplied by BurstFactor for
// BurstLength from BurstStart. The added requests copy the lengths of the spike's own requests and arrive
// at uniformly random times inside the spike (chosen by seed): a Poisson-like surge on top of the trace.
func Burst(o Options) (*Trace, error) {
	conv, err := Embedded("conv", Options{})
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x6275727374))
	reqs := append([]Request(nil), conv.Requests...)
	var in []Request
	for _, r := range conv.Requests {
		if r.Arrival >= BurstStart && r.Arrival < BurstStart+BurstLength {
			in = append(in, r)
		}
	}
	if len(in) == 0 {
		return nil, fmt.Errorf("burst test: the conv trace has no request in [%s, %s)", BurstStart, BurstStart+BurstLength)
	}
	for range (BurstFactor - 1) * len(in) {
		r := in[rng.IntN(len(in))]
		r.Arrival = BurstStart + time.Duration(rng.Int64N(int64(BurstLength)))
		reqs = append(reqs, r)
	}
	slices.SortStableFunc(reqs, byArrival)
	reqs, err = shape("burst", reqs, o)
	if err != nil {
		return nil, err
	}
	return &Trace{Requests: reqs}, nil
}
