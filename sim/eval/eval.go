// Package eval runs policies and their tuning sweeps over a trace and reports SLO attainment and cost:
// the comparison behind docs/evaluation.md.
package eval

import (
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tokenscale/tokenscale/sim/autoscale"
	"github.com/tokenscale/tokenscale/sim/cluster"
	"github.com/tokenscale/tokenscale/sim/trace"
)

// Options tune an evaluation.
type Options struct {
	// Cluster is the template config of every run (its Hardware included).
	Cluster cluster.Config
	// Goal is the joint SLO attainment the comparison aims at; the target is the lower of it and the
	// trace's ceiling less one point. Default 0.96.
	Goal float64
	// Workers runs variants in parallel. Default GOMAXPROCS.
	Workers int
	// Progress, when set, is called after each finished run.
	Progress func(done, total int)
	// History, when > 0, is the first part of the trace that the policies' offline statistics
	// (profiled V_D, means, peaks, P:D ratio, static sizes) come from; it is never scored. By default the
	// statistics come from the scored trace itself (in sample).
	History time.Duration
	// Tune, when > 0 (with History), is the window after the history on which each policy's tuning is
	// chosen; the rest of the trace is scored. By default the tuning is chosen on the scored window.
	Tune time.Duration
	// Warmup is how much of the preceding traffic every run replays, unscored, before its window, so
	// every policy enters the window from its own steady state rather than from the same cold guess.
	Warmup time.Duration
	// Hindsight, when > 0, also computes the Hindsight reference with pools resized this often.
	Hindsight time.Duration
	// ScrapeInterval, when > 0, is tokenscale's scrape.interval (the adapter's default otherwise).
	ScrapeInterval time.Duration
}

// SplitHistory splits a trace at d: the requests before d are history, the rest (shifted to start at 0)
// are scored. It fails when either part is empty.
func SplitHistory(reqs []trace.Request, d time.Duration) (history, scored []trace.Request, err error) {
	if len(reqs) == 0 {
		return nil, nil, fmt.Errorf("history of %s: the trace has no requests", d)
	}
	i := sort.Search(len(reqs), func(i int) bool { return reqs[i].Arrival >= d })
	if i == 0 || i == len(reqs) {
		return nil, nil, fmt.Errorf("history of %s leaves no requests on one side (the trace spans %s)", d, reqs[len(reqs)-1].Arrival)
	}
	scored = make([]trace.Request, len(reqs)-i)
	for j, r := range reqs[i:] {
		r.Arrival -= d
		scored[j] = r
	}
	return reqs[:i], scored, nil
}

// Summary is one run's outcome in report units (milliseconds, hours). Latency quantiles are nil when a
// request never got its token (the quantile is unbounded), never a made-up number.
type Summary struct {
	Policy           string   `json:"policy"`
	Tuning           string   `json:"tuning"`
	Requests         int      `json:"requests"`
	Unfinished       int      `json:"unfinished"`
	JointAttainment  float64  `json:"jointAttainment"`
	TTFTAttainment   float64  `json:"ttftAttainment"`
	TPOTAttainment   float64  `json:"tpotAttainment"`
	TTFTP50ms        *float64 `json:"ttftP50ms"`
	TTFTP99ms        *float64 `json:"ttftP99ms"`
	TPOTP50ms        *float64 `json:"tpotP50ms"`
	TPOTP99ms        *float64 `json:"tpotP99ms"`
	GPUHours         float64  `json:"gpuHours"`
	MeanGPUs         float64  `json:"meanGPUs"`
	Conversions      int      `json:"conversions"`
	ConvertedSeconds float64  `json:"convertedSeconds"`
	// MissedTTFT says where the requests missing their TTFT SLO spent the time to their first token.
	MissedTTFT cluster.TTFTPath `json:"missedTTFT"`
	// Edge marks a tuning at an end of its policy's swept range (see autoscale.Variant.Edge).
	Edge bool `json:"edge,omitempty"`
	// Series is kept for the chosen tuning of each policy only.
	Series []cluster.Sample `json:"series,omitempty"`
}

// FrontierPoint is one non-dominated tuning of a policy on the scored window.
type FrontierPoint struct {
	Tuning          string  `json:"tuning"`
	JointAttainment float64 `json:"jointAttainment"`
	GPUHours        float64 `json:"gpuHours"`
	Edge            bool    `json:"edge,omitempty"`
}

// PolicyResult is one policy's outcome: its held-out pick (chosen on the tuning window, scored on the
// scored window: the embedded Summary), and its frontier and cost at the target on the scored window.
type PolicyResult struct {
	Summary
	// Variants is the size of the policy's sweep.
	Variants int `json:"variants"`
	// TuneJointAttainment and TuneGPUHours are the pick's numbers on the tuning window, when there is one.
	TuneJointAttainment *float64 `json:"tuneJointAttainment,omitempty"`
	TuneGPUHours        *float64 `json:"tuneGPUHours,omitempty"`
	// Frontier is the non-dominated (attainment, GPU-hours) points of the sweep, cheapest first.
	Frontier []FrontierPoint `json:"frontier"`
	// CostAtTarget is the GPU-hours at the target attainment, interpolated on the frontier; nil when no
	// tuning reaches the target. CostEdge says the frontier point reaching the target is a sweep edge.
	CostAtTarget *float64 `json:"costAtTarget"`
	CostEdge     bool     `json:"costEdge,omitempty"`
	// Ratio is CostAtTarget over the cheapest other policy's (ablations aside); nil when either is nil.
	Ratio *float64 `json:"ratioToCheapestOther"`
	// Cheapest names that other policy.
	Cheapest string `json:"cheapestOther,omitempty"`
}

// Window is a span of the trace in trace time, with its request count.
type Window struct {
	From     time.Duration `json:"from"`
	To       time.Duration `json:"to"`
	Requests int           `json:"requests"`
}

// Report is one trace's evaluation.
type Report struct {
	Trace string `json:"trace"`
	// Load says how the trace's load was made, where it was synthesised (ServeGen), for the header.
	Load     string        `json:"load,omitempty"`
	Requests int           `json:"requests"`
	Hardware string        `json:"hardware"`
	Env      autoscale.Env `json:"env"`
	Goal     float64       `json:"goal"`
	// Ceiling is the scored window's joint attainment with unlimited capacity Ready at once; Target is
	// min(Goal, Ceiling - 0.01), the attainment policies are compared at. Both are fractions.
	Ceiling float64 `json:"ceiling"`
	Target  float64 `json:"target"`
	// TuneTarget is the target on the tuning window (its own ceiling less a point, at most Goal).
	TuneTarget float64 `json:"tuneTarget,omitempty"`
	// HistoryRequests counts the requests the offline statistics came from, when not the scored ones.
	HistoryRequests int `json:"historyRequests,omitempty"`
	// History, Tune and Scored are the windows; Tune is nil when the tuning is chosen on the scored one.
	History *Window       `json:"history,omitempty"`
	Tune    *Window       `json:"tune,omitempty"`
	Scored  Window        `json:"scored"`
	Warmup  time.Duration `json:"warmup"`
	// Chosen holds each policy's result in policy order; Tuning holds every scored run.
	Chosen []PolicyResult `json:"chosen"`
	Tuning []Summary      `json:"tuning"`
	// Hindsight is the reference of Options.Hindsight, when asked for.
	Hindsight *Hindsight `json:"hindsight,omitempty"`
}

// NewEnv derives what a policy may know offline from a trace and hardware: the profiled V_D at the
// trace's mean lengths and the mean and 10 s-peak token rates.
func NewEnv(reqs []trace.Request, hw cluster.Hardware, coldStart time.Duration) (autoscale.Env, error) {
	if len(reqs) == 0 {
		return autoscale.Env{}, errors.New("trace has no requests")
	}
	var in, out float64
	win := map[int64][3]float64{}
	for _, r := range reqs {
		in += float64(r.PromptTokens)
		out += float64(max(r.OutputTokens, 1))
		k := int64(r.Arrival / (10 * time.Second))
		w := win[k]
		w[0] += float64(r.PromptTokens)
		w[1] += float64(max(r.OutputTokens, 1))
		w[2]++
		win[k] = w
	}
	n := float64(len(reqs))
	first := reqs[0].Arrival.Seconds()
	span := math.Max(reqs[len(reqs)-1].Arrival.Seconds()-math.Floor(first/10)*10, 10)
	env := autoscale.Env{Hardware: hw, MeanIn: in / n, MeanOut: out / n, MeanPromptTPS: in / span, MeanOutputTPS: out / span, ColdStart: coldStart}
	env.MeanRPS = n / span
	for _, w := range win {
		env.PeakPromptTPS = math.Max(env.PeakPromptTPS, w[0]/10)
		env.PeakOutputTPS = math.Max(env.PeakOutputTPS, w[1]/10)
		env.PeakRPS = math.Max(env.PeakRPS, w[2]/10)
	}
	// Profile V_D as TokenScale's offline profiler would: the throughput at the TPOT SLO with headroom
	// (steps at half the SLO, so a step can take a prefill chunk or a longer context).
	env.DecodeTPS = hw.DecodeVelocity(env.MeanIn, env.MeanOut, cluster.TPOTSLO/2)
	env.PoolTTFTSLO = time.Duration(cluster.TTFTSLO(int(env.MeanIn)) * float64(time.Second))
	if !(env.DecodeTPS > 0) {
		return env, fmt.Errorf("hardware %s cannot decode the trace's mean request within the TPOT SLO", hw.Name)
	}
	return env, nil
}

// span returns the requests arriving in [from, to) (to <= 0: to the end).
func span(reqs []trace.Request, from, to time.Duration) []trace.Request {
	i := sort.Search(len(reqs), func(i int) bool { return reqs[i].Arrival >= from })
	j := len(reqs)
	if to > 0 {
		j = sort.Search(len(reqs), func(i int) bool { return reqs[i].Arrival >= to })
	}
	return reqs[i:j]
}

// replay is one window's run input: the window's requests preceded by warm-up traffic, shifted so the
// replay starts at 0, and where scoring starts.
type replay struct {
	reqs      []trace.Request
	scoreFrom time.Duration
	win       Window
}

func newReplay(reqs []trace.Request, from, to, warmup time.Duration) (replay, error) {
	start := max(0, from-warmup)
	in := span(reqs, start, to)
	w := Window{From: from, To: to, Requests: len(span(reqs, from, to))}
	if w.To <= 0 && len(reqs) > 0 {
		w.To = reqs[len(reqs)-1].Arrival
	}
	if w.Requests == 0 {
		return replay{}, fmt.Errorf("the window %s–%s has no requests", from, w.To)
	}
	out := make([]trace.Request, len(in))
	for i, r := range in {
		r.Arrival -= start
		out[i] = r
	}
	return replay{reqs: out, scoreFrom: from - start, win: w}, nil
}

func targetFor(goal, ceiling float64) float64 {
	return math.Min(goal, ceiling-0.01)
}

// Evaluate runs every variant of every policy over reqs: on the tuning window (when there is one) to
// choose each policy's tuning, and on the scored window for its frontier and its pick's score.
func Evaluate(name string, reqs []trace.Request, pols []autoscale.Policy, o Options) (*Report, error) {
	if o.Goal == 0 {
		o.Goal = 0.96
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if len(reqs) == 0 {
		return nil, errors.New("trace has no requests")
	}
	if o.Hindsight != 0 && o.Hindsight < time.Second {
		return nil, fmt.Errorf("a hindsight segment of %s is below 1s", o.Hindsight)
	}
	if o.History < 0 || o.Tune < 0 || o.Warmup < 0 {
		// A negative history would quietly take the statistics in sample.
		return nil, fmt.Errorf("the history %s, tuning window %s and warm-up %s must not be negative", o.History, o.Tune, o.Warmup)
	}
	if o.Tune > 0 && o.History <= 0 {
		return nil, errors.New("a tuning window needs a history window before it")
	}
	hist := reqs
	var histWin *Window
	if o.History > 0 {
		hist = span(reqs, 0, o.History)
		if len(hist) == 0 {
			return nil, fmt.Errorf("the history window 0–%s has no requests", o.History)
		}
		histWin = &Window{From: 0, To: o.History, Requests: len(hist)}
	}
	env, err := NewEnv(hist, o.Cluster.Hardware, o.Cluster.ColdStart)
	if err != nil {
		return nil, err
	}
	if env.ColdStart == 0 {
		env.ColdStart = 60 * time.Second
	}
	env.ScrapeInterval = o.ScrapeInterval
	if o.Cluster.ConvertSwitch {
		env.ConvertedPrefill = 1
	}
	// Every run starts its replay from the pools an operator would deploy for the history's mean load;
	// the warm-up then lets each policy reach its own state before scoring starts.
	if o.Cluster.InitialPrefill == 0 && o.Cluster.InitialDecode == 0 {
		s := autoscale.NewStatic(env, env.MeanPromptTPS, env.MeanOutputTPS)
		o.Cluster.InitialPrefill, o.Cluster.InitialDecode = s.P, s.D
	}
	var tune *replay
	scoreFrom := o.History
	if o.Tune > 0 {
		t, err := newReplay(reqs, o.History, o.History+o.Tune, o.Warmup)
		if err != nil {
			return nil, fmt.Errorf("tuning: %w", err)
		}
		tune = &t
		scoreFrom += o.Tune
	}
	scored, err := newReplay(reqs, scoreFrom, 0, o.Warmup)
	if err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}

	type job struct {
		pol, idx int
		tune     bool
		v        autoscale.Variant
	}
	var jobs []job
	var variants []autoscale.Variant
	var owner []int
	for i, p := range pols {
		for _, v := range p.Variants(env) {
			variants = append(variants, v)
			owner = append(owner, i)
		}
	}
	for k, v := range variants {
		jobs = append(jobs, job{pol: owner[k], idx: k, v: v})
		if tune != nil {
			jobs = append(jobs, job{pol: owner[k], idx: k, tune: true, v: v})
		}
	}
	runs := make([]Summary, len(variants))
	tuneRuns := make([]Summary, len(variants))
	series := make([][]cluster.Sample, len(variants))
	errs := make([]error, len(jobs))
	var (
		mu   sync.Mutex
		done int
	)
	parallel(len(jobs), o.Workers, func(n int) {
		j := jobs[n]
		cfg := o.Cluster
		cfg.Progress = nil
		rp := scored
		if j.tune {
			rp = *tune
		}
		cfg.ScoreFrom = rp.scoreFrom
		res, err := cluster.Run(cfg, rp.reqs, j.v.New())
		if err != nil {
			errs[n] = err
		} else {
			s := summarise(pols[j.pol].Name, j.v.Tuning, res)
			s.Edge = j.v.Edge
			if j.tune {
				tuneRuns[j.idx] = s
			} else {
				runs[j.idx] = s
				series[j.idx] = res.Series
			}
		}
		mu.Lock()
		done++
		if o.Progress != nil {
			o.Progress(done, len(jobs))
		}
		mu.Unlock()
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	drain := o.Cluster.DrainLimit
	rep := &Report{Trace: name, Requests: scored.win.Requests, Hardware: o.Cluster.Hardware.Name, Env: env, Goal: o.Goal,
		Tuning: runs, HistoryRequests: len(hist), History: histWin, Scored: scored.win, Warmup: o.Warmup}
	if histWin == nil {
		rep.HistoryRequests = 0
	}
	rep.Ceiling = cluster.Ceiling(o.Cluster.Hardware, scored.reqs, scored.scoreFrom, drain)
	rep.Target = targetFor(o.Goal, rep.Ceiling)
	chooseOn, chooseTarget := runs, rep.Target
	if tune != nil {
		w := tune.win
		rep.Tune = &w
		rep.TuneTarget = targetFor(o.Goal, cluster.Ceiling(o.Cluster.Hardware, tune.reqs, tune.scoreFrom, drain))
		chooseOn, chooseTarget = tuneRuns, rep.TuneTarget
	}
	lo := 0
	for i, p := range pols {
		hi := lo
		for hi < len(variants) && owner[hi] == i {
			hi++
		}
		best := choose(chooseOn[lo:hi], chooseTarget) + lo
		pr := PolicyResult{Summary: runs[best], Variants: hi - lo}
		pr.Series = series[best]
		if tune != nil {
			a, g := tuneRuns[best].JointAttainment, tuneRuns[best].GPUHours
			pr.TuneJointAttainment, pr.TuneGPUHours = &a, &g
		}
		pr.Frontier = Frontier(runs[lo:hi])
		pr.CostAtTarget, pr.CostEdge = CostAt(pr.Frontier, rep.Target)
		rep.Chosen = append(rep.Chosen, pr)
		_ = p
		lo = hi
	}
	rep.rank()
	if o.Hindsight > 0 {
		h, err := hindsight(o, env, scored, rep.Target)
		if err != nil {
			return nil, fmt.Errorf("hindsight: %w", err)
		}
		rep.Hindsight = h
	}
	return rep, nil
}

// hindsight runs every size of the Hindsight reference over the scored window and finds its cheapest
// mix at the target.
func hindsight(o Options, env autoscale.Env, scored replay, target float64) (*Hindsight, error) {
	sizes := hindsightSizes(env)
	seg := o.Hindsight.Seconds()
	span := (scored.win.To - scored.win.From).Seconds()
	n := max(1, int(math.Ceil(span/seg)))
	runs := make([]sizeRun, len(sizes))
	errs := make([]error, len(sizes))
	scoreFrom := scored.scoreFrom.Seconds()
	parallel(len(sizes), o.Workers, func(i int) {
		cfg := o.Cluster
		cfg.Progress = nil
		cfg.ScoreFrom = scored.scoreFrom
		cfg.Outcomes = true
		res, err := cluster.Run(cfg, scored.reqs, sizes[i])
		if err != nil {
			errs[i] = err
			return
		}
		runs[i] = segmentRun(res.Outcomes(), res.MeanGPUs(), res.Duration, scoreFrom, seg, n)
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	h := &Hindsight{Segment: o.Hindsight, Sizes: len(sizes)}
	if c, ok := cheapestMix(runs, target*float64(scored.win.Requests)); ok {
		c /= 3600
		h.CostAtTarget = &c
	}
	return h, nil
}

// parallel calls f(0) … f(n-1) on at most workers goroutines and waits for them.
func parallel(n, workers int, f func(int)) {
	ch := make(chan int)
	var wg sync.WaitGroup
	// No more goroutines than calls: a huge Workers must not start idle ones by the million.
	for range max(min(workers, n), 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ch {
				f(i)
			}
		}()
	}
	for i := range n {
		ch <- i
	}
	close(ch)
	wg.Wait()
}

// ablation reports whether a policy is one of tokenscale's ablations, left out of "other policies".
func ablation(name string) bool { return strings.HasPrefix(name, "ts-") }

// rank fills each policy's ratio to the cheapest other policy at the target.
func (r *Report) rank() {
	for i := range r.Chosen {
		me := &r.Chosen[i]
		for j, o := range r.Chosen {
			if j == i || ablation(o.Policy) || o.CostAtTarget == nil {
				continue
			}
			if me.Cheapest == "" || *o.CostAtTarget < *r.costOf(me.Cheapest) {
				me.Cheapest = o.Policy
			}
		}
		if me.CostAtTarget != nil && me.Cheapest != "" {
			x := *me.CostAtTarget / *r.costOf(me.Cheapest)
			me.Ratio = &x
		}
	}
}

func (r *Report) costOf(policy string) *float64 {
	for _, c := range r.Chosen {
		if c.Policy == policy {
			return c.CostAtTarget
		}
	}
	return nil
}

// Frontier returns the non-dominated (attainment, GPU-hours) points of a sweep, cheapest first: each
// point has strictly higher attainment than every cheaper one.
func Frontier(rs []Summary) []FrontierPoint {
	idx := make([]int, len(rs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		ra, rb := rs[idx[a]], rs[idx[b]]
		if ra.GPUHours != rb.GPUHours {
			return ra.GPUHours < rb.GPUHours
		}
		return ra.JointAttainment > rb.JointAttainment
	})
	var out []FrontierPoint
	for _, i := range idx {
		s := rs[i]
		if len(out) > 0 && s.JointAttainment <= out[len(out)-1].JointAttainment {
			continue
		}
		out = append(out, FrontierPoint{Tuning: s.Tuning, JointAttainment: s.JointAttainment, GPUHours: s.GPUHours, Edge: s.Edge})
	}
	return out
}

// Hull is the lower convex hull of a frontier (cheapest first, as Frontier returns it): the costs an
// operator can reach by alternating any two tunings, who gets both the attainment and the cost in
// proportion. Points above a chord between two others are left out; a point on one is kept, so a cost
// it reaches alone is not reported as a mix (which would take the mix's edge marks).
func Hull(f []FrontierPoint) []FrontierPoint {
	var h []FrontierPoint
	for _, p := range f {
		for len(h) >= 2 {
			a, b := h[len(h)-2], h[len(h)-1]
			// b is left out when it lies above the chord from a to p.
			if (b.JointAttainment-a.JointAttainment)*(p.GPUHours-a.GPUHours)-(b.GPUHours-a.GPUHours)*(p.JointAttainment-a.JointAttainment) >= 0 {
				break
			}
			h = h[:len(h)-1]
		}
		h = append(h, p)
	}
	return h
}

// CostAt is the GPU-hours at attainment t on a frontier's lower convex hull (Hull): linear between the
// two hull points around t, the cheapest point's cost when it already reaches t, nil when no point does.
// edge reports whether a point the cost comes from is at an edge of its sweep.
func CostAt(f []FrontierPoint, t float64) (cost *float64, edge bool) {
	h := Hull(f)
	for i, p := range h {
		if p.JointAttainment < t {
			continue
		}
		if i == 0 || p.JointAttainment == t {
			c := p.GPUHours // no mix: p alone reaches t
			return &c, p.Edge
		}
		q := h[i-1]
		c := q.GPUHours + (p.GPUHours-q.GPUHours)*(t-q.JointAttainment)/(p.JointAttainment-q.JointAttainment)
		return &c, p.Edge || q.Edge
	}
	return nil, false
}

// choose picks the cheapest tuning that reaches the goal, else the one with the best attainment.
func choose(rs []Summary, goal float64) int {
	best := -1
	for i, r := range rs {
		if r.JointAttainment < goal {
			continue
		}
		if best < 0 || r.GPUHours < rs[best].GPUHours {
			best = i
		}
	}
	if best >= 0 {
		return best
	}
	best = 0
	for i, r := range rs {
		if r.JointAttainment > rs[best].JointAttainment ||
			(r.JointAttainment == rs[best].JointAttainment && r.GPUHours < rs[best].GPUHours) {
			best = i
		}
	}
	return best
}

func ms(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	v := math.Round(x*1e4) / 10 // 0.1 ms resolution keeps golden output stable
	return &v
}

func summarise(policy, tuning string, r *cluster.Result) Summary {
	return Summary{
		Policy: policy, Tuning: tuning, Requests: r.Requests, Unfinished: r.Unfinished,
		JointAttainment: r.JointAttainment, TTFTAttainment: r.TTFTAttainment, TPOTAttainment: r.TPOTAttainment,
		TTFTP50ms: ms(r.TTFTP50), TTFTP99ms: ms(r.TTFTP99), TPOTP50ms: ms(r.TPOTP50), TPOTP99ms: ms(r.TPOTP99),
		GPUHours: r.GPUHours(), MeanGPUs: r.MeanGPUs(), Conversions: r.Conversions, ConvertedSeconds: r.ConvertedSeconds,
		MissedTTFT: r.MissedTTFT,
	}
}

func fmtMS(p *float64) string {
	if p == nil {
		return "∞"
	}
	return fmt.Sprintf("%.0f", *p)
}

func pct(x float64) string { return fmt.Sprintf("%.1f%%", 100*x) }

// describe says where the statistics, the tuning and the score come from.
func (r *Report) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scored on %d requests", r.Scored.Requests)
	if r.History == nil {
		b.WriteString(" of the whole trace; statistics and tuning from the same requests (in sample)")
		return b.String()
	}
	fmt.Fprintf(&b, " from %s to %s; statistics from %s–%s (%d requests)", r.Scored.From, r.Scored.To, r.History.From, r.History.To, r.History.Requests)
	if r.Tune != nil {
		fmt.Fprintf(&b, "; tuning chosen on %s–%s (%d requests), not scored", r.Tune.From, r.Tune.To, r.Tune.Requests)
	} else {
		b.WriteString("; tuning chosen on the scored window")
	}
	if r.Warmup > 0 {
		fmt.Fprintf(&b, "; every run replays the %s before its window unscored", r.Warmup)
	}
	return b.String()
}

// WriteTable writes the report as Markdown: the ranking at the target attainment, each policy's
// held-out pick, and optionally the whole sweep.
func (r *Report) WriteTable(w io.Writer, withTuning bool) {
	fmt.Fprintf(w, "### %s (%s, V_P %.0f tok/s, V_D %.0f tok/s, cold start %s)\n\n",
		r.Trace, r.Hardware, r.Env.Hardware.PrefillTPS, r.Env.DecodeTPS, r.Env.ColdStart)
	if r.Load != "" {
		fmt.Fprintf(w, "%s.\n\n", r.Load)
	}
	fmt.Fprintf(w, "%s.\n\n", r.describe())
	fmt.Fprintf(w, "Ceiling %s (joint attainment with unlimited capacity Ready at once); target T = %s (the lower of the %s goal and the ceiling less a point).\n\n",
		pct(r.Ceiling), pct(r.Target), pct(r.Goal))
	order := make([]int, len(r.Chosen))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ca, cb := r.Chosen[order[a]].CostAtTarget, r.Chosen[order[b]].CostAtTarget
		switch {
		case ca == nil || cb == nil:
			return ca != nil && cb == nil
		default:
			return *ca < *cb
		}
	})
	fmt.Fprint(w, "| rank | policy | GPU-h at T | × cheapest other | frontier | sweep | held-out pick | joint SLO | GPU-hours |\n|---:|---|---:|---|---:|---:|---|---:|---:|\n")
	for k, i := range order {
		c := r.Chosen[i]
		cost, ratio, rank := "unreachable", "–", "–"
		if c.CostAtTarget != nil {
			cost = fmt.Sprintf("%.2f", *c.CostAtTarget)
			if c.CostEdge {
				cost += " (edge)"
			}
			rank = fmt.Sprint(k + 1)
			if c.Ratio != nil {
				ratio = fmt.Sprintf("%.3f× %s", *c.Ratio, c.Cheapest)
			}
		}
		pick := c.Tuning
		if c.Edge {
			pick += " (edge)"
		}
		mark := ""
		if c.JointAttainment >= r.Target {
			mark = " ✓"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d | %d | %s | %s%s | %.2f |\n", rank, c.Policy, cost, ratio, len(c.Frontier), c.Variants, pick, pct(c.JointAttainment), mark, c.GPUHours)
	}
	fmt.Fprint(w, "\nGPU-h at T: on the policy's frontier (its non-dominated tunings on the scored window), read off its lower convex hull (the cheapest mix of two tunings reaching T). ")
	fmt.Fprint(w, "× cheapest other: over the cheapest other policy at T, tokenscale's ablations aside. ")
	if r.Tune != nil {
		fmt.Fprint(w, "Held-out pick: the cheapest tuning reaching the tuning window's target there (else its best), scored here; ✓: it reaches T. ")
	} else {
		fmt.Fprint(w, "Pick: the cheapest tuning reaching T (else its best); ✓: it reaches T. ")
	}
	fmt.Fprint(w, "(edge): at an end of the policy's swept range.\n\n")
	if h := r.describeHindsight(); h != "" {
		fmt.Fprintf(w, "%s\n\n", h)
	}

	header := "| policy | tuning | joint SLO | TTFT SLO | TPOT SLO | TTFT p50 / p99 ms | TPOT p50 / p99 ms | GPU-hours | mean GPUs | conversions |\n" +
		"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
	row := func(s Summary) string {
		mark := ""
		if s.JointAttainment >= r.Target {
			mark = " ✓"
		}
		return fmt.Sprintf("| %s | %s | %.1f%%%s | %.1f%% | %.1f%% | %s / %s | %s / %s | %.2f | %.2f | %d |\n",
			s.Policy, s.Tuning, 100*s.JointAttainment, mark, 100*s.TTFTAttainment, 100*s.TPOTAttainment,
			fmtMS(s.TTFTP50ms), fmtMS(s.TTFTP99ms), fmtMS(s.TPOTP50ms), fmtMS(s.TPOTP99ms), s.GPUHours, s.MeanGPUs, s.Conversions)
	}
	fmt.Fprint(w, header)
	for _, s := range r.Chosen {
		fmt.Fprint(w, row(s.Summary))
	}
	if !withTuning {
		return
	}
	fmt.Fprintf(w, "\nTuning sweep (%s, scored window):\n\n", r.Trace)
	fmt.Fprint(w, header)
	rows := append([]Summary(nil), r.Tuning...)
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Policy < rows[j].Policy })
	for _, s := range rows {
		fmt.Fprint(w, row(s))
	}
}

// Verdict says, in words, where tokenscale stands at the target: its cost there against the cheapest
// other policy's. It is empty when tokenscale was not run.
func (r *Report) Verdict() string {
	for _, c := range r.Chosen {
		if c.Policy != "tokenscale" {
			continue
		}
		if c.CostAtTarget == nil {
			best := 0.0
			for _, f := range c.Frontier {
				best = math.Max(best, f.JointAttainment)
			}
			return fmt.Sprintf("tokenscale does not reach T = %s on this trace (its best tuning reaches %s).", pct(r.Target), pct(best))
		}
		if c.Ratio == nil {
			return fmt.Sprintf("At T = %s tokenscale costs %.2f GPU-h; no other policy reaches T.", pct(r.Target), *c.CostAtTarget)
		}
		verb := "cheaper than"
		switch {
		case math.Abs(*c.Ratio-1) < 0.005:
			return fmt.Sprintf("At T = %s tokenscale costs %.2f GPU-h, the same as the cheapest other policy (%s, %.2f GPU-h) to within 0.5%%.",
				pct(r.Target), *c.CostAtTarget, c.Cheapest, *r.costOf(c.Cheapest))
		case *c.Ratio > 1:
			verb = "dearer than"
		}
		return fmt.Sprintf("At T = %s tokenscale costs %.2f GPU-h, %.2f× the cheapest other policy (%s, %.2f GPU-h): %.0f%% %s it.",
			pct(r.Target), *c.CostAtTarget, *c.Ratio, c.Cheapest, *r.costOf(c.Cheapest), 100*math.Abs(*c.Ratio-1), verb)
	}
	return ""
}
