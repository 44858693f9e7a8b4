// Package config loads tokenscale's pool configuration: one strict, versioned YAML file (unknown fields
// are errors with line numbers), with defaults that fit llm-d's `llm-d.ai/role` labels when no file is
// given, and hot reload that keeps the old config when a new file is bad.
package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/velocity/engine"
)

// Version is the only config version this build reads.
const Version = "tokenscale.io/v1alpha1"

// Role is a pool's part in disaggregated serving.
type Role string

const (
	RolePrefill Role = "prefill"
	RoleDecode  Role = "decode"
	RoleBoth    Role = "both"
)

// Config is the whole file.
type Config struct {
	Version string `yaml:"version"`
	// Scrape tunes the direct scraper.
	Scrape Scrape `yaml:"scrape"`
	// Policy tunes decisions shared by all pools.
	Policy Policy `yaml:"policy"`
	// Pools lists the pools; prefill and decode pools that share a Group are sized together.
	Pools []Pool `yaml:"pools"`
}

// Scrape tunes the collector.
type Scrape struct {
	Interval      Duration  `yaml:"interval"`      // default 1s
	Timeout       Duration  `yaml:"timeout"`       // per target, default 800ms
	Concurrency   int       `yaml:"concurrency"`   // parallel scrapes, default 64
	MaxBodyBytes  int64     `yaml:"maxBodyBytes"`  // default 4 MiB
	StaleAfter    Duration  `yaml:"staleAfter"`    // default 5s
	DefaultPort   int       `yaml:"port"`          // default 8000
	DefaultPath   string    `yaml:"path"`          // default /metrics
	DefaultScheme string    `yaml:"scheme"`        // http or https, default http
	LatencyWindow Duration  `yaml:"latencyWindow"` // default 10s
	PromptTokens  float64   `yaml:"promptTokens"`  // queued-request size until observed, default 1000
	PrometheusURL string    `yaml:"prometheusURL"` // optional Prometheus source instead of scraping
	Compression   bool      `yaml:"compression"`   // ask engines for gzip pages, default false
	Spread        Duration  `yaml:"spread"`        // start a round's scrapes over this long, default 0 (at once)
	TLS           ScrapeTLS `yaml:"tls"`           // how https pages are checked, default the system's roots
}

// LWSWorkerIndexLabel is the label LeaderWorkerSet puts on each pod of a group: "0" on the leader.
const LWSWorkerIndexLabel = "leaderworkerset.sigs.k8s.io/worker-index"

// TRTLLMPath is where trtllm-serve serves Prometheus text: the default path of a pool with engine trtllm
// when neither the pool nor scrape.path names one.
const TRTLLMPath = "/prometheus/metrics"

// Policy tunes the scaling and conversion decisions.
type Policy struct {
	TargetUtilisation  float64  `yaml:"targetUtilisation"`  // ρ the prefill sizing aims at, default 0.85
	DrainSeconds       float64  `yaml:"drainSeconds"`       // queued tokens are sized to drain within this, default 10
	Horizon            Duration `yaml:"horizon"`            // backpressure look-ahead, default 10s
	ColdStart          Duration `yaml:"coldStart"`          // time for a new pod to be Ready, default 60s; also the sizing rate's smoothing time constant
	ScaleDownWindow    Duration `yaml:"scaleDownWindow"`    // scale down only to the scaleDownQuantile of this window's recommendations, default 60s
	ScaleDownQuantile  float64  `yaml:"scaleDownQuantile"`  // in (0, 1], 1: the highest recommendation; default 0.97
	MaxConvertFraction *float64 `yaml:"maxConvertFraction"` // of a decode pool, default 0.25; 0 turns conversions off
	ConvertedPrefill   float64  `yaml:"convertedPrefill"`   // share of V_P a converted decoder gives, default 0.3
	ReleaseHold        Duration `yaml:"releaseHold"`        // prefill must keep up this long before release, default 2m
	Calibrate          *bool    `yaml:"calibrate"`          // online capacity calibration, default true
	// BurstAttainment is the share of the last five cold starts' prefill requests the burst sizing keeps
	// within the TTFT queueing budget (of the work, where no pod of the pool reports finished requests), default
	// 0.96; a negative value turns burst sizing off.
	BurstAttainment float64 `yaml:"burstAttainment"`
	// DecodeTargetUtilisation is the ρ of the decode sizing, default 0.85. It is apart from the prefill's
	// because the TTFT headroom bunched prompts need also doubled a decode pool whose smooth load did not need it.
	DecodeTargetUtilisation float64 `yaml:"decodeTargetUtilisation"`
}

// defaultConvertFraction is maxConvertFraction when unset.
const defaultConvertFraction = 0.25

// MaxWindowDecisions bounds the recommendations policy.scaleDownWindow holds a pool: one a round.
const MaxWindowDecisions = 20000

// MaxProfileTPS bounds a profile's prefill and decode velocity: the store's cap on one pod's token rate.
const MaxProfileTPS = 1e7

// MaxPromptTokens bounds scrape.promptTokens: the store's cap on a learned mean prompt (its maxMeanTokens,
// unexported there), so the default is never larger than any mean the store could learn.
const MaxPromptTokens = 1e7

// MaxScrapeBytes bounds scrape.concurrency × scrape.maxBodyBytes, the bodies a round may hold at once
// (64 × 4 MiB = 256 MiB at the defaults); a round's memory is about 2.5 times it.
const MaxScrapeBytes = 4 << 30

// MinScrapeBody and MaxScrapeBody bound scrape.maxBodyBytes (1 KiB, 64 MiB).
const (
	MinScrapeBody = 1 << 10
	MaxScrapeBody = 64 << 20
)

// MinScrapeTimeout is the shortest scrape.timeout: an engine's page takes milliseconds to serve.
const MinScrapeTimeout = 10 * time.Millisecond

// ConvertFraction is maxConvertFraction: the share of a decode pool that may be converted at once
// (0.25 when unset; 0: conversions off).
func (p *Policy) ConvertFraction() float64 {
	if p.MaxConvertFraction == nil {
		return defaultConvertFraction
	}
	return *p.MaxConvertFraction
}

// Calibrates reports whether online capacity calibration is on (policy.calibrate, true when unset).
func (p *Policy) Calibrates() bool { return p.Calibrate == nil || *p.Calibrate }

// Pool is a set of pods with one role.
type Pool struct {
	Name string `yaml:"name"`
	// Group ties a prefill and a decode pool into one coordinated decision; default: the namespace.
	Group     string            `yaml:"group"`
	Namespace string            `yaml:"namespace"`
	Selector  map[string]string `yaml:"selector"`
	Role      Role              `yaml:"role"`
	Engine    string            `yaml:"engine"` // auto, vllm, sglang, trtllm
	Port      int               `yaml:"port"`
	Path      string            `yaml:"path"`
	Scheme    string            `yaml:"scheme"`
	// Workload names the Deployment/StatefulSet/LeaderWorkerSet whose Object metrics carry this pool's numbers.
	Workload Workload `yaml:"workload"`
	SLO      SLO      `yaml:"slo"`
	Profile  Profile  `yaml:"profile"`
	// Ratio is the allowed prefill:decode replica ratio band (set on either pool of a group). Omitted
	// when nil, as a marshalled config (the simulator's) would otherwise write `ratio: null`, which Parse refuses.
	Ratio       *Ratio `yaml:"ratio,omitempty"`
	MinReplicas int    `yaml:"minReplicas"` // default 1
	MaxReplicas int    `yaml:"maxReplicas"` // default 100
}

// RunsIn reports whether p, one of pools, makes a pool instance in namespace: a pool with a namespace only
// there; one without in every namespace but those where a pool of the same name is fixed, which takes the
// name there (so lookups by name and namespace find the pool that sized it, not the one it shadows).
func RunsIn(pools []Pool, p *Pool, namespace string) bool {
	if p.Namespace != "" {
		return p.Namespace == namespace
	}
	for i := range pools {
		if q := &pools[i]; q.Namespace == namespace && q.Name == p.Name {
			return false
		}
	}
	return true
}

// Workload is the object a pool's Object metrics are attached to.
type Workload struct {
	Kind string `yaml:"kind"` // Deployment, StatefulSet, LeaderWorkerSet
	Name string `yaml:"name"`
}

// SLO targets for a pool.
type SLO struct {
	TTFT Duration `yaml:"ttft"` // default 2s
	ITL  Duration `yaml:"itl"`  // default 100ms
}

// Profile is per-instance capacity in tokens/s, the starting point for online calibration.
type Profile struct {
	PrefillTPS    float64 `yaml:"prefillTokensPerSecond"`    // V_P
	KVTransferTPS float64 `yaml:"kvTransferTokensPerSecond"` // V_N, 0 = not limiting
	DecodeTPS     float64 `yaml:"decodeTokensPerSecond"`     // V_D
}

// Ratio bounds prefill replicas per decode replica.
type Ratio struct {
	Min float64 `yaml:"min"`
	Max float64 `yaml:"max"`
}

// Duration is a time.Duration written as "1s", "250ms".
type Duration struct{ time.Duration }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string such as \"1s\": %w", n.Line, err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	if v < 0 {
		return fmt.Errorf("line %d: duration %q is negative", n.Line, s)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Default is the config used when no file is given: llm-d's layout, one prefill and one decode pool per
// namespace selected by `llm-d.ai/role`, vLLM on port 8000, Llama-3.1-8B on H100-class figures.
func Default() *Config {
	c := &Config{
		Version: Version,
		Pools: []Pool{
			{Name: "prefill", Role: RolePrefill, Selector: map[string]string{"llm-d.ai/role": "prefill"}},
			{Name: "decode", Role: RoleDecode, Selector: map[string]string{"llm-d.ai/role": "decode"}},
		},
	}
	if err := c.complete(); err != nil {
		panic(err) // the built-in default must always be valid
	}
	return c
}

// Parse decodes and validates a config file's bytes: one YAML document, where a key given no value, or a 0
// that would read as unset, is an error too; errors name the line.
func Parse(data []byte) (*Config, error) {
	c, err := parse(data)
	if err != nil {
		return nil, printableErr(err)
	}
	return c, nil
}

// printableErr is err with each line of its text made printable and cut to maxErrorLine bytes, and the
// text to about maxErrorText (engine.PrintableLines): the YAML decoder's messages and keys this package names
// repeat the file's text (a quoted key decodes to any bytes, and "field ... not found" names a key whole),
// and klog writes an error of several lines, as a refused file's joined errors are, without escaping it.
// Keys are quoted where they are named (join, boundTypeErrors), so a key's newline does not make a line.
func printableErr(err error) error {
	if msg := engine.PrintableLines(err.Error(), maxErrorLine, maxErrorText); msg != err.Error() {
		return &rewrittenError{msg: msg, err: err}
	}
	return err
}

// maxErrorLine bounds a line of a config error: a path of maxYAMLDepth keys fits, as most of a key the
// decoder names whole does not. maxErrorText bounds the lines' sum, about the walk's maxNodeErrors of
// them, under the 64 KiB FuzzParse holds an error to.
const (
	maxErrorLine = 16 << 10
	maxErrorText = 48 << 10
)

func parse(data []byte) (*Config, error) {
	// The nodes are read first: the typed decoding reads only the first document and cannot tell a key left
	// out from one given no value or 0, and it compares every pair of a mapping's keys, so a mapping of
	// thousands of keys (or of one key repeated, an error per pair) must be refused before it runs.
	nodes := yaml.NewDecoder(bytes.NewReader(data))
	var doc, next yaml.Node
	if err := nodes.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty: it needs at least `version` and `pools`")
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	switch err := nodes.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, fmt.Errorf("config: after the first YAML document: %w", err)
	default:
		return nil, fmt.Errorf("config: a second YAML document starts at line %d: a config file holds one document, and the rest would be ignored", next.Line)
	}
	k := nodeCheck{zeros: zeroDefaults, whole: configWholeNumbers}
	k.walk(&doc, "", "")
	if k.shape {
		return nil, fmt.Errorf("config: %w", k.err())
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: %w", namedKeys(boundTypeErrors(err), data))
	}
	if err := errors.Join(k.err(), c.complete()); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &c, nil
}

// zeroDefaults maps each key whose 0 the defaults replace (pools[] standing for any pool) to its
// default, so that an explicit 0, which reads as unset, is refused instead of silently becoming it.
// Keys where 0 means something are not here: scrape.spread (at once), policy.maxConvertFraction
// (conversions off), kvTransferTokensPerSecond (not limiting), minReplicas (1, documented).
var zeroDefaults = map[string]string{
	"scrape.interval":                        "1s",
	"scrape.timeout":                         "800ms (0.8 × scrape.interval below 1s)",
	"scrape.concurrency":                     "64",
	"scrape.maxBodyBytes":                    "4194304 (4 MiB)",
	"scrape.staleAfter":                      "5s (45s with scrape.prometheusURL; 5 × scrape.interval where longer)",
	"scrape.port":                            "8000",
	"scrape.latencyWindow":                   "10s (scrape.interval where longer)",
	"scrape.promptTokens":                    "1000",
	"policy.targetUtilisation":               "0.85",
	"policy.decodeTargetUtilisation":         "0.85",
	"policy.drainSeconds":                    "10",
	"policy.horizon":                         "10s",
	"policy.coldStart":                       "60s",
	"policy.scaleDownWindow":                 "60s",
	"policy.scaleDownQuantile":               "0.97",
	"policy.convertedPrefill":                "0.3",
	"policy.releaseHold":                     "2m",
	"policy.burstAttainment":                 "0.96 (a negative value turns burst sizing off)",
	"pools[].port":                           "8000 (scrape.port where set)",
	"pools[].slo.ttft":                       "2s",
	"pools[].slo.itl":                        "100ms",
	"pools[].profile.prefillTokensPerSecond": "12000",
	"pools[].profile.decodeTokensPerSecond":  "2500",
	"pools[].maxReplicas":                    "100",
}

// maxConfigNodes bounds the nodes nodeCheck visits, aliases expanded: a 1 MiB file holds fewer than
// this without aliases, and the walk must not be where aliasing multiplies the work.
const maxConfigNodes = 1 << 20

// nodeCheck walks a config's YAML nodes and collects the errors of keys with no value and of keys given
// a 0 that would read as unset, and which keys' values each line holds.
type nodeCheck struct {
	// zeros maps the keys whose 0 reads as unset to their defaults, and whole holds the integer keys
	// (patterns, pools[] standing for any pool); either may be nil.
	zeros map[string]string
	whole map[string]bool
	// depth is how many mappings and sequences the walk is inside.
	depth int
	errs  []error
	// dropped counts the errors past maxNodeErrors; shape says a mapping was too large or repeated a key,
	// which the typed decoding must not be given.
	dropped int
	shape   bool
	visits  int
	// expanding holds the anchored nodes whose aliases the walk is inside.
	expanding map[*yaml.Node]bool
	// lines maps a line to the keys whose scalar values are on it, and blocks to those whose mapping or
	// sequence starts there, in the order walked.
	lines, blocks map[int][]string
}

// lineRef is how the YAML decoder and Duration name the place of an error.
var lineRef = regexp.MustCompile(`line (\d+):`)

// maxNamedBytes bounds what namedKeys adds to one error: a key path holds keys from the file (a selector's
// label names), and an error listing many lines must not grow by a copy of the file each.
const maxNamedBytes = 16 << 10

// rewrittenError is an error with its text rewritten (the keys on a decoding error's lines named, the text
// made printable) that still unwraps to the error it was.
type rewrittenError struct {
	msg string
	err error
}

func (e *rewrittenError) Error() string { return e.msg }
func (e *rewrittenError) Unwrap() error { return e.err }

// namedKeys adds to each "line N:" of a decoding error the key whose value is on that line: the decoder
// names the line and the Go type only ("cannot unmarshal !!str `high` into float64"), and Duration only
// the line, which a file of several pools leaves to the reader to map back. err is returned as it is
// where the file's nodes do not decode or no line is a key's.
func namedKeys(err error, data []byte) error {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return err
	}
	k := nodeCheck{lines: map[int][]string{}, blocks: map[int][]string{}}
	k.walk(&doc, "", "")
	named, added := false, 0
	msg := lineRef.ReplaceAllStringFunc(err.Error(), func(m string) string {
		if added > maxNamedBytes {
			return m
		}
		n, convErr := strconv.Atoi(lineRef.FindStringSubmatch(m)[1])
		if convErr != nil {
			return m
		}
		keys := k.lines[n]
		if len(keys) == 0 {
			keys = k.blocks[n]
		}
		if len(keys) == 0 {
			return m
		}
		named = true
		out := fmt.Sprintf("line %d (%s):", n, strings.Join(keys, " or "))
		added += len(out) - len(m)
		return out
	})
	if !named {
		return err
	}
	return &rewrittenError{msg: msg, err: err}
}

// note records that path's value starts on n's line.
func (k *nodeCheck) note(n *yaml.Node, path string) {
	if k.lines == nil {
		return
	}
	m := k.blocks
	if n.Kind == yaml.ScalarNode {
		m = k.lines
	}
	if len(m[n.Line]) < 4 {
		m[n.Line] = append(m[n.Line], path)
	}
}

// walk checks the values under n; path names n as errors show it (pools[1].slo), pattern as
// zeroDefaults does (pools[].slo).
func (k *nodeCheck) walk(n *yaml.Node, path, pattern string) {
	if !k.visit() {
		return
	}
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		// Each level's path stays alive down the walk, so by estimate 10,000 levels of a 1 MiB file would hold 10 GB.
		if k.depth >= maxYAMLDepth {
			k.shape = true
			k.add(fmt.Errorf("line %d: %s is nested more than %d levels deep", n.Line, orTop(path), maxYAMLDepth))
			return
		}
		k.depth++
		defer func() { k.depth-- }()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			k.walk(c, path, pattern)
		}
	case yaml.AliasNode:
		if n.Alias == nil {
			return
		}
		// YAML registers an anchor before reading what it anchors, so `a: &a {x: *a}` is a node holding
		// itself: walked as a tree, 15 bytes grew a path for every one of the budget's million visits.
		if k.expanding[n.Alias] {
			k.shape = true
			k.add(fmt.Errorf("line %d: anchor %q contains itself", n.Line, clipText(n.Value)))
			return
		}
		if k.expanding == nil {
			k.expanding = map[*yaml.Node]bool{}
		}
		k.expanding[n.Alias] = true
		k.walk(n.Alias, path, pattern)
		delete(k.expanding, n.Alias)
	case yaml.MappingNode:
		if keys := len(n.Content) / 2; keys > maxMappingKeys {
			k.shape = true
			k.add(fmt.Errorf("line %d: %s holds %d keys; a mapping of the config holds at most %d", n.Line, orTop(path), keys, maxMappingKeys))
			return
		}
		first := make(map[string]int, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			// A merge key too: `<<` repeated is an error to YAML as well (`<<: [*a, *b]` merges several). An
			// alias as a key stands for the key it names.
			name := key.Value
			if key.Kind == yaml.AliasNode && key.Alias != nil {
				name = key.Alias.Value
			}
			if line, again := first[name]; again {
				k.shape = true
				k.add(fmt.Errorf("line %d: key %q of %s is given twice (first at line %d)", key.Line, clipText(name), orTop(path), line))
				continue
			}
			first[name] = key.Line
			if key.ShortTag() == "!!merge" {
				// A merge's keys (`<<: *base`) are the mapping's own, so they are checked under its path.
				merged := []*yaml.Node{val}
				if val.Kind == yaml.SequenceNode {
					merged = val.Content
				}
				for _, m := range merged {
					k.walk(m, path, pattern)
				}
				continue
			}
			// Checked under the key it stands for: under the anchor's name `*m: 0` skipped maxReplicas' checks.
			k.value(key, val, join(path, name), join(pattern, name))
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			k.value(c, c, fmt.Sprintf("%s[%d]", path, i), pattern+"[]")
		}
	}
}

// value checks v, the value of path, whose line is at's (the key's, for a mapping's value).
func (k *nodeCheck) value(at, v *yaml.Node, path, pattern string) {
	if !k.visit() {
		return
	}
	s := v
	if s.Kind == yaml.AliasNode && s.Alias != nil {
		s = s.Alias
	}
	k.note(s, path)
	if s.Kind != yaml.ScalarNode {
		k.walk(v, path, pattern)
		return
	}
	if s.ShortTag() == "!!null" {
		k.add(fmt.Errorf("line %d: %s has no value; leave the key out for its default", at.Line, path))
		return
	}
	if def, ok := k.zeros[pattern]; ok && zeroScalar(s) {
		k.add(fmt.Errorf("line %d: 0 is not a value %s takes; leave it out for its default %s", at.Line, path, def))
	}
	// The YAML decoder truncates a fraction given for an integer: maxReplicas: 0.5 became 0, then 100.
	var f float64
	if k.whole[pattern] && s.Decode(&f) == nil && f != math.Trunc(f) {
		k.add(fmt.Errorf("line %d: %s is %s; it takes a whole number", at.Line, path, clipText(s.Value)))
	}
}

// maxYAMLDepth bounds how deeply a file's mappings and sequences nest: the config's deepest key is
// four levels down (pools[].profile.prefillTokensPerSecond).
const maxYAMLDepth = 32

// configWholeNumbers holds the config's integer keys.
var configWholeNumbers = wholeNumbers(reflect.TypeOf(Config{}))

// wholeNumbers returns the patterns of t's integer keys (by their yaml names, a list's items as []),
// leaving out types that decode themselves (Duration).
func wholeNumbers(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	unmarshaler := reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	var visit func(t reflect.Type, pattern string)
	visit = func(t reflect.Type, pattern string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if reflect.PointerTo(t).Implements(unmarshaler) {
			return
		}
		switch t.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			out[pattern] = true
		case reflect.Slice, reflect.Array:
			visit(t.Elem(), pattern+"[]")
		case reflect.Struct:
			for i := range t.NumField() {
				name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
				if name != "" && name != "-" {
					visit(t.Field(i).Type, join(pattern, name))
				}
			}
		}
	}
	visit(t, "")
	return out
}

// CheckYAML checks a decoded YAML document before it is decoded into a value of type t, as the config
// is: each mapping at most maxMappingKeys keys, none repeated (the decoder compares every pair of keys, an
// error string per repeat), no anchor holding itself, at most maxYAMLDepth levels, a bounded walk with
// aliases expanded, no key given no value, and whole numbers for t's integer keys. Every error names its
// line.
func CheckYAML(doc *yaml.Node, t reflect.Type) error {
	k := nodeCheck{whole: wholeNumbers(t)}
	k.walk(doc, "", "")
	return k.err()
}

// boundTypeErrors keeps the first maxNodeErrors of the decoder's errors, each printable (the decoder
// names an unknown key whole, as it is): a file of hundreds of mappings each of hundreds of unknown keys
// made one error of megabytes, logged on every reload.
func boundTypeErrors(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	if len(te.Errors) > maxNodeErrors {
		more := len(te.Errors) - maxNodeErrors
		te.Errors = append(te.Errors[:maxNodeErrors:maxNodeErrors], fmt.Sprintf("and %d more errors", more))
	}
	// Each message is a line of the error: one that names a key holding a newline must not read as two.
	for i, m := range te.Errors {
		te.Errors[i] = engine.PrintableWithin(m, maxErrorLine)
	}
	return err
}

// visit counts a node visited and says whether the walk may go on, reporting the budget once when it ends.
func (k *nodeCheck) visit() bool {
	if k.visits++; k.visits == maxConfigNodes+1 {
		k.add(fmt.Errorf("more than %d YAML nodes with aliases expanded", maxConfigNodes))
	}
	return k.visits <= maxConfigNodes
}

// maxNodeErrors bounds the errors a walk reports: a 1 MiB file of keys given no value would otherwise
// make an error of megabytes, logged on every reload.
const maxNodeErrors = 50

// maxMappingKeys bounds one mapping's keys (a selector's labels, a pool's fields): the YAML decoder
// compares every pair of a mapping's keys, so 100,000 keys cost seconds and one key repeated 6,000 times
// an error string per pair, gigabytes.
const maxMappingKeys = 256

func (k *nodeCheck) add(err error) {
	if len(k.errs) < maxNodeErrors {
		k.errs = append(k.errs, err)
		return
	}
	k.dropped++
}

// err is the walk's errors, nil for none.
func (k *nodeCheck) err() error {
	errs := k.errs
	if k.dropped > 0 {
		errs = append(errs[:len(errs):len(errs)], fmt.Errorf("and %d more errors", k.dropped))
	}
	return errors.Join(errs...)
}

// zeroScalar says whether a scalar is a 0: a number (0, 0.0, 0x0) or a duration (0s, 0ms, "0").
func zeroScalar(n *yaml.Node) bool {
	var f float64
	if n.Decode(&f) == nil {
		return f == 0
	}
	d, err := time.ParseDuration(n.Value)
	return err == nil && d == 0
}

// join names key under path as shown names it: a key past maxKeyText characters is cut, so an error
// naming a huge key from the file does not copy it, and one that is not plain text is quoted.
func join(path, key string) string {
	key = shown(key)
	if path == "" {
		return key
	}
	return path + "." + key
}

// clipText is s cut to maxKeyText bytes on a character boundary, marked with "…" where cut.
func clipText(s string) string {
	if len(s) <= maxKeyText {
		return s
	}
	cut := maxKeyText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// shown is a name from the file as an error names it: as it is when it is plain text of a DNS name's
// characters, else quoted, so no newline or escape of the file reaches a log; clipped either way.
func shown(s string) string {
	c := clipText(s)
	kept := c
	if c != s {
		kept = strings.TrimSuffix(c, "…") // the text kept, not the mark of the cut
	}
	for _, r := range kept {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._/", r)) {
			return strconv.Quote(c)
		}
	}
	return c
}

// maxKeyText is the most of a key (or of a name) an error names: label keys are at most 317 characters (a 253-character
// prefix, a slash and a 63-character name), and the config's own keys are short.
const maxKeyText = 320

// orTop names path, or the top of the file where it is empty.
func orTop(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

// maxFileBytes bounds a file from outside: a real config, certificate or CA bundle is a few KiB, and a
// path pointing at /dev/zero or a huge file must be an error, not the process's memory.
const maxFileBytes = 1 << 20

// ReadFile reads a file from outside (a config file, a certificate, a key, a CA bundle) of at most
// 1 MiB, refusing anything but a regular file (a FIFO would block every reload). It opens without blocking, since a plain open of a FIFO waits for a writer
// before the check could refuse it; a regular file reads the same either way.
func ReadFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxFileBytes)
	}
	return data, nil
}

// slot is the place a pool takes in its group: a group sizes one decode pool and one prefill pool, and
// a pool serving both roles takes the prefill place.
func slot(p *Pool) string {
	if p.Role == RoleDecode {
		return "decode"
	}
	return "prefill"
}

// groupIn is the pool's group in namespace ns: its own, else the namespace.
func groupIn(p *Pool, ns string) string {
	if p.Group != "" {
		return p.Group
	}
	return ns
}

// sameGroupSlot says whether two pools fixed to one namespace take the same place in one group there (the
// adapter would size one and answer every number of the other as unknown), and names the namespace.
// Pools of every namespace are not refused: they meet only where both have Ready pods, which the config
// cannot tell (one model per namespace never does); the adapter then reports the pool it does not size.
func sameGroupSlot(a, b *Pool) (string, bool) {
	if slot(a) != slot(b) || a.Namespace == "" || a.Namespace != b.Namespace {
		return "", false
	}
	return a.Namespace, groupIn(a, a.Namespace) == groupIn(b, b.Namespace)
}

// mayMeet says whether two of pools can be sized in one group in some namespace: both run there (RunsIn:
// a pool without a namespace runs in every one but those where a pool of its name is fixed) and their
// groups are equal there (a pool without a group takes the namespace's name).
func mayMeet(pools []Pool, a, b *Pool) bool {
	if a.Namespace != "" && b.Namespace != "" && a.Namespace != b.Namespace {
		return false
	}
	ns := a.Namespace // the namespace they can meet in, if only one
	if ns == "" {
		ns = b.Namespace
	}
	switch {
	case a.Group != "" && b.Group != "":
		if a.Group != b.Group {
			return false
		}
	case a.Group == "" && b.Group == "":
	default: // one group named: the other pool's group is the namespace's name, so they meet only there
		g := a.Group + b.Group
		if ns != "" && ns != g {
			return false
		}
		ns = g
	}
	// Neither fixed (ns ""): some namespace shadows neither.
	return ns == "" || RunsIn(pools, a, ns) && RunsIn(pools, b, ns)
}

func groupText(group, ns string) string {
	return fmt.Sprintf("group %q in namespace %s", clipText(group), shown(ns))
}

// badPath says a metrics path is not an absolute path: it is appended to each pod's address, and one
// that does not start with '/' (say "@evil.example/m") would make the URL's host someone else's.
func badPath(p string) bool {
	_, err := url.ParseRequestURI(p)
	return err != nil || !strings.HasPrefix(p, "/")
}

func badScheme(s string) bool { return s != "http" && s != "https" }

func badPort(p int) bool { return p < 1 || p > 65535 }

// Load reads and parses a file.
func Load(path string) (*Config, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// MinPolicyDuration is the least policy.coldStart, horizon, releaseHold and scaleDownWindow take: below
// it a value is a unit typo (ms for s), and a cold start of 60ms turned burst sizing, smoothing and
// conversions off without a word, a release hold of 2ms let conversions flap. Callers that derive a
// policy's cold start from pods Ready sooner (the demos, the simulator) raise it to this.
const MinPolicyDuration = time.Second

// MaxPools bounds a config's pools; maxPairErrors the clashing pairs of pools one error reports.
const (
	MaxPools      = 1000
	maxPairErrors = 10
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// complete applies defaults and validates.
func (c *Config) complete() error {
	if c.Version != Version {
		return fmt.Errorf("version %q is not supported: use %q", c.Version, Version)
	}
	s := &c.Scrape
	// Read before defaults fill it in: a trtllm pool's own default path applies only where scrape.path
	// was left unset.
	pathUnset := s.DefaultPath == ""
	setDur(&s.Interval, time.Second)
	// The defaults of the durations bound by the interval follow it, so that any interval in its range
	// is valid alone: with fixed ones, `interval: 500ms` was refused for a timeout the file never set.
	// Clamped to its range (checked below) for the defaults only: 5 × an interval of 2,000,000 h
	// overflowed into a negative timeout the file never set, listed beside the interval's own error.
	iv := min(max(s.Interval.Duration, 100*time.Millisecond), time.Minute)
	setDur(&s.Timeout, min(800*time.Millisecond, iv*4/5))
	if s.PrometheusURL != "" {
		// Prometheus' samples are as old as its scrape interval (15 s is common): 5 s would read as stale.
		setDur(&s.StaleAfter, max(45*time.Second, 5*iv))
	}
	setDur(&s.StaleAfter, max(5*time.Second, 5*iv))
	setDur(&s.LatencyWindow, max(10*time.Second, iv))
	if s.Concurrency == 0 {
		s.Concurrency = 64
	}
	if s.MaxBodyBytes == 0 {
		s.MaxBodyBytes = 4 << 20
	}
	if s.DefaultPort == 0 {
		s.DefaultPort = 8000
	}
	if s.DefaultPath == "" {
		s.DefaultPath = "/metrics"
	}
	if s.DefaultScheme == "" {
		s.DefaultScheme = "http"
	}
	if s.PromptTokens == 0 {
		s.PromptTokens = 1000
	}
	var errs []error
	// The pools' defaults are checked here, under their own names; a pool's own values in its loop.
	if badScheme(s.DefaultScheme) {
		errs = append(errs, fmt.Errorf("scrape.scheme %q: allowed values are http, https", s.DefaultScheme))
	}
	if badPath(s.DefaultPath) {
		errs = append(errs, fmt.Errorf("scrape.path %q: want an absolute path such as /metrics", s.DefaultPath))
	}
	if badPort(s.DefaultPort) {
		errs = append(errs, fmt.Errorf("scrape.port %d out of range", s.DefaultPort))
	}
	// The checks against the interval take it clamped to its range, as its defaults do, so that an
	// interval out of range is its own error, not also theirs.
	if s.Timeout.Duration > iv {
		errs = append(errs, fmt.Errorf("scrape.timeout (%s) must not exceed scrape.interval (%s)", s.Timeout, s.Interval))
	}
	// Compared without adding: a spread near the largest duration would wrap the sum negative and pass.
	if s.Spread.Duration > 0 && (s.Spread.Duration > iv || s.Timeout.Duration > iv-s.Spread.Duration) {
		errs = append(errs, fmt.Errorf("scrape.spread (%s) plus scrape.timeout (%s) must not exceed scrape.interval (%s): a round's last scrape must end before the next round starts", s.Spread, s.Timeout, s.Interval))
	}
	if s.StaleAfter.Duration < iv {
		errs = append(errs, fmt.Errorf("scrape.staleAfter (%s) must be at least scrape.interval (%s)", s.StaleAfter, s.Interval))
	}
	// Bounded above as well: a queued count times an enormous mean sized every pool at its maximum.
	if !(s.PromptTokens >= 1 && s.PromptTokens <= MaxPromptTokens) {
		errs = append(errs, fmt.Errorf("scrape.promptTokens %v must be between 1 and %g (the store's cap on a learned mean prompt)", s.PromptTokens, float64(MaxPromptTokens)))
	}
	errs = append(errs, s.TLS.validate()...)
	if s.PrometheusURL != "" {
		if u, err := url.Parse(s.PrometheusURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("scrape.prometheusURL %q: want an http(s) URL of a Prometheus-compatible API, like http://prometheus.monitoring:9090", redactedURL(s.PrometheusURL)))
		}
	}
	// Upper bounds: a value past these is a typo (a unit missing, a zero too many), and each would starve
	// or swamp the loop: a minute-long interval is as lagging as the PromQL this project replaces.
	if s.Interval.Duration < 100*time.Millisecond || s.Interval.Duration > time.Minute {
		errs = append(errs, fmt.Errorf("scrape.interval (%s) must be between 100ms and 1m", s.Interval))
	}
	// Below 10ms no engine answers, so every pod would read as failing.
	if s.Timeout.Duration < MinScrapeTimeout {
		errs = append(errs, fmt.Errorf("scrape.timeout (%s) must be at least %s", s.Timeout, MinScrapeTimeout))
	}
	if s.Spread.Duration < 0 {
		errs = append(errs, fmt.Errorf("scrape.spread (%s) must not be negative", s.Spread))
	}
	if s.StaleAfter.Duration > time.Hour {
		errs = append(errs, fmt.Errorf("scrape.staleAfter (%s) must be at most 1h", s.StaleAfter))
	}
	if s.LatencyWindow.Duration < iv || s.LatencyWindow.Duration > 10*time.Minute {
		errs = append(errs, fmt.Errorf("scrape.latencyWindow (%s) must be between scrape.interval (%s) and 10m", s.LatencyWindow, s.Interval))
	}
	cOK, bOK := s.Concurrency >= 1 && s.Concurrency <= 4096, s.MaxBodyBytes >= MinScrapeBody && s.MaxBodyBytes <= MaxScrapeBody
	if !cOK {
		errs = append(errs, fmt.Errorf("scrape.concurrency (%d) must be between 1 and 4096", s.Concurrency))
	}
	if !bOK {
		errs = append(errs, fmt.Errorf("scrape.maxBodyBytes (%d) must be between 1024 and 67108864 (64 MiB)", s.MaxBodyBytes))
	}
	// A round holds up to 2.5 bodies per scrape in flight (docs/metrics.md, Memory bound): the product, not
	// each alone, is the adapter's memory, and 4096 scrapes of 64 MiB would be 640 GiB.
	if cOK && bOK && int64(s.Concurrency)*s.MaxBodyBytes > MaxScrapeBytes {
		errs = append(errs, fmt.Errorf("scrape.concurrency (%d) × scrape.maxBodyBytes (%d) is %d bytes, above the budget of %d (4 GiB; a round holds up to 2.5 times it): lower either",
			s.Concurrency, s.MaxBodyBytes, int64(s.Concurrency)*s.MaxBodyBytes, int64(MaxScrapeBytes)))
	}
	p := &c.Policy
	setF(&p.TargetUtilisation, 0.85)
	setF(&p.DecodeTargetUtilisation, 0.85)
	setF(&p.DrainSeconds, 10)
	if p.MaxConvertFraction == nil {
		// A pointer, unlike the other fractions, because 0 is meaningful: it turns conversions off.
		f := defaultConvertFraction
		p.MaxConvertFraction = &f
	}
	setF(&p.ConvertedPrefill, 0.3)
	setDur(&p.Horizon, 10*time.Second)
	setDur(&p.ColdStart, 60*time.Second)
	setDur(&p.ScaleDownWindow, 60*time.Second)
	setDur(&p.ReleaseHold, 2*time.Minute)
	setF(&p.BurstAttainment, 0.96)
	setF(&p.ScaleDownQuantile, 0.97)
	if p.Calibrate == nil {
		t := true
		p.Calibrate = &t
	}
	// At least 0.01: a pod planned at less than 1% of its velocity is a typo, and a velocity times a
	// target far below it rounded to 0, which sized the pool at its minimum whatever the load.
	if !(p.TargetUtilisation >= 0.01 && p.TargetUtilisation <= 1) {
		errs = append(errs, fmt.Errorf("policy.targetUtilisation %v must be in [0.01, 1]", p.TargetUtilisation))
	}
	if !(p.DecodeTargetUtilisation >= 0.01 && p.DecodeTargetUtilisation <= 1) {
		errs = append(errs, fmt.Errorf("policy.decodeTargetUtilisation %v must be in [0.01, 1]", p.DecodeTargetUtilisation))
	}
	// At least 0.1 s: a queue sized to drain in less (1e-300 passed) asked for every pod up to maxReplicas
	// whenever a single token waited.
	// At most an hour: a queue allowed longer to drain (1e300 passed) took the queue out of the sizing.
	if !(p.DrainSeconds >= 0.1 && p.DrainSeconds <= 3600) {
		errs = append(errs, fmt.Errorf("policy.drainSeconds %v must be in [0.1, 3600]", p.DrainSeconds))
	}
	if !(p.ScaleDownQuantile > 0 && p.ScaleDownQuantile <= 1) {
		errs = append(errs, fmt.Errorf("policy.scaleDownQuantile %v must be in (0, 1] (1: scale down only to the window's highest recommendation)", p.ScaleDownQuantile))
	}
	if !(p.BurstAttainment < 1) || math.IsInf(p.BurstAttainment, 0) {
		errs = append(errs, fmt.Errorf("policy.burstAttainment %v must be below 1 (a negative value turns burst sizing off)", p.BurstAttainment))
	}
	if p.ScaleDownWindow.Duration > 24*time.Hour {
		// The window's recommendations are kept in memory, one a decision per pool.
		errs = append(errs, fmt.Errorf("policy.scaleDownWindow (%s) must be at most 24h", p.ScaleDownWindow))
	} else if iv := max(s.Interval.Duration, time.Millisecond); p.ScaleDownWindow.Duration > MaxWindowDecisions*iv {
		// One recommendation a round (scrape.interval) is kept and sorted every round: 24h at 100ms held
		// 864,000 a pool and took rounds past their deadline. Rounds are counted up, so a part of one is
		// one more: 20000.5s at 1s spans 20,001.
		n := (p.ScaleDownWindow.Duration + iv - 1) / iv
		errs = append(errs, fmt.Errorf("policy.scaleDownWindow (%s) spans %d rounds of scrape.interval (%s): at most %d (%s at this interval)",
			p.ScaleDownWindow, n, s.Interval, MaxWindowDecisions, time.Duration(MaxWindowDecisions)*s.Interval.Duration))
	}
	if p.ColdStart.Duration > time.Hour {
		// It also sets how long sizing smooths and remembers bursts: longer would freeze sizing.
		errs = append(errs, fmt.Errorf("policy.coldStart (%s) must be at most 1h", p.ColdStart))
	}
	if !(*p.MaxConvertFraction >= 0 && *p.MaxConvertFraction <= 1) {
		errs = append(errs, fmt.Errorf("policy.maxConvertFraction %v must be in [0, 1] (0 turns conversions off)", *p.MaxConvertFraction))
	}
	// convertedPrefill divides the decode pool's headroom: below 0.01 the count of spare decoders overflowed.
	if !(p.ConvertedPrefill >= 0.01 && p.ConvertedPrefill <= 1) {
		errs = append(errs, fmt.Errorf("policy.convertedPrefill %v must be in [0.01, 1]", p.ConvertedPrefill))
	}
	// Upper bounds past which a value is a typo (a unit missing): a release held for hours would keep
	// decoders converted long after a burst, and a look-ahead of hours reads any excess of arrivals as a breach.
	if p.ReleaseHold.Duration > time.Hour {
		errs = append(errs, fmt.Errorf("policy.releaseHold (%s) must be at most 1h", p.ReleaseHold))
	}
	if p.Horizon.Duration > time.Hour {
		errs = append(errs, fmt.Errorf("policy.horizon (%s) must be at most 1h", p.Horizon))
	}
	for _, f := range []struct {
		key string
		d   Duration
	}{{"coldStart", p.ColdStart}, {"horizon", p.Horizon}, {"releaseHold", p.ReleaseHold}, {"scaleDownWindow", p.ScaleDownWindow}} {
		if f.d.Duration < MinPolicyDuration {
			errs = append(errs, fmt.Errorf("policy.%s (%s) must be at least %s", f.key, f.d, MinPolicyDuration))
		}
	}
	if len(c.Pools) == 0 {
		errs = append(errs, errors.New("pools: at least one pool is required"))
	}
	if len(c.Pools) > MaxPools {
		// Pools are checked against each other in pairs: 300,000 empty pools fit in the file's 1 MiB.
		return errors.Join(append(errs, fmt.Errorf("pools: %d pools; a config holds at most %d", len(c.Pools), MaxPools))...)
	}
	seen := map[string]bool{}
	for i := range c.Pools {
		pl := &c.Pools[i]
		where := fmt.Sprintf("pools[%d] (%s)", i, shown(pl.Name)) // names and values from the file are clipped in every error
		if !nameRE.MatchString(pl.Name) || len(pl.Name) > 63 {
			errs = append(errs, fmt.Errorf("%s: name must be a DNS label (at most 63 characters)", where))
		}
		// A namespace no pod can be in would leave the pool empty, and read as no load rather than a typo.
		if pl.Namespace != "" && (!nameRE.MatchString(pl.Namespace) || len(pl.Namespace) > 63) {
			errs = append(errs, fmt.Errorf("%s: namespace %q must be a DNS label (at most 63 of a-z, 0-9 and -, starting and ending alphanumeric)", where, clipText(pl.Namespace)))
		}
		key := pl.Namespace + "/" + pl.Name
		if seen[key] {
			errs = append(errs, fmt.Errorf("%s: duplicate pool name in namespace %q", where, clipText(pl.Namespace)))
		}
		seen[key] = true
		switch pl.Role {
		case RolePrefill, RoleDecode, RoleBoth:
		default:
			errs = append(errs, fmt.Errorf("%s: role %q: allowed values are prefill, decode, both", where, clipText(string(pl.Role))))
		}
		if len(pl.Selector) == 0 {
			errs = append(errs, fmt.Errorf("%s: selector must have at least one label", where))
		}
		errs = append(errs, selectorErrors(where, pl.Selector)...)
		switch pl.Engine {
		case "", "auto", "vllm", "sglang", "trtllm":
		default:
			errs = append(errs, fmt.Errorf("%s: engine %q: allowed values are auto, vllm, sglang, trtllm", where, clipText(pl.Engine)))
		}
		if pl.Port == 0 {
			pl.Port = s.DefaultPort
		} else if badPort(pl.Port) {
			errs = append(errs, fmt.Errorf("%s: port %d out of range", where, pl.Port))
		}
		if pl.Path == "" {
			pl.Path = s.DefaultPath
			if pl.Engine == "trtllm" && pathUnset {
				// trtllm-serve answers /metrics with JSON iteration statistics; its Prometheus text is here.
				pl.Path = TRTLLMPath
			}
		} else if badPath(pl.Path) {
			errs = append(errs, fmt.Errorf("%s: path %q: want an absolute path such as /metrics", where, clipText(pl.Path)))
		}
		if pl.Scheme == "" {
			pl.Scheme = s.DefaultScheme
		} else if badScheme(pl.Scheme) {
			errs = append(errs, fmt.Errorf("%s: scheme %q: allowed values are http, https", where, clipText(pl.Scheme)))
		}
		// A workload no object can be named (a typo, or a kind with no name) would leave every Object-metric
		// query of it a 404, read as a missing pool rather than a mistake.
		if pl.Workload.Name != "" && (len(pl.Workload.Name) > 253 || !subdomainRE.MatchString(pl.Workload.Name)) {
			errs = append(errs, fmt.Errorf("%s: workload.name %q must be a DNS subdomain (at most 253 of a-z, 0-9, - and ., as Kubernetes names a Deployment)", where, clipText(pl.Workload.Name)))
		}
		if pl.Workload.Kind != "" && pl.Workload.Kind != "Deployment" && pl.Workload.Name == "" { // Deployment: the default, written back by a marshalled config
			errs = append(errs, fmt.Errorf("%s: workload.kind %q needs workload.name", where, clipText(pl.Workload.Kind)))
		}
		if pl.Workload.Kind == "" {
			pl.Workload.Kind = "Deployment"
		}
		switch pl.Workload.Kind {
		case "Deployment", "StatefulSet":
		case "LeaderWorkerSet":
			// Its scale subresource counts groups and selects their leaders: a pool taking the workers too
			// would count pods, and the HPA would set that many groups.
			if pl.Selector[LWSWorkerIndexLabel] != "0" {
				errs = append(errs, fmt.Errorf("%s: workload.kind LeaderWorkerSet: selector must hold %s: \"0\", the label LeaderWorkerSet puts on group leaders, so that the pool counts groups as the workload's replicas do",
					where, LWSWorkerIndexLabel))
			}
		default:
			errs = append(errs, fmt.Errorf("%s: workload.kind %q: allowed values are Deployment, StatefulSet, LeaderWorkerSet", where, clipText(pl.Workload.Kind)))
		}
		setDur(&pl.SLO.TTFT, 2*time.Second)
		setDur(&pl.SLO.ITL, 100*time.Millisecond)
		// Past these an SLO is a typo; an hour's TTFT still lets a decode pool turn its late-first-token
		// rule off (docs/metrics.md).
		if pl.SLO.TTFT.Duration > time.Hour {
			errs = append(errs, fmt.Errorf("%s: slo.ttft (%s) must be at most 1h", where, pl.SLO.TTFT))
		}
		if pl.SLO.ITL.Duration > time.Minute {
			errs = append(errs, fmt.Errorf("%s: slo.itl (%s) must be at most 1m", where, pl.SLO.ITL))
		}
		// And below these (ms for s): a TTFT of 2ms read every first token as late, which stepped a decode
		// pool up every 30 s to maxReplicas, and made every prefill queue a breach.
		if pl.SLO.TTFT.Duration < 10*time.Millisecond {
			errs = append(errs, fmt.Errorf("%s: slo.ttft (%s) must be at least 10ms", where, pl.SLO.TTFT))
		}
		if pl.SLO.ITL.Duration < time.Millisecond {
			errs = append(errs, fmt.Errorf("%s: slo.itl (%s) must be at least 1ms", where, pl.SLO.ITL))
		}
		// Defaults: Llama-3.1-8B, TP=1, H100 class; see docs/metrics.md for sources.
		setF(&pl.Profile.PrefillTPS, 12000)
		setF(&pl.Profile.DecodeTPS, 2500)
		// Within what a pod can report: the store caps a pod's token rate at 1e7/s, so a faster profile can
		// never be observed, and below 1 token/s a velocity times a target rounds towards 0.
		kv := pl.Profile.KVTransferTPS
		if !(pl.Profile.PrefillTPS >= 1 && pl.Profile.PrefillTPS <= MaxProfileTPS) || !(pl.Profile.DecodeTPS >= 1 && pl.Profile.DecodeTPS <= MaxProfileTPS) ||
			!(kv == 0 || kv >= 1 && kv <= 1e9) {
			errs = append(errs, fmt.Errorf("%s: profile velocities must be between 1 and %g tokens/s (kvTransferTokensPerSecond: 0, or 1 to 1e9), got prefill %v, decode %v, kv %v",
				where, MaxProfileTPS, pl.Profile.PrefillTPS, pl.Profile.DecodeTPS, kv))
		}
		// Bounded both ways: the band multiplies replica counts, and 1e300 or 1e-300 overflowed them.
		if pl.Ratio != nil && !(pl.Ratio.Min >= 0.01 && pl.Ratio.Max >= pl.Ratio.Min && pl.Ratio.Max <= 100) {
			errs = append(errs, fmt.Errorf("%s: ratio needs 0.01 <= min <= max <= 100, got %v..%v", where, pl.Ratio.Min, pl.Ratio.Max))
		}
		if pl.MinReplicas == 0 {
			// Unset and 0 alike: the policy reads a pool's load from its running pods, so a pool at zero
			// pods would show no load and never scale up again.
			pl.MinReplicas = 1
		}
		if pl.MaxReplicas == 0 {
			pl.MaxReplicas = 100
		}
		// 1e6 is the most the policy ever sizes (ceilDiv stops there): a larger bound is a typo.
		if pl.MinReplicas < 0 || pl.MaxReplicas < pl.MinReplicas || pl.MaxReplicas > 1_000_000 {
			errs = append(errs, fmt.Errorf("%s: need 1 <= minReplicas <= maxReplicas <= 1000000 (minReplicas 0 or unset: 1; maxReplicas unset: 100), got %d and %d", where, pl.MinReplicas, pl.MaxReplicas))
		}
	}
	// One workload, one pool: the adapter serves an Object metric from the pool that names the workload,
	// and two would make its answer either pool's numbers. Every pair may clash, so the pairs reported are
	// bounded (a thousand pools in one slot are half a million pairs).
	var pairs []error
	clashes := 0
	pair := func(err error) {
		if clashes++; len(pairs) < maxPairErrors {
			pairs = append(pairs, err)
		}
	}
	for i := range c.Pools {
		for j := i + 1; j < len(c.Pools); j++ {
			a, b := &c.Pools[i], &c.Pools[j]
			if a.Workload.Name != "" && a.Workload == b.Workload && (a.Namespace == b.Namespace || a.Namespace == "" || b.Namespace == "") {
				pair(fmt.Errorf("pools[%d] (%s) and pools[%d] (%s) both name workload %s/%s: give each pool its own", i, shown(a.Name), j, shown(b.Name), shown(a.Workload.Kind), shown(a.Workload.Name)))
			}
			if slot(a) != slot(b) && a.Ratio != nil && b.Ratio != nil && *a.Ratio != *b.Ratio && mayMeet(c.Pools, a, b) {
				pair(fmt.Errorf("pools[%d] (%s) and pools[%d] (%s) set different ratio bands (%v..%v and %v..%v) and may be sized together, where a group keeps one: set it on one pool, or the same on both",
					i, shown(a.Name), j, shown(b.Name), a.Ratio.Min, a.Ratio.Max, b.Ratio.Min, b.Ratio.Max))
			}
			if ns, clash := sameGroupSlot(a, b); clash {
				pair(fmt.Errorf("pools[%d] (%s) and pools[%d] (%s) would both be the %s pool of %s, and a group sizes one of each (the other's numbers would all be unknown): give each model's pools their own group",
					i, shown(a.Name), j, shown(b.Name), slot(a), groupText(groupIn(a, ns), ns)))
			}
		}
	}
	errs = append(errs, pairs...)
	if clashes > len(pairs) {
		errs = append(errs, fmt.Errorf("and %d more pairs of pools that clash", clashes-len(pairs)))
	}
	// TLS settings nothing uses are a mistake to report, not to ignore.
	if s.TLS != (ScrapeTLS{}) {
		https := false
		for i := range c.Pools {
			https = https || c.Pools[i].Scheme == "https"
		}
		switch {
		case s.PrometheusURL != "":
			// No pod is scraped: the settings check Prometheus' certificate instead.
			if !strings.HasPrefix(strings.ToLower(s.PrometheusURL), "https://") {
				errs = append(errs, fmt.Errorf("scrape.tls is set and no pod is scraped, so it would check Prometheus' certificate, but scrape.prometheusURL %q is not https", redactedURL(s.PrometheusURL)))
			}
		case !https:
			errs = append(errs, errors.New("scrape.tls is set but no pool scrapes over https: set scrape.scheme (or a pool's scheme) to https"))
		}
	}
	return errors.Join(errs...)
}

// Label syntax as Kubernetes checks it (velocity/ does not import Kubernetes): a name part of a key, or a
// value, is at most 63 of these characters; a key's optional prefix is a DNS subdomain of at most 253.
var (
	labelNameRE = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	subdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

func badLabelKey(k string) bool {
	name := k
	if i := strings.LastIndexByte(k, '/'); i >= 0 {
		prefix := k[:i]
		if len(prefix) > 253 || !subdomainRE.MatchString(prefix) {
			return true
		}
		name = k[i+1:]
	}
	return len(name) > 63 || !labelNameRE.MatchString(name)
}

func badLabelValue(v string) bool { return v != "" && (len(v) > 63 || !labelNameRE.MatchString(v)) }

// selectorErrors reports the selector's keys and values no pod label can have (a pool that would never
// match a pod reads as idle, not as a typo), in key order so that the errors read the same each time.
func selectorErrors(where string, sel map[string]string) []error {
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		if badLabelKey(k) {
			errs = append(errs, fmt.Errorf("%s: selector key %q is not a label key: an optional DNS subdomain and '/', then at most 63 of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending alphanumeric", where, clipText(k)))
		} else if v := sel[k]; badLabelValue(v) {
			errs = append(errs, fmt.Errorf("%s: selector %s value %q is not a label value: empty, or at most 63 of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending alphanumeric", where, clipText(k), clipText(v)))
		}
	}
	return errs
}

// redactedURL is scrape.prometheusURL as errors show it: without its password, and not at all when it
// does not parse, since where a password would be cannot be told then (url.Parse's error quotes it whole).
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(an unparsable URL, not shown)"
	}
	return u.Redacted()
}

func setDur(d *Duration, def time.Duration) {
	if d.Duration == 0 {
		d.Duration = def
	}
}

func setF(f *float64, def float64) {
	if *f == 0 {
		*f = def
	}
}

// Watcher holds the current config and reloads it when the file changes.
type Watcher struct {
	path string
	mu   sync.RWMutex
	cur  *Config
	raw  []byte
	// OnChange, if set before Run, is called after each successful reload.
	OnChange func(*Config)
	// OnReload, if set before Run, is called after each reload of a changed file with its outcome (nil:
	// applied), so that the last reload's success can be exported.
	OnReload func(error)
	// Check, if set before Run, refuses a reloaded config the process cannot serve as it runs (pools its
	// pod informer cannot see), as Parse refuses a bad one.
	Check    func(*Config) error
	rejected bool // the file differs from the config in force, which a reload refused
	// refused is the file a reload refused last: the same bytes are not parsed, and their error not
	// logged, again on every poll.
	refused []byte
	// unreadable is why the file could not be read at the last poll ("" when it was read): the same
	// failure is reported once, as a refused file is.
	unreadable string
}

// settle waits before a reload reads a changed file a second time: a file rewritten in place can be read
// half-written, and a prefix that parses (maxReplicas: 1 of 10) would be applied. Tests replace it.
var settle = func() { time.Sleep(50 * time.Millisecond) }

// NewWatcher loads path (or the default when path is "") and returns a watcher serving it.
func NewWatcher(path string) (*Watcher, error) {
	w := &Watcher{path: path}
	if path == "" {
		w.cur = Default()
		return w, nil
	}
	raw, err := ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	w.cur, w.raw = c, raw
	return w, nil
}

// Current returns the config in force.
func (w *Watcher) Current() *Config {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.cur
}

// Reload rereads the file. A bad file is rejected with an error and the old config stays in force.
func (w *Watcher) Reload() (changed bool, err error) {
	if w.path == "" {
		return false, nil
	}
	raw, err := ReadFile(w.path)
	if err != nil {
		// A file that cannot be read (gone, too big, a FIFO) is refused like one that does not parse, so
		// the last reload's metric does not go on saying the file is the config in force; and, like one,
		// reported once while it fails the same way, not logged again on every poll.
		if w.rejected && w.unreadable == err.Error() {
			return false, nil
		}
		w.unreadable = err.Error()
		return false, w.reject(err)
	}
	w.unreadable = ""
	w.mu.RLock()
	same := bytes.Equal(raw, w.raw)
	w.mu.RUnlock()
	if same {
		if w.rejected {
			// The file is back to the config in force: the rejection no longer stands.
			w.rejected, w.refused = false, nil
			if w.OnReload != nil {
				w.OnReload(nil)
			}
		}
		return false, nil
	}
	if w.rejected && bytes.Equal(raw, w.refused) {
		return false, nil // refused, and said so, when it was first read
	}
	settle()
	if again, err := ReadFile(w.path); err != nil || !bytes.Equal(raw, again) {
		// Still being written: the next poll reads it whole.
		klog.V(2).InfoS("Config file changed while it was read; reading it on the next poll", "path", w.path)
		return false, nil
	}
	c, err := Parse(raw)
	if err == nil && !reflect.DeepEqual(c.Scrape, w.Current().Scrape) {
		// The source, the scraper and the store are built from scrape.* at start; a reload that changed
		// them would be accepted but not applied, so it is refused instead.
		keys := changedKeys(reflect.ValueOf(w.Current().Scrape), reflect.ValueOf(c.Scrape), "scrape")
		if len(keys) == 0 {
			// Only a field without a key of its own differs (none today): the section is all there is to name.
			keys = []string{"scrape.*"}
		}
		err = fmt.Errorf("%s changed; scrape settings take effect at start only: restart to apply them", strings.Join(keys, ", "))
	}
	if err == nil && w.Check != nil {
		err = w.Check(c)
	}
	if err != nil {
		w.refused = raw
		return false, w.reject(fmt.Errorf("%s: %w", w.path, err))
	}
	w.mu.Lock()
	w.cur, w.raw = c, raw
	w.mu.Unlock()
	w.rejected, w.refused = false, nil
	if w.OnChange != nil {
		w.OnChange(c)
	}
	if w.OnReload != nil {
		w.OnReload(nil)
	}
	return true, nil
}

// reject records a refused reload and reports it to OnReload; the config in force stays.
func (w *Watcher) reject(err error) error {
	err = fmt.Errorf("config reload rejected, keeping the previous config: %w", err)
	w.rejected = true
	if w.OnReload != nil {
		w.OnReload(err)
	}
	return err
}

// Run polls the file every period until ctx ends. Polling (rather than inotify) follows ConfigMap
// updates, which replace a symlink, without special cases.
func (w *Watcher) Run(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			changed, err := w.Reload()
			if err != nil {
				klog.ErrorS(err, "Config reload failed", "path", w.path)
			} else if changed {
				klog.InfoS("Config reloaded", "path", w.path, "pools", len(w.Current().Pools))
			}
		}
	}
}

// changedKeys names the yaml keys under prefix whose values differ between a and b, structs of the same
// type (nested structs with yaml keys of their own, such as scrape.tls, by their fields).
func changedKeys(a, b reflect.Value, prefix string) []string {
	var out []string
	for i := range a.NumField() {
		f := a.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := prefix + "." + name
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[Duration]() {
			out = append(out, changedKeys(a.Field(i), b.Field(i), key)...)
			continue
		}
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			out = append(out, key)
		}
	}
	return out
}
