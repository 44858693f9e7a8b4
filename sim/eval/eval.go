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
	// Goal is the joint SLO attainment a tuning must reach to be chosen for cost. Default 0.96.
	Goal float64
	// Workers runs variants in parallel. Default GOMAXPROCS.
	Workers int
	// Progress, when set, is called after each finished run.
	Progress func(done, total int)
	// History, when set, is the traffic the policies' offline statistics come from (profiled V_D, means,
	// peaks, P:D ratio); by default they come from the scored trace itself.
	History []trace.Request
}

// SplitHistory splits a trace at d: the requests before d are history, the rest (shifted to start at 0)
// are scored. It fails when either part is empty.
func SplitHistory(reqs []trace.Request, d time.Duration) (history, scored []trace.Request, err error) {
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
	// Series is kept for the chosen tuning of each policy only.
	Series []cluster.Sample `json:"series,omitempty"`
}

// Report is one trace's evaluation.
type Report struct {
	Trace    string        `json:"trace"`
	Requests int           `json:"requests"`
	Hardware string        `json:"hardware"`
	Env      autoscale.Env `json:"env"`
	Goal     float64       `json:"goal"`
	// HistoryRequests counts the requests the offline statistics came from, when not the scored ones.
	HistoryRequests int `json:"historyRequests,omitempty"`
	// Chosen holds each policy's selected tuning in policy order; Tuning holds every run.
	Chosen []Summary `json:"chosen"`
	Tuning []Summary `json:"tuning"`
}

// NewEnv derives what a policy may know offline from a trace and hardware: the profiled V_D at the
// trace's mean lengths and the mean and 10 s-peak token rates.
func NewEnv(reqs []trace.Request, hw cluster.Hardware, coldStart time.Duration) (autoscale.Env, error) {
	if len(reqs) == 0 {
		return autoscale.Env{}, errors.New("trace has no requests")
	}
	var in, out float64
	win := map[int64][2]float64{}
	for _, r := range reqs {
		in += float64(r.PromptTokens)
		out += float64(max(r.OutputTokens, 1))
		k := int64(r.Arrival / (10 * time.Second))
		w := win[k]
		w[0] += float64(r.PromptTokens)
		w[1] += float64(max(r.OutputTokens, 1))
		win[k] = w
	}
	n := float64(len(reqs))
	span := math.Max(reqs[len(reqs)-1].Arrival.Seconds(), 10)
	env := autoscale.Env{Hardware: hw, MeanIn: in / n, MeanOut: out / n, MeanPromptTPS: in / span, MeanOutputTPS: out / span, ColdStart: coldStart}
	for _, w := range win {
		env.PeakPromptTPS = math.Max(env.PeakPromptTPS, w[0]/10)
		env.PeakOutputTPS = math.Max(env.PeakOutputTPS, w[1]/10)
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

// Evaluate runs every variant of every policy over reqs.
func Evaluate(name string, reqs []trace.Request, pols []autoscale.Policy, o Options) (*Report, error) {
	if o.Goal == 0 {
		o.Goal = 0.96
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	hist := reqs
	if o.History != nil {
		hist = o.History
	}
	env, err := NewEnv(hist, o.Cluster.Hardware, o.Cluster.ColdStart)
	if err != nil {
		return nil, err
	}
	if env.ColdStart == 0 {
		env.ColdStart = 60 * time.Second
	}
	// Every run starts from the pools an operator would deploy for the trace's mean load, so no policy
	// pays for a cold first minute that the others do not.
	if o.Cluster.InitialPrefill == 0 && o.Cluster.InitialDecode == 0 {
		s := autoscale.NewStatic(env, env.MeanPromptTPS, env.MeanOutputTPS)
		o.Cluster.InitialPrefill, o.Cluster.InitialDecode = s.P, s.D
	}
	type job struct {
		pol, idx int
		v        autoscale.Variant
	}
	var jobs []job
	offsets := make([]int, len(pols))
	for i, p := range pols {
		offsets[i] = len(jobs)
		for _, v := range p.Variants(env) {
			jobs = append(jobs, job{pol: i, idx: len(jobs), v: v})
		}
	}
	runs := make([]Summary, len(jobs))
	results := make([]*cluster.Result, len(jobs))
	errs := make([]error, len(jobs))
	var (
		mu   sync.Mutex
		done int
		wg   sync.WaitGroup
	)
	ch := make(chan job)
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				cfg := o.Cluster
				cfg.Progress = nil
				res, err := cluster.Run(cfg, reqs, j.v.New())
				if err != nil {
					errs[j.idx] = err
				} else {
					results[j.idx] = res
					runs[j.idx] = summarise(pols[j.pol].Name, j.v.Tuning, res)
				}
				mu.Lock()
				done++
				if o.Progress != nil {
					o.Progress(done, len(jobs))
				}
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	rep := &Report{Trace: name, Requests: len(reqs), Hardware: o.Cluster.Hardware.Name, Env: env, Goal: o.Goal, Tuning: runs, HistoryRequests: len(o.History)}
	for i := range pols {
		end := len(jobs)
		if i+1 < len(pols) {
			end = offsets[i+1]
		}
		best := choose(runs[offsets[i]:end], o.Goal) + offsets[i]
		s := runs[best]
		s.Series = results[best].Series
		rep.Chosen = append(rep.Chosen, s)
	}
	return rep, nil
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
	}
}

func fmtMS(p *float64) string {
	if p == nil {
		return "∞"
	}
	return fmt.Sprintf("%.0f", *p)
}

// WriteTable writes the report as Markdown: the chosen tuning per policy, then the whole sweep.
func (r *Report) WriteTable(w io.Writer, withTuning bool) {
	hist := ""
	if r.HistoryRequests > 0 {
		hist = fmt.Sprintf(", statistics from %d earlier requests", r.HistoryRequests)
	}
	fmt.Fprintf(w, "### %s (%d requests, %s, V_P %.0f tok/s, V_D %.0f tok/s, cold start %s%s)\n\n",
		r.Trace, r.Requests, r.Hardware, r.Env.Hardware.PrefillTPS, r.Env.DecodeTPS, r.Env.ColdStart, hist)
	header := "| policy | tuning | joint SLO | TTFT SLO | TPOT SLO | TTFT p50 / p99 ms | TPOT p50 / p99 ms | GPU-hours | mean GPUs | conversions |\n" +
		"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
	row := func(s Summary) string {
		mark := ""
		if s.JointAttainment >= r.Goal {
			mark = " ✓"
		}
		return fmt.Sprintf("| %s | %s | %.1f%%%s | %.1f%% | %.1f%% | %s / %s | %s / %s | %.2f | %.2f | %d |\n",
			s.Policy, s.Tuning, 100*s.JointAttainment, mark, 100*s.TTFTAttainment, 100*s.TPOTAttainment,
			fmtMS(s.TTFTP50ms), fmtMS(s.TTFTP99ms), fmtMS(s.TPOTP50ms), fmtMS(s.TPOTP99ms), s.GPUHours, s.MeanGPUs, s.Conversions)
	}
	io.WriteString(w, header)
	for _, s := range r.Chosen {
		io.WriteString(w, row(s))
	}
	fmt.Fprintf(w, "\n✓: joint attainment ≥ %.0f%%. Each policy's tuning is the cheapest of its sweep that reaches it, else its best.\n", 100*r.Goal)
	if !withTuning {
		return
	}
	fmt.Fprintf(w, "\nTuning sweep (%s):\n\n", r.Trace)
	io.WriteString(w, header)
	rows := append([]Summary(nil), r.Tuning...)
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Policy < rows[j].Policy })
	for _, s := range rows {
		io.WriteString(w, row(s))
	}
}

// Verdict says, in words, whether tokenscale met the bar: the goal, with fewer GPU-hours than every
// other policy (ablations aside) that also reaches the goal. It is empty when tokenscale was not run.
func (r *Report) Verdict() string {
	var ours *Summary
	for i := range r.Chosen {
		if r.Chosen[i].Policy == "tokenscale" {
			ours = &r.Chosen[i]
		}
	}
	if ours == nil {
		return ""
	}
	var b strings.Builder
	if ours.JointAttainment < r.Goal {
		fmt.Fprintf(&b, "tokenscale reaches %.1f%% joint attainment, below the %.0f%% goal.", 100*ours.JointAttainment, 100*r.Goal)
		return b.String()
	}
	var cheaper []string
	for _, s := range r.Chosen {
		if s.Policy == "tokenscale" || strings.HasPrefix(s.Policy, "ts-") {
			continue
		}
		if s.JointAttainment >= r.Goal && s.GPUHours <= ours.GPUHours {
			cheaper = append(cheaper, fmt.Sprintf("%s (%.2f GPU-h at %.1f%%)", s.Policy, s.GPUHours, 100*s.JointAttainment))
		}
	}
	fmt.Fprintf(&b, "tokenscale reaches %.1f%% joint attainment with %.2f GPU-hours", 100*ours.JointAttainment, ours.GPUHours)
	if len(cheaper) == 0 {
		fmt.Fprintf(&b, "; no other policy reaching %.0f%% uses fewer GPU-hours.", 100*r.Goal)
	} else {
		fmt.Fprintf(&b, "; policies reaching %.0f%% with no more GPU-hours: %s.", 100*r.Goal, strings.Join(cheaper, ", "))
	}
	return b.String()
}
