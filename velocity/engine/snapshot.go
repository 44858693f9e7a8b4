package engine

import (
	"fmt"
	"sort"
	"strings"
)

// Scalar is one counter or gauge value read from a page.
type Scalar struct {
	Value float64
	// Source names the metric (and label match) the value was read from; a change of source between two
	// scrapes of one pod (e.g. an engine upgrade) is treated like a counter reset by rate code.
	Source string
	// Series identifies the set of series summed into Value (their labels, rank and process): when it
	// differs between two pages, the totals count different things and their difference is no work done
	// (a data-parallel engine's series dropping out read as a reset, and its return as one interval's work).
	Series uint64
	OK     bool
}

// Bucket is one cumulative histogram bucket.
type Bucket struct {
	UpperBound float64
	Count      float64
}

// Histogram is a cumulative histogram read from a page, summed over data-parallel engines.
type Histogram struct {
	Sum, Count float64
	HasSum     bool
	Buckets    []Bucket // sorted by UpperBound; empty if engines disagreed on bucket layout
	Source     string
	Series     uint64 // the set of series summed, as Scalar's
	OK         bool
}

// Problem is a field that was present but unusable, or absent though required.
type Problem struct {
	Field Field
	Msg   string
}

func (p Problem) String() string { return p.Field.String() + ": " + p.Msg }

// Snapshot is everything tokenscale reads from one /metrics page.
type Snapshot struct {
	Engine Kind
	// EngineRole is SGLang's engine_type label (unified, prefill, decode) when the page has one; it lets
	// inspect and the pool config cross-check a pod's role.
	EngineRole string
	scalars    [numScalars]Scalar
	hists      [numHists]Histogram
	Problems   []Problem
}

// Counts returns a copy of s without its histograms' buckets and its problems: the counts, sums and
// sources a later page is checked against, at a small fixed size where a page's buckets can take 48 KB.
func (s *Snapshot) Counts() *Snapshot {
	c := *s
	for i := range c.hists {
		c.hists[i].Buckets = nil
	}
	c.Problems = nil
	return &c
}

// Scalar returns a counter or gauge field; ok is false when the page did not have it.
func (s *Snapshot) Scalar(f Field) (Scalar, bool) {
	if f < 0 || f >= numScalars {
		return Scalar{}, false
	}
	v := s.scalars[f]
	return v, v.OK
}

// Hist returns a histogram field; ok is false when the page did not have it.
func (s *Snapshot) Hist(f Field) (Histogram, bool) {
	if f < numScalars || f >= numFields {
		return Histogram{}, false
	}
	h := s.hists[f-numScalars]
	return h, h.OK
}

// Found reports whether a field was read, and under which name.
func (s *Snapshot) Found(f Field) (source string, ok bool) {
	if f < numScalars {
		v := s.scalars[f]
		return v.Source, v.OK
	}
	h := s.hists[f-numScalars]
	return h.Source, h.OK
}

// MissingRequired lists the required fields the page lacked, in catalog order.
func (s *Snapshot) MissingRequired() []Field {
	var out []Field
	for _, f := range Fields() {
		if _, ok := s.Found(f); !ok && Specs[f].Required {
			out = append(out, f)
		}
	}
	return out
}

// Err summarises why a snapshot cannot give token velocity, or nil when it can.
func (s *Snapshot) Err() error {
	missing := s.MissingRequired()
	if len(missing) == 0 {
		return nil
	}
	names := make([]string, len(missing))
	for i, f := range missing {
		names[i] = f.String()
		for _, a := range Specs[f].Aliases[s.Engine] {
			names[i] += " (" + a.String() + ")"
			break
		}
		for _, p := range s.Problems {
			if p.Field == f {
				names[i] += ": " + p.Msg // present but unusable: say why
				break
			}
		}
	}
	return fmt.Errorf("%s page lacks required metrics: %s", s.Engine, strings.Join(names, ", "))
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// NewSnapshot starts an empty snapshot of engine kind k, for producers that know the numbers without a
// page (the simulator): parsing text it wrote itself would cost more than the simulation.
func NewSnapshot(k Kind) *Snapshot { return &Snapshot{Engine: k} }

// primarySource names a field as the kind's first alias does, so rate code sees the same source a
// scraped page of that engine would give.
func (s *Snapshot) primarySource(f Field) string {
	if as := Specs[f].Aliases[s.Engine]; len(as) > 0 {
		return as[0].String()
	}
	return Specs[f].Name
}

// oneSeries is the Series of a field read from one series without labels, as a built snapshot's are.
var oneSeries = seriesSet([]series{{}})

// SetScalar sets a counter or gauge field; it panics on a histogram field, a programming error.
func (s *Snapshot) SetScalar(f Field, v float64) {
	if f < 0 || f >= numScalars {
		panic(fmt.Sprintf("engine: SetScalar on non-scalar field %d", f))
	}
	s.scalars[f] = Scalar{Value: v, Source: s.primarySource(f), Series: oneSeries, OK: true}
}

// SetHist sets a histogram field from cumulative buckets (sorted by bound, the last +Inf); the buckets
// are used as given, not copied.
func (s *Snapshot) SetHist(f Field, sum, count float64, buckets []Bucket) {
	if f < numScalars || f >= numFields {
		panic(fmt.Sprintf("engine: SetHist on non-histogram field %d", f))
	}
	s.hists[f-numScalars] = Histogram{Sum: sum, Count: count, HasSum: true, Buckets: buckets, Source: s.primarySource(f), Series: oneSeries, OK: true}
}
