package autoscale

import (
	"math"
	"time"

	"github.com/tokenscale/tokenscale/sim/cluster"
)

// Env is what every policy may know of the deployment before it runs: the hardware, the offline
// profile (V_D at the workload's mean lengths) and the workload's historical statistics, as an operator
// tuning a baseline would.
type Env struct {
	Hardware  cluster.Hardware
	DecodeTPS float64 // V_D, profiled
	// Mean request shape and token rates of the trace; peaks over 10 s windows.
	MeanIn, MeanOut              float64
	MeanPromptTPS, MeanOutputTPS float64
	PeakPromptTPS, PeakOutputTPS float64
	// Mean and 10 s-peak request rates.
	MeanRPS, PeakRPS float64
	ColdStart        time.Duration
	// PoolTTFTSLO is the TTFT SLO band of the mean prompt, the pool-level SLO a single config names.
	PoolTTFTSLO time.Duration
	// DrainSeconds overrides tokenscale's policy.drainSeconds when > 0 (an experiment knob).
	DrainSeconds float64
	// ScrapeInterval is tokenscale's scrape.interval when > 0 (else the config's default): its decision
	// round and its rates' smoothing follow it, as in the adapter.
	ScrapeInterval time.Duration
	// ConvertedPrefill is tokenscale's policy.convertedPrefill when > 0: 1 where converted decoders switch
	// role (the cluster's ConvertSwitch), as docs/converter.md tells the sglang actuator's users to set.
	ConvertedPrefill float64
}

// KVTransferTPS is V_N in tokens/s.
func (e Env) KVTransferTPS() float64 {
	return e.Hardware.LinkBytesPerSecond / e.Hardware.KVBytesPerToken
}

// prefillTPS is min(V_P, V_N).
func (e Env) prefillTPS() float64 { return math.Min(e.Hardware.PrefillTPS, e.KVTransferTPS()) }

func ceilPos(x float64) int {
	if !(x > 0) || math.IsInf(x, 0) {
		return 1
	}
	return max(1, int(math.Ceil(x-1e-9)))
}

// holdDown scales up at once and down only to the highest recommendation of a window, the
// stabilisation every baseline here gets (swept like tokenscale's policy.scaleDownWindow).
type holdDown struct {
	window float64
	recs   []hpaRec
}

func (h *holdDown) apply(now float64, n int) int {
	h.recs = append(h.recs, hpaRec{now, n})
	cut := 0
	for cut < len(h.recs) && now-h.recs[cut].t > h.window {
		cut++
	}
	h.recs = h.recs[cut:]
	best := n
	for _, r := range h.recs {
		best = max(best, r.n)
	}
	return best
}

// Static holds fixed pools: provisioning for the trace's peak or its mean (the cost bounds).
type Static struct{ P, D int }

// NewStatic sizes pools for a prompt and output token rate.
func NewStatic(env Env, promptTPS, outputTPS float64) Static {
	return Static{P: ceilPos(promptTPS / env.prefillTPS()), D: ceilPos(outputTPS / env.DecodeTPS)}
}

func (s Static) Interval() time.Duration { return 10 * time.Second }
func (s Static) Decide(*cluster.View) cluster.Target {
	return cluster.Target{Prefill: s.P, Decode: s.D}
}

// HPAGPU is the Kubernetes HPA on GPU utilisation (DCGM_FI_DEV_GPU_UTIL through a metrics adapter) for
// each pool, with Kubernetes' default behaviour: 15 s sync, 10% tolerance, 5 min scale-down window.
type HPAGPU struct {
	Target     float64
	hpaP, hpaD *HPA
	busy       [2]map[string]float64
	busyT      float64
}

// NewHPAGPU targets a GPU utilisation in (0, 1] with a scale-down stabilisation window.
func NewHPAGPU(target float64, down time.Duration) *HPAGPU {
	h := &HPAGPU{Target: target, hpaP: NewHPA(), hpaD: NewHPA()}
	h.hpaP.DownWindow, h.hpaD.DownWindow = down, down
	return h
}

func (h *HPAGPU) Interval() time.Duration { return time.Second }

func (h *HPAGPU) Decide(v *cluster.View) cluster.Target {
	now := v.Now.Seconds()
	t := cluster.Target{Prefill: v.PrefillReplicas, Decode: v.DecodeReplicas}
	if now < h.hpaP.next {
		return t
	}
	dt := now - h.busyT
	h.busyT = now
	for i, pool := range [][]cluster.InstanceStats{v.Prefill, v.Decode} {
		cur := map[string]float64{}
		sum, n := 0.0, 0
		for _, st := range pool {
			cur[st.Name] = st.BusySeconds
			if p, ok := h.busy[i][st.Name]; ok && dt > 0 {
				sum += math.Min(1, (st.BusySeconds-p)/dt)
				n++
			}
		}
		first := h.busy[i] == nil
		h.busy[i] = cur
		ratio, ok := 0.0, n > 0 && !first
		if ok {
			ratio = sum / float64(n) / h.Target
		}
		hpa, spec, ready := h.hpaP, v.PrefillReplicas, len(v.Prefill)
		if i == 1 {
			hpa, spec, ready = h.hpaD, v.DecodeReplicas, len(v.Decode)
		}
		// Pods still starting count as 0% when scaling up, as the HPA treats unready pods; where that turns
		// the ratio below 1 the HPA keeps the current count rather than change direction
		// (replica_calculator.go's calcPlainMetricReplicas), so the ratio is held at 1.
		if ok && ratio > 1 && spec > ready && spec > 0 {
			ratio = max(ratio*float64(ready)/float64(spec), 1)
			ready = spec
		}
		n2 := hpa.Step(now, spec, max(ready, 1), ratio, ok)
		if i == 0 {
			t.Prefill = n2
		} else {
			t.Decode = n2
		}
	}
	return t
}

// AIBrix follows AIBrix's P/D autoscaling as TokenScale evaluated it: prefill on concurrency (running +
// waiting requests per pod), decode on GPU KV-cache utilisation at a 70% threshold. Each pool goes
// through AIBrix's KPA (pkg/controller/podautoscaler/scaler/kpa.go, after Knative's): the pool total
// averaged over a 60 s stable window and a 6 s panic window (10% of it), desired = ceil(total ÷
// per-pod target); panic mode starts when the panic desire reaches 2× the Ready pods and, until a stable
// window passes below that, only scales up; scale-up is capped at 2× and scale-down at ÷2 per decision;
// the scale-down delay (the swept window) holds the highest desire.
type AIBrix struct {
	Concurrency, KVTarget float64
	kpaP, kpaD            *KPA
}

// NewAIBrix targets per-pod prefill concurrency and decode KV utilisation.
func NewAIBrix(concurrency, kv float64, down time.Duration) *AIBrix {
	return &AIBrix{Concurrency: concurrency, KVTarget: kv, kpaP: NewKPA(concurrency, down), kpaD: NewKPA(kv, down)}
}

func (a *AIBrix) Interval() time.Duration { return time.Second }

func (a *AIBrix) Decide(v *cluster.View) cluster.Target {
	now := v.Now.Seconds()
	conc, kv := 0.0, 0.0
	for _, st := range v.Prefill {
		conc += float64(st.Running + st.Waiting)
	}
	for _, st := range v.Decode {
		kv += st.KVUsage
	}
	t := cluster.Target{Prefill: v.PrefillReplicas, Decode: v.DecodeReplicas}
	if len(v.Prefill) > 0 {
		t.Prefill = a.kpaP.Step(now, len(v.Prefill), conc)
	}
	if len(v.Decode) > 0 {
		t.Decode = a.kpaD.Step(now, len(v.Decode), kv)
	}
	return t
}

// KPA is the Knative/AIBrix pod autoscaler's decision, evaluated every 2 s on a metric total sampled
// each second.
type KPA struct {
	Target                 float64
	Stable, Panic          float64 // window lengths, seconds
	PanicThreshold         float64
	MaxUpRate, MaxDownRate float64
	samples                []hpaRec2
	panicAt                float64
	maxPanic               int
	delay                  holdDown
	next                   float64
	last                   int
}

type hpaRec2 struct{ t, v float64 }

// NewKPA uses AIBrix's defaults: 60 s stable window, 10% panic window, panic at 2×, rates 2.
func NewKPA(target float64, down time.Duration) *KPA {
	return &KPA{Target: target, Stable: 60, Panic: 6, PanicThreshold: 2, MaxUpRate: 2, MaxDownRate: 2,
		panicAt: math.Inf(-1), delay: holdDown{window: down.Seconds()}}
}

// Step records the pool's metric total and returns the desired replicas (ready is the Ready pod count).
func (k *KPA) Step(now float64, ready int, total float64) int {
	if k.samples == nil && ready > 1 {
		// AIBrix starts in panic mode at the Ready count when more than one pod runs (NewKpaAutoscaler in
		// pkg/controller/podautoscaler/scaler/kpa.go, after Knative's): with no history, the empty windows
		// halved the pool every decision at the replay's start.
		k.panicAt, k.maxPanic = now, ready
	}
	k.samples = append(k.samples, hpaRec2{now, total})
	cut := 0
	for cut < len(k.samples) && now-k.samples[cut].t >= k.Stable {
		cut++
	}
	k.samples = k.samples[cut:]
	if now < k.next && k.last > 0 {
		return k.last
	}
	k.next = now + 2
	var sumS, sumP float64
	var nS, nP int
	for _, s := range k.samples {
		sumS += s.v
		nS++
		if now-s.t < k.Panic {
			sumP += s.v
			nP++
		}
	}
	stable, panicV := sumS/float64(max(nS, 1)), sumP/float64(max(nP, 1))
	rp := math.Max(1, float64(ready))
	up, down := math.Ceil(k.MaxUpRate*rp), math.Floor(rp/k.MaxDownRate)
	dsp := math.Ceil(stable / k.Target)
	dpp := math.Ceil(panicV / k.Target)
	ds := int(math.Min(math.Max(dsp, down), up))
	dp := int(math.Min(math.Max(dpp, down), up))
	over := dpp/rp >= k.PanicThreshold
	switch {
	case over:
		k.panicAt = now
	case now-k.panicAt > k.Stable:
		k.panicAt, k.maxPanic = math.Inf(-1), 0
	}
	want := ds
	if !math.IsInf(k.panicAt, -1) {
		want = max(want, dp, k.maxPanic) // panic mode: only up
		k.maxPanic = want
	}
	k.last = max(1, k.delay.apply(now, want))
	return k.last
}

// DistServe sizes both pools from the request rate with per-instance RPS thresholds found offline (as
// DistServe's placement simulator and BlitzScale's RPS-driven scaling do), every 10 s over the last
// 10 s of arrivals; scale-down holds for a window.
type DistServe struct {
	RPSPerPrefill, RPSPerDecode float64
	last, lastT                 float64
	started                     bool
	rps                         float64
	p, d                        int
	holdP, holdD                holdDown
	next                        float64
}

// NewDistServe sets thresholds at a fraction of the profiled per-instance request rate.
func NewDistServe(env Env, fraction float64, down time.Duration) *DistServe {
	return &DistServe{
		RPSPerPrefill: fraction * env.prefillTPS() / env.MeanIn,
		RPSPerDecode:  rpsPerDecoder(env, fraction),
		holdP:         holdDown{window: down.Seconds()}, holdD: holdDown{window: down.Seconds()},
	}
}

// withDecode sets the decode threshold at fraction of the profiled per-decoder request rate (see
// coupledSweep).
func (ds *DistServe) withDecode(env Env, fraction float64) *DistServe {
	ds.RPSPerDecode = rpsPerDecoder(env, fraction)
	return ds
}

// rpsPerDecoder is the RPS rules' decode threshold: fraction of the profiled per-decoder request rate.
func rpsPerDecoder(env Env, fraction float64) float64 { return fraction * env.DecodeTPS / env.MeanOut }

func (ds *DistServe) Interval() time.Duration { return time.Second }

// observe updates the request rate every 10 s; it reports whether a new rate is in.
func (ds *DistServe) observe(v *cluster.View) bool {
	now := v.Now.Seconds()
	if ds.started && now < ds.next {
		return false
	}
	if ds.started && now > ds.lastT {
		ds.rps = (v.ArrivedRequests - ds.last) / (now - ds.lastT)
	}
	ds.started, ds.last, ds.lastT, ds.next = true, v.ArrivedRequests, now, now+10
	return true
}

func (ds *DistServe) decode(v *cluster.View) int {
	// The first observation only starts the count: with no rate measured yet the pools stay as they are
	// (sized on a rate of 0, both dropped to one at the replay's start).
	if first := !ds.started; ds.observe(v) && !first {
		ds.p = ds.holdP.apply(v.Now.Seconds(), ceilPos(ds.rps/ds.RPSPerPrefill))
		ds.d = ds.holdD.apply(v.Now.Seconds(), ceilPos(ds.rps/ds.RPSPerDecode))
	}
	if ds.d == 0 {
		return v.DecodeReplicas
	}
	return ds.d
}

func (ds *DistServe) Decide(v *cluster.View) cluster.Target {
	d := ds.decode(v)
	p := ds.p
	if p == 0 {
		p = v.PrefillReplicas
	}
	return cluster.Target{Prefill: p, Decode: d}
}

// HeteroScale is HeteroScale's coordinated policy (arXiv 2508.19559 §4: "calculates the required total
// capacity from the per-instance target metric, then applies the P/D ratio"; a multi-tier latency
// safety net of fixed incremental steps): decode TPS drives proportional control of the decode
// pool, prefill follows at the fixed P:D ratio from the stress test, and a latency safety net adds +10%
// (over 5% of requests missing) or +20% (over 20%) to both pools with a cooldown. Both pools move in one
// step; a 10% dead band and a scale-in window damp flapping. Loop 10 s.
type HeteroScale struct {
	TargetPerDecode, Ratio float64
	ttftSLO                float64
	tps                    counterRate
	ttft                   map[string][]float64
	hold, holdP            holdDown
	next, emergencyAt      float64
	boost                  float64
}

// NewHeteroScale targets a fraction of V_D per decoder; the P:D ratio is the workload's mean prefill
// demand over its mean decode demand in instances.
func NewHeteroScale(env Env, fraction float64, down time.Duration) *HeteroScale {
	r := (env.MeanPromptTPS / env.prefillTPS()) / (env.MeanOutputTPS / env.DecodeTPS)
	return &HeteroScale{
		TargetPerDecode: fraction * env.DecodeTPS, Ratio: r, ttftSLO: env.PoolTTFTSLO.Seconds(),
		hold: holdDown{window: down.Seconds()}, holdP: holdDown{window: down.Seconds()}, emergencyAt: math.Inf(-1),
	}
}

func (h *HeteroScale) Interval() time.Duration { return time.Second }

func (h *HeteroScale) Decide(v *cluster.View) cluster.Target {
	now := v.Now.Seconds()
	t := cluster.Target{Prefill: v.PrefillReplicas, Decode: v.DecodeReplicas}
	if now < h.next {
		return t
	}
	h.next = now + 10
	names := make([]string, len(v.Decode))
	gen := make([]float64, len(v.Decode))
	for i, st := range v.Decode {
		names[i], gen[i] = st.Name, st.GenerationTokens
	}
	tps, ok := h.tps.rate(now, names, gen)
	miss := h.missFraction(v)
	if !ok {
		return t
	}
	// The total capacity comes from the fractional decode demand; the P:D ratio applies to it before
	// rounding, so a decoder needing 1% of an instance does not bring ⌈1 × ratio⌉ prefillers.
	demand := tps / h.TargetPerDecode
	// The safety net is a fixed step on top of this decision's demand (+10% over 5% TTFT misses, +20%
	// over 20%), held for its cooldown; it does not compound on the replicas earlier steps added.
	if miss > 0.05 && now-h.emergencyAt >= 30 {
		h.boost = 0.10
		if miss > 0.20 {
			h.boost = 0.20
		}
		h.emergencyAt = now
	} else if now-h.emergencyAt >= 30 {
		h.boost = 0
	}
	demand *= 1 + h.boost
	nd := ceilPos(demand)
	if cur := v.DecodeReplicas; cur > 0 && h.boost == 0 && math.Abs(float64(nd)/float64(cur)-1) <= 0.1 {
		nd = cur
	}
	nd = h.hold.apply(now, nd)
	np := h.holdP.apply(now, ceilPos(demand*h.Ratio))
	return cluster.Target{Prefill: np, Decode: nd}
}

// missFraction is the share of the last window's first tokens (prefill pods' TTFT histograms) over the
// pool TTFT SLO, from bucket deltas as a PromQL histogram query would give.
func (h *HeteroScale) missFraction(v *cluster.View) float64 {
	cur := map[string][]float64{}
	var over, total float64
	for _, st := range v.Prefill {
		bounds, cum := st.TTFT.Cumulative()
		cur[st.Name] = cum
		prev, ok := h.ttft[st.Name]
		if !ok {
			continue
		}
		n := cum[len(cum)-1] - prev[len(prev)-1]
		over += n - countBelow(bounds, cum, prev, h.ttftSLO)
		total += n
	}
	h.ttft = cur
	if total == 0 {
		return 0
	}
	return over / total
}

// countBelow is how many observations between two cumulative histograms (prev, then cum) were at or
// below x, interpolated linearly inside the bucket holding x as PromQL's histogram_fraction does: the
// bucket's upper bound alone counted a 2 s SLO's misses up to 2.5 s as on time.
func countBelow(bounds, cum, prev []float64, x float64) float64 {
	lo, below := 0.0, 0.0
	for i, b := range bounds {
		in := cum[i] - prev[i]
		if b >= x {
			if math.IsInf(b, 1) {
				return below
			}
			return below + (in-below)*(x-lo)/(b-lo)
		}
		lo, below = b, in
	}
	return below
}
