package cluster

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"os"

	"go.yaml.in/yaml/v3"
)

// Hardware is one model on one GPU type: what an instance can do per second and how a decode step's
// time grows with its batch.
type Hardware struct {
	Name            string `yaml:"name"`
	Model           string `yaml:"model"`
	GPU             string `yaml:"gpu"`
	GPUsPerInstance int    `yaml:"gpusPerInstance"`
	// PrefillTPS is V_P: input tokens per second one prefiller computes.
	PrefillTPS float64 `yaml:"prefillTokensPerSecond"`
	// PrefillBatchTokens is vLLM's max_num_batched_tokens: a prefill step computes up to this many prompt
	// tokens of the queued prompts in order and takes StepBase (one read of the weights) plus its tokens
	// at V_P. 0: one whole prompt per step with no step cost (the model before chunked prefill).
	PrefillBatchTokens int `yaml:"prefillBatchTokens"`
	// KVBytesPerToken and LinkBytesPerSecond give the KV transfer time V_N of a prompt.
	KVBytesPerToken    float64 `yaml:"kvBytesPerToken"`
	LinkBytesPerSecond float64 `yaml:"kvLinkBytesPerSecond"`
	// KVCapacityTokens is how many tokens of KV one decoder holds.
	KVCapacityTokens float64 `yaml:"kvCapacityTokens"`
	// A decode step takes StepBase + StepPerSeq·batch + StepPerCtxToken·(context tokens in the batch).
	StepBase        float64 `yaml:"decodeStepBaseSeconds"`
	StepPerSeq      float64 `yaml:"decodeStepPerSeqSeconds"`
	StepPerCtxToken float64 `yaml:"decodeStepPerContextTokenSeconds"`
	MaxBatch        int     `yaml:"maxBatch"`
}

//go:embed profiles.yaml
var builtinProfiles []byte

// Profiles returns the built-in hardware profiles.
func Profiles() []Hardware {
	ps, err := ParseProfiles(builtinProfiles, "profiles.yaml")
	if err != nil {
		panic(err) // the embedded file is tested
	}
	return ps
}

// Profile returns a built-in profile by name.
func Profile(name string) (Hardware, error) {
	var names []string
	for _, p := range Profiles() {
		if p.Name == name {
			return p, nil
		}
		names = append(names, p.Name)
	}
	return Hardware{}, fmt.Errorf("unknown hardware profile %q: built-in profiles are %v", name, names)
}

// LoadProfiles reads a profiles file of the same layout as the built-in one.
func LoadProfiles(path string) ([]Hardware, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading profiles: %w", err)
	}
	return ParseProfiles(data, path)
}

// ParseProfiles decodes and validates profiles; unknown fields are errors so a typo is not a default.
func ParseProfiles(data []byte, name string) ([]Hardware, error) {
	var f struct {
		Profiles []Hardware `yaml:"profiles"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(f.Profiles) == 0 {
		return nil, fmt.Errorf("%s: no profiles", name)
	}
	var errs []error
	for i, p := range f.Profiles {
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: profiles[%d] (%s): %w", name, i, p.Name, err))
		}
	}
	return f.Profiles, errors.Join(errs...)
}

// Validate checks that every figure is positive and finite.
func (h Hardware) Validate() error {
	pos := map[string]float64{
		"prefillTokensPerSecond": h.PrefillTPS, "kvBytesPerToken": h.KVBytesPerToken,
		"kvLinkBytesPerSecond": h.LinkBytesPerSecond, "kvCapacityTokens": h.KVCapacityTokens,
		"decodeStepBaseSeconds": h.StepBase,
	}
	var errs []error
	if h.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	for k, v := range pos {
		if !(v > 0) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("%s must be positive, got %v", k, v))
		}
	}
	if !(h.StepPerSeq >= 0) || !(h.StepPerCtxToken >= 0) || math.IsInf(h.StepPerSeq+h.StepPerCtxToken, 0) {
		errs = append(errs, errors.New("decodeStepPerSeqSeconds and decodeStepPerContextTokenSeconds must be >= 0"))
	}
	if h.PrefillBatchTokens < 0 || h.PrefillBatchTokens > maxPrefillBatchTokens {
		errs = append(errs, fmt.Errorf("prefillBatchTokens must be in [0, %d] (0: one prompt per step), got %d", maxPrefillBatchTokens, h.PrefillBatchTokens))
	}
	if h.GPUsPerInstance < 1 || h.MaxBatch < 1 {
		errs = append(errs, errors.New("gpusPerInstance and maxBatch must be >= 1"))
	}
	return errors.Join(errs...)
}

// StepTime is the duration of one decode step over batch sequences holding ctx tokens of context.
func (h *Hardware) StepTime(batch int, ctx float64) float64 {
	return h.StepBase + h.StepPerSeq*float64(batch) + h.StepPerCtxToken*ctx
}

// maxPrefillBatchTokens bounds a profile's step budget far above any engine's (vLLM's defaults are 2048
// to 16384), so a hostile file cannot overflow the step count of a prompt.
const maxPrefillBatchTokens = 1 << 24

// PrefillTime is how long a prompt of n computed tokens takes alone on an idle prefiller.
func (h *Hardware) PrefillTime(n int) float64 {
	t := float64(n) / h.PrefillTPS
	if h.PrefillBatchTokens > 0 {
		t += float64((n+h.PrefillBatchTokens-1)/h.PrefillBatchTokens) * h.StepBase
	}
	return t
}

// TransferTime is how long a prompt's KV takes over the prefiller's link.
func (h *Hardware) TransferTime(tokens int) float64 {
	return float64(tokens) * h.KVBytesPerToken / h.LinkBytesPerSecond
}

// DecodeVelocity is the offline-profiled V_D for a workload of mean input and output lengths: the output
// tokens/s of the largest batch whose step stays within stepBudget seconds and whose KV fits, as
// TokenScale's profiler raises load until throughput saturates at the SLO.
func (h *Hardware) DecodeVelocity(meanIn, meanOut, stepBudget float64) float64 {
	perSeqCtx := meanIn + meanOut/2 // average context of a sequence over its life
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
