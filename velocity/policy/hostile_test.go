package policy

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// A pod whose rate is implausible for the pool's profile, or whose numbers are not finite, is left out
// of the pool with the reason; the pool is computed from the others.
func TestAggregateIgnoresImplausiblePods(t *testing.T) {
	cfg := config.Default()
	p := &cfg.Pools[0]
	good := store.Velocity{Pod: store.PodKey{Namespace: "ns", Name: "good"}, PrefillTPS: 5000, ComputedPrefillTPS: 5000, WindowPrefillTPS: 5000, WindowComputedPrefillTPS: 5000, MeanPromptTokens: 1000}
	huge := good
	huge.Pod.Name, huge.PrefillTPS = "huge", PlausibleFactor*p.Profile.PrefillTPS*1.5
	nan := good
	nan.Pod.Name, nan.QueueGrowthTPS = "nan", math.NaN()
	inf := good
	inf.Pod.Name, inf.WindowQueueGrowthTPS = "inf", math.Inf(1)
	st, err := Aggregate(p, []store.Result{{Velocity: good}, {Velocity: huge}, {Velocity: nan}, {Velocity: inf}}, 0, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Known != 1 || len(st.Errors) != 3 {
		t.Fatalf("known %d, errors %v: want the three bad pods left out", st.Known, st.Errors)
	}
	for _, e := range st.Errors {
		if !errors.Is(e, store.ErrImplausible) {
			t.Errorf("error %v does not say the value is implausible", e)
		}
	}
	if !strings.Contains(st.Errors[0].Error(), "huge") {
		t.Errorf("error %v does not name the pod", st.Errors[0])
	}
	for name, x := range map[string]float64{"arrival": st.Arrival, "sustained": st.Sustained, "served": st.Served, "utilisation": st.Utilisation, "backpressure": st.Backpressure} {
		if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 {
			t.Errorf("%s = %v", name, x)
		}
	}
	// Pods with unknown velocity are estimated as the known pod's mean: 4 × 5000.
	if math.Abs(st.Arrival-20000) > 1 {
		t.Errorf("arrival = %v, want 20000 (the good pod's rate for each of 4 pods)", st.Arrival)
	}
}

// A decoder may count every prompt it receives by KV transfer: a prompt rate far past its pool's profile
// (here 150,000 tok/s, one decoder beside a dozen prefillers) is plausible for it, while its decoded tokens
// stay held to the profile. Held to the decode profile's V_P, the decode pool read as unknown.
func TestDecodersReceivePromptsPastTheirProfile(t *testing.T) {
	cfg := config.Default()
	d := &cfg.Pools[1]
	v := store.Velocity{Pod: store.PodKey{Namespace: "ns", Name: "d0"}, PrefillTPS: 150000, WindowPrefillTPS: 150000, DecodeTPS: 2000, WindowDecodeTPS: 2000, MeanPromptTokens: 2000, MeanOutputTokens: 30}
	if st, err := Aggregate(d, []store.Result{{Velocity: v}}, 0, 10*time.Second); err != nil || st.Known != 1 {
		t.Fatalf("decoder receiving 150,000 prompt tok/s: known %d, %v; want it known", st.Known, err)
	}
	v.DecodeTPS = PlausibleFactor * max(d.Profile.PrefillTPS, d.Profile.DecodeTPS) * 1.5
	if st, _ := Aggregate(d, []store.Result{{Velocity: v}}, 0, 10*time.Second); st.Known != 0 || len(st.Errors) != 1 || !errors.Is(st.Errors[0], store.ErrImplausible) {
		t.Fatalf("decoder decoding past its limit: known %d, errors %v; want it left out", st.Known, st.Errors)
	}
	if l := RateLimit(d); !math.IsInf(l.Prompt, 1) || l.Tokens != PlausibleFactor*max(d.Profile.PrefillTPS, d.Profile.DecodeTPS) {
		t.Errorf("decode pool's limit %+v: want the tokens' limit from its profile and no prompt limit of its own", l)
	}
	if l := RateLimit(&cfg.Pools[0]); l.Prompt != 0 {
		t.Errorf("prefill pool's limit %+v: want its prompts held to the tokens' limit", l)
	}
}

// One glitched counter sample on one pod cannot move desired replicas, whatever its size.
func TestOneGlitchSampleDoesNotMoveReplicas(t *testing.T) {
	for _, jump := range []float64{5e5, 1e12} {
		r := newRig(t, 2, 4)
		r.load("prefill", 12000, 0)
		r.load("decode", 0, 6000)
		var desired map[string]int
		for i := 0; i < 80; i++ {
			_, _, d := r.tick()
			desired = d.Desired
		}
		glitched := 0
		r.mangle = func(pool string, i int, snap *engine.Snapshot) {
			if pool == "prefill" && i == 0 && glitched == 0 {
				glitched++
				x, _ := snap.Scalar(engine.PromptTokens)
				snap.SetScalar(engine.PromptTokens, x.Value+jump)
			}
		}
		for i := 0; i < 40; i++ {
			_, _, d := r.tick()
			for pool, n := range desired {
				if d.Desired[pool] != n {
					t.Fatalf("jump %g, tick %d: %s desired %d, was %d (reasons %v)", jump, i, pool, d.Desired[pool], n, d.Reasons)
				}
			}
		}
	}
}
