package engine

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"unicode/utf8"
)

func seedPages(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.txt")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"vllm:prompt_tokens_total{engine=\"0\"} 1\nvllm:prompt_tokens_total{engine=\"1\"} 2\n",
		"# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_bucket{le=\"1\"} 1.5\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\nvllm:time_to_first_token_seconds_count 2\n",
		"# TYPE vllm:time_to_first_token_seconds summary\nvllm:time_to_first_token_seconds_count 1.5\nvllm:prompt_tokens_total 3 1700000000000\n",
		"sglang:num_running_reqs{tp_rank=\"1\",a=\"x\\\\y\\\"z\\n\"} 3\nsglang:num_running_reqs{tp_rank=\"0\",a=\"x\\\\y\\\"z\\n\",} 4\n",
		"{\"vllm:prompt_tokens_total\",engine=\"0\"} 5\n",
		"# TYPE vllm:time_to_first_token_seconds histogram\nvllm:prompt_tokens_total 7\n{\"vllm:time_to_first_token_seconds_bucket\",le=\"+Inf\"} 4\nvllm:time_to_first_token_seconds_count 4\n",
		"# TYPE h histogram\nh_bucket{le=\"1\"} 1\n{\"vllm:prompt_tokens_total\"} 3\nvllm:num_requests_\"running\" 3\n# HELP \"x.y\" z\n",
		// A typed histogram's _count given twice: expfmt merged it into the last value, the scanner reports it;
		// le on such lines is no label to either, and a value holding a NUL and '=' is no second label.
		"# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_count{le=\"1\"} 5\nvllm:time_to_first_token_seconds_count{le=\"1\"} 9\n",
		"# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_count{le=\"1\"} 5\nvllm:time_to_first_token_seconds_count 9\n",
		"# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_count{a=\"1\\x00pid=2\"} 5\nvllm:time_to_first_token_seconds_count{a=\"1\",pid=\"2\"} 9\n",
		"# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_count 5\nvllm:time_to_first_token_seconds_count 9\n",
		"# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 9\nvllm:time_to_first_token_seconds_sum{a=\"1\",b=\"2\"} 5\nvllm:time_to_first_token_seconds_sum{b=\"2\",a=\"1\"} 9\nvllm:time_to_first_token_seconds_count{a=\"1\",b=\"2\"} 9\n",
		// A label name running on into a quoted part, which expfmt reads as one name (tp_rank).
		"sglang:num_running_reqs{tp_\"rank\"=\"1\"} 3\n",
		"# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_count 5\nvllm:time_to_first_token_seconds_\"count\" 9\n",
		// The same repeats written with quoted names and label names, which only the fallback's path reads.
		"# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_count{a=\"1\"} 5\n\"vllm:time_to_first_token_seconds_count\"{\"a\"=\"1\"} 9\n",
		"# TYPE vllm:time_to_first_token_seconds histogram\n{\"vllm:time_to_first_token_seconds_sum\", \"a\" = \"x\\\\\"} 5\nvllm:time_to_first_token_seconds_sum{a=\"x\\\\\",} 9\n",
	} {
		f.Add([]byte(s))
	}
}

// FuzzScanMatchesExpfmt is the differential test of the fast scanner: on every page expfmt accepts, the
// scanner must accept it too and produce the same Snapshot.
func FuzzScanMatchesExpfmt(f *testing.F) {
	seedPages(f)
	f.Fuzz(func(t *testing.T, page []byte) {
		// The oracle reads a quoted name that opens a label set as the name-first form, as the fallback
		// hands it on: expfmt reads such a line's labels in the previous line's family (fallbackPage).
		ref := newExtractor(Auto)
		if err := parseExpfmt(nameFirst(page), ref); err != nil {
			return
		}
		want, wantErr := ref.finish()
		fast := newExtractor(Auto)
		if err := parseBytes(page, fast); errors.Is(err, ErrTooManyLabels) || errors.Is(err, errNoName) || errors.Is(err, ErrTooManyFamilies) || errors.Is(err, ErrLineTooLong) || errors.Is(err, ErrFallbackTooLarge) {
			return // refused by design, before expfmt (TestFallbackLineOfManyLabelsIsRefused, TestFallbackLineNames, TestFallbackFamiliesAreBounded, TestLongReadLineIsRefused, TestFallbackSamplesAreBounded)
		} else if err != nil {
			t.Fatalf("expfmt accepts the page but the scanner says: %v", err)
		}
		got, gotErr := fast.finish()
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("finish errors differ: expfmt %v, scanner %v", wantErr, gotErr)
		}
		if wantErr != nil {
			return
		}
		if d := diffSnapshots(want, got); d != "" {
			t.Fatalf("snapshots differ: %s", d)
		}
	})
}

// nameFirst rewrites every line whose quoted name opens its label set into the name-first form, by a
// regular expression rather than fallbackPage's own scan, so that a fault in one shows against the other.
func nameFirst(page []byte) []byte {
	var out []byte
	for _, ln := range bytes.SplitAfter(page, []byte("\n")) {
		if m := nameInSet.FindSubmatch(ln); m != nil {
			open := "{"
			if m[2][0] == '}' {
				open = "{}"
			}
			ln = slices.Concat(m[1], []byte(open), m[3])
		}
		out = append(out, ln...)
	}
	return out
}

var nameInSet = regexp.MustCompile(`^[ \t]*\{[ \t]*("(?:[^"\\\n]|\\.)*")[ \t]*([,}])((?s).*)$`)

// FuzzExtract checks the invariants on any input: no panic, and every value read is finite and >= 0.
func FuzzExtract(f *testing.F) {
	seedPages(f)
	// Finite samples whose sum overflows, and a bound below 0: both once passed as values.
	f.Add([]byte("vllm:prompt_tokens_total{engine=\"0\"} 1e308\nvllm:prompt_tokens_total{engine=\"1\"} 1e308\n"))
	f.Add([]byte("vllm:time_to_first_token_seconds_bucket{le=\"-Inf\"} 1\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\nvllm:time_to_first_token_seconds_count 2\n"))
	f.Fuzz(func(t *testing.T, page []byte) {
		for _, kind := range []Kind{Auto, VLLM, SGLang, TRTLLM} {
			s, err := Extract(bytes.NewReader(page), kind)
			if err != nil {
				// The adapter's 503 and `tokenscale inspect` carry it: bounded and printable, whatever the page.
				checkPrintable(t, "error", err.Error())
				continue
			}
			for _, p := range s.Problems {
				checkPrintable(t, "problem", p.Msg)
			}
			for _, fl := range Fields() {
				if v, ok := s.Scalar(fl); ok && (math.IsNaN(v.Value) || math.IsInf(v.Value, 0) || v.Value < 0) {
					t.Fatalf("%v = %v", fl, v.Value)
				}
				if h, ok := s.Hist(fl); ok {
					// Written so that NaN fails too: a NaN count passed "h.Count < 0".
					if !(h.Sum >= 0 && h.Sum <= math.MaxFloat64) || !(h.Count >= 0 && h.Count <= math.MaxFloat64) {
						t.Fatalf("%v = %+v", fl, h)
					}
					for i, b := range h.Buckets {
						if i > 0 && b.Count < h.Buckets[i-1].Count {
							t.Fatalf("%v buckets not cumulative: %+v", fl, h.Buckets)
						}
						// Durations only: a bound below 0 or a count that is not finite has no reading.
						if math.IsNaN(b.UpperBound) || b.UpperBound < 0 || math.IsNaN(b.Count) || math.IsInf(b.Count, 0) || b.Count < 0 {
							t.Fatalf("%v bucket %+v", fl, b)
						}
					}
				}
			}
		}
	})
}

func close(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}

func diffSnapshots(a, b *Snapshot) string {
	if a.Engine != b.Engine || a.EngineRole != b.EngineRole {
		return "engine " + string(a.Engine) + "/" + a.EngineRole + " vs " + string(b.Engine) + "/" + b.EngineRole
	}
	if len(a.Problems) != len(b.Problems) {
		return "problems differ"
	}
	for i := range a.scalars {
		x, y := a.scalars[i], b.scalars[i]
		if x.OK != y.OK || x.Source != y.Source || !close(x.Value, y.Value) {
			return Field(i).String() + " differs"
		}
	}
	for i := range a.hists {
		x, y := a.hists[i], b.hists[i]
		if x.OK != y.OK || x.Source != y.Source || x.HasSum != y.HasSum || !close(x.Sum, y.Sum) || !close(x.Count, y.Count) || len(x.Buckets) != len(y.Buckets) {
			return Field(int(numScalars)+i).String() + " differs"
		}
		for j := range x.Buckets {
			if x.Buckets[j].UpperBound != y.Buckets[j].UpperBound || !close(x.Buckets[j].Count, y.Buckets[j].Count) {
				return Field(int(numScalars)+i).String() + " buckets differ"
			}
		}
	}
	return ""
}

// checkPrintable fails on a message of a page's parse that is longer than an error is cut to, not valid
// UTF-8, or holds a control character other than a newline.
func checkPrintable(t *testing.T, what, m string) {
	t.Helper()
	if len(m) > maxErrorText+len(truncated) {
		t.Fatalf("%s of %d bytes: %.200q", what, len(m), m)
	}
	if !utf8.ValidString(m) {
		t.Fatalf("%s not valid UTF-8: %q", what, m)
	}
	for _, r := range m {
		if r < 0x20 && r != '\n' || r >= 0x7f && r <= 0x9f {
			t.Fatalf("%s holds %U: %q", what, r, m)
		}
	}
}
