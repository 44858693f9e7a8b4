package engine

import (
	"fmt"
	"io"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parseExpfmt feeds a page through the reference parser, prometheus/common's expfmt. It is the
// oracle the fast scanner is fuzzed against, and the fallback for syntax the scanner leaves to it.
func parseExpfmt(r io.Reader, sink sampleSink) error {
	fams, err := textToFamilies(r)
	if err != nil {
		return fmt.Errorf("parsing metrics text: %w", err)
	}
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
					sink.sample(name+"_sum", ls, h.GetSampleSum())
				}
				// expfmt turns a histogram into a float one at its first fractional value and then shows a
				// count of 0 even when the page has no _count line; a real count of 0 cannot sit beside a
				// fractional (non-zero) bucket, so that 0 is not passed on.
				if h.SampleCount != nil || h.SampleCountFloat != nil && h.GetSampleCountFloat() != 0 {
					n := float64(h.GetSampleCount())
					if float {
						n = h.GetSampleCountFloat()
					}
					sink.sample(name+"_count", ls, n)
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
