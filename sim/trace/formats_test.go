package trace

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

const burstHeader = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"

func TestReadBurstGPT(t *testing.T) {
	in := burstHeader + "5,ChatGPT,472,18,490,Conversation log\n45,GPT-4,1087,0,1087,API log\n45.5,ChatGPT,100,20,120,Conversation log\n"
	tr, err := Read(strings.NewReader(in), "b.csv", Options{Format: BurstGPT})
	if err != nil {
		t.Fatal(err)
	}
	// The GPT-4 row's 0 response tokens mark a failed request (BurstGPT's README): left out and counted.
	want := []Request{{0, 472, 18, nil}, {40500 * time.Millisecond, 100, 20, nil}}
	if len(tr.Requests) != 2 || tr.Failed != 1 {
		t.Fatalf("%+v, %d failed", tr.Requests, tr.Failed)
	}
	for i, w := range want {
		if !same(tr.Requests[i], w) {
			t.Errorf("request %d = %+v, want %+v", i, tr.Requests[i], w)
		}
	}
}

// Later BurstGPT releases add Session ID and Elapsed time after Timestamp; columns are found by name.
func TestReadBurstGPTWithSessions(t *testing.T) {
	in := "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n" +
		"5.25,3f2a,1.5,ChatGPT,472,18,490,Conversation log\n" +
		"7,3f2a,0.9,GPT-4,1087,230,1317,Conversation log\n"
	tr, err := Read(strings.NewReader(in), "b3.csv", Options{Format: BurstGPT})
	if err != nil {
		t.Fatal(err)
	}
	want := []Request{{0, 472, 18, nil}, {1750 * time.Millisecond, 1087, 230, nil}}
	if len(tr.Requests) != len(want) {
		t.Fatalf("%+v", tr.Requests)
	}
	for i, w := range want {
		if !same(tr.Requests[i], w) {
			t.Errorf("request %d = %+v, want %+v", i, tr.Requests[i], w)
		}
	}
	dir := t.TempDir()
	in = "\ufeff" + strings.ReplaceAll(in, "\n", "\r\n") // as a spreadsheet tool saves it
	if err := os.WriteFile(filepath.Join(dir, "BurstGPT_3.csv"), []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	if tr, err := ReadFile(filepath.Join(dir, "BurstGPT_3.csv"), Options{}); err != nil || len(tr.Requests) != 2 {
		t.Errorf("guessing the format of a file with session columns, a byte-order mark and CRLF: %v", err)
	}
}

func TestReadMooncake(t *testing.T) {
	in := `{"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48]}
{"timestamp": 1500, "input_length": 6472, "output_length": 26, "hash_ids": [46, 47]}
`
	tr, err := Read(strings.NewReader(in), "m.jsonl", Options{Format: Mooncake})
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Requests) != 2 || !same(tr.Requests[1], Request{Arrival: 1500 * time.Millisecond, PromptTokens: 6472, OutputTokens: 26, Blocks: []uint64{46, 47}}) {
		t.Fatalf("%+v", tr.Requests)
	}
}

func TestReadErrorsNameFileAndLine(t *testing.T) {
	for _, tc := range []struct {
		f    Format
		in   string
		want string
	}{
		{BurstGPT, "Timestamp,Model\n", "b:1: header \"Timestamp,Model\" lacks Request tokens, Response tokens"},
		{BurstGPT, burstHeader + "5,ChatGPT,472\n", "b:2: want 6 columns as the header has, got 3"},
		// A row of more columns than its header read the columns after the extra one as the token counts
		// (4 prompt and 472 output tokens here), and so did a quoted field holding commas.
		{BurstGPT, burstHeader + "5,GPT,4,472,18,490,x\n", "b:2: want 6 columns as the header has, got 7"},
		{BurstGPT, burstHeader + "5,\"a,1,2,x\",472,18,490,API log\n", "b:2: quoted fields are not read"},
		{BurstGPT, "Timestamp,Request tokens,Response tokens" + strings.Repeat(",x", 64) + "\n", "b:1: header has 67 columns, more than 64"},
		{Azure, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,1,1" + strings.Repeat(",", 1000) + "\n", "b:2: want 3 columns, got 1003"},
		{BurstGPT, burstHeader + "five,ChatGPT,1,2,3,API log\n", "b:2: bad Timestamp"},
		{BurstGPT, burstHeader + "5,ChatGPT,1,2,3,API log\n4,ChatGPT,1,2,3,API log\n", "b:3: timestamp 4s is before line 2's 5s"},
		{BurstGPT, burstHeader + "5,ChatGPT,-1,2,3,API log\n", "b:2: token counts"},
		{Mooncake, `{"timestamp": 1, "input_length": 3}` + "\n", "b:1: missing input_length or output_length"},
		{Mooncake, `{"input_length": 3, "output_length": 1}` + "\n", "b:1: missing timestamp"},
		{Mooncake, "{\"timestamp\": 5, \"input_length\": 3, \"output_length\": 1}\nnot json\n", "b:2: not a JSON object"},
		{Mooncake, `{"timestamp": 1, "input_length": 600, "output_length": 1, "hash_ids": [1, 2, 3]}` + "\n", "b:1: 3 hash_ids for 600 input tokens"},
		{Mooncake, `{"timestamp": 1, "input_length": 600, "output_length": 1, "hash_ids": [-1]}` + "\n", "b:1: not a JSON object"},
		{Mooncake, "{\"timestamp\": 5, \"input_length\": 3, \"output_length\": 1}\n{\"timestamp\": 4, \"input_length\": 3, \"output_length\": 1}\n", "b:2: timestamp"},
		{"csv", "x", "unknown trace format"},
		// Bounds: a request of more tokens than any model's context, and a timestamp that would make the
		// simulator step through years.
		{BurstGPT, burstHeader + "5,ChatGPT,9223372036854775807,2,3,API log\n", "b:2: token counts must be integers in 0..10000000"},
		{Azure, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,10000001,1\n", "b:2: token counts"},
		{Mooncake, `{"timestamp": 1, "input_length": 10000001, "output_length": 1}` + "\n", "b:1: token counts must be in 0..10000000"},
		{BurstGPT, burstHeader + "5,ChatGPT,1,2,3,API log\n8640005,ChatGPT,1,2,3,API log\n", "b:3: a request 2400 h into the replayed window, more than 744h0m0s: pick a window with --start and --duration"},
		{BurstGPT, burstHeader + "5,ChatGPT,1,2,3,API log\n999999999,ChatGPT,1,2,3,API log\n", "b:3: timestamp 277777h46m39s is more than 8784h0m0s after line 2's 5s (a stray timestamp?)"},
		{Azure, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,1,1\n9999-11-16 18:15:46.6805900,1,1\n", "b:3: bad TIMESTAMP"},
		// A row at Go's zero time is refused on its own, as a BurstGPT time past maxTimestampSeconds is.
		{Azure, "TIMESTAMP,ContextTokens,GeneratedTokens\n0001-01-01 00:00:00,1,1\n2023-11-16 18:15:46.6805900,1,1\n", "b:2: bad TIMESTAMP"},
		// A year's pause after the first line is a stray time, though a window ends before it.
		{BurstGPT, burstHeader + "0,m,1,2,3,x\n1700000000,m,1,2,3,x\n1700000001,m,1,2,3,x\n", "b:3: timestamp 472222h13m20s is more than 8784h0m0s after line 2's 0s"},
	} {
		if _, err := Read(strings.NewReader(tc.in), "b", Options{Format: tc.f}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: err = %v, want %q", tc.f, tc.in, err, tc.want)
		}
	}
}

// A trace longer than the span bound replays a window of it: the bound is on the window, after the time
// scale, not on the trace (BurstGPT's release spans about four months).
func TestLongTraceReplaysAWindow(t *testing.T) {
	day := 24 * 3600
	in := burstHeader + "0,m,1,2,3,x\n" + strconv.Itoa(40*day) + ",m,1,2,3,x\n" + strconv.Itoa(120*day) + ",m,1,2,3,x\n"
	tr, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, Start: 39 * 24 * time.Hour, Duration: 48 * time.Hour})
	if err != nil || len(tr.Requests) != 1 || tr.Requests[0].Arrival != 24*time.Hour {
		t.Fatalf("a window of days 39-41: %v, %v", tr, err)
	}
	if _, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, TimeScale: 4}); err != nil {
		t.Fatalf("120 days replayed 4 times faster (30 days): %v", err)
	}
	if _, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT}); err == nil || !strings.Contains(err.Error(), "b:3: a request 960 h into the replayed window") {
		t.Fatalf("120 days whole: %v, want the request on day 40 named", err)
	}
	if _, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, Duration: 50 * 24 * time.Hour, TimeScale: 0.5}); err == nil || !strings.Contains(err.Error(), "b:3: a request 1920 h into") {
		t.Fatalf("40 days slowed down twice: %v, want the window's bound named", err)
	}
	// A stray timestamp 300 days out, slowed down 1,000 times, is refused, not wrapped to a negative time.
	stray := burstHeader + "0,m,1,2,3,x\n" + strconv.Itoa(300*day) + ",m,1,2,3,x\n"
	if _, err := Read(strings.NewReader(stray), "b", Options{Format: BurstGPT, TimeScale: 0.001}); err == nil || !strings.Contains(err.Error(), "b:3: a request 7200000 h into") {
		t.Fatalf("300 days slowed down 1,000 times: %v", err)
	}
	// With SkipBad it is skipped and counted, as other bad lines are.
	tr, err = Read(strings.NewReader(stray+"60,m,1,2,3,x\n"), "b", Options{Format: BurstGPT, SkipBad: true})
	if err != nil || len(tr.Requests) != 2 || tr.Skipped != 1 {
		t.Fatalf("skip-bad: %d requests, %d skipped, %v; want the stray line skipped and the two others kept", len(tr.Requests), tr.Skipped, err)
	}
}

func TestSkipBadCounts(t *testing.T) {
	in := burstHeader + "1,a,10,1,11,x\nbad line\n3,a,10,1,11,x\n2,a,10,1,11,x\n4,a,-5,1,0,x\n5,a,10,1,11,x\n"
	tr, err := Read(strings.NewReader(in), "b.csv", Options{Format: BurstGPT, SkipBad: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Requests) != 3 || tr.Skipped != 3 || !strings.HasPrefix(tr.FirstSkipped[0], "b.csv:3:") || !strings.HasPrefix(tr.FirstSkipped[1], "b.csv:5:") {
		t.Errorf("kept %d, skipped %d: %v", len(tr.Requests), tr.Skipped, tr.FirstSkipped)
	}
}

func TestWindowAndScaling(t *testing.T) {
	var b strings.Builder
	b.WriteString(burstHeader)
	for i := range 100 {
		b.WriteString(strings.Join([]string{strconv.Itoa(i), "m", "100", "10", "110", "x"}, ",") + "\n")
	}
	read := func(o Options) []Request {
		t.Helper()
		o.Format = BurstGPT
		tr, err := Read(strings.NewReader(b.String()), "b", o)
		if err != nil {
			t.Fatal(err)
		}
		return tr.Requests
	}
	w := read(Options{Start: 10 * time.Second, Duration: 20 * time.Second})
	if len(w) != 20 || w[0].Arrival != 0 || w[19].Arrival != 19*time.Second {
		t.Errorf("window: %d requests, first %s, last %s", len(w), w[0].Arrival, w[len(w)-1].Arrival)
	}
	if f := read(Options{TimeScale: 4}); f[99].Arrival != 99*time.Second/4 {
		t.Errorf("time scale 4: last at %s", f[99].Arrival)
	}
	half, again := read(Options{RateScale: 0.5, Seed: 7}), read(Options{RateScale: 0.5, Seed: 7})
	if len(half) < 35 || len(half) > 65 || len(half) != len(again) {
		t.Errorf("rate scale 0.5: %d then %d requests of 100; want about 50, the same for one seed", len(half), len(again))
	}
	double := read(Options{RateScale: 2})
	if len(double) != 200 || double[199].Arrival > 100*time.Second {
		t.Errorf("rate scale 2: %d requests, last at %s; want 200 within the same 100 s", len(double), double[len(double)-1].Arrival)
	}
	for i := 1; i < len(double); i++ {
		if double[i].Arrival < double[i-1].Arrival {
			t.Fatal("rate scaling unsorted the trace")
		}
	}
	if _, err := Read(strings.NewReader(b.String()), "b", Options{Format: BurstGPT, Start: time.Hour}); err == nil {
		t.Error("an empty window is not an error")
	}
	// The window is cut while reading, as window() cuts a whole trace, and reading stops at its end (one line
	// past it is read, to tell the end from a stray timestamp): a malformed line after the window is never
	// read (a week-long trace costs the window's memory and time).
	whole := read(Options{})
	for _, o := range []Options{{Start: 10 * time.Second}, {Duration: 5 * time.Second}, {Start: 99 * time.Second, Duration: time.Hour}, {Start: -time.Second, Duration: 3 * time.Second}} {
		got, want := read(o), window(whole, max(o.Start, 0), o.Duration)
		if !slices.EqualFunc(got, want, func(a, b Request) bool { return a.Arrival == b.Arrival && a.PromptTokens == b.PromptTokens }) {
			t.Errorf("window %+v while reading: %d requests %v…%v, want %d %v…%v", o, len(got), got[0], got[len(got)-1], len(want), want[0], want[len(want)-1])
		}
	}
	tail := b.String() + "not,a,line\n"
	if tr, err := Read(strings.NewReader(tail), "b", Options{Format: BurstGPT, Duration: 50 * time.Second}); err != nil || len(tr.Requests) != 50 {
		t.Errorf("a malformed line after the window: err = %v; want the window's 50 requests, the line unread", err)
	}
	if _, err := Read(strings.NewReader(tail), "b", Options{Format: BurstGPT}); err == nil || !strings.Contains(err.Error(), "b:102:") {
		t.Errorf("a malformed line inside the window: err = %v, want it named", err)
	}
}

// A single line far in the future ends a windowed read no more than an unwindowed one: the line after it
// shows it out of order, which is an error naming both lines, or under SkipBad the stray line is skipped
// and reading goes on.
func TestStrayLinePastTheWindowEnd(t *testing.T) {
	line := func(sec int) string { return strconv.Itoa(sec) + ",m,1,1,2,x\n" }
	stray := burstHeader + line(0) + line(1) + line(5000) + line(2) + line(3)
	const want = "b:5: timestamp 2s is before line 4's 1h23m20s (traces must be sorted)"
	for _, d := range []time.Duration{0, time.Hour} {
		if _, err := Read(strings.NewReader(stray), "b", Options{Format: BurstGPT, Duration: d}); err == nil || err.Error() != want {
			t.Errorf("duration %s: err = %v, want %q", d, err, want)
		}
	}
	tr, err := Read(strings.NewReader(stray), "b", Options{Format: BurstGPT, Duration: time.Hour, SkipBad: true})
	if err != nil || len(tr.Requests) != 4 || tr.Requests[3].Arrival != 3*time.Second || tr.Skipped != 1 || !strings.HasPrefix(tr.FirstSkipped[0], "b:4: timestamp 1h23m20s is after line 5's 2s") {
		t.Errorf("skip-bad: %+v, %v; want the four others and line 4 skipped", tr, err)
	}
	// A line past the end followed by unreadable lines is judged by the next readable one: the stray line
	// and the unreadable ones are skipped, and the window goes on (the first unreadable line ended it).
	bad := burstHeader + line(0) + line(1) + line(5000) + "garbage\n" + "x,y\n" + line(2) + line(3)
	tr, err = Read(strings.NewReader(bad), "b", Options{Format: BurstGPT, Duration: time.Hour, SkipBad: true})
	if err != nil || len(tr.Requests) != 4 || tr.Skipped != 3 || len(tr.FirstSkipped) != 3 || !strings.HasPrefix(tr.FirstSkipped[1], "b:5: ") || !strings.HasPrefix(tr.FirstSkipped[2], "b:6: ") {
		t.Errorf("skip-bad, unreadable lines after the stray one: %+v, %v; want four requests and lines 4-6 skipped", tr, err)
	}
	if _, err := Read(strings.NewReader(bad), "b", Options{Format: BurstGPT, Duration: time.Hour}); err == nil || err.Error() != "b:7: timestamp 2s is before line 4's 1h23m20s (traces must be sorted)" {
		t.Errorf("unreadable lines after the stray one: %v, want the stray line refused", err)
	}
	// A line past the end followed by a later one, or by one that cannot be read and then none or a later
	// one, ends the window.
	for _, after := range []string{line(5001), "not,a,line\n", "", line(5000) + line(4), "not,a,line\n" + line(5001)} {
		tr, err := Read(strings.NewReader(burstHeader+line(0)+line(1)+line(5000)+after), "b", Options{Format: BurstGPT, Duration: time.Hour})
		if err != nil || len(tr.Requests) != 2 {
			t.Errorf("%q after the window's end: %+v, %v; want the window's two requests", after, tr, err)
		}
	}
}

// Unreadable lines are skipped up to a bound, past which the file is refused: an endless file of another
// format (/dev/urandom) was read for good.
func TestSkipBadGivesUp(t *testing.T) {
	in := burstHeader + "0,m,1,1,2,x\n" + strings.Repeat("x\n", maxSkipped+1)
	if _, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, SkipBad: true}); err == nil || err.Error() != "b: more than 1000000 unreadable lines: is it a burstgpt trace?" {
		t.Errorf("%d unreadable lines: %v", maxSkipped+1, err)
	}
	if tr, err := Read(strings.NewReader(in[:len(in)-2]), "b", Options{Format: BurstGPT, SkipBad: true}); err != nil || tr.Skipped != maxSkipped {
		t.Errorf("%d unreadable lines: %v", maxSkipped, err)
	}
}

// Valid lines that no other bound counts (lengths only, before the window's start, failed requests) count
// against maxLines, so an endless stream of them ends; a trace within it is read.
func TestEndlessValidLinesEnd(t *testing.T) {
	defer func(n int) { maxLines = n }(maxLines)
	maxLines = 1000
	var b strings.Builder
	b.WriteString(burstHeader)
	for i := range 2000 {
		fmt.Fprintf(&b, "%d,m,1,1,2,x\n", i)
	}
	failed := burstHeader + strings.Repeat("0,m,1,0,0,x\n", 2000) // failed requests (no response tokens)
	for name, c := range map[string]struct {
		in string
		o  Options
	}{
		"lengths only":     {b.String(), Options{Format: BurstGPT, LengthsOnly: true}},
		"before the start": {b.String(), Options{Format: BurstGPT, Start: time.Hour}},
		"failed requests":  {failed, Options{Format: BurstGPT}},
	} {
		if _, err := Read(strings.NewReader(c.in), "b", c.o); err == nil || !strings.Contains(err.Error(), "more than 1000 lines") {
			t.Errorf("%s: %v; want the stream refused past maxLines", name, err)
		}
	}
	maxLines = 2001 // the header and 2,000 lines
	if tr, err := Read(strings.NewReader(b.String()), "b", Options{Format: BurstGPT, LengthsOnly: true}); err != nil || len(tr.Requests) != 2000 {
		t.Errorf("within the bound: %v", err)
	}
}

// Under SkipBad a single line that jumps forward is the one skipped, with or without a window, as a line
// past the window's end is: the later, sorted lines are kept rather than each skipped as out of order. A
// line that jumps back is still the one skipped.
func TestSkipBadStrayLineWithoutAWindow(t *testing.T) {
	line := func(sec float64) string { return strconv.FormatFloat(sec, 'f', -1, 64) + ",m,1,1,2,x\n" }
	lines := func(secs ...float64) string {
		s := burstHeader
		for _, x := range secs {
			s += line(x)
		}
		return s
	}
	for _, c := range []struct {
		name    string
		in      string
		dur     time.Duration
		want    []time.Duration // kept arrivals
		skipped []string        // FirstSkipped prefixes, in line order
	}{
		{"far-future line in the middle", lines(0, 1, 5000, 2, 3, 4), 0, []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second},
			[]string{"b:4: timestamp 1h23m20s is after line 5's 2s and line 6's 3s"}},
		{"far-future first line", lines(5000, 1, 2, 3), 0, []time.Duration{0, time.Second, 2 * time.Second},
			[]string{"b:2: timestamp 1h23m20s is after line 3's 1s and line 4's 2s"}},
		{"stray line inside a window", lines(0, 1, 1800, 2, 3), time.Hour, []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second},
			[]string{"b:4: timestamp 30m0s is after line 5's 2s"}},
		{"a malformed line between", lines(0, 1, 5000, 2) + "bad\n" + line(3), 0, []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second},
			[]string{"b:4: timestamp 1h23m20s is after line 5's 2s and line 7's 3s", "b:6: want 6 columns"}},
		{"line that jumps back", lines(0, 1, 2, 1.5, 3), 0, []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second},
			[]string{"b:5: timestamp 1.5s is before line 4's 2s"}},
		{"line far back", lines(0, 1, 2, 0.5, 3), 0, []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second},
			[]string{"b:5: timestamp 500ms is before line 4's 2s"}},
		{"out-of-order last line", lines(0, 1, 2, 1.5), 0, []time.Duration{0, time.Second, 2 * time.Second},
			[]string{"b:5: timestamp 1.5s is before line 4's 2s"}},
		// A first line decades before the rest: without the hold every later line was past the span (or,
		// with a window, past its end, so the read kept the first line alone).
		{"far-past first line", lines(0, 1.7e9, 1.7e9+1, 1.7e9+2), 0, []time.Duration{0, time.Second, 2 * time.Second},
			[]string{"b:2: timestamp 0s is more than 8784h0m0s before line 3's"}},
		{"far-past first line, a window", lines(0, 1.7e9, 1.7e9+1, 1.7e9+2), time.Hour, []time.Duration{0, time.Second, 2 * time.Second},
			[]string{"b:2: timestamp 0s is more than 8784h0m0s before line 3's"}},
		{"far-future second line", lines(0, 1.7e9, 1, 2), 0, []time.Duration{0, time.Second, 2 * time.Second},
			[]string{"b:3: timestamp 472222h13m20s is more than 8784h0m0s after line 2's 0s and line 4's 1s"}},
		{"far-future last of two lines", lines(0, 1.7e9), 0, []time.Duration{0},
			[]string{"b:3: timestamp 472222h13m20s is more than 8784h0m0s after line 2's 0s"}},
	} {
		tr, err := Read(strings.NewReader(c.in), "b", Options{Format: BurstGPT, SkipBad: true, Duration: c.dur})
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		var got []time.Duration
		for _, r := range tr.Requests {
			got = append(got, r.Arrival)
		}
		ok := slices.Equal(got, c.want) && tr.Skipped == len(c.skipped) && len(tr.FirstSkipped) == len(c.skipped)
		for i := 0; ok && i < len(c.skipped); i++ {
			ok = strings.HasPrefix(tr.FirstSkipped[i], c.skipped[i])
		}
		if !ok {
			t.Errorf("%s: kept %v, skipped %d %q; want %v and %q", c.name, got, tr.Skipped, tr.FirstSkipped, c.want, c.skipped)
		}
		// Without SkipBad the first line out of order is still an error.
		if _, err := Read(strings.NewReader(c.in), "b", Options{Format: BurstGPT, Duration: c.dur}); err == nil {
			t.Errorf("%s: read without --skip-bad", c.name)
		}
	}
}

// FirstSkipped names the first 10 skipped lines by line number, though a held line is judged after the
// lines following it.
func TestFirstSkippedIsInLineOrder(t *testing.T) {
	var b strings.Builder
	b.WriteString(burstHeader + "0,m,1,1,2,x\n5000,m,1,1,2,x\n1,m,1,1,2,x\n")
	for range 12 {
		b.WriteString("bad\n")
	}
	b.WriteString("2,m,1,1,2,x\n")
	tr, err := Read(strings.NewReader(b.String()), "b", Options{Format: BurstGPT, SkipBad: true})
	if err != nil || len(tr.Requests) != 3 || tr.Skipped != 13 || len(tr.FirstSkipped) != 10 {
		t.Fatalf("%+v, %v; want 3 requests, 13 skipped, 10 named", tr, err)
	}
	for i, s := range tr.FirstSkipped {
		if want := fmt.Sprintf("b:%d:", []int{3, 5, 6, 7, 8, 9, 10, 11, 12, 13}[i]); !strings.HasPrefix(s, want) {
			t.Errorf("FirstSkipped[%d] = %q, want it to start with %s", i, s, want)
		}
	}
}

// A trace's hash_ids are bounded in all, not only per line: the read stops naming the line that passes the
// bound, and a stray line skipped after it was kept gives its hash_ids back.
func TestMooncakeHashIDBudget(t *testing.T) {
	defer func(n int) { maxTraceBlocks = n }(maxTraceBlocks)
	maxTraceBlocks = 4
	rec := func(ms int, ids string) string {
		return fmt.Sprintf(`{"timestamp": %d, "input_length": 1024, "output_length": 1, "hash_ids": [%s]}`+"\n", ms, ids)
	}
	over := rec(0, "1, 2") + rec(1, "3, 4") + rec(2, "5")
	if _, err := Read(strings.NewReader(over), "m.jsonl", Options{Format: Mooncake}); err == nil || !strings.HasPrefix(err.Error(), "m.jsonl:3: more than 4 hash_ids") {
		t.Errorf("err = %v, want the bound named at m.jsonl:3", err)
	}
	stray := rec(0, "1, 2") + rec(5_000_000, "3, 4") + rec(1, "5, 6") + rec(2, "")
	tr, err := Read(strings.NewReader(stray), "m.jsonl", Options{Format: Mooncake, SkipBad: true})
	if err != nil || len(tr.Requests) != 3 || tr.Skipped != 1 || !slices.Equal(tr.Requests[1].Blocks, []uint64{5, 6}) {
		t.Errorf("%+v, %v; want the stray line's hash_ids given back and the three others kept", tr, err)
	}
	if _, err := Read(strings.NewReader(over), "m.jsonl", Options{Format: Mooncake, Duration: 2 * time.Millisecond}); err != nil {
		t.Errorf("a window holding 4 hash_ids: %v", err)
	}
}

// A sorted trace with one line moved anywhere in time reads under SkipBad as the sorted trace less at most
// one line (the moved one, or the one it swapped places with), whatever the line; any trace and window
// read as checkRead requires.
func FuzzReadSkipBadStray(f *testing.F) {
	f.Add([]byte{1, 1, 1, 1, 1}, uint16(2), uint32(5_000_000), int64(0), int64(0))
	f.Add([]byte{1, 1, 1, 1}, uint16(0), uint32(5_000_000), int64(0), int64(0))
	f.Add([]byte{10, 0, 10, 200}, uint16(3), uint32(0), int64(5), int64(3000))
	f.Add([]byte{1, 2, 3}, uint16(3), uint32(1500), int64(0), int64(2000))
	f.Fuzz(func(t *testing.T, gaps []byte, pos uint16, stray uint32, startMs, durMs int64) {
		if len(gaps) > 200 {
			gaps = gaps[:200]
		}
		times := make([]int64, 0, len(gaps)+1)
		var at int64
		for _, g := range gaps {
			at += int64(g) * int64(g) * 100 // up to 6.5e6 ms a step; a trace under 15 days
			times = append(times, at)
		}
		// Under 2^31 ms, within the span bound from any first line.
		times = slices.Insert(times, int(pos)%(len(times)+1), int64(stray%(1<<31)))
		var b strings.Builder
		for i, ms := range times {
			fmt.Fprintf(&b, `{"timestamp": %d, "input_length": %d, "output_length": 1, "hash_ids": [%d]}`+"\n", ms, 1000+i, i)
		}
		in := b.String()
		tr, err := Read(strings.NewReader(in), "fuzz", Options{Format: Mooncake, SkipBad: true})
		if err != nil {
			t.Fatalf("%v", err)
		}
		if tr.Skipped > 1 || len(tr.Requests)+tr.Skipped != len(times) || tr.Requests[0].Arrival != 0 {
			t.Fatalf("times %v: kept %d, skipped %d %q; want at most one line skipped", times, len(tr.Requests), tr.Skipped, tr.FirstSkipped)
		}
		for i, r := range tr.Requests {
			if r.Arrival < 0 || (i > 0 && r.Arrival < tr.Requests[i-1].Arrival) || r.PromptTokens < 1000 || len(r.Blocks) != 1 {
				t.Fatalf("times %v: bad request %d %+v", times, i, r)
			}
		}
		checkRead(t, in, fuzzOptions(Mooncake, startMs, durMs, 0, 0, 500))
	})
}

// A start and duration summing past what a Duration holds mean a window without an end, not one ending
// before it starts.
func TestReadWindowEndSaturates(t *testing.T) {
	in := burstHeader + "0,m,1,1,2,x\n7200,m,1,1,2,x\n"
	tr, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, Start: time.Hour, Duration: math.MaxInt64})
	if err != nil || len(tr.Requests) != 1 || tr.Requests[0].Arrival != time.Hour {
		t.Errorf("[1h, +max): %+v, %v; want the request at 2h, an hour in", tr, err)
	}
}

// Errors name the file as given: two files of one name in different folders are told apart.
func TestReadFileErrorsNameThePath(t *testing.T) {
	for _, sub := range []string{"a", "b"} {
		dir := filepath.Join(t.TempDir(), sub)
		path := filepath.Join(dir, "trace.csv")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(burstHeader+"0,m,1,1,2,x\nbad\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadFile(path, Options{}); err == nil || !strings.HasPrefix(err.Error(), path+":3: ") {
			t.Errorf("err = %v, want it to start with %s:3:", err, path)
		}
	}
}

func TestReadFileGuessesFormat(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"a.csv":   "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n",
		"b.csv":   burstHeader + "0,m,1,2,3,x\n",
		"m.jsonl": `{"timestamp": 0, "input_length": 1, "output_length": 2}` + "\n",
		"x.txt":   "hello\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"a.csv", "b.csv", "m.jsonl"} {
		if _, err := ReadFile(filepath.Join(dir, n), Options{}); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	if _, err := ReadFile(filepath.Join(dir, "x.txt"), Options{}); err == nil || !strings.Contains(err.Error(), "cannot tell the trace format") {
		t.Errorf("unknown format: %v", err)
	}
}

func FuzzReadBurstGPT(f *testing.F) {
	f.Add(burstHeader+"5,ChatGPT,472,18,490,Conversation log\n45,GPT-4,1087,0,1087,API log\n", int64(0), int64(0), 0.0, 0.0, uint16(0))
	f.Add("Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,a,1,ChatGPT,472,18,490,Conversation log\n", int64(0), int64(0), 0.0, 0.0, uint16(0))
	f.Add(burstHeader+"0,m,1,2,3,x\n1,m,1,2,3,x\n5000,m,1,2,3,x\n2,m,1,2,3,x\n3,m,1,2,3,x\n", int64(500), int64(3_600_000), 0.5, 2.0, uint16(100))
	// Copies of a rate scale, stretched by a tiny time scale past what a Duration holds.
	f.Add(burstHeader+"0,m,1,2,3,x\n0,m,1,2,3,x\n0,m,1,2,3,x\n", int64(0), int64(0), 1e-13, 8.0, uint16(1000))
	f.Fuzz(func(t *testing.T, in string, startMs, durMs int64, ts, rs float64, maxReq uint16) {
		checkRead(t, in, fuzzOptions(BurstGPT, startMs, durMs, ts, rs, maxReq))
	})
}

func FuzzReadMooncake(f *testing.F) {
	f.Add(`{"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48]}`+"\n", int64(0), int64(0), 0.0, 0.0, uint16(0))
	f.Add(`{"timestamp": 0, "input_length": 1, "output_length": 2}`+"\n"+`{"timestamp": 1500, "input_length": 1, "output_length": 2}`+"\n", int64(1000), int64(1000), 4.0, 0.5, uint16(3))
	f.Fuzz(func(t *testing.T, in string, startMs, durMs int64, ts, rs float64, maxReq uint16) {
		checkRead(t, in, fuzzOptions(Mooncake, startMs, durMs, ts, rs, maxReq))
	})
}

// fuzzOptions makes read options of fuzzed numbers: start and duration in milliseconds, any value (those
// overflowing a Duration wrap, which Read must take too), the scales as given, and a request bound always
// set, so a huge rate scale is refused instead of filling memory.
func fuzzOptions(f Format, startMs, durMs int64, ts, rs float64, maxReq uint16) Options {
	return Options{Format: f, Start: time.Duration(startMs) * time.Millisecond, Duration: time.Duration(durMs) * time.Millisecond,
		TimeScale: ts, RateScale: rs, MaxRequests: 1 + int(maxReq), Seed: uint64(maxReq)}
}

// checkRead: any input and options give an error or a sorted trace of non-negative requests, at most
// MaxRequests of them, inside the window and the span bound after the time scale (a rate scale's copies
// may land up to 10 ms of trace time after the last request), the first at 0 when the window starts at the
// trace's start and nothing is thinned; with SkipBad, every line is either kept or counted.
func checkRead(t *testing.T, in string, o Options) {
	for _, skip := range []bool{false, true} {
		o.SkipBad = skip
		tr, err := Read(strings.NewReader(in), "fuzz", o)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz") {
				t.Fatalf("error not naming the trace: %v", err)
			}
			continue
		}
		ts := o.TimeScale
		if ts <= 0 {
			ts = 1
		}
		jitter := 0.0
		if o.RateScale > 1 {
			jitter = float64(10*time.Millisecond) / ts
		}
		limit := float64(maxTraceSpan) + jitter
		if o.Duration > 0 {
			limit = min(limit, float64(o.Duration)/ts+jitter)
		}
		if len(tr.Requests) == 0 || len(tr.Requests) > o.MaxRequests {
			t.Fatalf("%d requests, bound %d", len(tr.Requests), o.MaxRequests)
		}
		for i, r := range tr.Requests {
			if r.Arrival < 0 || r.PromptTokens < 0 || r.OutputTokens < 0 || (i > 0 && r.Arrival < tr.Requests[i-1].Arrival) ||
				len(r.Blocks) > (r.PromptTokens+BlockTokens-1)/BlockTokens {
				t.Fatalf("bad request %d %+v", i, r)
			}
			if float64(r.Arrival) > limit+1 {
				t.Fatalf("request %d at %s, past the window or the span bound (%s) with %+v", i, r.Arrival, time.Duration(limit), o)
			}
		}
		if o.Start <= 0 && (o.RateScale == 0 || o.RateScale >= 1) && tr.Requests[0].Arrival != 0 {
			t.Fatalf("first request at %s, want 0", tr.Requests[0].Arrival)
		}
	}
	// Read for its lengths alone (--lengths), the same input gives an error naming it or lengths in bounds.
	tr, err := Read(strings.NewReader(in), "fuzz", Options{Format: o.Format, LengthsOnly: true, Seed: o.Seed, SkipBad: true})
	if err != nil {
		if !strings.HasPrefix(err.Error(), "fuzz") {
			t.Fatalf("lengths only: error not naming the trace: %v", err)
		}
		return
	}
	if len(tr.Requests) == 0 || len(tr.Requests) > maxLengths {
		t.Fatalf("lengths only: %d requests", len(tr.Requests))
	}
	for i, r := range tr.Requests {
		if r.PromptTokens < 0 || r.OutputTokens < 0 || r.PromptTokens > maxRequestTokens || r.OutputTokens > maxRequestTokens {
			t.Fatalf("lengths only: bad request %d %+v", i, r)
		}
	}
}

// Any folder and options give an error naming the folder, or a sorted synthesis of non-negative
// requests, at most MaxRequests of them, inside the window and the span bound after the time scale.
func FuzzReadServeGen(f *testing.F) {
	c0, err := os.ReadFile("testdata/servegen/chunk-0-trace.csv")
	if err != nil {
		f.Fatal(err)
	}
	ds := []byte(`{"0": {"input_tokens": "{224: 0.25, 300: 0.75}", "output_tokens": "{40: 0.5, 41: 0.5}"}, "21600": {"input_tokens": "{}", "output_tokens": "{}"}}`)
	f.Add(c0, []byte("0,0.01,1,,0,0\n600,2,1,Gamma,0.5,1\n"), ds, int64(0), int64(0), 0.0, 0.1, 0.0, uint16(2000), true)
	f.Add(c0, []byte("0,0.01,1,,0,0\n"), ds, int64(1800), int64(3600), 8.0, 0.5, 0.0, uint16(500), false)
	f.Add(c0, []byte("0,0.01,1,,0,0\n100000000,0.1,1,,0,0\n"), []byte(nil), int64(-3600), int64(0), 0.01, 0.0, 3.0, uint16(100), false)
	f.Fuzz(func(t *testing.T, c0, c1, ds []byte, startS, durS int64, ts, rs, mean float64, maxReq uint16, lengths bool) {
		fsys := fstest.MapFS{"chunk-0-trace.csv": {Data: c0}, "chunk-1-trace.csv": {Data: c1}}
		if len(ds) > 0 {
			fsys["chunk-1-dataset.json"] = &fstest.MapFile{Data: ds}
		}
		// A bound of at most 2,048 keeps a run to milliseconds: each window's draws are bounded by it.
		o := Options{Start: time.Duration(startS) * time.Second, Duration: time.Duration(durS) * time.Second, TimeScale: ts, RateScale: rs,
			MeanRate: mean, MaxRequests: 1 + int(maxReq%2048), Seed: uint64(maxReq), ServeGenLengths: lengths}
		tr, err := readServeGen(fsys, "f", []Request{{PromptTokens: 3, OutputTokens: 4}}, o)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f:") && !strings.HasPrefix(err.Error(), "f/") {
				t.Fatalf("error not naming the folder: %v", err)
			}
			return
		}
		scale := ts
		if scale <= 0 {
			scale = 1
		}
		limit := float64(maxTraceSpan)
		if o.Duration > 0 {
			limit = min(limit, float64(o.Duration)/scale)
		}
		if n := len(tr.Requests); n == 0 || n > o.MaxRequests || tr.Clients != 2 {
			t.Fatalf("%d requests (bound %d) of %d clients", n, o.MaxRequests, tr.Clients)
		}
		for i, r := range tr.Requests {
			if r.Arrival < 0 || (i > 0 && r.Arrival < tr.Requests[i-1].Arrival) || float64(r.Arrival) > limit+float64(time.Microsecond) {
				t.Fatalf("request %d at %s (window and span bound %s) with %+v", i, r.Arrival, time.Duration(limit), o)
			}
			if r.PromptTokens < 0 || r.OutputTokens < 0 || r.PromptTokens > maxRequestTokens || r.OutputTokens > maxRequestTokens {
				t.Fatalf("request %d: %+v", i, r)
			}
		}
	})
}

// The ServeGen reader synthesises the windows' rates: the request count is Σ rate × 600 s within a few
// standard deviations, the same for the same seed, with token lengths drawn from the given trace.
func TestServeGenSynthesis(t *testing.T) {
	lengths := []Request{{PromptTokens: 100, OutputTokens: 10}, {PromptTokens: 2000, OutputTokens: 50}}
	a, err := ReadServeGen("testdata/servegen", lengths, Options{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ReadServeGen("testdata/servegen", lengths, Options{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Requests) != len(b.Requests) || !same(a.Requests[len(a.Requests)/2], b.Requests[len(b.Requests)/2]) {
		t.Error("same seed, different requests")
	}
	want := 0.0
	for _, f := range []string{"testdata/servegen/chunk-0-trace.csv", "testdata/servegen/chunk-15-trace.csv"} {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		ws, err := ParseServeGenClient(fh, f)
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			want += w.Rate * ServeGenWindowSeconds
		}
	}
	// Bursty renewal processes vary more than Poisson: allow 15%.
	if got := float64(len(a.Requests)); math.Abs(got-want) > 0.15*want {
		t.Errorf("%v requests, want about %v", got, want)
	}
	for i, r := range a.Requests {
		if i > 0 && r.Arrival < a.Requests[i-1].Arrival || r.Arrival < 0 || r.Arrival >= 2*time.Hour {
			t.Fatalf("request %d arrives at %v", i, r.Arrival)
		}
		if r.PromptTokens != 100 && r.PromptTokens != 2000 {
			t.Fatalf("request %d has a length not from the length trace: %+v", i, r)
		}
	}
	// A window of the folder: requests only from it, re-based to its start.
	w, err := ReadServeGen("testdata/servegen", lengths, Options{Seed: 3, Start: time.Hour, Duration: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if last := w.Requests[len(w.Requests)-1].Arrival; last >= 30*time.Minute {
		t.Errorf("windowed trace ends at %v", last)
	}
}

// Each window of a bursty client draws its rate's worth of requests on average, spread evenly over the
// window: the first arrival comes from the stationary process's residual gap. Starting each window afresh
// front-loads a bursty client's short gaps: here it drew 3% too many at shape 0.06 and put 12% of them in
// the first tenth of their window. The shapes are m-large's (Gamma 0.0604 and Weibull 0.375 are rows of the
// testdata folder), the memoryless case and a mild Gamma.
func TestServeGenWindowsKeepTheirRate(t *testing.T) {
	pool := PoolLengths([]Request{{PromptTokens: 1, OutputTokens: 1}})
	for _, c := range []struct {
		family string
		shape  float64
	}{{"Gamma", 0.0604}, {"Weibull", 0.375}, {"Exponential", 0}, {"Gamma", 4}} {
		const windows, rate = 2000, 0.5
		ws := make([]ServeGenWindow, windows)
		for i := range ws {
			ws[i] = ServeGenWindow{Start: float64(i) * ServeGenWindowSeconds, Rate: rate, Family: c.family, P1: c.shape}
		}
		reqs, err := SynthesizeServeGen([][]ServeGenWindow{ws}, pool, 0, 0, 7, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := windows * rate * ServeGenWindowSeconds
		early := 0
		for _, r := range reqs {
			if math.Mod(r.Arrival.Seconds(), ServeGenWindowSeconds) < ServeGenWindowSeconds/10 {
				early++
			}
		}
		if got := float64(len(reqs)); math.Abs(got-want) > 0.03*want {
			t.Errorf("%s %v: %v requests over %d windows, want %v within 3%%", c.family, c.shape, got, windows, want)
		}
		if share := float64(early) / float64(len(reqs)); share < 0.09 || share > 0.11 {
			t.Errorf("%s %v: %.3f of the requests in the first tenth of their window, want 0.1", c.family, c.shape, share)
		}
	}
}

// Rate scaling happens in the synthesis: a rate scale k gives about k times the requests, and MeanRate
// picks the k that gives the asked mean after time scaling, on the embedded three days too.
func TestServeGenRateScaleAndMeanRate(t *testing.T) {
	lengths := []Request{{PromptTokens: 100, OutputTokens: 10}}
	full, err := ReadServeGen("testdata/servegen", lengths, Options{Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	quarter, err := ReadServeGen("testdata/servegen", lengths, Options{Seed: 5, RateScale: 0.25})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := float64(len(quarter.Requests)), 0.25*float64(len(full.Requests)); math.Abs(got-want) > 0.2*want {
		t.Errorf("rate scale 0.25: %v requests, want about %v", got, want)
	}
	if quarter.RateScale != 0.25 {
		t.Errorf("the trace reports rate scale %v", quarter.RateScale)
	}
	for _, c := range []struct {
		tr   *Trace
		mean float64
		span time.Duration
	}{
		{must(t)(ReadServeGen("testdata/servegen", lengths, Options{Seed: 5, MeanRate: 3, TimeScale: 4})), 3, 2 * time.Hour / 4},
		{must(t)(EmbeddedServeGen(lengths, Options{Seed: 5, MeanRate: 10, TimeScale: 8, Duration: 24 * time.Hour})), 10, 3 * time.Hour},
	} {
		if got := float64(len(c.tr.Requests)) / c.span.Seconds(); math.Abs(got-c.mean) > 0.15*c.mean {
			t.Errorf("mean rate %v requests/s, want %v (rate scale %v)", got, c.mean, c.tr.RateScale)
		}
		if last := c.tr.Requests[len(c.tr.Requests)-1].Arrival; last >= c.span || last < c.span*9/10 {
			t.Errorf("the time-scaled trace ends at %v, want just under %v", last, c.span)
		}
	}
	if _, err := ReadServeGen("testdata/servegen", lengths, Options{MeanRate: 1, Start: 100 * time.Hour}); err == nil || !strings.Contains(err.Error(), "testdata/servegen") {
		t.Errorf("a window with no load: error %v should name the folder", err)
	}
}

func must(t *testing.T) func(*Trace, error) *Trace {
	return func(tr *Trace, err error) *Trace {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
}

// A ServeGen folder is held to the replay's span bound as a trace file is, after the time scale: a folder
// starting years in is refused naming the window's file and line, not replayed for years, and slowed
// down it is refused, not wrapped to negative arrivals.
func TestServeGenSpanBound(t *testing.T) {
	pool := []Request{{PromptTokens: 1, OutputTokens: 1}}
	folder := func(rows string) fstest.MapFS {
		return fstest.MapFS{"chunk-0-trace.csv": {Data: []byte("0,0.01,1,,0,0\n" + rows)}, "chunk-1-trace.csv": {Data: []byte("0,0.01,1,,0,0\n")}}
	}
	for _, c := range []struct {
		rows string
		ts   float64
		want string
	}{
		{"100000000,0.1,1,,0,0\n", 0, "m/chunk-0-trace.csv:2: a request 2777"},
		{"100000000,0.1,1,,0,0\n", 0.01, "m/chunk-0-trace.csv:2: a request 277"},
		{"\n600,0,1,,0,0\n2000400,0.1,1,,0,0\n", 0.01, "m/chunk-0-trace.csv:4: a request 5556"},
	} {
		tr, err := readServeGen(folder(c.rows), "m", pool, Options{Seed: 1, TimeScale: c.ts})
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || !strings.Contains(err.Error(), "h into the replayed window, more than 744h0m0s") {
			n := 0
			if tr != nil {
				n = len(tr.Requests)
			}
			t.Errorf("%q at time scale %v: %d requests, err = %v; want %q", c.rows, c.ts, n, err, c.want)
		}
	}
	// At a time scale that brings it within the bound, the same folder replays.
	tr, err := readServeGen(folder("2000400,0.1,1,,0,0\n"), "m", pool, Options{Seed: 1})
	if err != nil || tr.Requests[len(tr.Requests)-1].Arrival < 2000400*time.Second {
		t.Errorf("23 days unscaled: %v", err)
	}
}

// A negative start is the folder's start, as Read takes it, and the window keeps its end: it does not
// become the whole folder.
func TestServeGenNegativeStart(t *testing.T) {
	var b strings.Builder
	for w := range 80 * 6 { // 80 hours
		fmt.Fprintf(&b, "%d,0.02,1,,0,0\n", w*ServeGenWindowSeconds)
	}
	fsys := fstest.MapFS{"chunk-0-trace.csv": {Data: []byte(b.String())}}
	pool := []Request{{PromptTokens: 1, OutputTokens: 1}}
	neg, err := readServeGen(fsys, "m", pool, Options{Seed: 2, Start: -73 * time.Hour, Duration: 72 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	zero, err := readServeGen(fsys, "m", pool, Options{Seed: 2, Duration: 72 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(neg.Requests, zero.Requests, same) {
		t.Errorf("start -73h: %d requests, last at %v; want [0, 72h)'s %d", len(neg.Requests), neg.Requests[len(neg.Requests)-1].Arrival, len(zero.Requests))
	}
	if _, err := SynthesizeServeGen(nil, PoolLengths(pool), -1, 0, 1, 1, 0); err == nil || !strings.Contains(err.Error(), "non-negative") {
		t.Errorf("a synthesis from -1 s: %v", err)
	}
}

// failOpenFS fails to open one file, as an unreadable file in a folder does.
type failOpenFS struct {
	fs.FS
	name string
}

func (f failOpenFS) Open(name string) (fs.File, error) {
	if name == f.name {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	return f.FS.Open(name)
}

// A file of the folder that cannot be opened is named with the folder.
func TestServeGenOpenErrorsNameTheFolder(t *testing.T) {
	fsys := fstest.MapFS{"chunk-0-trace.csv": {Data: []byte("0,1,1,,0,0\n")}, "chunk-0-dataset.json": {Data: []byte("{}")}}
	for _, name := range []string{"chunk-0-trace.csv", "chunk-0-dataset.json"} {
		_, err := readServeGen(failOpenFS{fsys, name}, "models/m-large", []Request{{}}, Options{ServeGenLengths: true})
		if err == nil || err.Error() != "models/m-large: open "+name+": permission denied" || !errors.Is(err, fs.ErrPermission) {
			t.Errorf("%s unreadable: %v", name, err)
		}
	}
}

func TestServeGenErrorsNameFileAndLine(t *testing.T) {
	for in, want := range map[string]string{
		"0,1,1,,0,0\n600,1,1,Lognormal,1,1\n": "c.csv:2: unknown inter-arrival family",
		"0,1,1,,0,0\n0,1,1,,0,0\n":            "c.csv:2: window start 0 does not follow 0",
		"0,1,1,,0,0\n599,1,1,,0,0\n":          "c.csv:2: window start 599 is within 600 s of the window at 0",
		"0,1,1,Gamma,0,5\n":                   "c.csv:1: Gamma shape 0",
		"0,1e9,1,,0,0\n":                      "c.csv:1: rate 1e+09",
		"0,1,1\n":                             "c.csv:1: want 6 columns",
		"0,NaN,1,,0,0\n":                      "c.csv:1: column 2",
	} {
		_, err := ParseServeGenClient(strings.NewReader(in), "c.csv")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", in, err, want)
		}
	}
	if _, err := ReadServeGen(t.TempDir(), []Request{{}}, Options{}); err == nil || !strings.Contains(err.Error(), "chunk-") {
		t.Errorf("empty folder: %v", err)
	}
}

// Any input gives windows that pass the checks, or an error naming the file and a line; long lines and
// huge rates are refused, so synthesis stays bounded.
func FuzzParseServeGenClient(f *testing.F) {
	f.Add([]byte("0,1.33,8.6,Weibull,0.375,0.397\n600,0,0,,0,0\n1200,0.15,4.07,Gamma,0.0604,103.65\n"))
	f.Add([]byte("0,1,1,Gamma,0.001,1\n"))
	f.Add([]byte(strings.Repeat("9", 5000)))
	f.Fuzz(func(t *testing.T, data []byte) {
		ws, err := ParseServeGenClient(bytes.NewReader(data), "f.csv")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.csv:") {
				t.Fatalf("error without file and line: %v", err)
			}
			return
		}
		total := 0.0
		for i, w := range ws {
			if w.Rate < 0 || w.Rate > maxServeGenRate || (i > 0 && w.Start < ws[i-1].Start+ServeGenWindowSeconds) {
				t.Fatalf("bad window accepted: %+v", w)
			}
			total += w.Rate * ServeGenWindowSeconds
		}
		if total > 2e5 { // synthesis is bounded by the limits; keep the fuzzer fast
			return
		}
		reqs, err := SynthesizeServeGen([][]ServeGenWindow{ws}, PoolLengths([]Request{{PromptTokens: 1, OutputTokens: 1}}), 0, 0, 1, 1, 0)
		if err != nil {
			return
		}
		for i := 1; i < len(reqs); i++ {
			if reqs[i].Arrival < reqs[i-1].Arrival {
				t.Fatal("unsorted synthesis")
			}
		}
	})
}

// A ServeGen synthesis is held to the replay's request bound, not only to its own 20 million.
// A folder's chunk files and the windows they keep in all are bounded, naming the folder, or the file
// and line that passes the bound; only windows in the replayed range count.
func TestServeGenFolderBounds(t *testing.T) {
	many := fstest.MapFS{}
	for i := range maxServeGenFiles + 1 {
		many[fmt.Sprintf("chunk-%d-trace.csv", i)] = &fstest.MapFile{Data: []byte("0,1,1,,0,0\n")}
	}
	if _, err := readServeGen(many, "f", []Request{{PromptTokens: 1, OutputTokens: 1}}, Options{}); err == nil || !strings.HasPrefix(err.Error(), "f: 10001 chunk-*-trace.csv files, more than 10000") {
		t.Errorf("10,001 chunk files: err = %v", err)
	}
	defer func(n int) { maxServeGenFolderWindows = n }(maxServeGenFolderWindows)
	maxServeGenFolderWindows = 20 // the folder has 2 × 12
	lengths := []Request{{PromptTokens: 100, OutputTokens: 10}}
	if _, err := ReadServeGen("testdata/servegen", lengths, Options{Seed: 1}); err == nil || !strings.HasPrefix(err.Error(), "testdata/servegen/chunk-15-trace.csv:9: more than 20 windows") {
		t.Errorf("24 windows, bound 20: err = %v, want it to name chunk-15-trace.csv:9", err)
	}
	if _, err := ReadServeGen("testdata/servegen", lengths, Options{Seed: 1, Start: 30 * time.Minute, Duration: time.Hour}); err != nil {
		t.Errorf("an hour's 14 windows, bound 20: %v", err)
	}
}

// Leaving out the windows outside the replayed range changes nothing: a read gives the requests and rate
// scale of a synthesis over every window of the folder.
func TestServeGenRangeKeepsTheSynthesis(t *testing.T) {
	lengths := []Request{{PromptTokens: 100, OutputTokens: 10}, {PromptTokens: 2000, OutputTokens: 50}}
	sub, err := fs.Sub(servegenMLarge, "servegen_m-large")
	if err != nil {
		t.Fatal(err)
	}
	folders := map[string]fs.FS{"testdata/servegen": os.DirFS("testdata/servegen"), "servegen_m-large": sub}
	for _, c := range []struct {
		dir string
		o   Options
	}{
		{"testdata/servegen", Options{Seed: 3}},
		{"testdata/servegen", Options{Seed: 3, Start: 25 * time.Minute, Duration: 37 * time.Minute}},
		{"testdata/servegen", Options{Seed: 4, Start: time.Hour, MeanRate: 2, TimeScale: 4}},
		{"testdata/servegen", Options{Seed: 4, Start: 9*time.Minute + 59*time.Second, Duration: 2 * time.Minute, RateScale: 3}},
		{"servegen_m-large", Options{Seed: 5, Start: 30 * time.Hour, Duration: 40 * time.Minute, MeanRate: 20, TimeScale: 8}},
		{"servegen_m-large", Options{Seed: 6, Start: 71*time.Hour + 50*time.Minute, RateScale: 0.01}},
	} {
		fsys := folders[c.dir]
		got, err := readServeGen(fsys, c.dir, lengths, c.o)
		if err != nil {
			t.Fatalf("%s %+v: %v", c.dir, c.o, err)
		}
		files, _ := fs.Glob(fsys, "chunk-*-trace.csv")
		sort.Strings(files)
		var clients [][]ServeGenWindow
		for _, f := range files {
			b, err := fs.ReadFile(fsys, f)
			if err != nil {
				t.Fatal(err)
			}
			ws, err := ParseServeGenClient(bytes.NewReader(b), f)
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, ws)
		}
		from, to := c.o.Start.Seconds(), math.Inf(1)
		if c.o.Duration > 0 {
			to = from + c.o.Duration.Seconds()
		}
		k := c.o.RateScale
		if k == 0 {
			k = 1
		}
		if c.o.MeanRate > 0 {
			if k, err = meanRateScale(clients, from, to, c.o.MeanRate, c.o.TimeScale); err != nil {
				t.Fatal(err)
			}
		}
		ts := max(c.o.TimeScale, 1)
		want, err := synthesizeServeGen(clients, PoolLengths(lengths), from, to, c.o.Seed, k, 0, ts)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			want[i].Arrival = time.Duration(float64(want[i].Arrival) / ts)
		}
		if got.RateScale != k || !slices.EqualFunc(got.Requests, want, func(a, b Request) bool {
			return a.Arrival == b.Arrival && a.PromptTokens == b.PromptTokens && a.OutputTokens == b.OutputTokens
		}) {
			t.Errorf("%s %+v: %d requests at rate scale %v, the whole folder's synthesis %d at %v", c.dir, c.o, len(got.Requests), got.RateScale, len(want), k)
		}
	}
}

func TestServeGenMaxRequests(t *testing.T) {
	ws := []ServeGenWindow{{Start: 0, Rate: 1, CV: 1, Family: "Exponential"}}
	pool := PoolLengths([]Request{{PromptTokens: 1, OutputTokens: 1}})
	if _, err := SynthesizeServeGen([][]ServeGenWindow{ws}, pool, 0, 0, 1, 1, 100); err == nil || !strings.Contains(err.Error(), "more than 100 requests") {
		t.Errorf("600 requests under a bound of 100: %v", err)
	}
	if reqs, err := SynthesizeServeGen([][]ServeGenWindow{ws}, pool, 0, 0, 1, 1, 1000); err != nil || len(reqs) < 400 {
		t.Errorf("about 600 requests under a bound of 1000: %d, %v", len(reqs), err)
	}
}

// Thickening follows the trace's own arrivals: every added request lands within 10 ms of a real arrival
// (no arrival invented in a quiet stretch), the count and every 5-minute rate scale by k, and the
// 10-second peak-to-mean ratio (burst shape) stays within 15% of the original's.
func TestRateScaleThickensTheArrivalProcess(t *testing.T) {
	orig, err := Embedded("code", Options{})
	if err != nil {
		t.Fatal(err)
	}
	const k = 4
	scaled, err := Embedded("code", Options{RateScale: k, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	o, s := orig.Requests, scaled.Requests
	if n := len(s); n < k*len(o)-len(o)/50 || n > k*len(o)+len(o)/50 {
		t.Errorf("%d requests, want about %d × %d", n, k, len(o))
	}
	j := 0
	for _, r := range s {
		for j+1 < len(o) && o[j+1].Arrival <= r.Arrival {
			j++
		}
		if d := r.Arrival - o[j].Arrival; d < 0 || d >= 10*time.Millisecond {
			t.Fatalf("a request at %s is %s after the nearest earlier real arrival (%s): invented in a gap", r.Arrival, d, o[j].Arrival)
		}
	}
	bins := func(reqs []Request, w time.Duration) []float64 {
		out := make([]float64, int(o[len(o)-1].Arrival/w)+1)
		for _, r := range reqs {
			if b := int(r.Arrival / w); b < len(out) {
				out[b]++
			}
		}
		return out
	}
	ob, sb := bins(o, 5*time.Minute), bins(s, 5*time.Minute)
	for b := range ob[:len(ob)-1] {
		if ratio := sb[b] / ob[b]; ratio < k*0.85 || ratio > k*1.15 {
			t.Errorf("5-minute bin %d: %g requests against %g, ratio %.2f, want about %d", b, sb[b], ob[b], ratio, k)
		}
	}
	peakToMean := func(b []float64) float64 {
		sum, peak := 0.0, 0.0
		for _, x := range b {
			sum += x
			peak = max(peak, x)
		}
		return peak / (sum / float64(len(b)))
	}
	po, ps := peakToMean(bins(o, 10*time.Second)), peakToMean(bins(s, 10*time.Second))
	if ps < 0.85*po || ps > 1.15*po {
		t.Errorf("10 s peak-to-mean %.2f scaled against %.2f original: burst shape not kept", ps, po)
	}
	t.Logf("10 s peak-to-mean: original %.2f, ×%d %.2f", po, k, ps)
}

// Copies made by a rate scale above 1 bring prefixes of their own: a copy holding its original's
// hash_ids would find them in the prefix cache, so --rate-scale 4 of a Mooncake trace added a quarter of
// the prefill it said. Copies of one copy number still share prefixes as their originals do.
func TestRateScaleCopiesHaveTheirOwnPrefixes(t *testing.T) {
	var reqs []Request
	for i := range 200 {
		// Pairs of requests share their first block, as a system prompt is shared.
		reqs = append(reqs, Request{Arrival: time.Duration(i) * time.Second, PromptTokens: 1024, Blocks: []uint64{uint64(i / 2), uint64(1000 + i)}})
	}
	const k = 4
	out := scaleRate(reqs, k, 1)
	if len(out) != k*len(reqs) {
		t.Fatalf("%d requests, want %d", len(out), k*len(reqs))
	}
	seen := map[[2]uint64]int{}
	ids := map[uint64]bool{}
	for _, r := range out {
		seen[[2]uint64{r.Blocks[0], r.Blocks[1]}]++
		ids[r.Blocks[0]], ids[r.Blocks[1]] = true, true
	}
	if len(seen) != len(out) {
		t.Errorf("%d distinct block lists among %d requests: copies share their original's prefix", len(seen), len(out))
	}
	// 100 shared first blocks and 200 own second blocks, once per copy number and once as the originals.
	if want := k * (100 + 200); len(ids) != want {
		t.Errorf("%d distinct hash_ids, want %d", len(ids), want)
	}
	a, b := copyBlocks([]uint64{7, 8}, 2), copyBlocks([]uint64{7, 9}, 2)
	if a[0] != b[0] || a[1] == b[1] || a[0] == 7 || a[0] == copyBlocks([]uint64{7}, 1)[0] {
		t.Errorf("copy 2 of [7 8] and [7 9] = %v, %v: want their shared block shared, and ids other than copy 1's and the originals'", a, b)
	}
	// The copies' hash_ids count toward the bound before they are made.
	defer func(n int) { maxTraceBlocks = n }(maxTraceBlocks)
	maxTraceBlocks = 1000
	if _, err := rescale("m.jsonl", reqs, Options{RateScale: k}); err == nil || !strings.Contains(err.Error(), "m.jsonl: about 1600 hash_ids to replay") {
		t.Errorf("err = %v, want the hash_ids bound named", err)
	}
}

// same compares requests field by field, blocks included.
func same(a, b Request) bool {
	return a.Arrival == b.Arrival && a.PromptTokens == b.PromptTokens && a.OutputTokens == b.OutputTokens && slices.Equal(a.Blocks, b.Blocks)
}

// Guessing a file's format reads its first line, and at most 64 KiB of it: a newline-free file is an
// unknown format, not its whole size in memory.
func TestGuessReadsAtMostTheFirstLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.csv")
	if err := os.WriteFile(path, bytes.Repeat([]byte("a"), 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(path, Options{}); err == nil || !strings.Contains(err.Error(), "x.csv") {
		t.Fatalf("a 1 MiB line: err = %v, want an error naming the file", err)
	}
}

// The error quoting an unrecognised first line stays short.
func TestGuessQuotesAShortPrefix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.csv")
	if err := os.WriteFile(path, bytes.Repeat([]byte("a"), 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ReadFile(path, Options{})
	if err == nil {
		t.Fatal("a 1 MiB line of no format gave no error")
	}
	if len(err.Error()) > 400 {
		t.Fatalf("error of %d bytes, want a short one naming the file", len(err.Error()))
	}
}

// Timestamps on an epoch clock are read relative to the first request, as Azure's dates are.
func TestEpochTimestamps(t *testing.T) {
	tr, err := Read(strings.NewReader(burstHeader+"1700000000,m,10,1,11,x\n1700000030.5,m,10,1,11,x\n"), "b", Options{Format: BurstGPT})
	if err != nil || len(tr.Requests) != 2 || tr.Requests[1].Arrival != 30500*time.Millisecond {
		t.Fatalf("BurstGPT on an epoch clock: %+v, %v", tr, err)
	}
	tr, err = Read(strings.NewReader(`{"timestamp": 1700000000000, "input_length": 10, "output_length": 1}`+"\n"+`{"timestamp": 1700000001000, "input_length": 10, "output_length": 1}`+"\n"), "m", Options{Format: Mooncake})
	if err != nil || len(tr.Requests) != 2 || tr.Requests[1].Arrival != time.Second {
		t.Fatalf("Mooncake on an epoch clock: %+v, %v", tr, err)
	}
}

// A window holds at most MaxRequests requests after --rate-scale (more may be read where thinning keeps
// fewer, fewer where copies multiply them), and thinning that keeps none is an error, not an empty trace.
func TestWindowBounds(t *testing.T) {
	in := burstHeader + "0,m,1,1,2,x\n1,m,1,1,2,x\n2,m,1,1,2,x\n"
	if _, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, MaxRequests: 2}); err == nil || !strings.Contains(err.Error(), "b:4: more than 2 requests") {
		t.Errorf("three requests over a bound of two: %v", err)
	}
	if tr, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, MaxRequests: 2, Duration: 2 * time.Second}); err != nil || len(tr.Requests) != 2 {
		t.Errorf("a window of two: %+v, %v", tr, err)
	}
	if tr, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT}); err != nil || len(tr.Requests) != 3 {
		t.Errorf("no bound: %+v, %v", tr, err)
	}
	// Copies are bounded before they are made: as read, and for a window already in memory.
	if _, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, MaxRequests: 4, RateScale: 2}); err == nil || !strings.Contains(err.Error(), "b:4: more than 2 requests in the window before --rate-scale 2 multiplies them") {
		t.Errorf("--rate-scale 2 past a bound of four: %v", err)
	}
	three := []Request{{Arrival: 0}, {Arrival: time.Second}, {Arrival: 2 * time.Second}}
	if _, err := shape("w", three, Options{MaxRequests: 4, RateScale: 1000}); err == nil || !strings.Contains(err.Error(), "about 3000 requests to replay") {
		t.Errorf("--rate-scale 1000 of a window in memory past a bound of four: %v", err)
	}
	if tr, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, MaxRequests: 6, RateScale: 2}); err != nil || len(tr.Requests) != 6 {
		t.Errorf("--rate-scale 2 of three under a bound of six: %+v, %v", tr, err)
	}
	if _, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, Start: time.Hour}); err == nil || !strings.Contains(err.Error(), "the trace's requests span [0, 2s]") {
		t.Errorf("a window past the trace's end: %v", err)
	}
	gap := burstHeader + "0,m,1,1,2,x\n20,m,1,1,2,x\n30,m,1,1,2,x\n"
	if _, err := Read(strings.NewReader(gap), "b", Options{Format: BurstGPT, Start: 10 * time.Second, Duration: 5 * time.Second}); err == nil || strings.Contains(err.Error(), "span") || !strings.Contains(err.Error(), "no requests in the window") {
		t.Errorf("a window in a gap of the trace: %v", err)
	}
	// Failed requests are counted where they fall in the window.
	failed := burstHeader + "0,m,1,0,1,x\n1,m,1,1,2,x\n2,m,1,0,1,x\n5,m,1,1,2,x\n6,m,1,0,1,x\n9,m,1,0,1,x\n"
	if tr, err := Read(strings.NewReader(failed), "b", Options{Format: BurstGPT, Start: 3 * time.Second, Duration: 5 * time.Second}); err != nil || len(tr.Requests) != 1 || tr.Failed != 1 {
		t.Errorf("one failed request in the window [3s, 8s) after the first request: %+v, %v", tr, err)
	}
	if tr, err := Read(strings.NewReader(failed), "b", Options{Format: BurstGPT}); err != nil || len(tr.Requests) != 2 || tr.Failed != 4 {
		t.Errorf("four failed requests in the whole trace: %+v, %v", tr, err)
	}
	six := in + "3,m,1,1,2,x\n4,m,1,1,2,x\n5,m,1,1,2,x\n"
	if _, err := Read(strings.NewReader(six), "b", Options{Format: BurstGPT, MaxRequests: 4, RateScale: 0.5, Seed: 1}); err != nil && strings.Contains(err.Error(), "in the window") {
		t.Errorf("six requests thinned by half under a bound of four were refused as read: %v", err)
	}
	// A rate scale past the bound is refused before anything is read: 1e300 overflowed the copies' size.
	for _, k := range []float64{1001, 1e300} {
		if _, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, RateScale: k}); err == nil || !strings.Contains(err.Error(), "is more than 1000") {
			t.Errorf("--rate-scale %g: %v", k, err)
		}
	}
	for _, k := range []float64{1e300, math.NaN(), -1} {
		if _, err := shape("w", three, Options{RateScale: k}); err == nil || !strings.Contains(err.Error(), "rate scale") {
			t.Errorf("a window in memory at rate scale %g: %v", k, err)
		}
	}
	// A window in memory reads a negative start as the trace's start, as Read does, and an end past the
	// longest duration as no end.
	if w := window(three, -time.Hour, 0); len(w) != 3 || w[0].Arrival != 0 {
		t.Errorf("a negative start: %+v, want the three requests as they are", w)
	}
	if w := window(three, time.Second, math.MaxInt64); len(w) != 2 || w[0].Arrival != 0 {
		t.Errorf("an end past the longest duration: %+v, want the two from 1s", w)
	}
	if _, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, RateScale: 1e-9}); err == nil || !strings.Contains(err.Error(), "kept none") {
		t.Errorf("--rate-scale keeping nothing: %v", err)
	}
}

// A trace lending its token lengths is read whole whatever its times, and sampled past a bound.
func TestLengthsOnly(t *testing.T) {
	// Out of order and past the replay's 31-day bound: neither matters for lengths.
	in := burstHeader + "9000000,m,10,1,11,x\n5,m,20,2,22,x\n6,m,30,0,30,x\n"
	if _, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT}); err == nil {
		t.Error("an unsorted trace was read as a replay")
	}
	tr, err := Read(strings.NewReader(in), "b", Options{Format: BurstGPT, LengthsOnly: true})
	if err != nil || len(tr.Requests) != 2 || tr.Requests[0].PromptTokens != 10 || tr.Requests[1].PromptTokens != 20 || tr.Failed != 1 {
		t.Fatalf("lengths of an unsorted long trace: %+v, %v", tr, err)
	}
	defer func(m int) { maxLengths = m }(maxLengths)
	maxLengths = 100
	var b strings.Builder
	b.WriteString(burstHeader)
	for i := range 10000 {
		fmt.Fprintf(&b, "%d,m,%d,1,1,x\n", i, i+1) // the prompt numbers the line
	}
	tr, err = Read(strings.NewReader(b.String()), "b", Options{Format: BurstGPT, LengthsOnly: true, Seed: 3})
	if err != nil || len(tr.Requests) != 100 {
		t.Fatalf("a sample of 100: %d requests, %v", len(tr.Requests), err)
	}
	// Every line has the same chance: the sample's mean line is near the middle, not within the first 100.
	sum := 0
	for _, r := range tr.Requests {
		sum += r.PromptTokens
	}
	if mean := float64(sum) / 100; mean < 3500 || mean > 6500 {
		t.Errorf("sampled lines average %.0f, want about 5000", mean)
	}
}

// Under SkipBad a stray line a century before the first can become the base; a line a century after it
// is then refused and counted, not wrapped to a time before the window and dropped unseen.
func TestSkipBadTimesFarApartAreCounted(t *testing.T) {
	in := "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-01-01 00:00:00,10,10\n1900-01-01 00:00:00,10,10\n" +
		"1900-01-01 00:00:01,10,10\n2200-01-01 00:00:00,10,10\n"
	tr, err := Read(strings.NewReader(in), "a.csv", Options{Format: Azure, SkipBad: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Requests) != 2 || tr.Skipped != 2 {
		t.Fatalf("%d requests kept, %d skipped (%q); want 2 and 2: every line kept or counted", len(tr.Requests), tr.Skipped, tr.FirstSkipped)
	}
	if !strings.HasPrefix(tr.FirstSkipped[1], "a.csv:5:") {
		t.Errorf("skipped %q, want line 5 among them", tr.FirstSkipped)
	}
}

// An Azure row centuries away from the rest costs its line only: measured from the first row, a stray
// first row saturated every later row's time to one instant.
func TestAzureStrayRowCostsItsLine(t *testing.T) {
	const head = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
	for _, stray := range []string{"9999-01-01 00:00:00", "0001-01-01 00:00:00", "1000-01-01 00:00:00"} {
		in := head + stray + ",1,1\n2023-11-16 18:00:00,1,1\n2023-11-16 18:00:01,1,1\n2023-11-16 18:00:05,1,1\n"
		tr, err := Read(strings.NewReader(in), "a.csv", Options{Format: Azure, SkipBad: true})
		if err != nil {
			t.Fatalf("%s: %v", stray, err)
		}
		var got []time.Duration
		for _, r := range tr.Requests {
			got = append(got, r.Arrival)
		}
		if want := []time.Duration{0, time.Second, 5 * time.Second}; !slices.Equal(got, want) || tr.Skipped != 1 || !strings.HasPrefix(tr.FirstSkipped[0], "a.csv:2:") {
			t.Errorf("%s first: arrivals %v, skipped %q; want %v and line 2 skipped", stray, got, tr.FirstSkipped, want)
		}
	}
}

// An error echoes at most a clipped piece of a field: lines may hold megabytes, and SkipBad keeps ten
// errors.
func TestErrorsClipWhatTheyEcho(t *testing.T) {
	long := strings.Repeat("\xff", 1<<20)
	for name, in := range map[string]string{
		"timestamp": long + ",1,1",
		"tokens":    "2023-01-01 00:00:00," + long + ",1",
	} {
		_, err := Read(strings.NewReader("TIMESTAMP,ContextTokens,GeneratedTokens\n"+in+"\n"), "a.csv", Options{Format: Azure})
		if err == nil || len(err.Error()) > 1000 {
			t.Errorf("%s: an error of %d bytes, want one under 1,000", name, len(fmt.Sprint(err)))
		}
		tr, err := Read(strings.NewReader("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-01-01 00:00:00,1,1\n"+in+"\n"), "a.csv", Options{Format: Azure, SkipBad: true})
		if err != nil || tr.Skipped != 1 || len(tr.FirstSkipped[0]) > 1000 {
			t.Errorf("%s, skipped: %v, %d skipped, first %d bytes", name, err, tr.Skipped, len(tr.FirstSkipped[0]))
		}
	}
	if _, err := Read(strings.NewReader(long+"\n"), "h.csv", Options{Format: Azure}); err == nil || len(err.Error()) > 1000 {
		t.Errorf("header: an error of %d bytes", len(fmt.Sprint(err)))
	}
	if _, err := parsePMF("{" + long + ": 0.5}"); err == nil || len(err.Error()) > 1000 {
		t.Errorf("dataset value: an error of %d bytes", len(fmt.Sprint(err)))
	}
}

// Arrivals drawn before the window are discarded and do not count against MaxRequests: they are bounded
// too. Windows one second apart all overlap a 1 ms span, and without the bound drew about 180 million
// arrivals to keep a handful.
func TestServeGenDrawsAreBounded(t *testing.T) {
	ws := make([]ServeGenWindow, 600)
	for i := range ws {
		ws[i] = ServeGenWindow{Start: float64(i + 1), Rate: 1000, CV: 1, Family: "Exponential"}
	}
	pool := PoolLengths([]Request{{PromptTokens: 1, OutputTokens: 1}})
	if _, err := SynthesizeServeGen([][]ServeGenWindow{ws}, pool, 600, 600.001, 1, 1, 1_000_000); err == nil || !strings.Contains(err.Error(), "arrivals drawn") {
		t.Errorf("600 overlapping windows of 1,000 requests/s: %v, want the draw bound", err)
	}
	// One such window is well inside it.
	if reqs, err := SynthesizeServeGen([][]ServeGenWindow{ws[:1]}, pool, 300, 301, 1, 1, 1_000_000); err != nil || len(reqs) < 800 || len(reqs) > 1200 {
		t.Errorf("one window, a second of it: %d requests, %v; want about 1,000", len(reqs), err)
	}
}

// A folder's dataset files keep a bounded number of distribution values in all.
func TestServeGenFolderValueBudget(t *testing.T) {
	lengths := []Request{{PromptTokens: 100, OutputTokens: 10}}
	if _, err := ReadServeGen("testdata/servegen", lengths, Options{Seed: 1, ServeGenLengths: true}); err != nil {
		t.Fatal(err)
	}
	defer func(n int) { maxServeGenFolderValues = n }(maxServeGenFolderValues)
	maxServeGenFolderValues = 10
	if _, err := ReadServeGen("testdata/servegen", lengths, Options{Seed: 1, ServeGenLengths: true}); err == nil ||
		!strings.HasPrefix(err.Error(), "testdata/servegen/chunk-0-dataset.json: more than 10 length-distribution values") {
		t.Errorf("bound 10: %v, want it to name chunk-0-dataset.json", err)
	}
	if _, err := ReadServeGen("testdata/servegen", lengths, Options{Seed: 1}); err != nil {
		t.Errorf("without the dataset lengths the bound does not apply: %v", err)
	}
}

// Lines each within maxLineGap of the last can walk centuries from the first: a time more than a
// Duration's range from it is refused naming its line, where it was saturated to MaxInt64 (every later
// request at that instant, and rate scaling panicked on the wrapped window).
func TestAzureTimesBeyondADurationAreRefused(t *testing.T) {
	var b strings.Builder
	b.WriteString("TIMESTAMP,ContextTokens,GeneratedTokens\n")
	start := time.Date(1686, 1, 1, 0, 0, 0, 0, time.UTC)
	for k := range 300 {
		fmt.Fprintf(&b, "%s,10,10\n", start.AddDate(k, 0, 0).Format("2006-01-02 15:04:05"))
	}
	_, err := Read(strings.NewReader(b.String()), "t.csv", Options{Format: Azure, TimeScale: 10000})
	if err == nil || !strings.Contains(err.Error(), "t.csv") || !strings.Contains(err.Error(), "from the first request's") {
		t.Fatalf("%v; want the line beyond a Duration's range refused", err)
	}
}

// A Mooncake line's bad number is not echoed whole (the JSON decoder quotes it, megabytes of it), and
// blank lines are counted as bad ones are, so an endless run of them ends.
func TestMooncakeErrorsAndBlankLinesAreBounded(t *testing.T) {
	line := `{"timestamp":0,"input_length":` + strings.Repeat("9", 4<<20-64) + `,"output_length":1}`
	if _, err := Read(strings.NewReader(line+"\n"), "m.jsonl", Options{Format: Mooncake}); err == nil || len(err.Error()) > 1000 || !strings.Contains(err.Error(), "m.jsonl") {
		t.Errorf("a 4 MiB number: an error of %d bytes; want one under 1,000 naming the file", len(fmt.Sprint(err)))
	}
	blank := strings.Repeat("\n", maxSkipped+1)
	if _, err := Read(strings.NewReader(`{"timestamp":0,"input_length":1,"output_length":1}`+"\n"+blank), "m.jsonl", Options{Format: Mooncake}); err == nil || !strings.Contains(err.Error(), "blank lines") {
		t.Errorf("a million blank lines: %v; want them counted", err)
	}
}

// A ServeGen trace file's blank lines count against its line bound: an endless run of them (a FIFO fed
// by `yes ”`) was read forever.
func TestServeGenBlankLinesAreCounted(t *testing.T) {
	budget := 1 << 30
	_, err := parseServeGenClient(strings.NewReader(strings.Repeat("\n", maxServeGenRows+1)), "chunk-1-trace.csv", nil, &budget)
	if err == nil || !strings.Contains(err.Error(), "chunk-1-trace.csv") || !strings.Contains(err.Error(), "more than") {
		t.Errorf("%d blank lines: %v; want them counted against the bound", maxServeGenRows+1, err)
	}
}
