package autoscale

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tokenscale/tokenscale/sim/cluster"
)

// Variant is one tuning of a policy.
type Variant struct {
	Tuning string
	New    func() cluster.Autoscaler
}

// Policy is a compared policy and its tuning sweep. Every metric-driven policy gets a sweep of its main
// target over the same range of aggressiveness; the report names the tuning chosen.
type Policy struct {
	Name     string
	Describe string
	Variants func(env Env) []Variant
}

var (
	targets = []float64{0.5, 0.6, 0.7, 0.8, 0.9, 1.0}
	// windows are the scale-down stabilisation windows every policy's sweep tries: tokenscale's default
	// and the Kubernetes HPA's.
	windows = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute}
)

// sweep makes one variant per (target, window) pair.
func sweep(knob string, values []float64, mk func(x float64, down time.Duration) cluster.Autoscaler) []Variant {
	var out []Variant
	for _, w := range windows {
		for _, x := range values {
			out = append(out, Variant{Tuning: fmt.Sprintf("%s=%g,down=%s", knob, x, short(w)), New: func() cluster.Autoscaler { return mk(x, w) }})
		}
	}
	return out
}

// tsSweep adds tokenscale's policy.drainSeconds to the sweep: 10 s (the default) drains a queue fast,
// 60 s (the cold start) adds only the capacity a queue still needs once new instances can be Ready.
func tsSweep(env Env, mk func(env Env, x float64, down time.Duration) cluster.Autoscaler) []Variant {
	var out []Variant
	for _, d := range []float64{10, 60} {
		e := env
		e.DrainSeconds = d
		out = append(out, sweep(fmt.Sprintf("drain=%gs,targetUtilisation", d), targets, func(x float64, w time.Duration) cluster.Autoscaler {
			return mk(e, x, w)
		})...)
	}
	return out
}

func short(d time.Duration) string {
	if d%time.Minute == 0 {
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
	return d.String()
}

// Policies lists every policy in report order: the ablation ladder, then the baselines, then bounds.
func Policies() []Policy {
	return []Policy{
		{Name: "tokenscale", Describe: "velocity sizing of both pools + convertible decoders (ours)",
			Variants: func(env Env) []Variant {
				return tsSweep(env, func(env Env, x float64, w time.Duration) cluster.Autoscaler { return NewTokenScale(env, x, w, true) })
			}},
		{Name: "ts-prefill+decode", Describe: "ablation: velocity sizing of both pools, no conversions",
			Variants: func(env Env) []Variant {
				return tsSweep(env, func(env Env, x float64, w time.Duration) cluster.Autoscaler { return NewTokenScale(env, x, w, false) })
			}},
		{Name: "ts-prefill", Describe: "ablation: velocity sizing of prefill only, decode by DistServe RPS",
			Variants: func(env Env) []Variant {
				return tsSweep(env, func(env Env, x float64, w time.Duration) cluster.Autoscaler {
					ts := NewTokenScale(env, x, w, false)
					ts.DecodeByRPS = NewDistServe(env, x, w)
					return ts
				})
			}},
		{Name: "distserve", Describe: "RPS thresholds per pool (DistServe/BlitzScale-like)",
			Variants: func(env Env) []Variant {
				return sweep("rpsFraction", targets, func(x float64, w time.Duration) cluster.Autoscaler { return NewDistServe(env, x, w) })
			}},
		{Name: "aibrix", Describe: "prefill on concurrency, decode on KV utilisation (AIBrix-like)",
			Variants: func(env Env) []Variant {
				var out []Variant
				for _, kv := range []float64{0.5, 0.7} {
					out = append(out, sweep(fmt.Sprintf("kv=%.1f,concurrency", kv), []float64{1, 2, 4, 8, 16}, func(c float64, w time.Duration) cluster.Autoscaler {
						return NewAIBrix(c, kv, w)
					})...)
				}
				return out
			}},
		{Name: "heteroscale", Describe: "decode TPS proportional, fixed P:D ratio, latency emergency steps",
			Variants: func(env Env) []Variant {
				return sweep("tpsFraction", targets, func(x float64, w time.Duration) cluster.Autoscaler { return NewHeteroScale(env, x, w) })
			}},
		{Name: "hpa-gpu", Describe: "Kubernetes HPA on GPU utilisation (15 s sync, 10% tolerance)",
			Variants: func(env Env) []Variant {
				return sweep("gpuUtilisation", []float64{0.4, 0.5, 0.6, 0.7, 0.8, 0.9}, func(x float64, w time.Duration) cluster.Autoscaler { return NewHPAGPU(x, w) })
			}},
		{Name: "static-peak", Describe: "fixed pools sized for the trace's 10 s peak (upper cost bound)",
			Variants: func(env Env) []Variant {
				s := NewStatic(env, env.PeakPromptTPS, env.PeakOutputTPS)
				return []Variant{{Tuning: fmt.Sprintf("P=%d,D=%d", s.P, s.D), New: func() cluster.Autoscaler { return s }}}
			}},
		{Name: "static-mean", Describe: "fixed pools sized for the trace's mean (lower cost bound)",
			Variants: func(env Env) []Variant {
				s := NewStatic(env, env.MeanPromptTPS, env.MeanOutputTPS)
				return []Variant{{Tuning: fmt.Sprintf("P=%d,D=%d", s.P, s.D), New: func() cluster.Autoscaler { return s }}}
			}},
	}
}

// Select returns the named policies (all when names is empty), or an error naming the unknown ones.
func Select(names []string) ([]Policy, error) {
	all := Policies()
	if len(names) == 0 {
		return all, nil
	}
	byName := map[string]Policy{}
	var known []string
	for _, p := range all {
		byName[p.Name] = p
		known = append(known, p.Name)
	}
	var out []Policy
	var bad []string
	for _, n := range names {
		p, ok := byName[strings.TrimSpace(n)]
		if !ok {
			bad = append(bad, n)
			continue
		}
		out = append(out, p)
	}
	if len(bad) > 0 {
		sort.Strings(known)
		return nil, fmt.Errorf("unknown policies %v: known are %s", bad, strings.Join(known, ", "))
	}
	return out, nil
}
