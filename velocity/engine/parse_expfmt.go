package engine

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parseExpfmt feeds a page through the reference parser, prometheus/common's expfmt. It is the
// oracle the fast scanner is fuzzed against, and the fallback for syntax the scanner leaves to it.
func parseExpfmt(page []byte, sink sampleSink) error {
	fams, err := textToFamilies(bytes.NewReader(page))
	if err != nil {
		return fmt.Errorf("parsing metrics text: %w", err)
	}
	// expfmt merges a typed histogram's lines by label set, so a _count or _sum given twice reaches it as
	// one value, the last: passed on twice here, it is the duplicate series the scanner reports, not a
	// value the page chose by repeating it.
	repeated := repeatedSummaryLines(page, sink)
	var ls []label
	for name, fam := range fams {
		switch fam.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			b, sm, c := sink.wants([]byte(name+"_bucket")), sink.wants([]byte(name+"_sum")), sink.wants([]byte(name+"_count"))
			if !b && !sm && !c {
				continue
			}
			for _, m := range fam.Metric {
				ls = toLabels(ls[:0], m)
				h := m.GetHistogram()
				float := h.SampleCountFloat != nil
				for _, bk := range h.GetBucket() {
					bl := append(ls, label{"le", strconv.FormatFloat(bk.GetUpperBound(), 'g', -1, 64)})
					n := float64(bk.GetCumulativeCount())
					if float {
						n = bk.GetCumulativeCountFloat()
					}
					sink.sample(name+"_bucket", bl, n)
				}
				if h.SampleSum != nil {
					for range timesSeen(repeated, name+"_sum", ls) {
						sink.sample(name+"_sum", ls, h.GetSampleSum())
					}
				}
				// expfmt turns a histogram into a float one at its first fractional value and then shows a
				// count of 0 even when the page has no _count line; a real count of 0 cannot sit beside a
				// fractional (non-zero) bucket, so that 0 is not passed on.
				if h.SampleCount != nil || h.SampleCountFloat != nil && h.GetSampleCountFloat() != 0 {
					n := float64(h.GetSampleCount())
					if float {
						n = h.GetSampleCountFloat()
					}
					for range timesSeen(repeated, name+"_count", ls) {
						sink.sample(name+"_count", ls, n)
					}
				}
			}
		case dto.MetricType_SUMMARY:
			// No summary is read (engines expose none tokenscale needs); the scanner skips them too.
			sink.wants([]byte(name))
		default:
			if !sink.wants([]byte(name)) {
				continue
			}
			for _, m := range fam.Metric {
				ls = toLabels(ls[:0], m)
				var v float64
				switch {
				case m.Counter != nil:
					v = m.Counter.GetValue()
				case m.Gauge != nil:
					v = m.Gauge.GetValue()
				case m.Untyped != nil:
					v = m.Untyped.GetValue()
				}
				sink.sample(name, ls, v)
			}
		}
	}
	return nil
}

// repeatedSummaryLines finds the _count and _sum sample lines of names the sink reads whose name and
// label set appear more than once on the page (the page handed to expfmt, whose quoted names opening a
// label set fallbackPage has put first), keyed as summaryKey keys them; nil when none does. Names and
// label names are read as expfmt reads them (plain, quoted, or plain with a quoted tail). A line it cannot
// read is left out, as expfmt refuses it, and so is every line past maxSeries keys, where the extractor
// spoils the fields anyway.
func repeatedSummaryLines(page []byte, sink sampleSink) map[string]bool {
	seen := map[string]bool{}
	var repeated map[string]bool
	var ls []label
	for len(page) > 0 {
		ln := page
		if i := bytes.IndexByte(page, '\n'); i >= 0 {
			ln, page = page[:i], page[i+1:]
		} else {
			page = nil
		}
		name, j, ok := lineName(ln)
		if !ok || !bytes.HasSuffix(name, []byte("_count")) && !bytes.HasSuffix(name, []byte("_sum")) || !sink.wants(name) {
			continue
		}
		ls = ls[:0]
		if k := skipBlank(ln, j); k < len(ln) && ln[k] == '{' {
			if ls, ok = lineLabelSet(ln, k+1, ls); !ok {
				continue
			}
		} else if k >= len(ln) {
			continue // no value: not a sample line expfmt reads (it reads one with no blank before it, x_count+5)
		}
		key := summaryKey(string(name), ls)
		if len(seen) >= maxSeries && !seen[key] {
			break
		}
		if seen[key] {
			if repeated == nil {
				repeated = map[string]bool{}
			}
			repeated[key] = true
		}
		seen[key] = true
	}
	return repeated
}

// lineName is a sample line's metric name, read from the line's start as expfmt reads it, and where it
// ends.
func lineName(ln []byte) (name []byte, end int, ok bool) {
	return nameToken(ln, skipBlank(ln, 0), true)
}

// nameToken reads a metric name (metric) or a label name at ln[i] by expfmt's rules (v0.72): plain bytes,
// where a '"' opens a quoted part that may hold any byte and the escapes \\, \" and \n, and whose closing
// '"' ends the name (x_"count" is x_count). ok is false where expfmt refuses it.
func nameToken(ln []byte, i int, metric bool) (tok []byte, end int, ok bool) {
	plain := func(c byte, first bool) bool {
		if metric && c == ':' {
			return true
		}
		return isLabelNameByte(c, first)
	}
	if i >= len(ln) || !(ln[i] == '"' || plain(ln[i], true)) {
		return nil, i, false
	}
	quoted := false
	for ; i < len(ln); i++ {
		c := ln[i]
		switch {
		case quoted && c == '\\':
			if i++; i >= len(ln) {
				return nil, i, false
			}
			switch ln[i] {
			case '\\', '"':
				tok = append(tok, ln[i])
			case 'n':
				tok = append(tok, '\n')
			default:
				return nil, i, false
			}
		case c == '"':
			if quoted {
				return tok, i + 1, len(tok) > 0
			}
			quoted = true
		case quoted || plain(c, false):
			tok = append(tok, c)
		default:
			return tok, i, len(tok) > 0
		}
	}
	return tok, i, !quoted && len(tok) > 0
}

// lineLabelSet reads the label set that opens at ln[i] (past its '{') into dst, label names read as
// expfmt reads them, values unescaped; ok is false where it is not one expfmt reads alike.
func lineLabelSet(ln []byte, i int, dst []label) ([]label, bool) {
	for {
		i = skipBlank(ln, i)
		if i >= len(ln) {
			return dst, false
		}
		if ln[i] == '}' {
			return dst, true
		}
		lname, j, ok := nameToken(ln, i, false)
		if !ok {
			return dst, false
		}
		if i = skipBlank(ln, j); i >= len(ln) || ln[i] != '=' {
			return dst, false
		}
		if i = skipBlank(ln, i+1); i >= len(ln) || ln[i] != '"' {
			return dst, false
		}
		n, closed := quotedLen(ln[i:])
		if !closed {
			return dst, false
		}
		v, _ := quotedString(ln[i:])
		dst = append(dst, label{string(lname), string(v)})
		if i = skipBlank(ln, i+n); i < len(ln) && ln[i] == ',' {
			i++
			continue
		}
		if i < len(ln) && ln[i] == '}' {
			return dst, true
		}
		return dst, false
	}
}

// summaryKey keys a sample by its name and label set as expfmt merges a histogram's lines: whatever the
// labels' order, without le (which expfmt leaves out of a histogram's _count and _sum too), each value
// quoted so that no value can pass for two labels; a label with an empty value is no label (the
// exposition format's rule).
func summaryKey(name string, ls []label) string {
	kv := make([]string, 0, len(ls))
	for _, l := range ls {
		if l.value != "" && l.name != "le" {
			kv = append(kv, l.name+"="+strconv.Quote(l.value))
		}
	}
	slices.Sort(kv)
	return name + "\x00" + strings.Join(kv, "\x00")
}

// timesSeen is how many times a merged _count or _sum is passed on: twice where the page repeats it.
func timesSeen(repeated map[string]bool, name string, ls []label) int {
	if len(repeated) > 0 && repeated[summaryKey(name, ls)] {
		return 2
	}
	return 1
}

func toLabels(dst []label, m *dto.Metric) []label {
	for _, lp := range m.GetLabel() {
		dst = append(dst, label{lp.GetName(), lp.GetValue()})
	}
	return dst
}

// textToFamilies is expfmt's parse with a panic turned into the page's error: a page is the pod's to
// choose, and should one still reach a panic in expfmt, it must not be the reader's crash. Only expfmt is
// covered, so a panic in our own code still shows (FuzzExtract).
func textToFamilies(r io.Reader) (fams map[string]*dto.MetricFamily, err error) {
	defer func() {
		if p := recover(); p != nil {
			fams, err = nil, fmt.Errorf("the parser failed on this page: %v", p)
		}
	}()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}
