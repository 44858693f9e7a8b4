package cluster

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/sim/trace"
)

// fixed keeps replica counts where they are.
type fixed struct{ t Target }

func (f fixed) Interval() time.Duration { return time.Second }
func (f fixed) Decide(*View) Target     { return f.t }

func testHW() Hardware {
	h, err := Profile("llama3.1-8b-h100")
	if err != nil {
		panic(err)
	}
	return h
}

// N equal prompts arriving together on one prefiller: request k (from 0) waits k prefills, so its first
// token comes after (k+1)·L/V_P, the KV transfer (queued on one link behind the previous ones only if the
// link is slower than prefill), and its first decode step.
func TestBurstOnOnePrefillerMatchesHandComputation(t *testing.T) {
	hw := testHW()
	const n, L = 8, 2000
	reqs := make([]trace.Request, n)
	for i := range reqs {
		reqs[i] = trace.Request{PromptTokens: L, OutputTokens: 1}
	}
	res, err := Run(Config{Hardware: hw}, reqs, fixed{Target{1, 1, 0}})
	if err != nil {
		t.Fatal(err)
	}
	prefill := float64(L) / hw.PrefillTPS
	xfer := hw.TransferTime(L)
	if xfer >= prefill {
		t.Fatalf("test assumes the link is faster than prefill (%v >= %v)", xfer, prefill)
	}
	for k := 0; k < n; k++ {
		// Each request reaches an idle decoder (the previous one finished in a step shorter than a prefill).
		step := hw.StepTime(1, L)
		want := float64(k+1)*prefill + xfer + step
		if got := res.ttft[k]; math.Abs(got-want) > 1e-9 {
			t.Errorf("request %d: TTFT %.6f s, want %.6f s", k, got, want)
		}
	}
	if res.Unfinished != 0 || res.done != n {
		t.Errorf("unfinished %d, done %d", res.Unfinished, res.done)
	}
}

// A single sequence decoding alone: its TPOT is the step time at its growing context, averaged.
func TestLoneDecodeTPOTMatchesStepModel(t *testing.T) {
	hw := testHW()
	const in, out = 1000, 101
	res, err := Run(Config{Hardware: hw}, []trace.Request{{PromptTokens: in, OutputTokens: out}}, fixed{Target{1, 1, 0}})
	if err != nil {
		t.Fatal(err)
	}
	// Steps 2..out run at contexts in+1 .. in+out-1.
	sum := 0.0
	for g := 1; g < out; g++ {
		sum += hw.StepTime(1, float64(in+g))
	}
	want := sum / float64(out-1)
	if got := res.tpot[0]; math.Abs(got-want) > 1e-9 {
		t.Errorf("TPOT %.6f s, want %.6f s", got, want)
	}
}

// Poisson arrivals of equal prompts on one prefiller form an M/D/1 queue: mean wait ρS/(2(1-ρ)).
func TestPrefillQueueIsMD1(t *testing.T) {
	hw := testHW()
	const L = 4000
	S := float64(L) / hw.PrefillTPS // 0.2 s
	rho := 0.7
	lambda := rho / S
	rng := rand.New(rand.NewPCG(1, 2))
	var reqs []trace.Request
	at := 0.0
	for range 40000 {
		at += rng.ExpFloat64() / lambda
		reqs = append(reqs, trace.Request{Arrival: time.Duration(at * float64(time.Second)), PromptTokens: L, OutputTokens: 1})
	}
	res, err := Run(Config{Hardware: hw, InitialDecode: 4}, reqs, fixed{Target{1, 4, 0}})
	if err != nil {
		t.Fatal(err)
	}
	fixedPart := S + hw.TransferTime(L) + hw.StepTime(1, L)
	mean := 0.0
	for _, x := range res.ttft {
		mean += x
	}
	mean = mean/float64(len(res.ttft)) - fixedPart
	want := rho * S / (2 * (1 - rho))
	if math.Abs(mean-want)/want > 0.06 {
		t.Errorf("mean prefill wait %.4f s, M/D/1 says %.4f s", mean, want)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := Run(Config{}, nil, fixed{}); err == nil {
		t.Error("zero hardware accepted")
	}
	if _, err := Run(Config{Hardware: testHW(), InitialPrefill: 5, MaxPrefill: 2}, nil, fixed{}); err == nil {
		t.Error("initial above max accepted")
	}
	if _, err := Run(Config{Hardware: testHW()}, nil, nil); err == nil {
		t.Error("nil autoscaler accepted")
	}
}
