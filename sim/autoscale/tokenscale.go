package autoscale

import (
	"strconv"
	"time"

	"github.com/tokenscale/tokenscale/sim/cluster"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/policy"
	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// TokenScale runs the adapter's own decision round on the simulated engines' metrics: each scrape
// interval the instances' counters and histograms become engine snapshots in a velocity store, and
// service.Decide, the function the adapter's loop calls, assigns pools, aggregates and decides. Replicas then pass through an
// HPA that reads tokenscale_desired_replicas as in manifests/examples; conversions go to the converter
// directly. The ablation switches reproduce TokenScale's ladder.
type TokenScale struct {
	// DecodeByRPS sizes decode with DistServe's RPS rule instead of token velocity (ablation 1).
	DecodeByRPS *DistServe
	cfg         *config.Config
	store       *store.Store
	ctrl        *policy.Controller
	hpaP, hpaD  *HPA
	now         time.Time
	epoch       time.Time
	// last is the latest decision round's snapshot (tests compare it with the adapter's path).
	last *service.Snapshot
	// guardTPS is the decode HPA's second metric's target, tokenscale_decode_tokens_per_second per pod
	// (hpa-decode.yaml: "near 85% of one pod's measured decode velocity", here the tuning's u_D × V_D).
	guardTPS float64
}

// NewTokenScale builds the policy for a workload environment. target is policy.targetUtilisation (and
// decodeTargetUtilisation where above its default), down policy.scaleDownWindow; convert enables
// convertible decoders.
func NewTokenScale(env Env, target float64, down time.Duration, convert bool) *TokenScale {
	c := config.Default()
	if env.DrainSeconds > 0 {
		c.Policy.DrainSeconds = env.DrainSeconds
	}
	if env.ConvertedPrefill > 0 {
		c.Policy.ConvertedPrefill = env.ConvertedPrefill
	}
	if env.ScrapeInterval > 0 {
		c.Scrape.Interval.Duration = env.ScrapeInterval
		// The simulation's scrapes take no time; the rest is kept valid for the config it mirrors (a pod
		// is stale after five intervals, as at the default 1 s; the latency window spans one at least).
		c.Scrape.Timeout.Duration = min(c.Scrape.Timeout.Duration, env.ScrapeInterval)
		c.Scrape.StaleAfter.Duration = max(c.Scrape.StaleAfter.Duration, 5*env.ScrapeInterval)
		c.Scrape.LatencyWindow.Duration = max(c.Scrape.LatencyWindow.Duration, env.ScrapeInterval)
	}
	c.Policy.TargetUtilisation = target
	// The sweep's one knob moves both fields as an operator would: lower buys prefill headroom and leaves
	// decode at its default, higher runs decode as hot as prefill. Decode fixed at 0.85 made the cheap
	// end of the sweep dearer (A100 Mooncake 1.75 -> 1.93 GPU-h at T, docs/evaluation.md).
	c.Policy.DecodeTargetUtilisation = max(target, c.Policy.DecodeTargetUtilisation)
	c.Policy.ScaleDownWindow.Duration = down
	c.Policy.ColdStart.Duration = max(env.ColdStart, config.MinPolicyDuration)
	if !convert {
		off := 0.0
		c.Policy.MaxConvertFraction = &off
	}
	for i := range c.Pools {
		p := &c.Pools[i]
		p.Profile = config.Profile{PrefillTPS: env.Hardware.PrefillTPS, KVTransferTPS: env.KVTransferTPS(), DecodeTPS: env.DecodeTPS}
		p.SLO.TTFT.Duration = env.PoolTTFTSLO
		p.SLO.ITL.Duration = time.Duration(cluster.TPOTSLO * float64(time.Second))
		p.MaxReplicas = 64
	}
	epoch := time.Date(2023, 11, 16, 18, 0, 0, 0, time.UTC)
	ts := &TokenScale{cfg: c, ctrl: service.NewController(c), epoch: epoch, now: epoch}
	ts.store = store.New(service.StoreOptions(c), func() time.Time { return ts.now })
	ts.hpaP, ts.hpaD = NewHPA(), NewHPA()
	// manifests/examples/hpa-prefill.yaml reacts at once (the policy's own window holds scale-down);
	// hpa-decode.yaml holds scale-down for 60 s and guards on the decoders' own tokens/s.
	ts.hpaP.DownWindow, ts.hpaD.DownWindow = 0, time.Minute
	ts.guardTPS = c.Policy.DecodeTargetUtilisation * env.DecodeTPS
	return ts
}

// Interval is the scrape interval.
func (ts *TokenScale) Interval() time.Duration { return ts.cfg.Scrape.Interval.Duration }

// snapshot is what a scrape of the instance's vLLM /metrics page gives.
func snapshot(st *cluster.InstanceStats) *engine.Snapshot {
	s := engine.NewSnapshot(engine.VLLM)
	s.SetScalar(engine.PromptTokens, st.PromptTokens)
	s.SetScalar(engine.GenerationTokens, st.GenerationTokens)
	s.SetScalar(engine.RequestsFinished, st.Finished)
	s.SetScalar(engine.RequestsRunning, float64(st.Running))
	s.SetScalar(engine.RequestsWaiting, float64(st.Waiting))
	s.SetScalar(engine.KVCacheUsage, st.KVUsage)
	// vLLM V1 exports prefix-cache lookups and hits in tokens; the store sizes prefill on prompt tokens
	// less hits, the tokens actually computed.
	s.SetScalar(engine.PrefixCacheQueries, st.PrefixQueries)
	s.SetScalar(engine.PrefixCacheHits, st.PrefixHits)
	for _, h := range []struct {
		f engine.Field
		h *cluster.Histogram
	}{{engine.TTFT, st.TTFT}, {engine.ITL, st.ITL}} {
		bounds, cum := h.h.Cumulative()
		bs := make([]engine.Bucket, len(bounds))
		for i := range bounds {
			bs[i] = engine.Bucket{UpperBound: bounds[i], Count: cum[i]}
		}
		s.SetHist(h.f, h.h.Sum, h.h.Count, bs)
	}
	return s
}

// Decide records the instances' metrics and runs the adapter's decision round (service.Decide) on them.
func (ts *TokenScale) Decide(v *cluster.View) cluster.Target {
	ts.now = ts.epoch.Add(v.Now)
	pods := make([]service.Pod, 0, len(v.Prefill)+len(v.Decode))
	record := func(sts []cluster.InstanceStats, role string) {
		labels := map[string]string{"llm-d.ai/role": role}
		for i := range sts {
			k := store.PodKey{Namespace: simNamespace, Name: sts[i].Name}
			ts.store.Record(k, ts.now, snapshot(&sts[i]))
			// The simulation has no network: any address of its own makes the instance a scrape target
			// (two pods on one address are not scraped, service.Members.Shared).
			pods = append(pods, service.Pod{Key: k, Labels: labels, IP: "2001:db8::" + strconv.FormatInt(int64(len(pods)+1), 16), Ready: true})
		}
	}
	record(v.Prefill, "prefill")
	record(v.Decode, "decode")
	m := service.Assign(ts.cfg, pods)
	ts.store.Retain(m.Has)
	snap := service.Decide(ts.cfg, m, ts.store.List(m.Has), ts.ctrl, ts.now)
	ts.last = snap

	now := v.Now.Seconds()
	pre := snap.Pools[service.PoolKey{Namespace: simNamespace, Name: ts.cfg.Pools[0].Name}]
	dec := snap.Pools[service.PoolKey{Namespace: simNamespace, Name: ts.cfg.Pools[1].Name}]
	t := cluster.Target{Prefill: v.PrefillReplicas, Decode: v.DecodeReplicas}
	if dec != nil {
		t.Conversions = dec.Conversions
	}
	if pre != nil && pre.HasDesired {
		t.Prefill = ts.hpaP.Step(now, v.PrefillReplicas, v.PrefillReplicas, ratio(pre.Desired, v.PrefillReplicas), true)
	} else {
		ts.hpaP.Step(now, v.PrefillReplicas, v.PrefillReplicas, 0, false)
	}
	if ts.DecodeByRPS != nil {
		t.Decode = ts.DecodeByRPS.decode(v)
	} else {
		t.Decode = ts.decodeHPA(now, v.DecodeReplicas, dec)
	}
	return t
}

// decodeHPA is manifests/examples/hpa-decode.yaml: the Object metric tokenscale_desired_replicas
// (AverageValue 1) and the Pods metric tokenscale_decode_tokens_per_second (AverageValue guardTPS), the
// larger proposal winning.
func (ts *TokenScale) decodeHPA(now float64, current int, dec *service.PoolView) int {
	var proposals []int
	allOK := true
	if dec != nil && dec.HasDesired {
		proposals = append(proposals, ts.hpaD.Proposal(current, current, ratio(dec.Desired, current)))
	} else {
		allOK = false
	}
	if dec != nil && dec.Err == nil && dec.Status.Pods > 0 && ts.guardTPS > 0 {
		perPod := dec.Status.Served / float64(dec.Status.Pods)
		proposals = append(proposals, ts.hpaD.Proposal(current, dec.Status.Pods, perPod/ts.guardTPS))
	} else {
		allOK = false
	}
	return ts.hpaD.StepProposals(now, current, proposals, allOK)
}

// simNamespace is the namespace of the simulated pods.
const simNamespace = "sim"

// ratio is the HPA's usage ratio for an Object metric with AverageValue 1: value / replicas.
func ratio(desired, replicas int) float64 {
	if replicas <= 0 {
		return float64(desired)
	}
	return float64(desired) / float64(replicas)
}
