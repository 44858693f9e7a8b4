package cluster

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBuiltinProfilesValid(t *testing.T) {
	ps := Profiles()
	if len(ps) < 2 {
		t.Fatalf("want the H100 and A100 profiles, got %d", len(ps))
	}
	for _, p := range ps {
		// The profiled V_D must be a real throughput: more than one sequence per step time.
		if v := p.DecodeVelocity(1000, 200, TPOTSLO/2); v <= 1/p.StepBase {
			t.Errorf("%s: V_D %.0f tok/s is no better than batch 1", p.Name, v)
		}
	}
	if _, err := Profile("nope"); err == nil || !strings.Contains(err.Error(), "llama3.1-8b-h100") {
		t.Errorf("unknown profile error should list the known ones: %v", err)
	}
}

// decodeVelocityLinear is DecodeVelocity as it was first written, trying every batch size in turn.
func decodeVelocityLinear(h *Hardware, meanIn, meanOut, stepBudget float64) float64 {
	perSeqCtx := meanIn + meanOut/2
	best := 0.0
	for b := 1; b <= h.MaxBatch; b++ {
		ctx := float64(b) * perSeqCtx
		if float64(b)*(meanIn+meanOut) > h.KVCapacityTokens && b > 1 {
			break
		}
		st := h.StepTime(b, ctx)
		if st > stepBudget && b > 1 {
			break
		}
		best = float64(b) / st
	}
	return best
}

// The bisecting DecodeVelocity gives exactly the step-by-step search's V_D, bit for bit, on the limits'
// edges too, so no profiled velocity (and no simulated result) changes.
func TestDecodeVelocityMatchesLinearSearch(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		h := testHW()
		h.MaxBatch = 1 + rng.IntN(2000)
		h.KVCapacityTokens = float64(1 + rng.IntN(1_000_000))
		h.StepBase = 1e-4 + rng.Float64()*0.05
		h.StepPerSeq = []float64{0, 1e-5, rng.Float64() * 1e-3}[rng.IntN(3)]
		h.StepPerCtxToken = []float64{0, 5.6e-8, rng.Float64() * 1e-6}[rng.IntN(3)]
		in, out := float64(rng.IntN(20000)), float64(1+rng.IntN(2000))
		if i%3 == 0 {
			in, out = rng.Float64()*5000, 1+rng.Float64()*500 // means, not whole tokens
		}
		budget := []float64{TPOTSLO / 2, rng.Float64() * 0.2, h.StepTime(1+rng.IntN(h.MaxBatch), float64(rng.IntN(1e6)))}[rng.IntN(3)]
		if i%7 == 0 {
			// On the KV limit's edge: a batch whose KV is exactly the capacity.
			h.KVCapacityTokens = float64(1+rng.IntN(h.MaxBatch)) * (in + out)
		}
		if got, want := h.DecodeVelocity(in, out, budget), decodeVelocityLinear(&h, in, out, budget); got != want {
			t.Fatalf("%+v in %v out %v budget %v: V_D %v, the linear search's %v", h, in, out, budget, got, want)
		}
	}
	for _, p := range Profiles() {
		for _, m := range [][2]float64{{1000, 200}, {1, 1}, {8000, 300}, {0, 1}} {
			if got, want := p.DecodeVelocity(m[0], m[1], TPOTSLO/2), decodeVelocityLinear(&p, m[0], m[1], TPOTSLO/2); got != want {
				t.Errorf("%s %v: V_D %v, the linear search's %v", p.Name, m, got, want)
			}
		}
	}
}

func TestParseProfilesErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":           "profiles: []",
		"unknown field":   "profiles:\n- name: x\n  prefilTokensPerSecond: 1\n",
		"negative":        "profiles:\n- name: x\n  gpusPerInstance: 1\n  maxBatch: 1\n  prefillTokensPerSecond: -5\n  kvBytesPerToken: 1\n  kvLinkBytesPerSecond: 1\n  kvCapacityTokens: 1\n  decodeStepBaseSeconds: 1\n",
		"huge budget":     "profiles:\n- name: x\n  gpusPerInstance: 1\n  maxBatch: 1\n  prefillTokensPerSecond: 5\n  prefillBatchTokens: 9223372036854775807\n  kvBytesPerToken: 1\n  kvLinkBytesPerSecond: 1\n  kvCapacityTokens: 1\n  decodeStepBaseSeconds: 1\n",
		"negative budget": "profiles:\n- name: x\n  gpusPerInstance: 1\n  maxBatch: 1\n  prefillTokensPerSecond: 5\n  prefillBatchTokens: -1\n  kvBytesPerToken: 1\n  kvLinkBytesPerSecond: 1\n  kvCapacityTokens: 1\n  decodeStepBaseSeconds: 1\n",
		"not yaml":        "{{",
	} {
		if _, err := ParseProfiles([]byte(in), "p.yaml"); err == nil || !strings.Contains(err.Error(), "p.yaml") {
			t.Errorf("%s: want an error naming the file, got %v", name, err)
		}
	}
}

// profileYAML is a valid one-profile file with the fields of over replaced (key: value lines).
func profileYAML(name string, over map[string]string) string {
	fields := []string{"gpusPerInstance", "maxBatch", "prefillTokensPerSecond", "prefillBatchTokens", "kvBytesPerToken",
		"kvLinkBytesPerSecond", "kvCapacityTokens", "decodeStepBaseSeconds", "decodeStepPerSeqSeconds", "decodeStepPerContextTokenSeconds"}
	vals := map[string]string{"gpusPerInstance": "1", "maxBatch": "256", "prefillTokensPerSecond": "20000", "prefillBatchTokens": "8192",
		"kvBytesPerToken": "131072", "kvLinkBytesPerSecond": "25e9", "kvCapacityTokens": "400000", "decodeStepBaseSeconds": "0.0055",
		"decodeStepPerSeqSeconds": "0.00004", "decodeStepPerContextTokenSeconds": "5.6e-8"}
	for k, v := range over {
		vals[k] = v
	}
	var b strings.Builder
	b.WriteString("- name: " + name + "\n")
	for _, k := range fields {
		b.WriteString("  " + k + ": " + vals[k] + "\n")
	}
	return b.String()
}

// Figures past their bounds are refused naming the file, the profile and the field: each of these once
// hung DecodeVelocity, made a time +Inf or overflowed an int.
func TestParseProfilesBounds(t *testing.T) {
	if _, err := ParseProfiles([]byte("profiles:\n"+profileYAML("ok", nil)), "p.yaml"); err != nil {
		t.Fatalf("the base profile: %v", err)
	}
	for _, c := range []struct {
		over  map[string]string
		field string
	}{
		{map[string]string{"maxBatch": "9223372036854775807", "decodeStepPerSeqSeconds": "0", "decodeStepPerContextTokenSeconds": "0"}, "maxBatch"},
		{map[string]string{"decodeStepBaseSeconds": "1e308", "prefillBatchTokens": "1"}, "decodeStepBaseSeconds"},
		{map[string]string{"decodeStepBaseSeconds": "5e-324", "decodeStepPerSeqSeconds": "0", "decodeStepPerContextTokenSeconds": "0"}, "decodeStepBaseSeconds"},
		{map[string]string{"kvBytesPerToken": "1e300"}, "kvBytesPerToken"},
		{map[string]string{"kvLinkBytesPerSecond": "1e-300"}, "kvLinkBytesPerSecond"},
		{map[string]string{"kvLinkBytesPerSecond": "1e16"}, "kvLinkBytesPerSecond"},
		{map[string]string{"kvCapacityTokens": "9.3e18"}, "kvCapacityTokens"},
		{map[string]string{"kvCapacityTokens": "0.5"}, "kvCapacityTokens"},
		{map[string]string{"prefillTokensPerSecond": "1e-300"}, "prefillTokensPerSecond"},
		{map[string]string{"prefillTokensPerSecond": ".inf"}, "prefillTokensPerSecond"},
		{map[string]string{"decodeStepPerSeqSeconds": ".nan"}, "decodeStepPerSeqSeconds"},
		{map[string]string{"decodeStepPerSeqSeconds": "61"}, "decodeStepPerSeqSeconds"},
		{map[string]string{"decodeStepPerContextTokenSeconds": "2"}, "decodeStepPerContextTokenSeconds"},
		{map[string]string{"decodeStepPerContextTokenSeconds": "-1e-9"}, "decodeStepPerContextTokenSeconds"},
		{map[string]string{"gpusPerInstance": "9223372036854775807"}, "gpusPerInstance"},
		{map[string]string{"maxBatch": "0"}, "maxBatch"},
	} {
		_, err := ParseProfiles([]byte("profiles:\n"+profileYAML("ok", nil)+profileYAML("bad", c.over)), "p.yaml")
		if err == nil || !strings.Contains(err.Error(), "p.yaml: profiles[1] (bad): "+c.field+" must be in [") {
			t.Errorf("%v: err = %v, want it to name p.yaml, profiles[1] (bad) and %s", c.over, err, c.field)
		}
	}
	// The largest figures the bounds allow still give finite, positive times and rates.
	huge := map[string]string{"gpusPerInstance": "4096", "maxBatch": "1000000", "prefillTokensPerSecond": "1", "prefillBatchTokens": "1",
		"kvBytesPerToken": "1e9", "kvLinkBytesPerSecond": "1", "kvCapacityTokens": "1e12", "decodeStepBaseSeconds": "1e-6",
		"decodeStepPerSeqSeconds": "0", "decodeStepPerContextTokenSeconds": "0"}
	if _, err := ParseProfiles([]byte("profiles:\n"+profileYAML("edge", huge)), "p.yaml"); err != nil {
		t.Errorf("a profile on its bounds: %v", err)
	}
}

// A second document or a second profile of one name would be silently ignored; both are refused.
func TestParseProfilesDocumentsAndNames(t *testing.T) {
	one := "profiles:\n" + profileYAML("a", nil)
	for name, c := range map[string]struct{ in, want string }{
		"second document": {one + "---\nprofiles:\n" + profileYAML("b", nil), "p.yaml: more than one YAML document"},
		"empty second":    {one + "---\n", "p.yaml: more than one YAML document"},
		"duplicate name":  {one + profileYAML("b", nil) + profileYAML("a", map[string]string{"maxBatch": "8"}), "p.yaml: profiles[2] (a): name already used by profiles[0]"},
	} {
		if _, err := ParseProfiles([]byte(c.in), "p.yaml"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
	if ps, err := ParseProfiles([]byte("---\n"+one+"...\n"), "p.yaml"); err != nil || len(ps) != 1 {
		t.Errorf("one document with its markers: %v, %v", ps, err)
	}
}

// A profiles file is read bounded: larger than 1 MiB, a device or a FIFO is refused naming the path,
// without reading forever or blocking on the open.
func TestLoadProfilesIsBounded(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(good, builtinProfiles, 0o600); err != nil {
		t.Fatal(err)
	}
	if ps, err := LoadProfiles(good); err != nil || len(ps) != len(Profiles()) {
		t.Fatalf("the built-in file: %v, %v", ps, err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, append(append([]byte{}, builtinProfiles...), bytes.Repeat([]byte("#"), 1<<20)...), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{big: "larger than 1048576 bytes", dir: "not a regular file"}
	if _, err := os.Stat("/dev/zero"); err == nil {
		cases["/dev/zero"] = "not a regular file"
	}
	for path, want := range cases {
		checkLoadRefused(t, path, want)
	}
}

// checkLoadRefused fails unless LoadProfiles(path) returns, within 10 s, an error naming path and saying want.
func checkLoadRefused(t *testing.T, path, want string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := LoadProfiles(path); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want it to name the path and say %q", path, err, want)
		}
	case <-time.After(time.Minute): // a hang guard
		t.Fatalf("%s: LoadProfiles blocked", path)
	}
}

func FuzzParseProfiles(f *testing.F) {
	f.Add(builtinProfiles)
	f.Add([]byte("profiles:\n- name: x\n"))
	f.Add([]byte("profiles:\n" + profileYAML("x", map[string]string{"maxBatch": "1000000", "decodeStepPerSeqSeconds": "0", "decodeStepPerContextTokenSeconds": "0", "decodeStepBaseSeconds": "1e-6"})))
	f.Add([]byte("profiles:\n" + profileYAML("x", map[string]string{"kvLinkBytesPerSecond": "1", "kvBytesPerToken": "1e9", "prefillTokensPerSecond": "1", "prefillBatchTokens": "1", "decodeStepBaseSeconds": "60"})))
	// Past the bounds: +Inf transfer and prefill times once accepted.
	f.Add([]byte("profiles:\n" + profileYAML("x", map[string]string{"kvLinkBytesPerSecond": "1e-300", "kvBytesPerToken": "1e300"})))
	f.Add([]byte("profiles:\n" + profileYAML("x", map[string]string{"decodeStepBaseSeconds": "1e308", "prefillBatchTokens": "1"})))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := ParseProfiles(data, "fuzz.yaml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error not naming the file: %v", err)
			}
			return
		}
		finite := func(what string, v float64) {
			if !(v > 0) || math.IsInf(v, 0) {
				t.Fatalf("accepted profile gives %s %v", what, v)
			}
		}
		for _, p := range ps {
			if p.Validate() != nil {
				t.Fatalf("accepted an invalid profile %+v", p)
			}
			finite("step time", p.StepTime(p.MaxBatch, p.KVCapacityTokens))
			for _, n := range []int{1, 1 << 20, maxCheckTokens} {
				finite("prefill time", p.PrefillTime(n))
				finite("transfer time", p.TransferTime(n))
			}
			for _, m := range [][2]float64{{1, 1}, {1000, 200}, {maxCheckTokens, maxCheckTokens}} {
				finite("decode velocity", p.DecodeVelocity(m[0], m[1], TPOTSLO/2))
			}
			if ttft, tpot := p.BestLatency(maxCheckTokens, maxCheckTokens); !(ttft > 0) || math.IsInf(ttft, 0) || !(tpot > 0) || math.IsInf(tpot, 0) {
				t.Fatalf("accepted profile gives best latency %v, %v", ttft, tpot)
			}
			if int64(p.KVCapacityTokens) < 1 || int64(p.KVCapacityTokens) > 1<<53 {
				t.Fatalf("accepted profile's KV capacity %v does not fit an int", p.KVCapacityTokens)
			}
		}
	})
}

func TestHistogramBuckets(t *testing.T) {
	h := newHistogram([]float64{0.1, 1})
	h.observe(0.1, 1) // le: on the bound counts in that bucket
	h.observe(0.5, 2)
	h.observe(5, 1)
	b, c := h.Cumulative()
	if len(b) != 3 || c[0] != 1 || c[1] != 3 || c[2] != 4 || h.Count != 4 || h.Sum != 0.1+1+5 {
		t.Errorf("bounds %v cumulative %v count %v sum %v", b, c, h.Count, h.Sum)
	}
}

// A profiles file is checked as the config is before its typed decoding: one key repeated 20,000 times
// (100 KB) made the decoder compare every pair and keep an error string per repeat (by estimate 10 GB); a fraction
// for an integer field was truncated (prefillBatchTokens: 0.5 to 0, another prefill model).
func TestParseProfilesShapeAndWholeNumbers(t *testing.T) {
	if _, err := ParseProfiles([]byte(strings.Repeat("a: 1\n", 20000)), "p.yaml"); err == nil || !strings.Contains(err.Error(), "p.yaml") || len(err.Error()) > 20000 {
		t.Errorf("a key repeated 20,000 times: %.300v; want a short error naming the file", err)
	}
	for field, v := range map[string]string{"prefillBatchTokens": "0.5", "gpusPerInstance": "1.5", "maxBatch": "256.7"} {
		_, err := ParseProfiles([]byte("profiles:\n"+profileYAML("x", map[string]string{field: v})), "p.yaml")
		if err == nil || !strings.Contains(err.Error(), "profiles[0]."+field+" is "+v+"; it takes a whole number") || !strings.Contains(err.Error(), "p.yaml") {
			t.Errorf("%s: %s: %v; want a whole number asked for", field, v, err)
		}
	}
	if _, err := ParseProfiles([]byte("profiles:\n"+profileYAML("x", map[string]string{"maxBatch": "256.0"})), "p.yaml"); err != nil {
		t.Errorf("maxBatch: 256.0: %v", err)
	}
}
