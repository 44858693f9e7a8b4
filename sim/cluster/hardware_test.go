package cluster

import (
	"math"
	"strings"
	"testing"
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

func FuzzParseProfiles(f *testing.F) {
	f.Add(builtinProfiles)
	f.Add([]byte("profiles:\n- name: x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := ParseProfiles(data, "fuzz.yaml")
		if err != nil {
			return
		}
		for _, p := range ps {
			if p.Validate() != nil {
				t.Fatalf("accepted an invalid profile %+v", p)
			}
			if st := p.StepTime(p.MaxBatch, p.KVCapacityTokens); !(st > 0) {
				t.Fatalf("accepted profile gives step time %v", st)
			}
			if pt := p.PrefillTime(1 << 20); !(pt > 0) || math.IsInf(pt, 0) {
				t.Fatalf("accepted profile gives prefill time %v", pt)
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
