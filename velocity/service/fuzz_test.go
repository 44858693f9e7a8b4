package service

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/policy"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// FuzzConfigDecide follows a config file, outside input, past its parser: whatever config Parse accepts,
// decision rounds over its pools with any readings the store can hold serve only numbers in range (a
// desired count within the pool's min and max, every other value finite and within 0..MaxValue, or an
// error), and never panic.
func FuzzConfigDecide(f *testing.F) {
	base := "version: tokenscale.io/v1alpha1\n"
	pools := "pools:\n- {name: prefill, role: prefill, selector: {r: p}, profile: {prefillTokensPerSecond: 12000}, maxReplicas: 16}\n" +
		"- {name: decode, role: decode, selector: {r: d}, profile: {decodeTokensPerSecond: 3000}, ratio: {min: 0.25, max: 2}, maxReplicas: 16}\n"
	reading := make([]byte, 64)
	for i := range reading {
		reading[i] = byte(i * 37)
	}
	f.Add([]byte(base+pools), reading)
	f.Add([]byte(base+"policy: {targetUtilisation: 0.01, convertedPrefill: 0.01, coldStart: 1h, scaleDownWindow: 5h}\n"+pools), reading)
	f.Add([]byte(base+"scrape: {interval: 100ms, timeout: 100ms}\npolicy: {scaleDownWindow: 30m, burstAttainment: 0.9999}\n"+
		"pools:\n- {name: both, role: both, selector: {r: b}, profile: {prefillTokensPerSecond: 1, decodeTokensPerSecond: 1e7, kvTransferTokensPerSecond: 1}, minReplicas: 3, maxReplicas: 1000000}\n"), reading)
	f.Fuzz(func(t *testing.T, cfgText, readings []byte) {
		c, err := config.Parse(cfgText)
		if err != nil {
			return
		}
		if len(c.Pools) > 8 {
			c.Pools = c.Pools[:8] // the rounds below are about values, not the number of pools
		}
		next := func() float64 { // a reading in the store's range (rates up to its 1e7 cap), from the input
			if len(readings) < 4 {
				return 0
			}
			u := binary.LittleEndian.Uint32(readings)
			readings = readings[4:]
			return float64(u) / math.MaxUint32
		}
		var pods []Pod
		for i := range c.Pools {
			p := &c.Pools[i]
			ns := p.Namespace
			if ns == "" {
				ns = "ns"
			}
			labels := map[string]string{}
			for k, v := range p.Selector {
				labels[k] = v
			}
			for j := 0; j < 1+int(next()*3); j++ {
				pods = append(pods, Pod{Key: store.PodKey{Namespace: ns, Name: fmt.Sprintf("%s-%d", p.Name, j)}, Labels: labels, IP: fmt.Sprintf("2001:db8::%x", len(pods)+1), Ready: true})
			}
		}
		m := Assign(c, pods)
		ctrl := policy.NewController()
		now := time.Unix(1700000000, 0)
		for round := 0; round < 4; round++ {
			now = now.Add(c.Scrape.Interval.Duration)
			var results []store.Result
			for k := range m.Pool {
				rate := next() * 1e7
				results = append(results, store.Result{Velocity: store.Velocity{Pod: k, Time: now, Engine: engine.VLLM,
					PrefillTPS: rate, ComputedPrefillTPS: rate * next(), DecodeTPS: next() * 1e7, QueueGrowthTPS: (next() - 0.5) * 1e7,
					Waiting: next() * 1e6, Running: next() * 1e6, QueuedTokens: next() * 1e9, MeanPromptTokens: 1 + next()*1e7,
					MeanOutputTokens: 1 + next()*1e7, RequestTPS: next() * 1e5, KVUsage: next(), HasKV: next() > 0.5,
					WindowPrefillTPS: rate, WindowComputedPrefillTPS: rate * next(), WindowDecodeTPS: next() * 1e7}})
			}
			sort.Slice(results, func(i, j int) bool {
				a, b := results[i].Pod, results[j].Pod
				return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
			})
			snap := Decide(c, m, results, ctrl, now)
			for key, v := range snap.Pools {
				if v.HasDesired && (v.Desired < v.Config.MinReplicas || v.Desired > v.Config.MaxReplicas) {
					t.Fatalf("round %d, pool %s: desired %d outside %d..%d", round, key, v.Desired, v.Config.MinReplicas, v.Config.MaxReplicas)
				}
				if v.Conversions < 0 {
					t.Fatalf("round %d, pool %s: %d conversions", round, key, v.Conversions)
				}
				for _, pm := range PoolMetrics {
					x, err := v.Value(pm)
					if err == nil && (math.IsNaN(x) || math.IsInf(x, 0) || x < 0 || x > MaxValue) {
						t.Fatalf("round %d, pool %s: %s = %v served", round, key, pm, x)
					}
				}
			}
		}
	})
}
