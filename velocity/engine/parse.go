package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// parseText is the parser Extract uses: the fast scanner, or expfmt for syntax the scanner leaves to it.
func parseText(r io.Reader, sink sampleSink) error {
	buf, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("reading metrics: %w", err)
	}
	return parseBytes(buf, sink)
}

func parseBytes(buf []byte, sink sampleSink) error { return parseBytesBefore(buf, sink, time.Time{}) }

// ErrParseTimeout is a page whose parsing would outlast the scrape's budget; it is abandoned.
var ErrParseTimeout = errors.New("parsing the page took longer than the scrape's budget")

// parseBytesBefore is parseBytes that gives up at deadline (zero: none), so a huge page costs at most
// its pod's scrape budget.
func parseBytesBefore(buf []byte, sink sampleSink, deadline time.Time) error {
	err := parseBytesOnce(buf, sink, deadline)
	if err != nil && !errors.Is(err, ErrParseTimeout) && isJSON(buf) {
		return ErrJSONPage
	}
	if err != nil {
		return &pageError{msg: Printable(err.Error()), err: err}
	}
	return nil
}

// pageError is a parse error whose text is safe to print: expfmt's messages, and some of the scanner's,
// repeat bytes of the page as they are (an invalid escape's byte, a value), which a hostile page makes a
// terminal escape in `tokenscale inspect` or a 503's text.
type pageError struct {
	msg string
	err error
}

func (e *pageError) Error() string { return e.msg }
func (e *pageError) Unwrap() error { return e.err }

// maxErrorText bounds a parse error's text: expfmt quotes a whole malformed value, up to the page's size.
const maxErrorText = 512

// Printable returns s with control characters (C0, DEL and C1) written as \xNN, every other character
// that is not printable (a bidirectional override, a zero-width or unassigned one) as \uNNNN or
// \UNNNNNNNN, and invalid UTF-8 replaced, cut on a character boundary to at most maxErrorText bytes and a
// mark saying so: for text from outside in errors, the parser's and the CLI's (a fetch error can hold a
// certificate's names), where such a character could make a terminal or a log show other text.
func Printable(s string) string { return PrintableWithin(s, maxErrorText) }

// PrintableWithin is Printable cut to at most max bytes and the mark.
func PrintableWithin(s string, max int) string {
	var b strings.Builder
	for _, r := range s { // an invalid byte comes as U+FFFD
		c := string(r)
		switch {
		case r < 0x20 || r >= 0x7f && r <= 0x9f:
			c = fmt.Sprintf("\\x%02x", r)
		case r != ' ' && !unicode.IsPrint(r) && r <= 0xffff:
			c = fmt.Sprintf("\\u%04x", r)
		case r != ' ' && !unicode.IsPrint(r):
			c = fmt.Sprintf("\\U%08x", r)
		}
		if b.Len()+len(c) > max {
			b.WriteString(truncated)
			break
		}
		b.WriteString(c)
	}
	return b.String()
}

// PrintableLines is s made printable line by line, each line cut to maxLine bytes and the text to maxText,
// the lines left out counted (the result is at most about maxText and two marks): for a text of several
// errors, one a line (errors.Join's), which a terminal or klog shows as lines.
func PrintableLines(s string, maxLine, maxText int) string {
	lines := strings.Split(s, "\n")
	size := 0
	for i, l := range lines {
		room := min(maxLine, maxText-size)
		if room <= 0 {
			lines = append(lines[:i], fmt.Sprintf("and %d more lines", len(lines)-i))
			break
		}
		lines[i] = PrintableWithin(l, room)
		size += len(lines[i]) + len("\n")
	}
	return strings.Join(lines, "\n")
}

// truncated marks an error text cut at maxErrorText bytes.
const truncated = "… (truncated)"

// ErrJSONPage is a page that is a JSON document, not Prometheus text: what trtllm-serve answers on /metrics.
var ErrJSONPage = errors.New("the page is JSON, not Prometheus text exposition (trtllm-serve answers /metrics with JSON " +
	"iteration statistics and serves Prometheus text at /prometheus/metrics: set the pool's path)")

// isJSON reports whether a page that failed to parse is a JSON array or object; only then is it checked in
// full, so a text page pays nothing.
func isJSON(buf []byte) bool {
	b := bytes.TrimSpace(buf)
	return len(b) > 0 && (b[0] == '[' || b[0] == '{') && json.Valid(b)
}

// fallbackSlot lets four pages at a time through the fallback parser. A page it parses costs its copy and
// up to about maxFallbackAlloc and a third again besides the body (TestFallbackSamplesAreBounded), where a
// scanned page costs about its size: with every concurrent scrape falling back, a round could take about
// 1 GiB at the defaults. Four rather than one, so that a fleet whose pages all fall back (odd syntax from
// every engine) is not parsed one page at a time within each scrape's budget.
var fallbackSlot = make(chan struct{}, 4)

// takeFallbackSlot waits for a fallbackSlot until deadline (zero: none).
func takeFallbackSlot(deadline time.Time) bool {
	if deadline.IsZero() {
		fallbackSlot <- struct{}{}
		return true
	}
	select {
	case fallbackSlot <- struct{}{}:
		return true
	default:
	}
	wait := time.Until(deadline)
	if wait <= 0 {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case fallbackSlot <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

func parseBytesOnce(buf []byte, sink sampleSink, deadline time.Time) error {
	err := scan(buf, sink, deadline)
	if errors.Is(err, errFallback) {
		if !deadline.IsZero() && time.Now().After(deadline) {
			return fmt.Errorf("%w (%d bytes)", ErrParseTimeout, len(buf))
		}
		if !takeFallbackSlot(deadline) {
			return fmt.Errorf("%w (%d bytes, waiting for other pages' fallback parse: %d pages at a time fall back)", ErrParseTimeout, len(buf), cap(fallbackSlot))
		}
		defer func() { <-fallbackSlot }()
		sink.reset()
		page, err := fallbackPage(buf, sink)
		if err != nil {
			return err
		}
		return parseExpfmt(page, sink)
	}
	return err
}

// maxFallbackLabels bounds the labels of a line handed to expfmt. expfmt (v0.72) checks each label of a
// line against all before it by rebuilding a map, so its time grows with the square of a line's labels,
// and it cannot be stopped at the scrape's deadline: one line of 380,000 labels fits in a 4 MiB page and
// would hold the scrape round for minutes. The series tokenscale reads carry a few (model_name, engine,
// finished_reason, le); info gauges carry dozens (vLLM's cache_config_info up to about 30), which is why
// only the lines that are read are counted.
const maxFallbackLabels = 16

// maxFallbackFamilies bounds the lines of a page handed to expfmt that can each make it a metric family
// (about 180 bytes): 4 MiB of TYPE lines for names never read allocated 36 MB, 8.6 times the page, in each
// concurrent scrape. An engine's page has a few hundred HELP and TYPE lines.
const maxFallbackFamilies = 10000

// ErrTooManyFamilies is a page that only the fallback parser reads with more HELP, TYPE or unnamed sample
// lines than maxFallbackFamilies.
var ErrTooManyFamilies = errors.New("too many metric families")

// maxFallbackAlloc bounds what the sample lines handed to expfmt make it allocate, estimated per line by
// fallbackLineCost. expfmt builds a metric, its label pairs and strings for every line before the
// extractor's maxSeries applies, and checks each label against those before it through a map rebuilt
// per label: before this bound a 2.8 MB page of 16,384 distinct lines of 16 labels allocated 143 MB (52×
// the page), one of one label 18×. 4 MiB, the default maxBodyBytes, holds about 3,600 lines of the three
// labels an engine's histogram buckets carry (the buckets of six histograms over 16 data-parallel ranks
// are about 2,900), and bounds a fallback parse at the page's copy handed to expfmt plus about that
// (TestFallbackSamplesAreBounded logs at most 5.5 MB).
const maxFallbackAlloc = 4 << 20

// fallbackLineCost is about what expfmt (v0.72) allocates, with the extractor, for one sample line of n
// labels and size bytes, measured on pages of a few hundred to 16,384 distinct lines: 690, 1,040, 1,850
// and 8,700 bytes a short line of 1, 3, 8 and 16 labels, and 4 bytes for each of a line's bytes, as its
// values are copied (a line of three labels and 16 KB, 66,700).
func fallbackLineCost(n, size int) int { return 640 + 32*n*n + 4*size }

// ErrFallbackTooLarge is a page that only the fallback parser reads with more sample lines of the metrics
// tokenscale reads than it parses within maxFallbackAlloc.
var ErrFallbackTooLarge = errors.New("too many sample lines for the fallback parser")

// maxReadLine bounds a sample line of a metric tokenscale reads: its label values are copied, into the
// parse's strings, the series key and each field the line feeds, so one line of a 4 MiB label held 3 to 9
// times the page where the documented bound is about the page. An engine's lines are under 300 bytes.
const maxReadLine = 16 << 10

// ErrLineTooLong is a page with a sample line of a metric tokenscale reads longer than maxReadLine.
var ErrLineTooLong = errors.New("a line of a metric tokenscale reads is too long")

// ErrTooManyLabels is a page that only the fallback parser reads with a line of too many labels.
var ErrTooManyLabels = errors.New("too many labels on one line")

// errNoName is a sample line whose label set has no metric name before it.
var errNoName = errors.New("a label set with no metric name before it")

// fallbackPage is what expfmt is given of a page the scanner leaves to it: every comment line, and the
// sample lines whose metric name the sink reads, or that belong to the histogram or summary family of
// one it reads, or whose name cannot be told; the rest are dropped unparsed, as the scanner skips them,
// each leaving an empty line so that expfmt's errors count the page's lines. A kept line of more than
// maxFallbackLabels labels refuses the page, and so do more than maxFallbackFamilies lines that can each
// make expfmt a family (comment lines are kept whatever they name: a TYPE line changes how expfmt reads
// a line whose name cannot be told, and the sink's lookups mark engines as seen).
//
// A kept line whose quoted name opens its label set ({"a.b",x="y"} 1) is handed on as "a.b"{x="y"} 1:
// expfmt (v0.72) starts such a line's labels in the previous line's family, before it reads the name,
// which panicked on a nil map, filed labels under the wrong family and let one page grow a label map
// line after line (quadratic time); with the name first it reads each line on its own. A label set with
// no name before it ({x="y","a.b"} 1, which expfmt reads but no exporter writes) is refused for the same
// reason, whether or not it is read.
func fallbackPage(buf []byte, sink sampleSink) ([]byte, error) {
	out := make([]byte, 0, len(buf))
	var scratch []byte
	wanted := func(name []byte) bool {
		want := func(base []byte, suffix string) bool {
			scratch = append(append(scratch[:0], base...), suffix...)
			return sink.wants(scratch)
		}
		if want(name, "") || want(name, "_bucket") || want(name, "_sum") || want(name, "_count") {
			return true
		}
		base, ok := splitSuffixBytes(name)
		return ok && (want(base, "") || want(base, "_bucket") || want(base, "_sum") || want(base, "_count"))
	}
	families := 0 // lines that can make expfmt a family: HELP and TYPE lines, samples whose name cannot be told
	cost := 0     // what the sample lines kept make expfmt allocate (fallbackLineCost)
	family := func(lineNo int) error {
		if families++; families > maxFallbackFamilies {
			return fmt.Errorf("line %d: %w (more than %d HELP, TYPE or unnamed sample lines): refused rather than parsed, as expfmt holds a family for each",
				lineNo, ErrTooManyFamilies, maxFallbackFamilies)
		}
		return nil
	}
	for lineNo := 1; len(buf) > 0; lineNo++ {
		ln := buf
		if nl := bytes.IndexByte(buf, '\n'); nl >= 0 {
			ln, buf = buf[:nl+1], buf[nl+1:]
		} else {
			buf = nil
		}
		i := skipBlank(ln, 0)
		if i < len(ln) && ln[i] == '#' {
			if c := ln[skipBlank(ln, i+1):]; bytes.HasPrefix(c, []byte("HELP")) || bytes.HasPrefix(c, []byte("TYPE")) {
				if err := family(lineNo); err != nil {
					return nil, err
				}
			}
		}
		if i == len(ln) || ln[i] == '\n' || ln[i] == '#' {
			out = append(out, ln...)
			continue
		}
		name, rest, ok := sampleName(ln[i:])
		if ok && !wanted(name) {
			if ln[len(ln)-1] == '\n' {
				out = append(out, '\n')
			}
			continue
		}
		if !ok && ln[i] == '{' {
			return nil, fmt.Errorf("line %d: %w", lineNo, errNoName)
		}
		if !ok {
			if err := family(lineNo); err != nil {
				return nil, err
			}
		}
		n := lineLabels(ln)
		if n > maxFallbackLabels {
			return nil, fmt.Errorf("line %d: %w (%d, more than %d): refused rather than parsed, as the fallback parser's time grows with their square", lineNo, ErrTooManyLabels, n, maxFallbackLabels)
		}
		if len(ln) > maxReadLine {
			return nil, fmt.Errorf("line %d: %w (%d bytes, more than %d)", lineNo, ErrLineTooLong, len(ln), maxReadLine)
		}
		if cost += fallbackLineCost(n, len(ln)); cost > maxFallbackAlloc {
			return nil, fmt.Errorf("line %d: %w (their labels and bytes would make it allocate more than %d MiB): refused rather than parsed",
				lineNo, ErrFallbackTooLarge, maxFallbackAlloc>>20)
		}
		if rest == nil {
			rest = ln
		}
		out = append(out, rest...)
	}
	return out, nil
}

// sampleName is the metric name of a sample line in the text format: a plain name before '{' or a
// blank, or a quoted name at the line's start or opening its label set ({"a.b",x="y"}). For the latter,
// rest is the line rewritten name first ("a.b"{x="y"} 1, or "a.b"{} 1 for {"a.b"} 1); it is nil
// otherwise. ok is false when no name can be told, or a plain name runs on into a quoted part
// (expfmt reads a"b" as ab), and the line is then left to expfmt.
func sampleName(ln []byte) (name, rest []byte, ok bool) {
	switch {
	case len(ln) == 0:
		return nil, nil, false
	case ln[0] == '"':
		name, ok = quotedString(ln)
		return name, nil, ok
	case ln[0] == '{':
		i := skipBlank(ln, 1)
		n, closed := quotedLen(ln[i:])
		if !closed {
			return nil, nil, false
		}
		name, _ = quotedString(ln[i:])
		j := skipBlank(ln, i+n)
		// The quoted token is copied as it is on the page, escapes and all.
		switch quoted := ln[i : i+n]; {
		case j < len(ln) && ln[j] == ',':
			return name, slices.Concat(quoted, []byte{'{'}, ln[j+1:]), true
		case j < len(ln) && ln[j] == '}':
			// The empty set keeps what follows read as the value, as on the page ({"n"} {x="y"} 1 is an error).
			return name, slices.Concat(quoted, []byte("{}"), ln[j+1:]), true
		}
		return nil, nil, false // a quoted label name: {"l"="v"}
	}
	j := 0
	for j < len(ln) && isMetricNameByte(ln[j], j == 0) {
		j++
	}
	if j == 0 || j < len(ln) && ln[j] == '"' {
		return nil, nil, false
	}
	return ln[:j], nil, true
}

// quotedLen is the length of the quoted string that opens b, quotes included; closed is false when b
// does not open with one that ends.
func quotedLen(b []byte) (n int, closed bool) {
	if len(b) == 0 || b[0] != '"' {
		return 0, false
	}
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, true
		}
	}
	return len(b), false
}

// quotedString is the text format's quoted string that opens b, unescaped (\\, \" and \n).
func quotedString(b []byte) ([]byte, bool) {
	n, closed := quotedLen(b)
	if !closed {
		return nil, false
	}
	out := make([]byte, 0, n-2)
	for i := 1; i < n-1; i++ {
		c := b[i]
		if c == '\\' && i+1 < n-1 {
			i++
			if c = b[i]; c == 'n' {
				c = '\n'
			}
		}
		out = append(out, c)
	}
	return out, true
}

// lineLabels counts a sample line's labels by the '=' outside quoted strings (at least one per label).
func lineLabels(ln []byte) int {
	n, quoted, escaped := 0, false, false
	for _, c := range ln {
		switch {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case !quoted && c == '=':
			n++
		}
	}
	return n
}

// lineAction is what scan does with the sample lines of one name.
type lineAction uint8

const (
	actSkip lineAction = iota
	actFallback
	actRead
	actReadHistogram // a _bucket/_sum/_count line of a declared histogram family
)

// errFallback means the page uses syntax the scanner does not handle (quoted UTF-8 metric or label
// names); the page is then parsed by expfmt instead.
var errFallback = errors.New("fall back to expfmt")

// scan is a streaming extractor for the Prometheus text format (0.0.4). It reads only the lines whose
// metric name the sink wants and skips the rest after reading their name, which is what makes it ~10x
// faster than building every family with expfmt (see BenchmarkExtract). On the lines it reads it is as
// strict as expfmt; lines it skips are not validated. FuzzScanMatchesExpfmt checks that on every page
// expfmt accepts, both give the same Snapshot.
func scan(buf []byte, sink sampleSink, deadline time.Time) error {
	var (
		labels []label
		strs   = getInterner()   // label names, values and sample names repeat across a page's lines
		typed  map[string]string // families declared histogram, gaugehistogram or summary
		named  map[string]bool   // _bucket/_sum/_count names declared by HELP/TYPE, or read as samples
		mapped int               // HELP and TYPE lines kept in typed or named
		lineNo int

		prevName []byte // the last sample name classified, and what to do with its lines
		act      lineAction
	)
	defer putInterner(strs)
	for len(buf) > 0 {
		lineNo++
		if lineNo&1023 == 0 && !deadline.IsZero() && time.Now().After(deadline) {
			return fmt.Errorf("%w (abandoned at line %d)", ErrParseTimeout, lineNo)
		}
		var ln []byte
		complete := true
		if nl := bytes.IndexByte(buf, '\n'); nl >= 0 {
			ln, buf = buf[:nl], buf[nl+1:]
		} else {
			ln, buf, complete = buf, nil, false
		}
		i := skipBlank(ln, 0)
		if i == len(ln) {
			continue
		}
		switch ln[i] {
		case '#':
			prevName = nil
			kw, bname, typ := commentLine(ln[i+1:])
			if kw == "" {
				continue
			}
			if bytes.IndexByte(bname, '"') >= 0 {
				return errFallback // a quoted name: expfmt's rules apply
			}
			suffixed := hasSuffix(bname)
			if !suffixed && typ == "" {
				continue // the common case: a HELP line, or a counter/gauge TYPE line
			}
			name := string(bname)
			if base, ok := splitSuffix(name); ok && typed[base] != "" {
				return errFallback // a suffixed name declared as its own family: expfmt's rules apply
			}
			// Each such line keeps its name in typed or named: past maxFallbackFamilies of them (4 MiB of
			// summary TYPE lines allocated 9 times the page) the page goes to fallbackPage, which refuses it.
			if mapped++; mapped > maxFallbackFamilies {
				return errFallback
			}
			if typ != "" {
				if named[name+"_bucket"] || named[name+"_sum"] || named[name+"_count"] {
					return errFallback // declared after its samples were read as untyped
				}
				if typed == nil {
					typed = map[string]string{}
				}
				typed[name] = typ
			}
			if suffixed {
				if named == nil {
					named = map[string]bool{}
				}
				named[name] = true
			}
			continue
		case '{', '"':
			return errFallback
		}
		// Like expfmt, a name ends at the first byte that cannot continue it.
		j := i
		for j < len(ln) && isMetricNameByte(ln[j], j == i) {
			j++
		}
		if j == i {
			return fmt.Errorf("parsing metrics text: line %d: invalid metric name starting %q", lineNo, clip(ln[i:]))
		}
		if j < len(ln) && ln[j] == '"' {
			return errFallback // expfmt reads a name that runs on into a quoted part (a"b" is ab)
		}
		name := ln[i:j]
		// Consecutive lines mostly share a name (a histogram's buckets), so the decision is made once per
		// run of a name; a comment line can change it and clears it.
		if prevName == nil || !bytes.Equal(name, prevName) {
			prevName, act = name, actSkip
			want := sink.wants(name)
			var histBase bool
			if typed != nil {
				if t := typed[string(name)]; t != "" {
					if t != "summary" && (want || sink.wants([]byte(string(name)+"_bucket"))) {
						act = actFallback // a bare sample in a histogram family: expfmt's rules apply
					}
					// Otherwise the samples of a summary, or of an unwanted histogram: not read.
					goto decided
				}
				if base, ok := splitSuffixBytes(name); ok && !named[string(name)] {
					switch typed[string(base)] {
					case "summary":
						goto decided
					case "histogram", "gaugehistogram":
						histBase = true
					}
				}
			}
			if !want {
				goto decided
			}
			act = actRead
			if histBase {
				act = actReadHistogram
			} else if _, ok := splitSuffixBytes(name); ok && !named[string(name)] {
				if named == nil {
					named = map[string]bool{}
				}
				named[string(name)] = true
			}
		}
	decided:
		switch act {
		case actSkip:
			continue
		case actFallback:
			return errFallback
		}
		histBase := act == actReadHistogram
		if len(ln) > maxReadLine {
			return fmt.Errorf("parsing metrics text: line %d: %w (%d bytes of %s, more than %d)", lineNo, ErrLineTooLong, len(ln), clip(name), maxReadLine)
		}
		if !complete {
			return fmt.Errorf("parsing metrics text: line %d: unexpected end of input (truncated page?)", lineNo)
		}
		labels = labels[:0]
		k := j
		if b := skipBlank(ln, j); b < len(ln) && ln[b] == '{' {
			k = b // expfmt allows blanks between a name and its label set
		}
		if k < len(ln) && ln[k] == '{' {
			var err error
			labels, k, err = scanLabels(ln, k+1, labels, strs)
			if err != nil {
				if errors.Is(err, errFallback) {
					return err
				}
				return fmt.Errorf("parsing metrics text: line %d: %w", lineNo, err)
			}
		}
		if k = skipBlank(ln, k); k == len(ln) {
			return fmt.Errorf("parsing metrics text: line %d: missing value for %s", lineNo, clip(name))
		}
		v0 := k
		for k < len(ln) && ln[k] != ' ' && ln[k] != '\t' {
			k++
		}
		v, err := parseValue(ln[v0:k])
		if err != nil {
			return fmt.Errorf("parsing metrics text: line %d: expected float as value, got %q", lineNo, clip(ln[v0:k]))
		}
		if k = skipBlank(ln, k); k < len(ln) {
			t0 := k
			for k < len(ln) && ln[k] != ' ' && ln[k] != '\t' {
				k++
			}
			if _, err := strconv.ParseInt(string(ln[t0:k]), 10, 64); err != nil {
				return fmt.Errorf("parsing metrics text: line %d: expected integer as timestamp, got %q", lineNo, clip(ln[t0:k]))
			}
			if k = skipBlank(ln, k); k < len(ln) {
				return fmt.Errorf("parsing metrics text: line %d: spurious string after timestamp: %q", lineNo, clip(ln[k:]))
			}
		}
		if histBase && bytes.HasSuffix(name, []byte("_bucket")) {
			le, err := parseValue([]byte(labelValue(labels, "le")))
			if err != nil || le != le {
				return errFallback // expfmt drops or rejects such a bucket
			}
		}
		sink.sample(strs.at(0, name), labels, v)
	}
	return nil
}

func skipBlank(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return i
}

// commentLine recognises "# HELP name ..." and "# TYPE name type" (after the '#') without allocating;
// kw is "" otherwise, and typ is set only for histogram, gaugehistogram and summary types.
func commentLine(b []byte) (kw string, name []byte, typ string) {
	tok := func() []byte {
		i := skipBlank(b, 0)
		j := i
		for j < len(b) && b[j] != ' ' && b[j] != '\t' {
			j++
		}
		t := b[i:j]
		b = b[j:]
		return t
	}
	switch k := tok(); string(k) {
	case "HELP":
		kw = "HELP"
	case "TYPE":
		kw = "TYPE"
	default:
		return "", nil, ""
	}
	name = tok()
	if len(name) == 0 {
		return "", nil, ""
	}
	if kw == "TYPE" {
		t := tok()
		for _, want := range []string{"histogram", "gaugehistogram", "summary"} {
			if bytes.EqualFold(t, []byte(want)) {
				typ = want
			}
		}
	}
	return kw, name, typ
}

func hasSuffix(name []byte) bool {
	return bytes.HasSuffix(name, []byte("_bucket")) || bytes.HasSuffix(name, []byte("_sum")) || bytes.HasSuffix(name, []byte("_count"))
}

// splitSuffixBytes is splitSuffix without converting the name to a string.
func splitSuffixBytes(name []byte) ([]byte, bool) {
	for _, suf := range [...]string{"_bucket", "_sum", "_count"} {
		if bytes.HasSuffix(name, []byte(suf)) {
			return name[:len(name)-len(suf)], true
		}
	}
	return nil, false
}

// interner hands out one string per distinct byte sequence, so a page's repeated label names and values
// (a model name, an engine index, bucket bounds) are allocated once rather than once per line. Slot i
// remembers the last bytes seen at position i of a line, since consecutive lines mostly repeat them and
// comparing is cheaper than hashing.
type interner struct {
	m     map[string]string
	bytes int // total length of the strings in m
	slots [16]struct {
		b []byte
		s string
	}
}

// interners keeps interners between pages: the strings are immutable copies, so the next page of the
// same engines finds its names and values already there.
var interners = sync.Pool{New: func() any { return &interner{m: map[string]string{}} }}

// maxInterned and maxInternedBytes bound what an interner keeps between pages, in case some label's
// values never repeat or are huge; strings longer than maxInternLen are not interned at all (a real
// engine's label values are short, and a long one would pin its bytes in the pool).
const (
	maxInterned      = 4096
	maxInternedBytes = 256 << 10
	maxInternLen     = 256
)

func getInterner() *interner {
	in := interners.Get().(*interner)
	in.renew()
	return in
}

// renew starts the interner afresh once it is full (a page's values did not repeat), with a new map:
// clear would keep the old map's buckets, sized for the most strings it ever held.
func (in *interner) renew() {
	if len(in.m) >= maxInterned || in.bytes+maxInternLen > maxInternedBytes {
		in.m = make(map[string]string)
		in.bytes = 0
	}
}

func putInterner(in *interner) {
	in.slots = [len(in.slots)]struct {
		b []byte
		s string
	}{} // they point into the page's buffer
	interners.Put(in)
}

// at interns b, seen at position slot of a line; b must stay unchanged while the page is scanned.
func (in *interner) at(slot int, b []byte) string {
	if slot < len(in.slots) {
		if c := &in.slots[slot]; c.b != nil && bytes.Equal(c.b, b) {
			return c.s
		}
	}
	s := in.get(b)
	if slot < len(in.slots) {
		in.slots[slot].b, in.slots[slot].s = b, s
	}
	return s
}

func (in *interner) get(b []byte) string {
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	s := string(b)
	// Past any bound nothing more is kept: the byte bound alone let a page of 100,000 distinct short
	// values leave tens of thousands of entries, megabytes of map, in every pooled interner.
	if len(s) > maxInternLen || in.bytes+len(s) > maxInternedBytes || len(in.m) >= maxInterned {
		return s
	}
	in.m[s] = s
	in.bytes += len(s)
	return s
}

// splitSuffix returns the family a histogram or summary sample name would belong to.
func splitSuffix(name string) (string, bool) {
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if strings.HasSuffix(name, suf) {
			return strings.TrimSuffix(name, suf), true
		}
	}
	return "", false
}

// scanLabels reads name="value" pairs up to the closing brace; i is just past '{'.
func scanLabels(ln []byte, i int, dst []label, strs *interner) ([]label, int, error) {
	var seen map[string]struct{} // label names of a line with very many labels
	for {
		i = skipBlank(ln, i)
		if i >= len(ln) {
			return dst, i, errors.New("unexpected end of label set")
		}
		if ln[i] == '}' {
			return dst, i + 1, nil
		}
		if ln[i] == '"' {
			return dst, i, errFallback
		}
		n0 := i
		for i < len(ln) && isLabelNameByte(ln[i], i == n0) {
			i++
		}
		if i == n0 {
			return dst, i, fmt.Errorf("invalid label name start %q", ln[i])
		}
		if i < len(ln) && ln[i] == '"' {
			return dst, i, errFallback // expfmt reads a label name that runs on into a quoted part (a"b" is ab)
		}
		lname := strs.at(1+2*len(dst), ln[n0:i])
		i = skipBlank(ln, i)
		if i >= len(ln) || ln[i] != '=' {
			return dst, i, fmt.Errorf("expected '=' after label name %q", clipS(lname))
		}
		i = skipBlank(ln, i+1)
		if i >= len(ln) || ln[i] != '"' {
			return dst, i, fmt.Errorf("expected '\"' to start value of label %q", clipS(lname))
		}
		i++
		var val []byte
		v0 := i
		escaped := false
		for {
			if i >= len(ln) {
				return dst, i, fmt.Errorf("unterminated value of label %q", clipS(lname))
			}
			c := ln[i]
			if c == '"' {
				break
			}
			if c == '\\' {
				if !escaped {
					val = append(val[:0], ln[v0:i]...)
					escaped = true
				}
				i++
				if i >= len(ln) {
					return dst, i, fmt.Errorf("unterminated value of label %q", clipS(lname))
				}
				switch ln[i] {
				case '\\':
					val = append(val, '\\')
				case '"':
					val = append(val, '"')
				case 'n':
					val = append(val, '\n')
				default:
					return dst, i, fmt.Errorf("invalid escape sequence %q in label %q", "\\"+string(ln[i:i+1]), clipS(lname))
				}
				i++
				continue
			}
			if escaped {
				val = append(val, c)
			}
			i++
		}
		var lv string
		if escaped {
			lv = strs.get(val)
		} else {
			lv = strs.at(2+2*len(dst), ln[v0:i])
		}
		i = skipBlank(ln, i+1)
		if hasLabel(dst, lname, &seen) {
			// Usually an error, but expfmt lets a histogram's second le override the first: its rules apply.
			return dst, i, errFallback
		}
		dst = append(dst, label{lname, lv})
		if i < len(ln) && ln[i] == ',' {
			i++
			continue
		}
		if i < len(ln) && ln[i] == '}' {
			return dst, i + 1, nil
		}
		return dst, i, fmt.Errorf("expected ',' or '}' after value of label %q", clipS(lname))
	}
}

// hasLabel reports whether labels has name. A real sample has a handful of labels, checked pairwise;
// past 64 a set built for the line is used, so a hostile line cannot make parsing quadratic.
func hasLabel(labels []label, name string, seen *map[string]struct{}) bool {
	if len(labels) < 64 {
		for _, l := range labels {
			if l.name == name {
				return true
			}
		}
		return false
	}
	if *seen == nil {
		*seen = make(map[string]struct{}, 2*len(labels))
		for _, l := range labels {
			(*seen)[l.name] = struct{}{}
		}
	}
	if _, ok := (*seen)[name]; ok {
		return true
	}
	(*seen)[name] = struct{}{}
	return false
}

func isMetricNameByte(c byte, first bool) bool {
	return c == ':' || isLabelNameByte(c, first)
}

// clip shortens a piece of a line for an error message: the page is the target's to choose. The cut
// falls on a rune boundary, so a character split in two does not turn the message into invalid UTF-8.
func clip(b []byte) []byte {
	if len(b) <= maxClip {
		return b
	}
	n := maxClip
	for n > maxClip-utf8.UTFMax && !utf8.RuneStart(b[n]) {
		n--
	}
	return b[:n]
}

// maxClip is how many bytes of a page's text an error message quotes.
const maxClip = 40

func clipS(s string) string { return string(clip([]byte(s))) }

func isLabelNameByte(c byte, first bool) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
}

// parseValue accepts what expfmt accepts: Go float syntax without hex exponents or underscores.
func parseValue(b []byte) (float64, error) {
	if bytes.ContainsAny(b, "pP_") {
		return 0, errors.New("unsupported character in float")
	}
	return strconv.ParseFloat(string(b), 64)
}
