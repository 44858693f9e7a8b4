package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// A counter or gauge series repeated on a page is an error for its field, with the reason, not "the last
// one wins". (A histogram's repeated bucket bound keeps expfmt's rule, the last wins, which the
// differential fuzz test holds the scanner to.)
func TestDuplicateSeriesIsAnError(t *testing.T) {
	for _, page := range []string{
		"vllm:prompt_tokens_total{model_name=\"m\"} 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\nvllm:prompt_tokens_total{model_name=\"m\"} 5\n",
		"vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\nvllm:num_requests_running 1\nvllm:num_requests_running 2\n",
		// A label with an empty value is no label: {model_name=""} and {} are one series, not two summed.
		"vllm:prompt_tokens_total{model_name=\"\"} 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\nvllm:prompt_tokens_total 5\n",
		// A histogram's _count or _sum repeated: the last one used to win.
		"vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 5\nvllm:time_to_first_token_seconds_count 5\nvllm:time_to_first_token_seconds_count 9\nvllm:time_to_first_token_seconds_sum 1\n",
		"vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 5\nvllm:time_to_first_token_seconds_count 5\nvllm:time_to_first_token_seconds_sum 1\nvllm:time_to_first_token_seconds_sum{model_name=\"\"} 2\n",
	} {
		s, err := ExtractBytes([]byte(page), VLLM)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range s.Problems {
			found = found || strings.Contains(p.Msg, "duplicate")
		}
		if !found {
			t.Errorf("page %q: problems %v, want a duplicate series", page, s.Problems)
		}
	}
	s, _ := ExtractBytes([]byte("vllm:prompt_tokens_total 1\nvllm:prompt_tokens_total 2\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n"), VLLM)
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("required field duplicated: Err() = %v, want the reason", err)
	}
}

// hugeSeriesPage has n distinct series of a histogram the catalog reads, plus n buckets of one series.
func hugeSeriesPage(n int) []byte {
	var b bytes.Buffer
	b.WriteString("vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "vllm:num_requests_running{model_name=\"m%d\"} 1\n", i)
	}
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "vllm:time_to_first_token_seconds_bucket{le=\"%d\"} %d\n", i, i)
	}
	fmt.Fprintf(&b, "vllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} %d\nvllm:time_to_first_token_seconds_count %d\n", n, n)
	return b.Bytes()
}

// A page whose parsing would outlast the scrape's budget is abandoned with an error saying so.
// A counter's Series tells the set of series summed, whatever their order on the page: a data-parallel
// engine's line missing changes it, so rate code does not read the drop as a restart.
func TestSeriesSetFollowsTheSeriesSummed(t *testing.T) {
	base := "vllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n"
	series := func(lines ...string) uint64 {
		t.Helper()
		s, err := ExtractBytes([]byte(base+strings.Join(lines, "\n")+"\n"), VLLM)
		if err != nil {
			t.Fatal(err)
		}
		x, ok := s.Scalar(PromptTokens)
		if !ok {
			t.Fatalf("lines %q: no prompt tokens (%v)", lines, s.Problems)
		}
		return x.Series
	}
	e0, e1, e2 := `vllm:prompt_tokens_total{engine="0"} 5`, `vllm:prompt_tokens_total{engine="1"} 7`, `vllm:prompt_tokens_total{engine="2"} 9`
	both := series(e0, e1)
	if got := series(e1, e0); got != both {
		t.Errorf("the same series in another order: %x, want %x", got, both)
	}
	if got := series(`vllm:prompt_tokens_total{engine="0"} 500`, `vllm:prompt_tokens_total{engine="1"} 700`); got != both {
		t.Errorf("the same series with other values: %x, want %x", got, both)
	}
	for _, other := range [][]string{{e0}, {e1}, {e0, e1, e2}, {e0, e2}, {`vllm:prompt_tokens_total{engine="0",tp_rank="1"} 5`, e1}} {
		if got := series(other...); got == both {
			t.Errorf("series %q: the set of engines 0 and 1 (%x)", other, got)
		}
	}
}

func TestParseDeadline(t *testing.T) {
	page := hugeSeriesPage(5000)
	_, err := ExtractBytesBefore(page, VLLM, time.Now().Add(-time.Millisecond))
	if !errors.Is(err, ErrParseTimeout) {
		t.Fatalf("err = %v, want ErrParseTimeout", err)
	}
	if _, err := ExtractBytesBefore(page, VLLM, time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("with time to spare: %v", err)
	}
}

// A page that only expfmt parses (a quoted metric name) is handed to it without the lines tokenscale does
// not read, so a line of many labels there costs nothing (vLLM's cache_config_info carries about 30); a
// line it reads with many labels is refused at once, not handed to expfmt, whose time grows with the
// square of a line's labels.
func TestFallbackLineOfManyLabelsIsRefused(t *testing.T) {
	labels := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, ",a%d=\"x=y\"", i) // an '=' inside a value is not a label
		}
		return b.String()
	}
	base := "vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n# HELP x a=b c=d\n{\"x.y\"} 1\n"
	for _, unread := range []string{
		"vllm:cache_config_info{block_size=\"16\"" + labels(28) + "} 1\n",
		"{\"x.y\"" + labels(100000) + "} 1\n",
	} {
		s, err := ExtractBytes([]byte(base+unread), VLLM)
		if err != nil {
			t.Fatalf("a line tokenscale does not read, of %d bytes: %v", len(unread), err)
		}
		if v, ok := s.Scalar(PromptTokens); !ok || v.Value != 1 {
			t.Fatalf("prompt tokens %v %v, want 1", v, ok)
		}
	}
	ok := base + "{\"vllm:num_requests_running\"" + labels(maxFallbackLabels) + "} 3\n"
	s, err := ExtractBytes([]byte(ok), VLLM)
	if err != nil {
		t.Fatalf("a line read, of %d labels: %v", maxFallbackLabels, err)
	}
	if v, ok := s.Scalar(RequestsRunning); !ok || v.Value != 3 {
		t.Fatalf("running %v %v, want 3 from the quoted name", v, ok)
	}
	bad := base + "{\"vllm:num_requests_running\"" + labels(100000) + "} 1\n"
	_, err = ExtractBytes([]byte(bad), VLLM)
	if err == nil || !strings.Contains(err.Error(), "line 6: too many labels on one line (100000, more than 16)") {
		t.Fatalf("a line read, of 100000 labels: err = %v, want it refused naming the line", err)
	}
}

// The interner kept between pages is bounded in bytes, not only in entries.
func TestInternerKeepsFewBytes(t *testing.T) {
	// Values of 8 KiB (longer than maxInternLen, within maxReadLine) and many distinct ones just short of
	// maxInternLen, which together are past maxInternedBytes.
	for i := 0; i < 4; i++ {
		var page strings.Builder
		fmt.Fprintf(&page, "vllm:num_requests_running{model_name=%q} 1\n", strings.Repeat(fmt.Sprint(i), 8<<10))
		for j := range 1500 {
			fmt.Fprintf(&page, "vllm:num_requests_running{model_name=\"%d-%d-%s\"} 1\n", i, j, strings.Repeat("m", maxInternLen-20))
		}
		if _, err := ExtractBytes([]byte(page.String()), VLLM); err != nil {
			t.Fatal(err)
		}
	}
	in := getInterner()
	defer putInterner(in)
	if in.bytes > maxInternedBytes {
		t.Fatalf("interner keeps %d bytes, want at most %d", in.bytes, maxInternedBytes)
	}
	total := 0
	for k := range in.m {
		total += len(k)
	}
	if total > maxInternedBytes {
		t.Fatalf("interner holds %d bytes of strings, want at most %d", total, maxInternedBytes)
	}
}

// A malformed value's error is short, whatever its length on the page.
func TestParseErrorIsShort(t *testing.T) {
	_, err := ExtractBytes([]byte("vllm:prompt_tokens_total "+strings.Repeat("9x", 1<<20)+"\n"), VLLM)
	if err == nil || len(err.Error()) > 512 {
		t.Fatalf("error of %d bytes, want at most 512", len(fmt.Sprint(err)))
	}
}

// BenchmarkHugeSeriesPage is the 60k-series page of issue 19 (about 2.3 MB): extraction must be linear.
func BenchmarkHugeSeriesPage(b *testing.B) {
	page := hugeSeriesPage(30000)
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ExtractBytes(page, VLLM); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFallbackWorstPage is the worst page the label cap lets through to expfmt: 4 MiB of lines of
// maxFallbackLabels short labels each, under the quoted name of a series tokenscale reads
// (docs/performance.md).
func BenchmarkFallbackWorstPage(b *testing.B) {
	var page bytes.Buffer
	page.WriteString("vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n")
	for i := 0; page.Len() < 4<<20; i++ {
		fmt.Fprintf(&page, "{\"vllm:num_requests_running\",i=\"%d\"", i)
		for j := 1; j < maxFallbackLabels; j++ {
			fmt.Fprintf(&page, ",a%d=\"\"", j)
		}
		page.WriteString("} 1\n")
	}
	b.SetBytes(int64(page.Len()))
	for b.Loop() {
		if _, err := ExtractBytes(page.Bytes(), VLLM); err != nil {
			b.Fatal(err)
		}
	}
}

// Lines whose quoted name opens the label set reach expfmt name first, so each is read in its own family:
// expfmt starts such a line's labels in the previous line's family, which panicked (a histogram's bucket
// after an untyped sample), filed buckets under another family, and grew one label map line after line.
// A label set with no name before it is refused; a plain name that runs on into a quoted part, and a
// quoted HELP or TYPE name, are left to expfmt, which reads them.
func TestFallbackLineNames(t *testing.T) {
	const ttft = "# TYPE vllm:time_to_first_token_seconds histogram\n"
	for _, c := range []struct {
		name, page string
		check      func(*Snapshot) string
	}{
		{"a bucket after an untyped sample", ttft + "vllm:prompt_tokens_total 7\n{\"vllm:time_to_first_token_seconds_bucket\",le=\"+Inf\"} 4\nvllm:time_to_first_token_seconds_count 4\nvllm:time_to_first_token_seconds_sum 2\n",
			func(s *Snapshot) string {
				if h, ok := s.Hist(TTFT); !ok || h.Count != 4 || len(h.Buckets) != 1 || h.Buckets[0].Count != 4 {
					return fmt.Sprintf("TTFT %+v %v, want one +Inf bucket of 4", h, ok)
				}
				return ""
			}},
		{"a bucket after another histogram", "# TYPE h histogram\n" + ttft + "h_bucket{le=\"1\"} 1\ng 1\n{\"vllm:time_to_first_token_seconds_bucket\",le=\"1\"} 5\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 5\nvllm:time_to_first_token_seconds_count 5\nvllm:prompt_tokens_total 1\n",
			func(s *Snapshot) string {
				if h, ok := s.Hist(TTFT); !ok || len(h.Buckets) != 2 || h.Buckets[0].Count != 5 {
					return fmt.Sprintf("TTFT %+v %v, want the le=1 bucket of 5 in its own family", h, ok)
				}
				return ""
			}},
		{"a name running on into a quoted part", "vllm:prompt_tokens_total 1\nvllm:num_requests_\"running\" 3\n",
			func(s *Snapshot) string {
				if v, ok := s.Scalar(RequestsRunning); !ok || v.Value != 3 {
					return fmt.Sprintf("running %v %v, want 3", v, ok)
				}
				return ""
			}},
		{"a quoted TYPE name", "# TYPE \"vllm:time_to_first_token_seconds\" histogram\nvllm:prompt_tokens_total 1\nvllm:time_to_first_token_seconds_bucket{le=\"NaN\"} 1\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\nvllm:time_to_first_token_seconds_count 2\n",
			func(s *Snapshot) string {
				if h, ok := s.Hist(TTFT); !ok || len(h.Buckets) != 1 {
					return fmt.Sprintf("TTFT %+v %v, want the histogram as expfmt reads it (the NaN bucket dropped)", h, ok)
				}
				return ""
			}},
	} {
		s, err := ExtractBytes([]byte(c.page), VLLM)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if msg := c.check(s); msg != "" {
			t.Errorf("%s: %s", c.name, msg)
		}
	}
	// The rewrite keeps each line's meaning: blanks and a trailing comma read as on the page, and an empty
	// set keeps what follows it the value, so a second label set is an error here as it is there.
	running := func(page string) (float64, error) {
		s, err := ExtractBytes([]byte("vllm:prompt_tokens_total 1\n"+page), VLLM)
		if err != nil {
			return 0, err
		}
		v, _ := s.Scalar(RequestsRunning)
		return v.Value, nil
	}
	for page, want := range map[string]float64{
		"{ \"vllm:num_requests_running\" , engine=\"0\" } 3\n": 3,
		"{\"vllm:num_requests_running\",} 4\n":                 4,
		"{\"vllm:num_requests_running\"} 5\n":                  5,
	} {
		if v, err := running(page); err != nil || v != want {
			t.Errorf("%q: running %v, %v; want %v", page, v, err, want)
		}
	}
	if _, err := running("{\"vllm:num_requests_running\"} {x=\"y\"} 1\n"); err == nil {
		t.Errorf("a label set after the value's place read as a sample")
	}
	// expfmt's errors count the pod's lines, dropped ones included.
	if _, err := running("g 1\nh 2\n{\"x.y\"} 1\n{\"vllm:num_requests_running\"} one\n"); err == nil || !strings.Contains(err.Error(), "line 5") {
		t.Errorf("a bad line after dropped ones: %v, want it named as line 5", err)
	}
	if _, err := ExtractBytes([]byte("vllm:prompt_tokens_total 1\n{engine=\"1\"} 1000\n"), VLLM); err == nil || !strings.Contains(err.Error(), "line 2: a label set with no metric name") {
		t.Errorf("a label set with no name: %v, want it refused naming the line", err)
	}
	// One growing label map made this page quadratic: name first, no kept line opens with '{'.
	var page bytes.Buffer
	page.WriteString(ttft + "vllm:time_to_first_token_seconds_bucket{le=\"1\"} 1\nvllm:prompt_tokens_total 1\n")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&page, "# HELP g%d x\n{\"vllm:time_to_first_token_seconds_bucket\",a%d=\"\"} 1\n", i, i)
	}
	reduced, err := fallbackPage(page.Bytes(), newExtractor(VLLM))
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range bytes.Split(reduced, []byte("\n")) {
		if bytes.HasPrefix(bytes.TrimLeft(ln, " \t"), []byte("{")) {
			t.Fatalf("a line handed to expfmt still opens with its label set: %q", ln)
		}
	}
	if _, err := ExtractBytes(page.Bytes(), VLLM); err != nil {
		t.Errorf("the page of 1000 such lines: %v", err)
	}
}

// Finite samples whose sum, or scaled value, overflows, and a histogram bound below 0, make the field a
// problem rather than an Inf or a bucket no duration can fall in.
func TestOverflowAndNegativeBoundsAreProblems(t *testing.T) {
	for _, c := range []struct{ name, page, want string }{
		{"counter sum", "vllm:prompt_tokens_total{engine=\"0\"} 1e308\nvllm:prompt_tokens_total{engine=\"1\"} 1e308\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n", "sums to +Inf"},
		{"le=-Inf", "vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n" +
			"vllm:time_to_first_token_seconds_bucket{le=\"-Inf\"} 1\nvllm:time_to_first_token_seconds_bucket{le=\"100\"} 5\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 10\nvllm:time_to_first_token_seconds_count 10\nvllm:time_to_first_token_seconds_sum 1\n", "bound >= 0"},
		{"histogram count sum", "vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n" +
			"vllm:time_to_first_token_seconds_count{engine=\"0\"} 1e308\nvllm:time_to_first_token_seconds_count{engine=\"1\"} 1e308\n", "overflows"},
	} {
		s, err := ExtractBytes([]byte(c.page), VLLM)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		found := false
		for _, p := range s.Problems {
			found = found || strings.Contains(p.Msg, c.want)
		}
		if !found {
			t.Errorf("%s: problems %v, want one saying %q", c.name, s.Problems, c.want)
		}
		for _, f := range Fields() {
			if v, ok := s.Scalar(f); ok && math.IsInf(v.Value, 0) {
				t.Errorf("%s: %v = %v", c.name, f, v.Value)
			}
			if h, ok := s.Hist(f); ok && (math.IsInf(h.Count, 0) || len(h.Buckets) > 0 && h.Buckets[0].UpperBound < 0) {
				t.Errorf("%s: %v = %+v", c.name, f, h)
			}
		}
	}
}

// A page the scanner leaves to expfmt full of distinct lines of a metric tokenscale reads: expfmt builds
// every line's metric and label pairs before the extractor's maxSeries applies, checks each label against
// those before it through a map rebuilt per label, and copies every value. Past maxFallbackAlloc of their
// estimated cost (labels and length) the page is refused before expfmt reads it; a page within it is
// read, and allocates about the budget. The test logs what each page allocated.
func TestFallbackSamplesAreBounded(t *testing.T) {
	for _, c := range []struct{ labels, value int }{{1, 1}, {3, 1}, {8, 1}, {16, 1}, {3, 16000}} {
		line := func(i int) string {
			var b strings.Builder
			fmt.Fprintf(&b, "vllm:num_requests_running{a=\"%d%s\"", i, strings.Repeat("v", c.value))
			for j := 1; j < c.labels; j++ {
				fmt.Fprintf(&b, ",l%d=\"v\"", j)
			}
			b.WriteString("} 1\n")
			return b.String()
		}
		page := func(lines int) []byte {
			var b bytes.Buffer
			// The quoted name sends the page to the fallback.
			b.WriteString("\"vllm:prompt_tokens_total\" 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 2\n")
			for i := range lines {
				b.WriteString(line(i))
			}
			return b.Bytes()
		}
		n := maxFallbackAlloc/fallbackLineCost(c.labels, len(line(100000))) - 5
		within := page(n)
		alloc, err := allocatedBy(within, VLLM)
		if err != nil {
			t.Fatalf("%d labels, values of %d bytes, a page within the budget: %v", c.labels, c.value, err)
		}
		t.Logf("%d labels, values of %d bytes: a %d-byte page of %d lines within the budget allocated %d bytes", c.labels, c.value, len(within), n, alloc)
		if alloc > 2*maxFallbackAlloc {
			t.Errorf("%d labels, values of %d bytes: a page within the budget allocated %d bytes; want at most %d", c.labels, c.value, alloc, 2*maxFallbackAlloc)
		}
		over := page(4*n + 100)
		alloc, err = allocatedBy(over, VLLM)
		if !errors.Is(err, ErrFallbackTooLarge) {
			t.Fatalf("%d labels, values of %d bytes, %d lines: %v, want ErrFallbackTooLarge", c.labels, c.value, 4*n+100, err)
		}
		t.Logf("%d labels, values of %d bytes: a %d-byte page past the budget allocated %d bytes before its refusal", c.labels, c.value, len(over), alloc)
		if alloc > 2*uint64(len(over)) {
			t.Errorf("%d labels, values of %d bytes: a %d-byte page allocated %d bytes before its refusal; want at most 2×", c.labels, c.value, len(over), alloc)
		}
	}
}

// A few pages at a time go through the fallback parser, so concurrent scrapes of pages that fall back
// cost a few parses' memory, not one each; a page waiting past its deadline is abandoned as a timeout, and
// a page the scanner reads does not wait.
func TestFallbackParsesAFewAtATime(t *testing.T) {
	fallback := []byte("\"vllm:prompt_tokens_total\" 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 2\n")
	scanned := []byte("vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 2\n")
	for range cap(fallbackSlot) {
		fallbackSlot <- struct{}{} // other pages' fallback parses
	}
	_, err := ExtractBytesBefore(fallback, VLLM, time.Now().Add(20*time.Millisecond))
	if !errors.Is(err, ErrParseTimeout) {
		t.Errorf("a page falling back while every slot is taken: %v, want ErrParseTimeout at its deadline", err)
	}
	// A deadline it meets at once, however loaded the machine: waiting for a slot, it would time out.
	if _, err := ExtractBytesBefore(scanned, VLLM, time.Now().Add(10*time.Second)); err != nil {
		t.Errorf("a scanned page while others fall back: %v", err)
	}
	for range cap(fallbackSlot) {
		<-fallbackSlot
	}
	s, err := ExtractBytesBefore(fallback, VLLM, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatalf("the page once the fallback is free: %v", err)
	}
	if v, ok := s.Scalar(RequestsWaiting); !ok || v.Value != 2 {
		t.Errorf("waiting = %v, %v; want 2", v, ok)
	}
	if len(fallbackSlot) != 0 {
		t.Error("the fallback parse kept its slot")
	}
}

// A page the scanner leaves to expfmt (a quoted metric name forces it) full of HELP and TYPE lines:
// expfmt holds a family for each, 8.6 times the page's size in memory for 4 MiB of them, so past
// maxFallbackFamilies the page is refused before expfmt reads it; a page with fewer is read.
func TestFallbackFamiliesAreBounded(t *testing.T) {
	page := func(families int) []byte {
		var b bytes.Buffer
		b.WriteString("\"a.b\" 1\nvllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n")
		b.WriteString("# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 3\n")
		for i := 0; i < families; i++ {
			fmt.Fprintf(&b, "# TYPE junk_%d counter\n", i)
		}
		return b.Bytes()
	}
	s, err := ExtractBytes(page(maxFallbackFamilies-10), Auto)
	if err != nil {
		t.Fatalf("%d families: %v", maxFallbackFamilies-10, err)
	}
	if v, ok := s.Scalar(RequestsRunning); !ok || v.Value != 3 {
		t.Fatalf("running = %v, %v; want 3 read through the fallback", v, ok)
	}
	big := page(4 << 20 / 25)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = ExtractBytes(big, Auto)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooManyFamilies) {
		t.Fatalf("%d bytes of TYPE lines: %v, want ErrTooManyFamilies", len(big), err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("a %d-byte page allocated %d bytes (%.1f×) before its refusal", len(big), alloc, float64(alloc)/float64(len(big)))
	if alloc > 2*uint64(len(big)) {
		t.Errorf("a %d-byte page allocated %d bytes; want at most 2× before it is refused", len(big), alloc)
	}
}

// allocatedBy returns what extracting page allocated, in bytes, and the extraction's error.
func allocatedBy(page []byte, kind Kind) (uint64, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := ExtractBytes(page, kind)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, err
}

// The series a page makes the extractor hold are bounded, all fields together: 4 MiB of distinct label
// sets of a metric tokenscale reads allocated 19 times the page (21 where one line feeds two fields),
// where the documented bound per scrape is about the page's size. Past maxSeries (a line read by several
// fields holds a series in each) every field with a series not yet held is spoiled, saying why; the
// fields read before it keep their values.
func TestSeriesAreBounded(t *testing.T) {
	const head = "vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 2\n"
	for _, c := range []struct {
		kind  Kind
		line  string
		field Field
	}{
		{VLLM, "vllm:num_requests_running{a=\"%d\"} 1\n", RequestsRunning},
		{SGLang, "sglang:realtime_tokens_total{mode=\"prefill_compute\",a=\"%d\"} 1\n", ComputedPromptTokens},
	} {
		page := func(n int) []byte {
			var b bytes.Buffer
			if c.kind == VLLM {
				b.WriteString(head)
			} else {
				b.WriteString("sglang:num_queue_reqs 2\nsglang:num_running_reqs 1\n")
			}
			for i := range n {
				fmt.Fprintf(&b, c.line, i)
			}
			return b.Bytes()
		}
		s, err := ExtractBytes(page(maxSeries/4), c.kind)
		if err != nil {
			t.Fatalf("%v, %d series: %v", c.kind, maxSeries/4, err)
		}
		if _, ok := s.Scalar(c.field); !ok {
			t.Fatalf("%v, %d series: %v not read (problems %v)", c.kind, maxSeries/4, c.field, s.Problems)
		}
		big := page(4 << 20 / len(fmt.Sprintf(c.line, 100000)))
		alloc, err := allocatedBy(big, c.kind)
		if err != nil {
			t.Fatalf("%v, a %d-byte page: %v", c.kind, len(big), err)
		}
		t.Logf("%v: a %d-byte page of distinct series allocated %d bytes (%.2f×)", c.kind, len(big), alloc, float64(alloc)/float64(len(big)))
		if alloc > 2*uint64(len(big)) {
			t.Errorf("%v: a %d-byte page allocated %d bytes; want at most 2×", c.kind, len(big), alloc)
		}
		s, _ = ExtractBytes(big, c.kind)
		if _, ok := s.Scalar(c.field); ok {
			t.Errorf("%v: %v read from a page of more than %d series", c.kind, c.field, maxSeries)
		}
		if p := fmt.Sprint(s.Problems); !strings.Contains(p, fmt.Sprintf("more than %d series", maxSeries)) {
			t.Errorf("%v: problems %s, want one saying more than %d series", c.kind, p, maxSeries)
		}
		if v, ok := s.Scalar(RequestsWaiting); !ok || v.Value != 2 {
			t.Errorf("%v: waiting = %v, %v; want 2 read beside the spoiled field", c.kind, v, ok)
		}
	}
	// A field whose first series comes after the bound is spoiled too.
	var b bytes.Buffer
	b.WriteString("vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\n")
	for i := range maxSeries {
		fmt.Fprintf(&b, "vllm:num_requests_running{a=\"%d\"} 1\n", i)
	}
	b.WriteString("vllm:num_requests_waiting 2\n")
	s, err := ExtractBytes(b.Bytes(), VLLM)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := s.Scalar(RequestsWaiting); ok {
		t.Errorf("waiting = %v read past the bound; want it unknown", v)
	}
}

// Histogram and summary TYPE lines, and HELP or TYPE lines of suffixed names, keep their names while the
// page is scanned: 4 MiB of them allocated 9 times the page. Past maxFallbackFamilies the page goes to
// the fallback, which refuses it.
func TestScannedFamiliesAreBounded(t *testing.T) {
	for _, line := range []string{"# TYPE a%d_sum summary\n", "# HELP a%d_sum x\n", "# TYPE a%d histogram\n"} {
		var b bytes.Buffer
		b.WriteString("vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n")
		for i := 0; b.Len() < 4<<20; i++ {
			fmt.Fprintf(&b, line, i)
		}
		alloc, err := allocatedBy(b.Bytes(), Auto)
		if !errors.Is(err, ErrTooManyFamilies) {
			t.Fatalf("%q lines: %v, want ErrTooManyFamilies", line, err)
		}
		t.Logf("%q: a %d-byte page allocated %d bytes (%.2f×) before its refusal", line, b.Len(), alloc, float64(alloc)/float64(b.Len()))
		if alloc > 2*uint64(b.Len()) {
			t.Errorf("%q: a %d-byte page allocated %d bytes; want at most 2× before it is refused", line, b.Len(), alloc)
		}
	}
}

// The interner is bounded in strings as well as bytes: a page of 100,000 distinct short values filled the
// map up to the byte bound (tens of thousands of entries), and clear kept that map's memory in the pool.
func TestInternerIsBoundedInCount(t *testing.T) {
	in := &interner{m: map[string]string{}}
	for i := range 100000 {
		in.get([]byte(strconv.Itoa(i)))
	}
	if len(in.m) > maxInterned {
		t.Fatalf("interner holds %d strings, want at most %d", len(in.m), maxInterned)
	}
	full := reflect.ValueOf(in.m).UnsafePointer()
	in.renew() // what getInterner does to each interner it takes from the pool
	if len(in.m) != 0 || reflect.ValueOf(in.m).UnsafePointer() == full {
		t.Fatalf("a full interner is reused with its map (%d strings): want a fresh map", len(in.m))
	}
	// Through a page too: whatever interner the pool hands out next is within the bound.
	var page strings.Builder
	page.WriteString("vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n")
	for i := range 100000 {
		fmt.Fprintf(&page, "vllm:num_requests_running{model_name=\"%d\"} 1\n", i)
	}
	if _, err := ExtractBytes([]byte(page.String()), VLLM); err != nil {
		t.Fatal(err)
	}
	got := getInterner()
	defer putInterner(got)
	if len(got.m) > maxInterned {
		t.Fatalf("after a page of 100,000 distinct values the pooled interner holds %d strings, want at most %d", len(got.m), maxInterned)
	}
}

// Two data-parallel engines' histograms are each checked before they are summed: neither of these is
// cumulative (le=1 below le=0.5), their sum is, and it read as a valid histogram.
func TestEachEnginesHistogramMustBeCumulative(t *testing.T) {
	page := `vllm:prompt_tokens_total 1
vllm:generation_tokens_total 1
vllm:num_requests_waiting 0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5"} 10
vllm:time_to_first_token_seconds_bucket{engine="0",le="1"} 5
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf"} 10
vllm:time_to_first_token_seconds_count{engine="0"} 10
vllm:time_to_first_token_seconds_sum{engine="0"} 3
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.5"} 0
vllm:time_to_first_token_seconds_bucket{engine="1",le="1"} 10
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf"} 10
vllm:time_to_first_token_seconds_count{engine="1"} 10
vllm:time_to_first_token_seconds_sum{engine="1"} 3
`
	s, err := ExtractBytes([]byte(page), VLLM)
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := s.Hist(TTFT); ok {
		t.Fatalf("TTFT read as %+v from two non-cumulative series; want it rejected", h)
	}
	found := false
	for _, p := range s.Problems {
		found = found || (p.Field == TTFT && strings.Contains(p.Msg, "not cumulative"))
	}
	if !found {
		t.Fatalf("problems %v: want TTFT's non-cumulative buckets named", s.Problems)
	}
}

// What a page's labels say reaches messages (the problems inspect prints, the store's errors) quoted and
// cut on a character boundary: a terminal escape went out raw, and a cut in the middle of a character
// made the message invalid UTF-8. SGLang's role, shown as it is, is "invalid" when it is not printable.
func TestLabelValuesInMessagesAreQuoted(t *testing.T) {
	line := "vllm:num_requests_running{model_name=\"\x1b[31mX" + strings.Repeat("é", 30) + "\"} 1\n"
	page := "vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n" + line + line
	s, err := ExtractBytes([]byte(page), VLLM)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, p := range s.Problems {
		msgs = append(msgs, p.String())
	}
	var report bytes.Buffer
	_ = Report(&report, []byte(page), VLLM)
	msgs = append(msgs, report.String())
	if len(s.Problems) == 0 || !strings.Contains(msgs[0], "duplicate") {
		t.Fatalf("problems %q: want the duplicate series named", msgs)
	}
	for _, m := range msgs {
		if !utf8.ValidString(m) {
			t.Errorf("message is not valid UTF-8: %q", m)
		}
		for i := 0; i < len(m); i++ {
			if m[i] < 0x20 && m[i] != '\n' {
				t.Errorf("message holds byte %#x: %q", m[i], m)
				break
			}
		}
	}
	if !strings.Contains(msgs[0], `model_name="\x1b[31mX`) {
		t.Errorf("problem %q: want the label value quoted", msgs[0])
	}

	sg, err := ExtractBytes([]byte("sglang:prompt_tokens_total{engine_type=\"\x1b[2Jprefill\"} 1\nsglang:generation_tokens_total 1\nsglang:num_queue_reqs 0\n"), SGLang)
	if err != nil {
		t.Fatal(err)
	}
	if sg.EngineRole != "invalid" {
		t.Errorf("EngineRole = %q from an engine_type holding an escape, want invalid", sg.EngineRole)
	}
}

// A parse error is printable, whatever bytes of the page it repeats: the scanner wrote an invalid escape's
// byte as it was, and expfmt's messages (on a page only it reads, with a quoted name) do the same and
// quote a whole malformed value; `tokenscale inspect` prints the error and the adapter's 503 carries it.
func TestParseErrorsArePrintable(t *testing.T) {
	const head = "vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 0\n"
	for name, page := range map[string]string{
		"scanner, an escape of ESC":   head + "vllm:num_requests_running{a=\"\\\x1b[31m\"} 1\n",
		"scanner, an escape of a C1":  head + "vllm:num_requests_running{a=\"\\\xc2\x9b\"} 1\n",
		"scanner, a raw byte":         head + "vllm:num_requests_running{a=\"\\\x9b\"} 1\n",
		"expfmt, an escape of ESC":    head + "{\"vllm:num_requests_running\",a=\"\\\x1b[31m\"} 1\n",
		"expfmt, a long bad value":    head + "{\"vllm:num_requests_running\"} 1\x1b" + strings.Repeat("9", 1<<20) + "\n",
		"scanner, a bad value w/ ESC": head + "vllm:num_requests_running 1\x1b[2J\n",
	} {
		_, err := ExtractBytes([]byte(page), VLLM)
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		var report bytes.Buffer
		_ = Report(&report, []byte(page), VLLM)
		for _, m := range []string{err.Error(), report.String()} {
			if !utf8.ValidString(m) {
				t.Errorf("%s: not valid UTF-8: %q", name, m)
			}
			for _, r := range m {
				if r < 0x20 && r != '\n' || r >= 0x7f && r <= 0x9f {
					t.Errorf("%s: holds %U: %q", name, r, m)
					break
				}
			}
		}
		if len(err.Error()) > maxErrorText+len(truncated) {
			t.Errorf("%s: an error of %d bytes", name, len(err.Error()))
		}
	}
}

// Text from outside that a terminal or a log would not show as it is (a bidirectional override that
// reverses what follows, a zero-width character that hides in a name, an unassigned or private-use code
// point) is written as its escape; printable text, any script's, is kept as it is.
func TestPrintableEscapesWhatATerminalHides(t *testing.T) {
	for in, want := range map[string]string{
		"pod\u202eevil":      `pod\u202eevil`,
		"a\u200bb\ufeffc":    `a\u200bb\ufeffc`,
		"ll\u05fbm":          `ll\u05fbm`,
		"x\U000e0041y":       `x\U000e0041y`,
		"\x1b[2J\u009b":      `\x1b[2J\x9b`,
		"llm/prefill-α 日本 é": "llm/prefill-α 日本 é",
		"bad\xffbyte":        "bad\ufffdbyte",
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%+q) = %+q, want %+q", in, got, want)
		}
	}
	if got := PrintableWithin(strings.Repeat("\u202e", 100), 20); len(got) > 20+len(truncated) || !strings.HasSuffix(got, truncated) {
		t.Errorf("cut to 20 bytes: %q", got)
	}
	// Several errors, a line each: the lines stay lines, each printable and cut, and those past the
	// bound are counted.
	lines := "a: \x1b[2J\nb: " + strings.Repeat("y", 100) + "\nc\nd\ne"
	if got, want := PrintableLines(lines, 20, 30), "a: \\x1b[2J\nb: "+strings.Repeat("y", 16)+truncated+"\nand 3 more lines"; got != want {
		t.Errorf("PrintableLines = %q, want %q", got, want)
	}
	huge := strings.Repeat(strings.Repeat("\x01", 1000)+"\n", 1000)
	if got := PrintableLines(huge, 2000, 10000); len(got) > 10000+len(truncated)+len("\nand 1000 more lines") {
		t.Errorf("PrintableLines of %d bytes within 10000: %d bytes", len(huge), len(got))
	}
}

// A sample line of a metric tokenscale reads is at most maxReadLine bytes, on the scanner's path and the
// fallback's: one label of 4 MiB on such a line held 3 to 9 times the page (its value copied into the
// parse's strings, the series key and each field the line feeds). Lines of metrics not read are skipped
// unparsed, whatever their length.
func TestLongReadLineIsRefused(t *testing.T) {
	const head = "vllm:prompt_tokens_total 1\nvllm:generation_tokens_total 1\nvllm:num_requests_waiting 2\n"
	huge := strings.Repeat("x", 4<<20)
	for _, c := range []struct{ name, page string }{
		{"scanner", head + "vllm:num_requests_running{a=\"" + huge + "\"} 1\n"},
		{"fallback", "# HELP \"x.y\" z\n" + head + "vllm:num_requests_running{a=\"" + huge + "\"} 1\n"},
		{"two fields", "sglang:num_queue_reqs 2\nsglang:realtime_tokens_total{mode=\"prefill_compute\",a=\"\\\\" + huge + "\"} 1\n"},
	} {
		alloc, err := allocatedBy([]byte(c.page), Auto)
		if !errors.Is(err, ErrLineTooLong) {
			t.Errorf("%s: %v, want ErrLineTooLong", c.name, err)
		}
		if alloc > 2*uint64(len(c.page)) {
			t.Errorf("%s: a %d-byte page allocated %d bytes; want at most 2×", c.name, len(c.page), alloc)
		}
	}
	s, err := ExtractBytes([]byte(head+"vllm:cache_config_info{a=\""+strings.Repeat("x", 100<<10)+"\"} 1\n"), Auto)
	if err != nil {
		t.Fatalf("a long line of a metric not read: %v", err)
	}
	if v, ok := s.Scalar(RequestsWaiting); !ok || v.Value != 2 {
		t.Errorf("beside a long line not read: waiting %v, %v; want 2", v, ok)
	}
}

// A typed histogram's _count or _sum given twice is a duplicate series on the fallback's path as on the
// scanner's: expfmt merged the lines into the last value, so a page the scanner leaves to it (any line of
// syntax it does not read) chose its TTFT count by repeating the line.
func TestRepeatedHistogramCountIsADuplicateOnEitherPath(t *testing.T) {
	const ttft = "# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 9\n" +
		"vllm:time_to_first_token_seconds_sum{model_name=\"m\"} 3\nvllm:time_to_first_token_seconds_count{model_name=\"m\"} 5\nvllm:time_to_first_token_seconds_count{model_name = \"m\"} 9\n"
	// The repeat written with a quoted name or label name reaches expfmt alone (the scanner leaves such
	// lines to it), which merges it with the plain line into one value.
	const (
		count  = "vllm:time_to_first_token_seconds_count"
		plain  = count + "{model_name=\"m\"} 5\n"
		header = "# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 9\n"
	)
	for name, page := range map[string]string{
		"scanner":                        ttft,
		"fallback":                       "# HELP \"x.y\" z\n" + ttft,
		"quoted name":                    header + plain + "\"" + count + "\"{model_name=\"m\"} 9\n",
		"quoted name opening the labels": header + plain + "{\"" + count + "\", model_name=\"m\"} 9\n",
		"quoted label name":              header + plain + count + "{\"model_name\"=\"m\"} 9\n",
		"both quoted, escaped":           header + "\"" + count + "\"{\"model_name\"=\"m\\\\\"} 5\n" + count + "{model_name=\"m\\\\\"} 9\n",
		"name with a quoted tail":        header + plain + "vllm:time_to_first_token_seconds_\"count\"{model_name=\"m\"} 9\n",
		"label name with a quoted tail":  header + plain + count + "{model_\"name\"=\"m\"} 9\n",
	} {
		s, err := ExtractBytes([]byte(page), VLLM)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if h, ok := s.Hist(TTFT); ok {
			t.Errorf("%s: TTFT read with count %g from a page repeating its _count", name, h.Count)
		}
		if p := fmt.Sprint(s.Problems); !strings.Contains(p, "duplicate series") {
			t.Errorf("%s: problems %s, want a duplicate series", name, p)
		}
	}
}

// inspect's report parses within the adapter's budget as the adapter does: a page past its deadline is
// reported as one whose scrapes fail, where it was reported usable after any time.
func TestReportBeforeDeadline(t *testing.T) {
	page := hugeSeriesPage(5000)
	var out strings.Builder
	if err := ReportBefore(&out, page, VLLM, time.Now().Add(-time.Millisecond)); !errors.Is(err, ErrParseTimeout) || !strings.Contains(out.String(), "scrape.timeout") {
		t.Fatalf("a page past the deadline: %v\n%s\nwant ErrParseTimeout and a hint naming scrape.timeout", err, out.String())
	}
	out.Reset()
	if err := ReportBefore(&out, page, VLLM, time.Time{}); errors.Is(err, ErrParseTimeout) {
		t.Fatalf("no deadline: %v", err)
	}
}
