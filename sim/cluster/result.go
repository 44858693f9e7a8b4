package cluster

import (
	"encoding/json"
	"math"
)

// TPOTSLO is TokenScale's time-per-output-token SLO for every request, in seconds.
const TPOTSLO = 0.100

// TTFTSLO is TokenScale's TTFT SLO for a prompt length: 250 / 400 / 2000 ms for < 256 / < 1024 / < 8192
// tokens. Longer prompts, which the papers leave out, keep the 2000 ms of the last band.
func TTFTSLO(promptTokens int) float64 {
	switch {
	case promptTokens < 256:
		return 0.250
	case promptTokens < 1024:
		return 0.400
	default:
		return 2.0
	}
}

// Sample is one point of a run's time series.
type Sample struct {
	T float64 `json:"t"`
	// Load arriving in the window ending at T, tokens/s.
	PromptTPS float64 `json:"promptTokensPerSecond"`
	OutputTPS float64 `json:"outputTokensPerSecond"`
	// Instances allocated (starting, Ready or draining) and Ready (serving).
	PrefillAllocated int `json:"prefillAllocated"`
	PrefillReady     int `json:"prefillReady"`
	DecodeAllocated  int `json:"decodeAllocated"`
	DecodeReady      int `json:"decodeReady"`
	Converted        int `json:"converted"`
	// TTFT of requests that arrived in the window, seconds; -1 when none arrived, +Inf (null in JSON)
	// when one of them never got its first token.
	TTFTP50 float64 `json:"ttftP50"`
	TTFTP99 float64 `json:"ttftP99"`
}

// MarshalJSON writes a TTFT that a request never reached as null: JSON has no infinity, and the report's
// encoder refused the whole run for one window of one tuning.
func (s Sample) MarshalJSON() ([]byte, error) {
	type plain Sample // without this method
	finite := func(x float64) *float64 {
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return nil
		}
		return &x
	}
	return json.Marshal(struct {
		plain
		TTFTP50 *float64 `json:"ttftP50"`
		TTFTP99 *float64 `json:"ttftP99"`
	}{plain(s), finite(s.TTFTP50), finite(s.TTFTP99)})
}

// Result is one run's outcome.
type Result struct {
	Requests, Unfinished int
	// Attainment is the share of requests meeting the TTFT SLO, the TPOT SLO and both. Unfinished
	// requests miss both.
	TTFTAttainment, TPOTAttainment, JointAttainment float64
	TTFTP50, TTFTP99, TPOTP50, TPOTP99              float64
	GPUSeconds                                      float64
	// Duration is the scored span (seconds from ScoreFrom to the run's end), over which GPUSeconds count.
	Duration float64
	// Conversions counts decoders turned to prefill work; ConvertedSeconds integrates them over time.
	Conversions      int
	ConvertedSeconds float64
	Series           []Sample
	// MissedTTFT says where the scored requests that missed their TTFT SLO spent the time to their first
	// token.
	MissedTTFT TTFTPath

	ttft, tpot []float64
	outcomes   []Outcome
	done       int
	events     int // the simulation's events, for the merged-steps test
}

// TTFTPath breaks the time to the first token of the scored requests that missed their TTFT SLO into
// its legs, as means in seconds over those a prefiller prefilled and a decoder gave their first token
// (the rest, unfinished or prefilled on a converted decoder, count in Missed only): the prefill (queue
// and compute), the KV transfer, the wait on the decoder for a batch slot or KV room, and the decoder's
// first step. It shows which pool a policy's TTFT misses come from.
type TTFTPath struct {
	Missed           int     `json:"missed"`
	PrefillSeconds   float64 `json:"prefillSeconds"`
	TransferSeconds  float64 `json:"transferSeconds"`
	AdmissionSeconds float64 `json:"admissionSeconds"`
	FirstStepSeconds float64 `json:"firstStepSeconds"`
	// FullBatchSteps counts the scored span's decode step starts that left requests waiting because the
	// batch held MaxBatch sequences.
	FullBatchSteps int `json:"fullBatchSteps"`
}

// Outcome is one scored request's arrival (seconds into the replay) and whether it met both SLOs.
type Outcome struct {
	Arrival float64
	Met     bool
}

// Outcomes lists every scored request's outcome, for analyses that split the window by time; nil unless
// Config.Outcomes was set.
func (r *Result) Outcomes() []Outcome { return r.outcomes }

// GPUHours is the run's cost.
func (r *Result) GPUHours() float64 { return r.GPUSeconds / 3600 }

// MeanGPUs is the average GPU count over the scored span.
func (r *Result) MeanGPUs() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return r.GPUSeconds / r.Duration
}

func newResult(n int) *Result {
	r := &Result{Requests: n, ttft: make([]float64, n), tpot: make([]float64, n)}
	for i := range r.ttft {
		r.ttft[i], r.tpot[i] = math.Inf(1), math.Inf(1)
	}
	return r
}

func (r *Result) record(q *request, now float64) {
	r.ttft[q.idx] = q.firstToken - q.arrival
	if q.out > 1 {
		r.tpot[q.idx] = (now - q.firstToken) / float64(q.out-1)
	} else {
		r.tpot[q.idx] = 0
	}
	r.done++
}

// finish computes the summary over the requests arriving from scoreFrom, and the per-window series;
// keepOutcomes keeps each scored request's outcome.
func (r *Result) finish(reqs []request, scoreFrom float64, keepOutcomes bool) {
	var okT, okP, okJ, n, done int
	var ttft, tpot []float64
	path := &r.MissedTTFT
	var viaDecoder int
	for i, q := range reqs {
		if q.arrival < scoreFrom {
			continue
		}
		n++
		if !math.IsInf(r.tpot[i], 1) {
			done++
		}
		ttft, tpot = append(ttft, r.ttft[i]), append(tpot, r.tpot[i])
		a := r.ttft[i] <= TTFTSLO(q.in)
		b := r.tpot[i] <= TPOTSLO
		if !a {
			path.Missed++
			if q.prefilled > 0 && q.landed >= q.prefilled && q.admitted >= q.landed && q.firstToken >= q.admitted {
				viaDecoder++
				path.PrefillSeconds += q.prefilled - q.arrival
				path.TransferSeconds += q.landed - q.prefilled
				path.AdmissionSeconds += q.admitted - q.landed
				path.FirstStepSeconds += q.firstToken - q.admitted
			}
		}
		if a {
			okT++
		}
		if b {
			okP++
		}
		if a && b {
			okJ++
		}
		if keepOutcomes {
			r.outcomes = append(r.outcomes, Outcome{Arrival: q.arrival, Met: a && b})
		}
	}
	r.Requests, r.Unfinished = n, n-done
	if n > 0 {
		r.TTFTAttainment, r.TPOTAttainment, r.JointAttainment = float64(okT)/float64(n), float64(okP)/float64(n), float64(okJ)/float64(n)
	}
	if viaDecoder > 0 {
		k := float64(viaDecoder)
		path.PrefillSeconds /= k
		path.TransferSeconds /= k
		path.AdmissionSeconds /= k
		path.FirstStepSeconds /= k
	}
	r.TTFTP50, r.TTFTP99 = quantiles(ttft)
	r.TPOTP50, r.TPOTP99 = quantiles(tpot)

	if len(r.Series) < 2 {
		return
	}
	w := r.Series[1].T - r.Series[0].T
	byWin := make([][]float64, len(r.Series))
	for i, q := range reqs {
		// The sample at T covers arrivals in (T-w, T].
		k := int(math.Ceil(q.arrival/w - 1e-9))
		if k >= len(r.Series) {
			continue
		}
		r.Series[k].PromptTPS += float64(q.in) / w
		r.Series[k].OutputTPS += float64(q.out) / w
		byWin[k] = append(byWin[k], r.ttft[i])
	}
	for k := range r.Series {
		r.Series[k].TTFTP50, r.Series[k].TTFTP99 = -1, -1
		if len(byWin[k]) > 0 {
			r.Series[k].TTFTP50, r.Series[k].TTFTP99 = quantiles(byWin[k])
		}
	}
}

// quantiles returns the nearest-rank p50 and p99 (+Inf when a request never got there).
func quantiles(xs []float64) (p50, p99 float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN()
	}
	s := append([]float64(nil), xs...)
	at := func(q float64) int { return min(max(int(math.Ceil(q*float64(len(s))))-1, 0), len(s)-1) }
	// Selection, not a sort: a run scores hundreds of thousands of requests and a sweep hundreds of runs.
	k99 := at(0.99)
	p99 = nth(s, k99)
	return nth(s[:k99+1], at(0.5)), p99
}

// nth reorders s so that s[k] holds what a sort would put there, and returns it (Hoare's selection).
func nth(s []float64, k int) float64 {
	lo, hi := 0, len(s)-1
	for lo < hi {
		a, b, c := s[lo], s[lo+(hi-lo)/2], s[hi]
		p := max(min(a, b), min(max(a, b), c)) // median of three
		i, j := lo, hi
		for i <= j {
			for s[i] < p {
				i++
			}
			for s[j] > p {
				j--
			}
			if i <= j {
				s[i], s[j] = s[j], s[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return s[k]
		}
	}
	return s[k]
}
