package engine

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrUnknownEngine is returned when auto-detection finds no metric of a known engine on the page.
var ErrUnknownEngine = errors.New("no vLLM, SGLang or TensorRT-LLM metrics found")

// label is one name="value" pair of a sample.
type label struct{ name, value string }

// sampleSink receives the flat samples of a page (histograms as name_bucket/_sum/_count), in page order.
type sampleSink interface {
	// wants reports whether samples of this flat name are of interest; parsers skip the rest cheaply.
	wants(name []byte) bool
	sample(name string, labels []label, value float64)
	// reset forgets every sample, so that a page can be parsed again by another parser.
	reset()
}

// part says which piece of a metric a flat sample name carries.
type part uint8

const (
	partValue part = iota
	partBucket
	partSum
	partCount
)

type target struct {
	field Field
	alias int
	part  part
	kind  Kind
	// plus is 0 for the alias's Name, i+1 for its Plus[i]
	plus int
}

// table maps flat sample names to the fields they feed; one is built per Kind at init.
type table map[string][]target

var tables = func() map[Kind]table {
	ts := map[Kind]table{Auto: {}}
	for _, k := range Kinds {
		ts[k] = table{}
	}
	for _, spec := range Specs {
		for kind, aliases := range spec.Aliases {
			for i, a := range aliases {
				add := func(name string, p part, plus int) {
					t := target{field: spec.Field, alias: i, part: p, kind: kind, plus: plus}
					ts[kind][name] = append(ts[kind][name], t)
					ts[Auto][name] = append(ts[Auto][name], t)
				}
				if spec.Type == TypeHistogram {
					add(a.Name+"_bucket", partBucket, 0)
					add(a.Name+"_sum", partSum, 0)
					add(a.Name+"_count", partCount, 0)
				} else {
					add(a.Name, partValue, 0)
					for j, p := range a.Plus {
						add(p, partValue, j+1)
					}
				}
			}
		}
	}
	return ts
}()

// maxAliases is the most aliases any engine has for each field; accumulators are laid out by it.
var maxAliases = func() (m [numFields]int) {
	for f, spec := range Specs {
		for _, as := range spec.Aliases {
			m[f] = max(m[f], len(as))
		}
	}
	return m
}()

// series is one group of samples of an alias that share their labels, replica labels and le aside.
type series struct {
	key      string
	replica  string          // canonical replica-label values but pid; the lowest rank is kept
	pid      string          // prometheus_client's multiprocess pid, if any
	pids     map[string]bool // a gauge's pids read, once a second one is seen
	value    float64
	sum      float64
	count    float64
	hasValue bool
	hasSum   bool
	hasCnt   bool
	// breakdown marks a series with a value for a breakdownLabel: part of a total beside it
	breakdown bool
	buckets   []Bucket // in page order; sorted (and repeated bounds resolved) when folded
}

type aliasAcc struct {
	seen bool
	// nameSeen: some series of the alias's Name was on the page, matching or not (for AbsentIsZero)
	nameSeen bool
	series   []series
	// index finds a series by key once there are many: a linear search per sample made a page of many
	// series quadratic.
	index map[string]int
	bad   string // first invalid value seen
}

// Bounds on what one page may make the extractor hold, whatever it says.
const (
	// maxBuckets is the most buckets a histogram series may have (engines use a few dozen).
	maxBuckets = 1024
	// maxRoleLen bounds SGLang's engine_type value as kept in a Snapshot.
	maxRoleLen = 64
	// maxSeries bounds the series of the metrics read that one page may make the extractor hold, all
	// fields together (a line read by several fields holds a series in each), so that every field with a
	// series past it is unknown: each costs about 200 bytes for a line of about 35, and 4 MiB of distinct
	// label sets allocated 19 times the page (21 where one line feeds two fields). Engines serve a few
	// dozen; a data-parallel engine of 64 ranks a few hundred.
	maxSeries = 4096
)

type extractor struct {
	tab     table
	acc     [numFields][]aliasAcc
	prefix  [3]bool // an engine's prefix was seen on some sample (Kinds order)
	role    string
	scratch []label
	// lastName and lastTargets cache the table lookup for a run of samples of one name.
	lastName    string
	lastTargets []target
	keyBuf      []byte
	replBuf     []byte
	plusBuf     []byte
	forced      Kind
	nSeries     int // series held, all fields together (maxSeries)
}

func newExtractor(kind Kind) *extractor {
	return &extractor{tab: tables[kind], forced: kind}
}

func (e *extractor) reset() { *e = extractor{tab: e.tab, forced: e.forced} }

func (e *extractor) wants(name []byte) bool {
	for i, k := range Kinds {
		if !e.prefix[i] && bytes.HasPrefix(name, []byte(prefixes[k])) {
			e.prefix[i] = true
		}
	}
	_, ok := e.tab[string(name)]
	return ok
}

func (e *extractor) sample(name string, labels []label, v float64) {
	// Samples of one name come in runs (a histogram's buckets); the scanner interns names, so the
	// comparison is mostly a pointer check.
	if name != e.lastName || e.lastTargets == nil {
		e.lastName, e.lastTargets = name, e.tab[name]
	}
	for _, t := range e.lastTargets {
		e.add(t, labels, v)
	}
}

func (e *extractor) add(t target, labels []label, v float64) {
	spec := &Specs[t.field]
	alias := &spec.Aliases[t.kind][t.alias]
	if e.acc[t.field] == nil {
		e.acc[t.field] = make([]aliasAcc, maxAliases[t.field]*len(Kinds))
	}
	acc := &e.acc[t.field][int(t.alias)*len(Kinds)+kindIndex(t.kind)]
	name := alias.Name
	if t.plus > 0 {
		name = alias.Plus[t.plus-1]
	} else {
		acc.nameSeen = true
	}
	for k, want := range alias.Match {
		if !matchValue(labelValue(labels, k), want) {
			return
		}
	}
	if t.plus == 0 {
		// A Plus metric adds to its alias only where the alias's own metric is on the page.
		acc.seen = true
	}
	if t.kind == SGLang {
		// engine_type is SGLang's P/D role; it is read from the series tokenscale uses.
		if r := labelValue(labels, "engine_type"); r != "" {
			// The role is shown as it is (inspect) and kept with the pod's velocity: a long one, or one with
			// bytes that are not printable text (a terminal escape), is not passed on.
			if len(r) > maxRoleLen || !utf8.ValidString(r) || strings.ContainsFunc(r, func(c rune) bool { return !unicode.IsPrint(c) }) {
				r = "invalid"
			}
			if e.role == "" {
				e.role = r
			} else if e.role != r {
				e.role = "mixed"
			}
		}
	}

	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		// No engine metric we read may be negative or non-finite; one bad sample spoils the field.
		if acc.bad == "" {
			acc.bad = fmt.Sprintf("%s has invalid value %v", name, v)
		}
		return
	}

	key, replica, pid := e.groupKey(labels)
	if t.plus > 0 {
		// A Plus metric's series are its own, not duplicates of Name's with the same labels.
		key = append(append(append(e.plusBuf[:0], name...), 0), key...)
		e.plusBuf = key
	}
	s := acc.find(key)
	switch {
	case s == nil:
		if e.nSeries >= maxSeries {
			if acc.bad == "" {
				acc.bad = fmt.Sprintf("%s: the page has more than %d series of the metrics tokenscale reads", name, maxSeries)
			}
			return
		}
		e.nSeries++
		acc.series = append(acc.series, series{key: string(key), replica: string(replica), pid: pid, breakdown: isBreakdown(labels)})
		s = &acc.series[len(acc.series)-1]
		if acc.index != nil {
			acc.index[s.key] = len(acc.series) - 1
		}
	case s.replica != string(replica):
		// Another rank repeating the same work: the lowest rank is read.
		if c := compareReplica(string(replica), s.replica); c > 0 {
			return
		}
		*s = series{key: s.key, replica: string(replica), pid: pid, breakdown: s.breakdown}
	case s.pid == pid:
	case spec.Type == TypeGauge:
		// Another process's copy of a gauge: the largest is the live one (see replicaLabels).
		if s.pids == nil {
			s.pids = map[string]bool{s.pid: true}
		}
		if s.pids[pid] {
			if acc.bad == "" {
				acc.bad = fmt.Sprintf("%s has a duplicate series {%s}", name, clipKey(s.key))
			}
			return
		}
		s.pids[pid] = true
		s.value = max(s.value, v)
		return
	default:
		// A counter or histogram per process: the lowest pid, so it stays one series from scrape to scrape.
		if compareReplica("pid="+pid, "pid="+s.pid) > 0 {
			return
		}
		*s = series{key: s.key, replica: s.replica, pid: pid, breakdown: s.breakdown}
	}
	switch t.part {
	case partValue:
		if s.hasValue {
			// Two samples of one series: which is right cannot be known, so the field is unusable.
			if acc.bad == "" {
				acc.bad = fmt.Sprintf("%s has a duplicate series {%s}", name, clipKey(s.key))
			}
			return
		}
		s.value, s.hasValue = v, true
	case partSum, partCount:
		// A repeated _sum or _count is a duplicate series as a repeated sample is: the last one used to win.
		if t.part == partSum && s.hasSum || t.part == partCount && s.hasCnt {
			if acc.bad == "" {
				acc.bad = fmt.Sprintf("%s has a duplicate series {%s}", name, clipKey(s.key))
			}
			return
		}
		if t.part == partSum {
			s.sum, s.hasSum = v, true
		} else {
			s.count, s.hasCnt = v, true
		}
	case partBucket:
		le, err := strconv.ParseFloat(labelValue(labels, "le"), 64)
		if err != nil || math.IsNaN(le) {
			if acc.bad == "" {
				acc.bad = fmt.Sprintf("%s_bucket has bad le label %q", name, clipS(labelValue(labels, "le")))
			}
			return
		}
		if len(s.buckets) >= maxBuckets {
			if acc.bad == "" {
				acc.bad = fmt.Sprintf("%s has more than %d buckets", name, maxBuckets)
			}
			return
		}
		// A repeated bound is resolved when folding (the last one wins, as in expfmt).
		s.buckets = append(s.buckets, Bucket{UpperBound: le, Count: v})
	}
}

// find returns the series with key, or nil; past a few series it keeps an index.
func (acc *aliasAcc) find(key []byte) *series {
	if acc.index != nil {
		if i, ok := acc.index[string(key)]; ok {
			return &acc.series[i]
		}
		return nil
	}
	for i := range acc.series {
		if acc.series[i].key == string(key) {
			return &acc.series[i]
		}
	}
	if len(acc.series) >= 8 {
		acc.index = make(map[string]int, 2*len(acc.series))
		for i := range acc.series {
			acc.index[acc.series[i].key] = i
		}
	}
	return nil
}

// clipKey renders a series key (name=value\x00...) shortly for a message, each value quoted (and a name
// that is not a plain label name too): a value is the page's to choose, and its raw bytes (a terminal
// escape, a newline) would reach inspect's output and the store's errors as they are.
func clipKey(k string) string {
	var b strings.Builder
	for pair := range strings.SplitSeq(strings.TrimSuffix(k, "\x00"), "\x00") {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		name, value, _ := strings.Cut(pair, "=")
		if plainLabelName(name) {
			b.WriteString(name)
		} else {
			b.WriteString(strconv.Quote(name))
		}
		b.WriteByte('=')
		b.WriteString(strconv.Quote(value))
		if b.Len() > maxClip {
			break
		}
	}
	if out := b.String(); len(out) > maxClip {
		return string(clip([]byte(out))) + "…"
	}
	return b.String()
}

// plainLabelName reports whether s is a label name of the classic syntax, safe to show unquoted.
func plainLabelName(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isLabelNameByte(s[i], i == 0) {
			return false
		}
	}
	return s != ""
}

// groupKey renders the labels that distinguish summed series, and separately the replica labels but pid,
// into the extractor's buffers; they stay valid until the next call. pid is returned on its own.
func (e *extractor) groupKey(labels []label) (key, replica []byte, pid string) {
	// slices.SortFunc does not allocate, and stays n log n on a hostile line with many labels.
	ls := append(e.scratch[:0], labels...)
	slices.SortFunc(ls, func(a, b label) int { return strings.Compare(a.name, b.name) })
	e.scratch = ls
	key, replica = e.keyBuf[:0], e.replBuf[:0]
	for _, l := range ls {
		switch {
		case l.value == "":
			// A label with an empty value is no label (the exposition format's rule): {a=""} and {} are one
			// series, so repeating it is a duplicate, not a second series summed.
		case l.name == "le":
		case l.name == "pid":
			pid = l.value
		case replicaLabels[l.name]:
			replica = append(append(append(append(replica, l.name...), '='), l.value...), 0)
		default:
			key = append(append(append(append(key, l.name...), '='), l.value...), 0)
		}
	}
	e.keyBuf, e.replBuf = key, replica
	return key, replica, pid
}

// compareReplica orders replica-label sets so that rank 0 wins; numeric values compare as numbers.
func compareReplica(a, b string) int {
	if a == b {
		return 0
	}
	as, bs := strings.Split(a, "\x00"), strings.Split(b, "\x00")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] == bs[i] {
			continue
		}
		an, aerr := strconv.Atoi(after(as[i]))
		bn, berr := strconv.Atoi(after(bs[i]))
		if aerr == nil && berr == nil && before(as[i]) == before(bs[i]) {
			if an < bn {
				return -1
			}
			return 1
		}
		return strings.Compare(as[i], bs[i])
	}
	return len(as) - len(bs)
}

func after(s string) string  { _, v, _ := strings.Cut(s, "="); return v }
func before(s string) string { k, _, _ := strings.Cut(s, "="); return k }

// matchValue reports whether v is one of the '|'-separated alternatives in want.
func matchValue(v, want string) bool {
	for want != "" {
		alt, rest, _ := strings.Cut(want, "|")
		if v == alt {
			return true
		}
		want = rest
	}
	return false
}

// isBreakdown reports whether a series carries a value for a breakdown label.
func isBreakdown(labels []label) bool {
	for _, b := range breakdownLabels {
		if labelValue(labels, b) != "" {
			return true
		}
	}
	return false
}

// totals drops the breakdown series of a field when a total is among them (see breakdownLabels).
func totals(ss []series) []series {
	hasTotal, hasSplit := false, false
	for i := range ss {
		if ss[i].breakdown {
			hasSplit = true
		} else {
			hasTotal = true
		}
	}
	if !hasTotal || !hasSplit {
		return ss
	}
	out := make([]series, 0, len(ss))
	for _, s := range ss {
		if !s.breakdown {
			out = append(out, s)
		}
	}
	return out
}

func labelValue(labels []label, name string) string {
	for _, l := range labels {
		if l.name == name {
			return l.value
		}
	}
	return ""
}

func kindIndex(k Kind) int {
	for i, kk := range Kinds {
		if kk == k {
			return i
		}
	}
	return 0
}

// finish picks the engine, then for each field the first alias present, and folds its series.
func (e *extractor) finish() (*Snapshot, error) {
	kind := e.forced
	if kind == Auto {
		kind = e.detect()
		if kind == Auto {
			return nil, ErrUnknownEngine
		}
	}
	snap := &Snapshot{Engine: kind}
	if kind == SGLang {
		snap.EngineRole = e.role
	}
	ki := kindIndex(kind)
	for f := Field(0); f < numFields; f++ {
		spec := &Specs[f]
		aliases := spec.Aliases[kind]
		for ai, alias := range aliases {
			if e.acc[f] == nil {
				break
			}
			acc := &e.acc[f][ai*len(Kinds)+ki]
			if !acc.seen {
				if acc.nameSeen && alias.AbsentIsZero && acc.bad == "" {
					snap.scalars[f] = Scalar{Value: 0, Source: alias.String(), OK: true}
					break
				}
				continue
			}
			if acc.bad != "" {
				snap.Problems = append(snap.Problems, Problem{Field: f, Msg: acc.bad})
				break
			}
			if len(acc.series) == 0 {
				continue
			}
			scale := alias.Scale
			if scale == 0 {
				scale = 1
			}
			ss := totals(acc.series)
			if spec.Type == TypeHistogram {
				h, err := foldHist(ss)
				if err != nil {
					snap.Problems = append(snap.Problems, Problem{Field: f, Msg: alias.Name + ": " + err.Error()})
					break
				}
				h.Source, h.Series = alias.String(), seriesSet(ss)
				snap.hists[f-numScalars] = h
				break
			}
			total := 0.0
			for _, s := range ss {
				total += s.value
			}
			total *= scale
			if math.IsInf(total, 0) || math.IsNaN(total) {
				// Each sample was finite, their sum or its scale is not: no engine counts that far.
				snap.Problems = append(snap.Problems, Problem{Field: f, Msg: fmt.Sprintf("%s sums to %v over %d series", alias.Name, total, len(ss))})
				break
			}
			if f == KVCacheUsage {
				// Utilisation is a mean across data-parallel engines, not a sum. Each engine's is checked, since
				// one engine at 1.6 beside another at 0.2 averages to a plausible 0.9.
				if u := maxSeriesValue(ss) * scale; u > 1.0001 {
					snap.Problems = append(snap.Problems, Problem{Field: f, Msg: fmt.Sprintf("%s is %v on one of its %d series, outside 0..1", alias.Name, u, len(ss))})
					break
				}
				total /= float64(len(ss))
			}
			snap.scalars[f] = Scalar{Value: total, Source: alias.String(), Series: seriesSet(ss), OK: true}
			break
		}
	}
	if e.forced != Auto && !e.prefix[kindIndex(kind)] {
		return nil, fmt.Errorf("forced engine %s: %w", kind, ErrUnknownEngine)
	}
	return snap, nil
}

// maxSeriesValue is the largest value of the series.
func maxSeriesValue(ss []series) float64 {
	m := math.Inf(-1)
	for _, s := range ss {
		m = max(m, s.value)
	}
	return m
}

// seriesSet fingerprints the series a field sums, whatever their order on the page: each one's key, rank
// and process hashed and mixed, then added.
func seriesSet(ss []series) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211 // FNV-1a, inline: no hasher allocated per field
	var set uint64
	for i := range ss {
		x := uint64(offset)
		for _, part := range [...]string{ss[i].key, ss[i].replica, ss[i].pid} {
			for j := 0; j < len(part); j++ {
				x = (x ^ uint64(part[j])) * prime
			}
			x = (x ^ 0xff) * prime // no byte of valid UTF-8, so the parts cannot run together
		}
		// splitmix64's finaliser: plain FNV values added could cancel between two sets.
		x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
		x = (x ^ x>>27) * 0x94d049bb133111eb
		set += x ^ x>>31
	}
	return set
}

// detect picks the engine with the most catalog fields on the page, or failing that the first whose
// metric prefix appears; both are independent of the parser and of sample order.
func (e *extractor) detect() Kind {
	best, kind := 0, Auto
	for ki, k := range Kinds {
		n := 0
		for f := range e.acc {
			if e.acc[f] == nil {
				continue
			}
			for ai := range Specs[f].Aliases[k] {
				if e.acc[f][ai*len(Kinds)+ki].seen {
					n++
					break
				}
			}
		}
		if n > best {
			best, kind = n, k
		}
	}
	if kind != Auto {
		return kind
	}
	for ki, k := range Kinds {
		if e.prefix[ki] {
			return k
		}
	}
	return Auto
}

// infBucketTolerance is the relative difference allowed between a histogram's +Inf bucket and its
// _count: both are the same integer on any engine's page, but an exporter may print them as rounded floats.
const infBucketTolerance = 1e-9

// foldHist sums histograms of data-parallel engines; buckets are kept only when their layouts agree.
func foldHist(ss []series) (Histogram, error) {
	h := Histogram{HasSum: true}
	for i, s := range ss {
		if !s.hasCnt {
			return Histogram{}, errors.New("histogram without _count")
		}
		// A missing _sum (seen in elided doc captures) only loses the mean; quantiles still work.
		h.HasSum = h.HasSum && s.hasSum
		h.Sum += s.sum
		h.Count += s.count
		s.buckets = sortBuckets(s.buckets)
		n := len(s.buckets)
		inf := n > 0 && math.IsInf(s.buckets[n-1].UpperBound, 1)
		// A +Inf bucket may differ from _count by rounding either way (infBucketTolerance, checked below);
		// a last finite bound has no such excuse.
		tol := 1e-12
		if inf {
			tol = infBucketTolerance
		}
		if n > 0 && s.buckets[n-1].Count > s.count*(1+tol) {
			// Cumulative counts cannot pass the total: such a page is inconsistent, whichever line is wrong.
			return Histogram{}, errors.New("bucket counts exceed _count")
		}
		if inf && math.Abs(s.buckets[n-1].Count-s.count) > infBucketTolerance*s.count {
			// The +Inf bucket counts every observation, as _count does: a page where they differ gives a
			// window whose buckets pass its count (misses hidden) or miss it (misses made up).
			return Histogram{}, fmt.Errorf("bucket le=+Inf counts %g but _count is %g", s.buckets[n-1].Count, s.count)
		}
		// Each engine's buckets are checked before they are summed: two engines' non-cumulative buckets
		// can sum to cumulative ones, and the window between two such pages can then read as no misses.
		for j := 1; j < n; j++ {
			if s.buckets[j].Count < s.buckets[j-1].Count {
				return Histogram{}, errors.New("bucket counts are not cumulative")
			}
		}
		if i == 0 {
			h.Buckets = append([]Bucket(nil), s.buckets...)
			continue
		}
		if h.Buckets == nil {
			continue
		}
		if len(s.buckets) != len(h.Buckets) {
			h.Buckets = nil
			continue
		}
		for j := range s.buckets {
			if s.buckets[j].UpperBound != h.Buckets[j].UpperBound {
				h.Buckets = nil
				break
			}
			h.Buckets[j].Count += s.buckets[j].Count
		}
	}
	if math.IsInf(h.Sum, 0) || math.IsInf(h.Count, 0) {
		return Histogram{}, errors.New("_sum or _count overflows when summed")
	}
	for j := range h.Buckets {
		b := h.Buckets[j]
		if b.UpperBound < 0 || math.IsInf(b.Count, 0) {
			// Every histogram read is of durations: a bound below 0 (le="-Inf") has no meaning and
			// would make a share of observations above a bound NaN.
			return Histogram{}, fmt.Errorf("bucket le=%g with count %g: want a bound >= 0 and a finite count", b.UpperBound, b.Count)
		}
	}
	h.OK = true
	return h, nil
}

// sortBuckets orders buckets by bound; of repeated bounds the last on the page wins, as in expfmt.
func sortBuckets(bs []Bucket) []Bucket {
	slices.SortStableFunc(bs, func(a, b Bucket) int { return cmp.Compare(a.UpperBound, b.UpperBound) })
	out := bs[:0]
	for i, b := range bs {
		if i+1 < len(bs) && bs[i+1].UpperBound == b.UpperBound {
			continue
		}
		out = append(out, b)
	}
	return out
}

// Extract reads one /metrics page and returns what tokenscale needs from it. kind may be Auto.
// A page that is not valid text exposition is an error; a valid page missing some metrics is not
// (see Snapshot.Err and Snapshot.Problems).
func Extract(r io.Reader, kind Kind) (*Snapshot, error) {
	e := newExtractor(kind)
	if err := parseText(r, e); err != nil {
		return nil, err
	}
	return e.finish()
}

// ExtractBytes is Extract for a page already in memory (the collector's pooled buffers).
func ExtractBytes(page []byte, kind Kind) (*Snapshot, error) {
	return ExtractBytesBefore(page, kind, time.Time{})
}

// ExtractBytesBefore is ExtractBytes that abandons the page with ErrParseTimeout at deadline (zero:
// none): parsing counts against the pod's scrape budget.
func ExtractBytesBefore(page []byte, kind Kind, deadline time.Time) (*Snapshot, error) {
	e := newExtractor(kind)
	if err := parseBytesBefore(page, e, deadline); err != nil {
		return nil, err
	}
	return e.finish()
}

// Builder makes a Snapshot from samples that did not come from a page (e.g. a PromQL query result).
type Builder struct{ e *extractor }

// NewBuilder returns a Builder for kind (Auto detects, as Extract does).
func NewBuilder(kind Kind) *Builder { return &Builder{e: newExtractor(kind)} }

// Add feeds one flat sample (histograms as name_bucket{le}, name_sum, name_count).
func (b *Builder) Add(name string, labels map[string]string, v float64) {
	if !b.e.wants([]byte(name)) {
		return
	}
	ls := make([]label, 0, len(labels))
	for k, val := range labels {
		ls = append(ls, label{k, val})
	}
	b.e.sample(name, ls, v)
}

// Snapshot finishes the Snapshot.
func (b *Builder) Snapshot() (*Snapshot, error) { return b.e.finish() }

// SampleNames lists every flat sample name the catalog reads, for building queries.
func SampleNames() []string {
	out := make([]string, 0, len(tables[Auto]))
	for n := range tables[Auto] {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
