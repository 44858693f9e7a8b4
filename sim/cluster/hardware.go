package cluster

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"sort"

	"go.yaml.in/yaml/v3"

	"github.com/tokenscale/tokenscale/sim/trace"
	"github.com/tokenscale/tokenscale/velocity/config"
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
	// Bounded and without blocking on a FIFO, as every file from outside is read.
	data, err := config.ReadFile(path)
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
	// Checked as the config is before the typed decoding, which compares every pair of a mapping's keys
	// (by estimate 10 GB for one key repeated 20,000 times) and truncates a fraction given for an integer.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := config.CheckYAML(&doc, reflect.TypeOf(f)); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// A second document would otherwise be ignored, so profiles appended after a "---" would never apply.
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: more than one YAML document (put every profile in the first one's profiles list)", name)
	}
	if len(f.Profiles) == 0 {
		return nil, fmt.Errorf("%s: no profiles", name)
	}
	var errs []error
	seen := map[string]int{}
	for i, p := range f.Profiles {
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: profiles[%d] (%s): %w", name, i, p.Name, err))
		}
		// --hardware picks by name, so a second profile of one name could never be chosen.
		if j, ok := seen[p.Name]; ok && p.Name != "" {
			errs = append(errs, fmt.Errorf("%s: profiles[%d] (%s): name already used by profiles[%d]", name, i, p.Name, j))
		}
		seen[p.Name] = i
	}
	return f.Profiles, errors.Join(errs...)
}

// Bounds of a profile's figures: each is at least a hundred times beyond the built-in profiles' (and any
// hardware's) on either side, so only a typo or a hostile file falls outside; inside them every derived
// time and rate stays finite and every count fits an int.
const (
	maxGPUsPerInstance  = 4096
	minPrefillTPS       = 1
	maxPrefillTPS       = 1e9
	minKVBytesPerToken  = 1
	maxKVBytesPerToken  = 1e9
	minLinkBytesPerSec  = 1
	maxLinkBytesPerSec  = 1e15
	minKVCapacityTokens = 1
	maxKVCapacityTokens = 1e12
	minStepBaseSeconds  = 1e-6 // a step cannot be free: V_D = batch / step time must stay finite
	maxStepSeconds      = 60
	maxStepPerCtxToken  = 1
	maxMaxBatch         = 1_000_000 // DecodeVelocity tries every batch size up to it
)

// maxCheckTokens is the longest prompt the derived figures are checked for: a trace's longest request.
const maxCheckTokens = trace.MaxRequestTokens

// Validate checks that every figure is finite and within its bounds, and that the times and rates derived
// from them are finite and positive.
func (h Hardware) Validate() error {
	var errs []error
	if h.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	// In a fixed order, so the errors read the same each time.
	for _, f := range []struct {
		key    string
		v      float64
		lo, hi float64
	}{
		{"prefillTokensPerSecond", h.PrefillTPS, minPrefillTPS, maxPrefillTPS},
		{"kvBytesPerToken", h.KVBytesPerToken, minKVBytesPerToken, maxKVBytesPerToken},
		{"kvLinkBytesPerSecond", h.LinkBytesPerSecond, minLinkBytesPerSec, maxLinkBytesPerSec},
		{"kvCapacityTokens", h.KVCapacityTokens, minKVCapacityTokens, maxKVCapacityTokens},
		{"decodeStepBaseSeconds", h.StepBase, minStepBaseSeconds, maxStepSeconds},
		{"decodeStepPerSeqSeconds", h.StepPerSeq, 0, maxStepSeconds},
		{"decodeStepPerContextTokenSeconds", h.StepPerCtxToken, 0, maxStepPerCtxToken},
	} {
		if !(f.v >= f.lo && f.v <= f.hi) { // NaN fails both
			errs = append(errs, fmt.Errorf("%s must be in [%g, %g], got %g", f.key, f.lo, f.hi, f.v))
		}
	}
	if h.PrefillBatchTokens < 0 || h.PrefillBatchTokens > maxPrefillBatchTokens {
		errs = append(errs, fmt.Errorf("prefillBatchTokens must be in [0, %d] (0: one prompt per step), got %d", maxPrefillBatchTokens, h.PrefillBatchTokens))
	}
	if h.GPUsPerInstance < 1 || h.GPUsPerInstance > maxGPUsPerInstance {
		errs = append(errs, fmt.Errorf("gpusPerInstance must be in [1, %d], got %d", maxGPUsPerInstance, h.GPUsPerInstance))
	}
	if h.MaxBatch < 1 || h.MaxBatch > maxMaxBatch {
		errs = append(errs, fmt.Errorf("maxBatch must be in [1, %d], got %d", maxMaxBatch, h.MaxBatch))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return h.checkDerived()
}

// checkDerived refuses a profile whose derived times or rates are not finite and positive: the bounds
// above ensure it, and this keeps a future change of them from letting +Inf or 0 into a run unnoticed.
func (h Hardware) checkDerived() error {
	var errs []error
	for _, d := range []struct {
		what string
		v    float64
	}{
		{fmt.Sprintf("prefill time of a %d-token prompt", maxCheckTokens), h.PrefillTime(maxCheckTokens)},
		{fmt.Sprintf("KV transfer time of a %d-token prompt", maxCheckTokens), h.TransferTime(maxCheckTokens)},
		{"decode step time of a full batch with full KV", h.StepTime(h.MaxBatch, h.KVCapacityTokens)},
		// The velocity of the shortest requests (the largest batch) and of the longest (a batch of one).
		{"decode velocity of 1-token requests", h.DecodeVelocity(1, 1, TPOTSLO/2)},
		{fmt.Sprintf("decode velocity of %d-token requests", maxCheckTokens), h.DecodeVelocity(maxCheckTokens, maxCheckTokens, TPOTSLO/2)},
	} {
		if !(d.v > 0) || math.IsInf(d.v, 0) {
			errs = append(errs, fmt.Errorf("%s is %g, not a finite positive number", d.what, d.v))
		}
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
	if h.MaxBatch < 1 {
		return 0 // no batch at all, as an unvalidated profile may say
	}
	perSeqCtx := meanIn + meanOut/2 // average context of a sequence over its life
	// fits is whether a batch of b > 1 sequences keeps its KV and its step within the limits.
	fits := func(b int) bool {
		return !(float64(b)*(meanIn+meanOut) > h.KVCapacityTokens) && !(h.StepTime(b, float64(b)*perSeqCtx) > stepBudget)
	}
	last := 1 // a batch of one is always allowed
	if meanIn >= 0 && meanOut >= 0 && h.StepPerSeq >= 0 && h.StepPerCtxToken >= 0 {
		// With non-negative figures both limits only grow with b (rounding keeps order), so bisection finds
		// the batch a step-by-step search stopping at the first misfit would, in log(maxBatch) steps.
		last = 1 + sort.Search(h.MaxBatch-1, func(i int) bool { return !fits(i + 2) })
	} else {
		for last < h.MaxBatch && fits(last+1) {
			last++
		}
	}
	return float64(last) / h.StepTime(last, float64(last)*perSeqCtx)
}
