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
	ColdStart                    time.Duration
	// PoolTTFTSLO is the TTFT SLO band of the mean prompt, the pool-level SLO a single config names.
	PoolTTFTSLO time.Duration
	// DrainSeconds overrides tokenscale's policy.drainSeconds when > 0 (an experiment knob).
	DrainSeconds float64
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
		// Pods still starting count as 0% when scaling up, as the HPA treats unready pods.
		if ok && ratio > 1 && spec > ready && spec > 0 {
			ratio = ratio * float64(ready) / float64(spec)
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
// waiting requests per pod), decode on GPU KV-cache utilisation at a 70% threshold, through AIBrix's
// HPA-style PodAutoscaler (10 s loop, 10% tolerance, a scale-down window).
type AIBrix struct {
	Concurrency, KVTarget float64
	hpaP, hpaD            *HPA
}

// NewAIBrix targets per-pod prefill concurrency and decode KV utilisation.
func NewAIBrix(concurrency, kv float64, down time.Duration) *AIBrix {
	a := &AIBrix{Concurrency: concurrency, KVTarget: kv, hpaP: NewHPA(), hpaD: NewHPA()}
	for _, h := range []*HPA{a.hpaP, a.hpaD} {
		h.Sync, h.DownWindow = 10*time.Second, down
	}
	return a
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
	okP, okD := len(v.Prefill) > 0, len(v.Decode) > 0
	rp, rd := 0.0, 0.0
	if okP {
		rp = conc / float64(len(v.Prefill)) / a.Concurrency
	}
	if okD {
		rd = kv / float64(len(v.Decode)) / a.KVTarget
	}
	t.Prefill = a.hpaP.Step(now, v.PrefillReplicas, max(len(v.Prefill), 1), rp, okP)
	t.Decode = a.hpaD.Step(now, v.DecodeReplicas, max(len(v.Decode), 1), rd, okD)
	return t
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
		RPSPerDecode:  fraction * env.DecodeTPS / env.MeanOut,
		holdP:         holdDown{window: down.Seconds()}, holdD: holdDown{window: down.Seconds()},
	}
}

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
	if ds.observe(v) {
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

// HeteroScale is HeteroScale's coordinated policy: decode TPS drives proportional control of the decode
// pool, prefill follows at the fixed P:D ratio from the stress test, and a latency safety net adds +10%
// (over 5% of requests missing) or +20% (over 20%) to both pools with a cooldown. Both pools move in one
// step; a 10% dead band and a scale-in window damp flapping. Loop 10 s.
type HeteroScale struct {
	TargetPerDecode, Ratio float64
	ttftSLO                float64
	tps                    counterRate
	ttft                   map[string][]float64
	hold                   holdDown
	next, emergencyAt      float64
}

// NewHeteroScale targets a fraction of V_D per decoder; the P:D ratio is the workload's mean prefill
// demand over its mean decode demand in instances.
func NewHeteroScale(env Env, fraction float64, down time.Duration) *HeteroScale {
	r := (env.MeanPromptTPS / env.prefillTPS()) / (env.MeanOutputTPS / env.DecodeTPS)
	return &HeteroScale{
		TargetPerDecode: fraction * env.DecodeTPS, Ratio: r, ttftSLO: env.PoolTTFTSLO.Seconds(),
		hold: holdDown{window: down.Seconds()}, emergencyAt: math.Inf(-1),
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
	nd := ceilPos(tps / h.TargetPerDecode)
	if cur := v.DecodeReplicas; cur > 0 && math.Abs(float64(nd)/float64(cur)-1) <= 0.1 {
		nd = cur
	}
	if miss > 0.05 && now-h.emergencyAt >= 30 {
		step := 0.10
		if miss > 0.20 {
			step = 0.20
		}
		nd = max(nd, int(math.Ceil(float64(v.DecodeReplicas)*(1+step))), v.DecodeReplicas+1)
		h.emergencyAt = now
	}
	nd = h.hold.apply(now, nd)
	np := ceilPos(float64(nd) * h.Ratio)
	if miss > 0.05 && h.emergencyAt == now {
		np = max(np, int(math.Ceil(float64(v.PrefillReplicas)*1.1)), v.PrefillReplicas+1)
	}
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
		below := 0.0
		for i, b := range bounds {
			if b >= h.ttftSLO {
				below = cum[i] - prev[i]
				break
			}
		}
		over += n - below
		total += n
	}
	h.ttft = cur
	if total == 0 {
		return 0
	}
	return over / total
}
