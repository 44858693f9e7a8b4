package autoscale

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/sim/cluster"
	"github.com/tokenscale/tokenscale/sim/trace"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/policy"
	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// renderVLLM writes an instance's metrics as a vLLM V1 /metrics page, as an engine would serve them.
func renderVLLM(st *cluster.InstanceStats) []byte {
	var b bytes.Buffer
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	one := func(name, typ string, v float64, extra string) {
		fmt.Fprintf(&b, "# TYPE %s %s\n%s{engine=\"0\",model_name=\"llama\"%s} %s\n", name, typ, name, extra, f(v))
	}
	one("vllm:prompt_tokens_total", "counter", st.PromptTokens, "")
	one("vllm:generation_tokens_total", "counter", st.GenerationTokens, "")
	one("vllm:request_success_total", "counter", st.Finished, `,finished_reason="stop"`)
	one("vllm:num_requests_running", "gauge", float64(st.Running), "")
	one("vllm:num_requests_waiting", "gauge", float64(st.Waiting), "")
	one("vllm:kv_cache_usage_perc", "gauge", st.KVUsage, "")
	one("vllm:prefix_cache_queries_total", "counter", st.PrefixQueries, "")
	one("vllm:prefix_cache_hits_total", "counter", st.PrefixHits, "")
	for _, h := range []struct {
		name string
		h    *cluster.Histogram
	}{{"vllm:time_to_first_token_seconds", st.TTFT}, {"vllm:inter_token_latency_seconds", st.ITL}} {
		fmt.Fprintf(&b, "# TYPE %s histogram\n", h.name)
		bounds, cum := h.h.Cumulative()
		for i, le := range bounds {
			l := "+Inf"
			if !math.IsInf(le, 1) {
				l = f(le)
			}
			fmt.Fprintf(&b, "%s_bucket{engine=\"0\",le=\"%s\",model_name=\"llama\"} %s\n", h.name, l, f(cum[i]))
		}
		fmt.Fprintf(&b, "%s_sum{engine=\"0\",model_name=\"llama\"} %s\n%s_count{engine=\"0\",model_name=\"llama\"} %s\n", h.name, f(h.h.Sum), h.name, f(h.h.Count))
	}
	return b.Bytes()
}

// adapterPath is the adapter's side of the comparison: each tick every instance's page is rendered as
// text, parsed by the adapter's parser (engine.ExtractBytes, engine detected from the page), recorded in
// a store of its own and decided by service.Decide with a controller of its own, as the adapter's loop
// does; the simulator's tokenscale policy builds its snapshots directly.
type adapterPath struct {
	ts       *TokenScale
	store    *store.Store
	ctrl     *policy.Controller
	now      time.Time
	ticks    int
	mismatch []string
}

func (a *adapterPath) Interval() time.Duration { return a.ts.Interval() }

func (a *adapterPath) Decide(v *cluster.View) cluster.Target {
	t := a.ts.Decide(v)
	a.now = a.ts.now
	var pods []service.Pod
	for _, group := range []struct {
		sts  []cluster.InstanceStats
		role string
	}{{v.Prefill, "prefill"}, {v.Decode, "decode"}} {
		for i := range group.sts {
			snap, err := engine.ExtractBytes(renderVLLM(&group.sts[i]), engine.Auto)
			if err != nil {
				a.mismatch = append(a.mismatch, fmt.Sprintf("t=%s %s: %v", v.Now, group.sts[i].Name, err))
				continue
			}
			k := store.PodKey{Namespace: simNamespace, Name: group.sts[i].Name}
			a.store.Record(k, a.now, snap)
			pods = append(pods, service.Pod{Key: k, Labels: map[string]string{"llm-d.ai/role": group.role}, IP: fmt.Sprintf("2001:db8::%x", len(pods)+1), Ready: true})
		}
	}
	m := service.Assign(a.ts.cfg, pods)
	a.store.Retain(m.Has)
	got := service.Decide(a.ts.cfg, m, a.store.List(m.Has), a.ctrl, a.now)
	a.ticks++
	for key, want := range a.ts.last.Pools {
		g := got.Pools[key]
		if g == nil || g.HasDesired != want.HasDesired || g.Desired != want.Desired || g.Conversions != want.Conversions {
			a.mismatch = append(a.mismatch, fmt.Sprintf("t=%s %s: adapter path %+v, simulator %d desired %d conversions (known %v)",
				v.Now, key, g, want.Desired, want.Conversions, want.HasDesired))
		}
	}
	return t
}

// The adapter's decision code, fed text pages through its parser and its store, gives the simulator's
// tokenscale policy the same desired replicas and conversions at every tick of a trace segment (10
// minutes of the code trace at 2×, under load that scales both pools and converts decoders).
func TestAdapterPathMatchesSimulator(t *testing.T) {
	tr, err := trace.Embedded("code", trace.Options{Start: 5 * time.Minute, Duration: 10 * time.Minute, RateScale: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	hw, err := cluster.Profile("llama3.1-8b-h100")
	if err != nil {
		t.Fatal(err)
	}
	// The workload statistics eval.NewEnv takes from history, here from the segment itself.
	var in, out float64
	for _, r := range tr.Requests {
		in += float64(r.PromptTokens)
		out += float64(max(r.OutputTokens, 1))
	}
	n := float64(len(tr.Requests))
	env := Env{Hardware: hw, MeanIn: in / n, MeanOut: out / n, ColdStart: time.Minute,
		DecodeTPS:   hw.DecodeVelocity(in/n, out/n, cluster.TPOTSLO/2),
		PoolTTFTSLO: time.Duration(cluster.TTFTSLO(int(in/n)) * float64(time.Second))}
	ts := NewTokenScale(env, 0.8, time.Minute, true)
	a := &adapterPath{ts: ts, ctrl: service.NewController(ts.cfg)}
	a.store = store.New(service.StoreOptions(ts.cfg), func() time.Time { return a.now })
	res, err := cluster.Run(cluster.Config{Hardware: hw}, tr.Requests, a)
	if err != nil {
		t.Fatal(err)
	}
	if a.ticks < 500 {
		t.Fatalf("%d decision ticks, want a whole 10-minute segment", a.ticks)
	}
	// The segment must exercise the decision: pools that scale and decoders that convert.
	var maxP int
	for _, s := range res.Series {
		maxP = max(maxP, s.PrefillAllocated)
	}
	if maxP < 2 || res.Conversions == 0 {
		t.Errorf("segment too quiet to compare: at most %d prefillers, %d conversions", maxP, res.Conversions)
	}
	for i, m := range a.mismatch {
		if i == 10 {
			t.Errorf("... %d mismatches in all", len(a.mismatch))
			break
		}
		t.Error(m)
	}
	t.Logf("%d ticks compared, at most %d prefillers, %d conversions, %d mismatches", a.ticks, maxP, res.Conversions, len(a.mismatch))
}
