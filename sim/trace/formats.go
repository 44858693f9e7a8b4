package trace

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Format names a trace file format.
type Format string

// The formats Read understands.
const (
	// Azure is the Azure LLM inference trace 2023 CSV: TIMESTAMP,ContextTokens,GeneratedTokens.
	Azure Format = "azure"
	// BurstGPT is the BurstGPT CSV: Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type,
	// or with Session ID and Elapsed time after Timestamp (Timestamp in seconds, from the trace start or an
	// epoch: times are made relative to the first request).
	BurstGPT Format = "burstgpt"
	// Mooncake is the Mooncake JSONL: one {"timestamp" (ms), "input_length", "output_length", "hash_ids"}
	// object per line.
	Mooncake Format = "mooncake"
)

// Options shape a trace as it is read.
type Options struct {
	Format Format // required for Read; ReadFile guesses from the extension and header when empty
	// SkipBad skips malformed lines and counts them instead of failing on the first one.
	SkipBad bool
	// Start and Duration window the trace (trace time, before scaling); Duration 0 means to the end.
	Start, Duration time.Duration
	// TimeScale > 0 divides every arrival time: 2 replays the trace twice as fast (all rates double).
	TimeScale float64
	// RateScale > 0 thins the arrival process (< 1: each request kept with that probability) or
	// thickens it (> 1: copies at the instants of nearby requests, see scaleRate), keeping the timeline:
	// the request rate scales, not time.
	RateScale float64
	// Seed makes RateScale's choices repeatable.
	Seed uint64
	// MeanRate, for ServeGen only, when > 0 replaces RateScale: every window's rate is scaled by the one
	// factor that makes the synthesised window's mean rate, after TimeScale, this many requests/s.
	MeanRate float64
	// ServeGenLengths, for ServeGen only, draws each client's token lengths from its chunk-<n>-dataset.json
	// distributions where the folder has one; other clients draw from the lengths trace.
	ServeGenLengths bool
	// MaxRequests > 0 bounds the requests of the replayed window, after RateScale: every run of every
	// policy's sweep holds its own copy of them (about 200 bytes each), so the Azure 2024 week read whole
	// (17-27 million) would need gigabytes per worker and hours per run. A trace read only for its token
	// lengths is bounded by LengthsOnly's sample instead. DefaultMaxRequests is the simulator's.
	MaxRequests int
	// LengthsOnly reads a trace for its token lengths alone (--lengths): its times are neither checked for
	// order nor against the replay's span, and a file of more than 1,000,000 requests is kept as a
	// seeded uniform sample of that many, so any trace may lend its lengths in bounded memory.
	LengthsOnly bool
}

// maxLengths is how many requests a LengthsOnly read keeps: far more than a length distribution needs.
var maxLengths = 1_000_000

// DefaultMaxRequests is the simulator's bound on a replayed window's requests (Options.MaxRequests).
const DefaultMaxRequests = 5_000_000

// maxTraceBlocks bounds the hash_ids (8 bytes each) one trace's kept requests hold: a Mooncake line may
// carry up to about 19,500, so MaxRequests alone would allow tens of gigabytes; the released Mooncake traces
// hold well under a million. A variable so a test can lower it.
var maxTraceBlocks = 50_000_000

// Trace is a read trace.
type Trace struct {
	Requests []Request
	// Skipped counts malformed lines left out under SkipBad; FirstSkipped names up to 10 of them.
	Skipped      int
	FirstSkipped []string
	// Failed counts requests the trace marks as failed, left out: BurstGPT's rows with 0 response tokens
	// (its files "with fails"), which replayed as 1-token requests would meet their SLOs for nothing.
	Failed int
	// RateScale is the rate scale a ServeGen synthesis used (chosen by Options.MeanRate, or given).
	RateScale float64
	// Clients is a ServeGen synthesis's client count; PoolLengthClients counts those whose token lengths
	// came from the lengths trace (all of them, unless Options.ServeGenLengths found their dataset files).
	Clients, PoolLengthClients int
}

// checkScales refuses a negative or non-finite time or rate scale (0 means unscaled); name is the trace.
func (o Options) checkScales(name string) error {
	if o.TimeScale < 0 || o.RateScale < 0 || math.IsNaN(o.TimeScale) || math.IsNaN(o.RateScale) || math.IsInf(o.TimeScale, 0) || math.IsInf(o.RateScale, 0) {
		return fmt.Errorf("%s: time scale %g and rate scale %g must be positive numbers", name, o.TimeScale, o.RateScale)
	}
	if o.RateScale > MaxRateScale {
		// The copies are allocated before any bound on requests is met: 1e300 overflowed the slice's size.
		return fmt.Errorf("%s: rate scale %g is more than %d", name, o.RateScale, MaxRateScale)
	}
	return nil
}

// maxSkipped bounds the unreadable lines a read passes over (under SkipBad, or after the window's end
// until a readable line): a file of another format, or an endless one (/dev/urandom), is refused instead
// of read for good.
const maxSkipped = 1_000_000

// maxLines bounds the lines a read takes in, kept or not: lines read for their lengths alone, lines before
// the window's start and failed requests are each valid and kept by none of the other bounds, so an
// endless stream of them (a pipe fed by `yes`) was read for good. The largest public traces hold tens of
// millions. A variable so that a test can lower it.
var maxLines = 200_000_000

// maxBurstGPTColumns bounds a BurstGPT header's columns, each a map entry and a field of every row.
const maxBurstGPTColumns = 64

// MaxRateScale bounds Options.RateScale: each request is copied that many times.
const MaxRateScale = 1000

// lineError is a malformed line: the file and line number, and why.
func lineError(name string, line int, format string, a ...any) error {
	return fmt.Errorf("%s:%d: %w", name, line, fmt.Errorf(format, a...))
}

// Read reads a trace in o.Format from r (name is used in errors), then windows and scales it.
// Timestamps must not go backwards; a malformed line, an unsorted timestamp or a missing column is an
// error naming the file and line, or with SkipBad is skipped and counted.
func Read(r io.Reader, name string, o Options) (*Trace, error) {
	if err := o.checkScales(name); err != nil {
		return nil, err
	}
	var parse func(line int, text string) (arrival time.Duration, in, out int, failed bool, err error)
	var blocks []uint64 // set by a parser whose format has prefix-block hashes
	var header func(text string) error
	switch o.Format {
	case Azure:
		header = func(text string) error {
			if text != "TIMESTAMP,ContextTokens,GeneratedTokens" {
				return fmt.Errorf("header is %q, want TIMESTAMP,ContextTokens,GeneratedTokens", clip(text))
			}
			return nil
		}
		parse = func(line int, text string) (time.Duration, int, int, bool, error) {
			// At most one split past the columns: a long line of commas would otherwise allocate 16 bytes a comma.
			f := strings.SplitN(text, ",", 4)
			if len(f) != 3 {
				return 0, 0, 0, false, fmt.Errorf("want 3 columns, got %s", columnCount(text, len(f), 3))
			}
			ts, err := parseAzureTime(f[0])
			if err != nil {
				return 0, 0, 0, false, fmt.Errorf("bad TIMESTAMP %q", clip(f[0]))
			}
			// Times are read from the Unix epoch, within the bound of the other formats' raw times: measured
			// from the first row, a stray row centuries away saturated time.Sub, and every later row then
			// read as arriving at one instant.
			if ts.Before(azureEarliest) || ts.After(azureLatest) {
				return 0, 0, 0, false, fmt.Errorf("bad TIMESTAMP %q (years %d to %d)", clip(f[0]), azureEarliest.Year()+1, azureLatest.Year()-1)
			}
			in, out, err := tokens(f[1], f[2])
			if err != nil {
				return 0, 0, 0, false, err
			}
			return ts.Sub(time.Unix(0, 0)), in, out, false, nil
		}
	case BurstGPT:
		// Columns are found by name: the first releases write six (Timestamp, Model, Request tokens,
		// Response tokens, Total tokens, Log Type), later ones add Session ID and Elapsed time after Timestamp.
		var ts, req, resp, ncols int
		header = func(text string) error {
			if n := strings.Count(text, ",") + 1; n > maxBurstGPTColumns {
				return fmt.Errorf("header has %d columns, more than %d (BurstGPT's have 6 or 8)", n, maxBurstGPTColumns)
			}
			cols := strings.Split(text, ",")
			at := map[string]int{}
			for i, c := range cols {
				at[strings.TrimSpace(c)] = i
			}
			var missing []string
			col := func(name string) int {
				i, ok := at[name]
				if !ok {
					missing = append(missing, name)
				}
				return i
			}
			ts, req, resp = col("Timestamp"), col("Request tokens"), col("Response tokens")
			if len(missing) > 0 {
				return fmt.Errorf("header %q lacks %s (BurstGPT's columns: Timestamp, Model, Request tokens, Response tokens, Total tokens, Log Type)", clip(text), strings.Join(missing, ", "))
			}
			ncols = len(cols)
			return nil
		}
		parse = func(line int, text string) (time.Duration, int, int, bool, error) {
			// As many columns as the header, none quoted: a row with one more (a comma in a field) read the
			// columns after it one place off, as other token counts.
			if strings.IndexByte(text, '"') >= 0 {
				return 0, 0, 0, false, fmt.Errorf("quoted fields are not read (BurstGPT writes none)")
			}
			f := strings.SplitN(text, ",", ncols+1)
			if len(f) != ncols {
				return 0, 0, 0, false, fmt.Errorf("want %d columns as the header has, got %s", ncols, columnCount(text, len(f), ncols))
			}
			sec, err := strconv.ParseFloat(strings.TrimSpace(f[ts]), 64)
			if err != nil || sec < 0 || math.IsInf(sec, 0) || math.IsNaN(sec) || sec > maxTimestampSeconds {
				return 0, 0, 0, false, fmt.Errorf("bad Timestamp %q (seconds, from the trace start or an epoch)", clip(f[ts]))
			}
			in, out, err := tokens(f[req], f[resp])
			if err != nil {
				return 0, 0, 0, false, err
			}
			// BurstGPT writes a failed request with 0 response tokens (its README).
			return time.Duration(sec * float64(time.Second)), in, out, out == 0, nil
		}
	case Mooncake:
		parse = func(line int, text string) (time.Duration, int, int, bool, error) {
			var rec struct {
				Timestamp    *float64 `json:"timestamp"`
				InputLength  *int     `json:"input_length"`
				OutputLength *int     `json:"output_length"`
				HashIDs      []uint64 `json:"hash_ids"`
			}
			if err := json.Unmarshal([]byte(text), &rec); err != nil {
				// The decoder's error quotes a bad number whole, megabytes of it on a hostile line.
				return 0, 0, 0, false, fmt.Errorf("not a JSON object of a Mooncake record (a number timestamp, whole-number lengths and hash_ids): %s", clip(err.Error()))
			}
			switch {
			case rec.Timestamp == nil:
				return 0, 0, 0, false, fmt.Errorf("missing timestamp")
			case rec.InputLength == nil || rec.OutputLength == nil:
				return 0, 0, 0, false, fmt.Errorf("missing input_length or output_length")
			case *rec.Timestamp < 0 || *rec.Timestamp > maxTimestampSeconds*1e3 || math.IsNaN(*rec.Timestamp):
				return 0, 0, 0, false, fmt.Errorf("bad timestamp %v (milliseconds, from the trace start or an epoch)", *rec.Timestamp)
			case *rec.InputLength < 0 || *rec.OutputLength < 0 || *rec.InputLength > maxRequestTokens || *rec.OutputLength > maxRequestTokens:
				return 0, 0, 0, false, fmt.Errorf("token counts must be in 0..%d, got %d, %d", maxRequestTokens, *rec.InputLength, *rec.OutputLength)
			case len(rec.HashIDs) > (*rec.InputLength+BlockTokens-1)/BlockTokens:
				return 0, 0, 0, false, fmt.Errorf("%d hash_ids for %d input tokens (at most one per %d-token block)", len(rec.HashIDs), *rec.InputLength, BlockTokens)
			}
			blocks = rec.HashIDs
			return time.Duration(*rec.Timestamp * float64(time.Millisecond)), *rec.InputLength, *rec.OutputLength, false, nil
		}
	default:
		return nil, fmt.Errorf("%s: unknown trace format %q (want azure, burstgpt or mooncake)", name, o.Format)
	}

	t := &Trace{}
	// The window is cut as lines are read, so a week-long trace costs memory for the window only, and
	// reading stops at the window's end (the trace is sorted).
	var base time.Duration
	start := max(o.Start, 0)
	// The end saturates: a start and duration summing past what a Duration holds must not wrap to an end
	// before the start.
	hasEnd, end := o.Duration > 0, time.Duration(math.MaxInt64)
	if hasEnd && o.Duration < math.MaxInt64-start {
		end = start + o.Duration
	}
	inWindow := func(rel time.Duration) bool { return rel >= start && (!hasEnd || rel < end) }
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20) // Mooncake lines carry hash_ids lists
	line := 0
	var prev time.Duration
	prevLine := 0
	first := true
	ended := false // reading stopped at the window's end
	// stopping holds the first line past the window's end until the next line's time shows it in order, so a
	// single stray future timestamp is refused as unsorted, as it is without a window, rather than ending
	// the read early.
	stopping, stopAt, stopLine := false, time.Duration(0), 0
	kept, sample := 0, rand.New(rand.NewPCG(o.Seed, 0x6c656e67)) // for LengthsOnly
	// skippedAt are the lines FirstSkipped names.
	skippedAt := make([]int, 0, 10)
	// unread counts the unreadable lines after the stopping line, and unreadAt holds the first 10 of them:
	// no later one can be among the first 10 FirstSkipped names.
	type skipped struct {
		line int
		err  error
	}
	unread, unreadAt := 0, make([]skipped, 0, 10)
	skip := func(line int, err error) {
		t.Skipped++
		// The first 10 by line, as a line judged by the one after it is skipped after that one.
		i := len(skippedAt)
		for i > 0 && skippedAt[i-1] > line {
			i--
		}
		if i >= 10 {
			return
		}
		if len(skippedAt) == 10 {
			skippedAt, t.FirstSkipped = skippedAt[:9], t.FirstSkipped[:9]
		}
		skippedAt = slices.Insert(skippedAt, i, line)
		t.FirstSkipped = slices.Insert(t.FirstSkipped, i, lineError(name, line, "%w", err).Error())
	}
	// Under SkipBad an out-of-order line that follows the accepted line before prev (pprev) is held, as
	// stopping holds a line past the window's end: either it or prev, which jumped forward, is the stray
	// one, and the next readable line tells which. Otherwise a single stray future timestamp would leave
	// every later line out of order and skipped.
	var pprev time.Duration
	pprevLine, havePP := 0, false // havePP: prev is not the first accepted line
	prevKept := false             // prev's request is the last of t.Requests
	blocksKept := 0               // hash_ids held by t.Requests
	type heldLine struct {
		at            time.Duration
		line, in, out int
		blocks        []uint64
	}
	var held heldLine
	holding := false
	heldJump := false // the held line is more than maxLineGap after the first line, not before prev
	// take reads a parsed, unfailed line: it checks its order and span, holds it when it or prev may be
	// the stray one, and keeps its request when it is in the window. An error ends the read.
	take := func(line int, at time.Duration, in, out int, blocks []uint64) error {
		var err error
		if !first && at < prev {
			if o.SkipBad && !holding && (!havePP || at >= pprev) {
				held, holding = heldLine{at, line, in, out, blocks}, true
				return nil
			}
			err = fmt.Errorf("timestamp %s is before line %d's %s (traces must be sorted)", at, prevLine, prev)
		}
		// A jump of more than maxLineGap from the line before is a stray time wherever the window lies:
		// after a stray first line every later line would be past the span, or past the window's end.
		if err == nil && !first && at > prev && since(at, prev) > maxLineGap {
			if o.SkipBad && !holding && !havePP {
				held, holding, heldJump = heldLine{at, line, in, out, blocks}, true, true
				return nil
			}
			err = fmt.Errorf("timestamp %s is more than %s after line %d's %s (a stray timestamp?)", at, maxLineGap, prevLine, prev)
		}
		// Lines each within maxLineGap of the last can still walk centuries from the first: a time that far
		// from it does not fit a Duration, and saturated it put requests at one instant, MaxInt64.
		if err == nil && !first && overflows(at, base) {
			err = fmt.Errorf("timestamp %s is more than %s from the first request's %s", at, time.Duration(math.MaxInt64).Truncate(time.Hour), base)
		}
		if rel := since(at, base); err == nil && !first && inWindow(rel) {
			err = checkSpan(rel-start, o.TimeScale)
		}
		if err != nil {
			if !o.SkipBad {
				return lineError(name, line, "%w", err)
			}
			skip(line, err)
			return nil
		}
		if first {
			base = at // times are relative to the first request
		}
		rel := since(at, base)
		if hasEnd && rel >= end {
			stopping, stopAt, stopLine = true, at, line
			return nil
		}
		pprev, pprevLine, havePP = prev, prevLine, !first
		first, prev, prevLine, prevKept = false, at, line, false
		if rel < start {
			return nil
		}
		if c := readCap(o); c > 0 && len(t.Requests) >= c {
			scaled := ""
			if o.RateScale > 1 {
				scaled = fmt.Sprintf(" before --rate-scale %g multiplies them", o.RateScale)
			}
			return lineError(name, line, "more than %d requests in the window%s (a week-long trace read whole?): pick a window with --start and --duration", c, scaled)
		}
		if blocksKept += len(blocks); blocksKept > maxTraceBlocks {
			return lineError(name, line, "more than %d hash_ids in the window (%d requests so far): pick a window with --start and --duration", maxTraceBlocks, len(t.Requests))
		}
		t.Requests = append(t.Requests, Request{Arrival: rel - start, PromptTokens: in, OutputTokens: out, Blocks: blocks})
		prevKept = true
		return nil
	}
	// release judges the held line by the readable line after it, at: at or after prev, prev is in order
	// and the held line is the stray one; before prev, prev is, and the held line is read in its place.
	release := func(line int, at time.Duration) error {
		holding = false
		if heldJump {
			// The held line jumped past the span from the first line: if the next line follows the held
			// one, the first line was the stray one.
			heldJump = false
			if at < held.at {
				skip(held.line, fmt.Errorf("timestamp %s is more than %s after line %d's %s and line %d's %s", held.at, maxLineGap, prevLine, prev, line, at))
				return nil
			}
			skip(prevLine, fmt.Errorf("timestamp %s is more than %s before line %d's %s and line %d's %s", prev, maxLineGap, held.line, held.at, line, at))
			if prevKept {
				blocksKept -= len(t.Requests[len(t.Requests)-1].Blocks)
				t.Requests = t.Requests[:len(t.Requests)-1]
			}
			first, prevKept = true, false
			return take(held.line, held.at, held.in, held.out, held.blocks)
		}
		if at >= prev {
			skip(held.line, fmt.Errorf("timestamp %s is before line %d's %s (traces must be sorted)", held.at, prevLine, prev))
			return nil
		}
		skip(prevLine, fmt.Errorf("timestamp %s is after line %d's %s and line %d's %s (traces must be sorted)", prev, held.line, held.at, line, at))
		if prevKept {
			blocksKept -= len(t.Requests[len(t.Requests)-1].Blocks)
			t.Requests = t.Requests[:len(t.Requests)-1]
		}
		prev, prevLine, first, havePP, prevKept = pprev, pprevLine, !havePP, false, false
		// In order after pprev (or first), inside the span and the window's end as prev was: it is kept.
		return take(held.line, held.at, held.in, held.out, held.blocks)
	}
	blank := 0
	for sc.Scan() {
		if line++; line > maxLines {
			return nil, fmt.Errorf("%s: more than %d lines: an endless stream? (the largest public traces hold tens of millions)", name, maxLines)
		}
		text := strings.TrimSpace(sc.Text())
		if line == 1 {
			text = strings.TrimPrefix(text, "\ufeff") // a byte-order mark, as spreadsheet tools write
			if header != nil {
				if err := header(text); err != nil {
					return nil, lineError(name, 1, "%w", err)
				}
				continue
			}
		}
		if text == "" {
			// Counted, so that an endless run of them (`yes ''` on a pipe) ends as any stream of bad lines.
			if blank++; blank > maxSkipped {
				return nil, lineError(name, line, "more than %d blank lines", maxSkipped)
			}
			continue
		}
		blocks = nil
		at, in, out, failed, err := parse(line, text)
		if stopping {
			if err != nil {
				// Unreadable, which says nothing of order: the next readable line tells whether the window
				// has ended; if not, this line was in it and is skipped then.
				if unread++; len(unreadAt) < cap(unreadAt) {
					unreadAt = append(unreadAt, skipped{line, err})
				}
				if t.Skipped+unread > maxSkipped {
					return nil, fmt.Errorf("%s: more than %d unreadable lines: is it a %s trace?", name, maxSkipped, o.Format)
				}
				continue
			}
			if at >= stopAt {
				// In order: the window has ended.
				ended = true
				break
			}
			if !o.SkipBad {
				return nil, lineError(name, line, "timestamp %s is before line %d's %s (traces must be sorted)", at, stopLine, stopAt)
			}
			// The stopping line is the stray one: it is skipped, as are the unreadable lines after it, and this
			// line is read as any other.
			skip(stopLine, fmt.Errorf("timestamp %s is after line %d's %s (traces must be sorted)", stopAt, line, at))
			for _, u := range unreadAt {
				skip(u.line, u.err)
			}
			t.Skipped += unread - len(unreadAt)
			stopping, unread, unreadAt = false, 0, unreadAt[:0]
		}
		if err == nil && failed {
			// Counted where it falls in the window (those before the first request, at its start); its
			// time is not the trace's, which starts at its first request.
			if rel := at - base; o.LengthsOnly || (first && start == 0) || (!first && inWindow(rel)) {
				t.Failed++
			}
			continue
		}
		if err == nil && o.LengthsOnly {
			if len(t.Requests) < maxLengths {
				t.Requests = append(t.Requests, Request{PromptTokens: in, OutputTokens: out})
			} else if j := sample.IntN(kept + 1); j < maxLengths {
				// Reservoir sampling: every line read so far is kept with the same chance.
				t.Requests[j] = Request{PromptTokens: in, OutputTokens: out}
			}
			kept++
			first = false
			continue
		}
		if err != nil {
			// An unreadable line says nothing of order: a held line waits for the next readable one.
			if !o.SkipBad {
				return nil, lineError(name, line, "%w", err)
			}
			if skip(line, err); t.Skipped > maxSkipped {
				return nil, fmt.Errorf("%s: more than %d unreadable lines: is it a %s trace?", name, maxSkipped, o.Format)
			}
			continue
		}
		if holding {
			if err := release(line, at); err != nil {
				return nil, err
			}
		}
		if err := take(line, at, in, out, blocks); err != nil {
			return nil, err
		}
		blocks = nil
	}
	// A line too long to read after the window's end says nothing of the window, as a malformed one does not;
	// a failed read does.
	if err := sc.Err(); err != nil && !(stopping && errors.Is(err, bufio.ErrTooLong)) {
		return nil, lineError(name, line+1, "%w", err)
	}
	if holding {
		// No line after it: prev stands, as a line past the window's end stands at the end of the file.
		if heldJump {
			skip(held.line, fmt.Errorf("timestamp %s is more than %s after line %d's %s (a stray timestamp?)", held.at, maxLineGap, prevLine, prev))
		} else {
			skip(held.line, fmt.Errorf("timestamp %s is before line %d's %s (traces must be sorted)", held.at, prevLine, prev))
		}
	}
	ended = ended || stopping
	if first { // no line held a request
		return nil, fmt.Errorf("%s: no requests (%d lines skipped, %d failed requests left out)", name, t.Skipped, t.Failed)
	}
	if len(t.Requests) == 0 {
		if ended {
			return nil, fmt.Errorf("%s: no requests in the window [%s, +%s)", name, o.Start, o.Duration)
		}
		return nil, fmt.Errorf("%s: no requests in the window [%s, +%s): the trace's requests span [0, %s]", name, o.Start, o.Duration, prev-base)
	}
	reqs, err := rescale(name, t.Requests, o)
	if err != nil {
		return nil, err
	}
	t.Requests = reqs
	return t, nil
}

// shape applies o's window, rate scale and time scale to requests whose times start at 0.
func shape(name string, reqs []Request, o Options) ([]Request, error) {
	if err := o.checkScales(name); err != nil {
		return nil, err
	}
	return rescale(name, window(reqs, o.Start, o.Duration), o)
}

// readCap is how many requests of a window may be read before RateScale: MaxRequests, more where
// thinning will keep fewer (at most four times as many, as reading costs memory too), and fewer where
// copies multiply them, so the bound holds before the copies are made.
func readCap(o Options) int {
	if o.MaxRequests <= 0 {
		return 0
	}
	if o.RateScale > 0 && o.RateScale < 1 {
		return int(min(float64(o.MaxRequests)/o.RateScale, 4*float64(o.MaxRequests)))
	}
	if o.RateScale > 1 {
		return max(1, int(float64(o.MaxRequests)/o.RateScale))
	}
	return o.MaxRequests
}

// maxTimestampSeconds bounds a trace's raw timestamps: times are made relative to the first request (so a
// Unix-epoch clock is fine) and the span is checked after, but a raw value must still fit a Duration.
const maxTimestampSeconds = 9e9

// azureEarliest and azureLatest bound an Azure TIMESTAMP to maxTimestampSeconds either side of the Unix
// epoch (about 1685 to 2255).
var (
	azureEarliest = time.Unix(-maxTimestampSeconds, 0)
	azureLatest   = time.Unix(maxTimestampSeconds, 0)
)

// rescale applies o's rate scale and time scale to requests already cut to o's window.
func rescale(name string, reqs []Request, o Options) ([]Request, error) {
	if len(reqs) == 0 {
		return nil, fmt.Errorf("%s: no requests in the window [%s, +%s)", name, o.Start, o.Duration)
	}
	n := len(reqs)
	if o.MaxRequests > 0 && o.RateScale > 1 && float64(n)*o.RateScale > float64(o.MaxRequests) {
		// Refused before the copies are made: --rate-scale 1000 of a day would need gigabytes first.
		return nil, fmt.Errorf("%s: about %.0f requests to replay (--rate-scale %g of %d), more than %d: pick a shorter window with --start and --duration", name, float64(n)*o.RateScale, o.RateScale, n, o.MaxRequests)
	}
	if o.RateScale > 1 {
		// Copies get hash_ids of their own (scaleRate), so they count toward the bound as the originals do.
		blocks := 0
		for _, r := range reqs {
			blocks += len(r.Blocks)
		}
		if float64(blocks)*o.RateScale > float64(maxTraceBlocks) {
			return nil, fmt.Errorf("%s: about %.0f hash_ids to replay (--rate-scale %g of %d), more than %d: pick a shorter window with --start and --duration", name, float64(blocks)*o.RateScale, o.RateScale, blocks, maxTraceBlocks)
		}
	}
	if reqs = scaleRate(reqs, o.RateScale, o.Seed); len(reqs) == 0 {
		return nil, fmt.Errorf("%s: --rate-scale %g kept none of the window's %d requests (seed %d)", name, o.RateScale, n, o.Seed)
	}
	if o.MaxRequests > 0 && len(reqs) > o.MaxRequests {
		return nil, fmt.Errorf("%s: %d requests to replay (--rate-scale %g of %d), more than %d: pick a shorter window with --start and --duration", name, len(reqs), o.RateScale, n, o.MaxRequests)
	}
	if o.TimeScale > 0 && o.TimeScale != 1 {
		for i := range reqs {
			// Checked in floats: a rate scale's copies land up to 10 ms past the last request, which a tiny
			// time scale could stretch past what a Duration holds.
			a := float64(reqs[i].Arrival) / o.TimeScale
			if a >= math.MaxInt64 {
				return nil, fmt.Errorf("%s: %w", name, checkSpan(reqs[i].Arrival, o.TimeScale))
			}
			reqs[i].Arrival = time.Duration(a)
		}
	}
	return reqs, nil
}

// maxRequestTokens bounds the prompt or output tokens of one trace line, or of one value of a ServeGen
// length distribution (and the sum of a ServeGen prompt's draws): ten times the longest context of
// today's models, and small enough that sizing and latency arithmetic cannot overflow.
const maxRequestTokens = 10_000_000

// MaxRequestTokens is maxRequestTokens for other packages: the longest prompt a hardware profile's derived
// times are checked for.
const MaxRequestTokens = maxRequestTokens

// maxTraceSpan bounds how far into the replayed window (after --time-scale) a request may come: the
// simulator steps every second of it, so a stray timestamp years out would run for days. Longer traces
// (BurstGPT's release spans about four months) are replayed a window at a time.
const maxTraceSpan = 31 * 24 * time.Hour

// maxLineGap bounds the time between two lines of a trace: a longer pause is a stray timestamp, not
// load (a trace longer than maxTraceSpan is replayed a window at a time, but none pauses for a year).
const maxLineGap = 366 * 24 * time.Hour

// checkSpan refuses a request at offset d into the window that replays more than maxTraceSpan in.
func checkSpan(d time.Duration, timeScale float64) error {
	// In floats: a stray timestamp slowed down (--time-scale below 1) can overflow a Duration.
	return checkSpanNanos(float64(d), timeScale)
}

// checkSpanNanos is checkSpan for an offset of span nanoseconds, which need not fit a Duration.
func checkSpanNanos(span, timeScale float64) error {
	if timeScale > 0 {
		span /= timeScale
	}
	if span > float64(maxTraceSpan) {
		return fmt.Errorf("a request %.0f h into the replayed window, more than %s: pick a window with --start and --duration", span/float64(time.Hour), maxTraceSpan)
	}
	return nil
}

func tokens(a, b string) (int, int, error) {
	in, err1 := strconv.Atoi(strings.TrimSpace(a))
	out, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || in < 0 || out < 0 || in > maxRequestTokens || out > maxRequestTokens {
		return 0, 0, fmt.Errorf("token counts must be integers in 0..%d, got %q, %q", maxRequestTokens, clip(a), clip(b))
	}
	return in, out, nil
}

// columnCount is how many columns a line split into n parts (at most want+1) has, counted where the
// split stopped early.
func columnCount(text string, n, want int) string {
	if n > want {
		return fmt.Sprintf("%d", strings.Count(text, ",")+1)
	}
	return fmt.Sprintf("%d", n)
}

// window keeps requests in [start, start+d) (d 0: to the end), re-based to start; a negative start is
// the trace's start, as Read takes it, and an end past the longest duration is no end.
func window(reqs []Request, start, d time.Duration) []Request {
	start = max(start, 0)
	if start == 0 && d <= 0 {
		return reqs
	}
	var out []Request
	for _, r := range reqs {
		if r.Arrival < start || (d > 0 && d <= math.MaxInt64-start && r.Arrival >= start+d) {
			continue
		}
		r.Arrival -= start
		out = append(out, r)
	}
	return out
}

// thickenWindow is how far from a request its copies may land: they take the arrival instants of real
// requests within it, so a burst gains arrivals where it has them and a quiet stretch stays quiet.
const thickenWindow = 30 * time.Second

// copyBlocks gives the c-th copy of a request hash_ids of its own: the same prefix is another user's
// there, and copies sharing their original's blocks would find them in the prefix cache, so a rate scale
// would add far less prefill than it says. Each copy number maps ids one to one (a bijective mix per
// c), so the c-th copies share prefixes among themselves as the originals do.
func copyBlocks(blocks []uint64, c uint64) []uint64 {
	if len(blocks) == 0 {
		return blocks
	}
	out := make([]uint64, len(blocks))
	for i, b := range blocks {
		// splitmix64's finaliser, a bijection, of the id offset by the copy number.
		x := b + c*0x9e3779b97f4a7c15
		x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
		x = (x ^ x>>27) * 0x94d049bb133111eb
		out[i] = x ^ x>>31
	}
	return out
}

// scaleRate thins or thickens the arrival process deterministically for a seed. k < 1 keeps each request
// with probability k. k > 1 keeps every request and adds floor(k) − 1 copies of each, plus one more with
// probability k − floor(k); a copy keeps its request's lengths (its prefix blocks are its own, see
// copyBlocks) and arrives at the instant of a request
// drawn at random from those within thickenWindow of it (plus under 10 ms of jitter), so copies follow the
// trace's own local intensity: bursts grow by k and gaps stay gaps, instead of copies being folded into
// the gap before the next arrival, which filled quiet stretches and flattened bursts.
func scaleRate(reqs []Request, k float64, seed uint64) []Request {
	if k <= 0 || k == 1 {
		return reqs
	}
	rng := rand.New(rand.NewPCG(seed, 0x7472616365))
	if k < 1 {
		var out []Request
		for _, r := range reqs {
			if rng.Float64() < k {
				out = append(out, r)
			}
		}
		return out
	}
	out := append(make([]Request, 0, int(float64(len(reqs))*k)+1), reqs...)
	lo, hi := 0, 0 // reqs[lo:hi] arrive within thickenWindow of the current request
	for i, r := range reqs {
		for reqs[lo].Arrival < r.Arrival-thickenWindow {
			lo++
		}
		for hi < len(reqs) && reqs[hi].Arrival <= r.Arrival+thickenWindow {
			hi++
		}
		n := int(k) - 1
		if rng.Float64() < k-float64(int(k)) {
			n++
		}
		for c := range n {
			cp := reqs[i]
			cp.Arrival = reqs[lo+rng.IntN(hi-lo)].Arrival + time.Duration(rng.Int64N(int64(10*time.Millisecond)))
			cp.Blocks = copyBlocks(cp.Blocks, uint64(c)+1)
			out = append(out, cp)
		}
	}
	slices.SortStableFunc(out, byArrival)
	return out
}

// ReadFile reads a trace file. With no Format it is guessed: .jsonl is Mooncake, a CSV by its header.
func ReadFile(path string, o Options) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The format is guessed from a peek, not a read and a seek back, so a pipe (`--trace <(zcat week.csv.gz)`)
	// works too.
	br := bufio.NewReaderSize(f, guessBytes)
	if o.Format == "" {
		if o.Format, err = guess(br, path); err != nil {
			return nil, err
		}
	}
	// The path as given, not its base name: two files of one name in different folders stay apart in errors.
	return Read(br, path, o)
}

// guessBytes is how much of a file the format guess may read: the first line is enough, and all a
// headerless or newline-free file may cost.
const guessBytes = 64 << 10

func guess(br *bufio.Reader, path string) (Format, error) {
	if strings.HasSuffix(path, ".jsonl") {
		return Mooncake, nil
	}
	head, err := br.Peek(guessBytes)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return "", fmt.Errorf("%s: %w", path, err) // Peek hands a read error over once: it must not be lost
	}
	if len(head) == 0 {
		return "", fmt.Errorf("%s: empty file", path)
	}
	line, _, _ := strings.Cut(string(head), "\n")
	line = strings.TrimPrefix(line, "\ufeff")
	switch {
	case strings.HasPrefix(line, "TIMESTAMP,ContextTokens"):
		return Azure, nil
	case strings.HasPrefix(line, "Timestamp,") && strings.Contains(line, "Request tokens"):
		return BurstGPT, nil
	case strings.HasPrefix(strings.TrimSpace(line), "{"):
		return Mooncake, nil
	}
	return "", fmt.Errorf("%s: cannot tell the trace format from its first line %q; pass the format (azure, burstgpt, mooncake)", path, clip(strings.TrimSpace(line)))
}

// clip shortens text from a trace file for an error: a line may hold megabytes, and skipped lines keep
// their errors (FirstSkipped), so an echo of the whole field would make each error as large.
func clip(s string) string {
	n := 0
	for i := range s { // by rune, without copying the field
		if n == 100 {
			return s[:i] + "…"
		}
		n++
	}
	return s
}

// since is at − base, saturated at the Duration's bounds: under SkipBad base may be a stray line's time
// a century before the first, and a line a century after it would wrap to a time before the window.
func since(at, base time.Duration) time.Duration {
	switch {
	case overflows(at, base) && base < 0: // at − base overflowed upwards
		return math.MaxInt64
	case overflows(at, base):
		return math.MinInt64
	}
	return at - base
}

// overflows says whether at − base leaves the Duration's range.
func overflows(at, base time.Duration) bool {
	d := at - base
	return base < 0 && d < at || base > 0 && d > at
}
