package trace

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Limits that keep a hostile chunk-<n>-dataset.json bounded in memory and time. The release's files are
// at most about 5 MB (the listing's largest, 4.1 MB), with 56 windows of a few thousand values each.
const (
	maxServeGenDatasetBytes = 64 << 20
	maxServeGenDatasetKeys  = 1 << 14
	maxServeGenPMFValues    = 1 << 17
)

// serveGenPromptFields are the dataset fields whose draws add up to a request's prompt: the text of
// language and reasoning models (input_tokens), or text plus media tokens of multimodal ones, each medium
// drawn once per item of its count field where the window has one (ServeGen's construct.py,
// _sample_data_batch: image_count images, each of image_tokens).
var serveGenPromptFields = [][]promptField{
	{{tokens: "input_tokens"}},
	{{tokens: "text_tokens"}, {tokens: "image_tokens", count: "image_count"}, {tokens: "audio_tokens", count: "audio_count"}, {tokens: "video_tokens", count: "video_count"}},
}

type promptField struct{ tokens, count string }

// maxServeGenItems bounds one medium's count per request (the release's largest is 49 images): each item
// is a draw, so the bound keeps a synthesis of millions of requests to seconds.
const maxServeGenItems = 100

// pmf is a discrete token-length distribution, drawn by inverse CDF.
type pmf struct {
	values []int32
	cdf    []float64 // cumulative, last element 1
}

func (p pmf) draw(rng *rand.Rand) int {
	// The first value whose cumulative probability exceeds u: a value of probability 0 is never drawn.
	u := rng.Float64()
	i := sort.Search(len(p.cdf), func(i int) bool { return p.cdf[i] > u })
	return int(p.values[min(i, len(p.values)-1)])
}

// ServeGenLengths is one client's token-length distributions for one dataset window (6 hours in the
// release): the prompt is the sum of draws from prompt, the output one draw from output. ServeGen gives
// marginals only, so a request's prompt and output lengths are drawn independently.
type ServeGenLengths struct {
	Start  float64 // window start, seconds of trace time
	prompt []promptPart
	output pmf
}

// promptPart is one field of the prompt: tokens drawn once, or once per item when count is set.
type promptPart struct {
	tokens pmf
	count  *pmf
}

// values counts the distributions' values, for the folder's bound.
func (l *ServeGenLengths) values() int {
	n := len(l.output.values)
	for _, p := range l.prompt {
		n += len(p.tokens.values)
		if p.count != nil {
			n += len(p.count.values)
		}
	}
	return n
}

// draw returns one request's prompt and output tokens.
func (l *ServeGenLengths) draw(rng *rand.Rand) (int, int) {
	p := 0
	for _, d := range l.prompt {
		n := 1
		if d.count != nil {
			n = d.count.draw(rng)
		}
		for range n {
			p += d.tokens.draw(rng)
		}
	}
	// Every value is bounded, but up to maxServeGenItems of them add up: the sum is held to one request's bound.
	return min(p, maxRequestTokens), l.output.draw(rng)
}

// ParseServeGenDataset reads one client's chunk-<n>-dataset.json: a JSON object keyed by window start
// (seconds) whose values hold token-length distributions, each a string of a Python dict
// "{tokens: probability, ...}". A window whose distributions include an empty one ("{}") is idle and
// left out: the window before it stands in. Only windows that can cover [from, to) seconds are kept
// (to <= 0 or +Inf: no end): the last with data starting at or before from and every later one starting
// before to, or, if that leaves none, the first with data after. None at all (idle throughout) is not an
// error. A window given twice, as "0" and "00" too, is an error. Errors name the file, and the window and
// field, or the byte offset of malformed JSON, where there is one.
func ParseServeGenDataset(r io.Reader, name string, from, to float64) ([]ServeGenLengths, error) {
	ws, err := decodeServeGenDataset(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(ws) == 0 {
		return nil, fmt.Errorf("%s: no windows", name)
	}
	slices.SortFunc(ws, func(a, b datasetWindow) int { return cmp.Compare(a.start, b.start) })
	parse := func(w datasetWindow) (ServeGenLengths, bool, error) {
		l, ok, err := parseServeGenWindow(w.fields)
		if err != nil {
			return l, false, fmt.Errorf("%s: window %s: %w", name, clip(w.key), err)
		}
		l.Start = w.start
		return l, ok, nil
	}
	// An idle window ({} distributions) has no lengths: the one in force before it stands in, so the
	// cut starts at the last window with data at or before from.
	last := -1
	for i, w := range ws {
		if w.start <= from {
			last = i
		}
	}
	var out []ServeGenLengths
	for i := last; i >= 0; i-- {
		l, ok, err := parse(ws[i])
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, l)
			break
		}
	}
	for _, w := range ws[last+1:] {
		if to > 0 && w.start >= to && len(out) > 0 {
			break
		}
		l, ok, err := parse(w)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, l)
		}
	}
	return out, nil
}

// datasetWindow is one window of a chunk-<n>-dataset.json as read: its key, its start, and the raw
// values of the fields distributions are read from.
type datasetWindow struct {
	key    string
	start  float64
	fields map[string]json.RawMessage
}

// datasetFields are the window fields parseServeGenWindow reads; others (reason_ratio, ...) are skipped.
var datasetFields = func() map[string]bool {
	m := map[string]bool{"output_tokens": true}
	for _, set := range serveGenPromptFields {
		for _, f := range set {
			m[f.tokens] = true
			if f.count != "" {
				m[f.count] = true
			}
		}
	}
	return m
}()

// datasetShape is what a chunk-<n>-dataset.json must hold, for errors.
const datasetShape = "want a JSON object of windows, each an object of distributions"

// decodeServeGenDataset reads a dataset file's windows, unsorted. It decodes as it reads, one key at a
// time, so the window cap and a repeated window are refused before more is decoded: json.Unmarshal into a
// map builds every window first (a 64 MB file of empty windows, a gigabyte) and keeps the last of a
// repeated key.
func decodeServeGenDataset(r io.Reader) ([]datasetWindow, error) {
	lr := &io.LimitedReader{R: r, N: maxServeGenDatasetBytes + 1}
	dec := json.NewDecoder(lr)
	var ws []datasetWindow
	err := func() error {
		tok, err := dec.Token()
		if err != nil {
			return jsonAt(dec, err)
		}
		if tok != json.Delim('{') {
			return fmt.Errorf("%s: at byte %d: got %s", datasetShape, dec.InputOffset(), shownToken(tok))
		}
		byStart := map[float64]string{}
		err = eachKey(dec, func(k string) error {
			if len(ws) >= maxServeGenDatasetKeys {
				return fmt.Errorf("more than %d windows", maxServeGenDatasetKeys)
			}
			s, err := strconv.ParseFloat(k, 64)
			if err != nil || s < 0 || s > maxServeGenStart || s != math.Trunc(s) {
				return fmt.Errorf("window %q: want a whole number of seconds in [0, %d]", clip(k), maxServeGenStart)
			}
			if prev, dup := byStart[s]; dup {
				return fmt.Errorf("window %q: start %v given twice (first as %q)", clip(k), s, clip(prev))
			}
			byStart[s] = k
			fields, err := decodeDatasetWindow(dec)
			if err != nil {
				return fmt.Errorf("window %s: %w", clip(k), err)
			}
			ws = append(ws, datasetWindow{key: k, start: s, fields: fields})
			return nil
		})
		if err != nil {
			return err
		}
		if tok, err := dec.Token(); err != io.EOF {
			if err != nil {
				return jsonAt(dec, err)
			}
			return fmt.Errorf("at byte %d: %s after the object of windows", dec.InputOffset(), shownToken(tok))
		}
		return nil
	}()
	if lr.N <= 0 {
		return nil, fmt.Errorf("larger than %d MB", maxServeGenDatasetBytes>>20)
	}
	return ws, err
}

// shownToken is a JSON token as an error names it: a string (any text of the file, decoded) quoted and
// clipped, a delimiter, number, bool or null as it is.
func shownToken(tok json.Token) string {
	if s, ok := tok.(string); ok {
		return strconv.Quote(clip(s))
	}
	return fmt.Sprint(tok)
}

// decodeDatasetWindow reads one window's object, keeping the raw values of datasetFields only. A null
// window has no fields, as json.Unmarshal read it.
func decodeDatasetWindow(dec *json.Decoder) (map[string]json.RawMessage, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonAt(dec, err)
	}
	if tok == nil {
		return nil, nil
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("%s: at byte %d: got %s", datasetShape, dec.InputOffset(), shownToken(tok))
	}
	fields := map[string]json.RawMessage{}
	var skip json.RawMessage // reused: an unknown field's value is read past, not kept
	err = eachKey(dec, func(f string) error {
		v := &skip
		if datasetFields[f] {
			if _, dup := fields[f]; dup {
				return fmt.Errorf("%s given twice", f)
			}
			v = new(json.RawMessage)
		}
		if err := dec.Decode(v); err != nil {
			return jsonAt(dec, err)
		}
		if datasetFields[f] {
			fields[f] = *v
		}
		return nil
	})
	return fields, err
}

// eachKey calls f with each key of the object whose '{' dec has just read, f reading its value, then
// reads the closing '}'.
func eachKey(dec *json.Decoder, f func(key string) error) error {
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return jsonAt(dec, err)
		}
		k, ok := tok.(string)
		if !ok { // the decoder allows only strings as keys; kept as an error rather than a panic
			return fmt.Errorf("at byte %d: key %s is not a string", dec.InputOffset(), shownToken(tok))
		}
		if err := f(k); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return jsonAt(dec, err)
	}
	return nil
}

// jsonAt places a decoding error in the file: a json.SyntaxError carries its byte offset but does not
// print it, and an end of file inside the object is unexpected.
func jsonAt(dec *json.Decoder, err error) error {
	off := dec.InputOffset()
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.Is(err, io.EOF):
		err = io.ErrUnexpectedEOF
	}
	if msg := err.Error(); clip(msg) != msg {
		// The decoder's type errors repeat the value whole ("cannot unmarshal number 111…", a number of
		// megabytes).
		err = &clippedError{msg: clip(msg), err: err}
	}
	return fmt.Errorf("at byte %d: %w", off, err)
}

// clippedError is an error whose text is cut (clip), still unwrapping to the error it was.
type clippedError struct {
	msg string
	err error
}

func (e *clippedError) Error() string { return e.msg }
func (e *clippedError) Unwrap() error { return e.err }

// errEmptyPMF marks a distribution written "{}": the client sent nothing in that window.
var errEmptyPMF = errors.New("empty distribution")

// parseServeGenWindow reads one window's distributions; ok is false for an idle window, one whose
// distributions include an empty one.
func parseServeGenWindow(fields map[string]json.RawMessage) (l ServeGenLengths, ok bool, err error) {
	idle := false
	field := func(f string) (pmf, bool, error) {
		m, ok := fields[f]
		if !ok {
			return pmf{}, false, nil
		}
		var s string
		if err := json.Unmarshal(m, &s); err != nil {
			return pmf{}, true, fmt.Errorf("%s: want a string of a Python dict {tokens: probability, ...}", f)
		}
		p, err := parsePMF(s)
		if errors.Is(err, errEmptyPMF) {
			idle = true
			return p, true, nil
		}
		if err != nil {
			return pmf{}, true, fmt.Errorf("%s: %w", f, err)
		}
		return p, true, nil
	}
	for _, set := range serveGenPromptFields {
		for _, f := range set {
			p, found, err := field(f.tokens)
			if err != nil {
				return l, false, err
			}
			if !found {
				continue
			}
			part := promptPart{tokens: p}
			if f.count != "" {
				c, found, err := field(f.count)
				if err != nil {
					return l, false, err
				}
				if found {
					if m := slices.Max(append(c.values, 0)); m > maxServeGenItems {
						return l, false, fmt.Errorf("%s: %d items, more than %d", f.count, m, maxServeGenItems)
					}
					part.count = &c
				}
			}
			l.prompt = append(l.prompt, part)
		}
		if len(l.prompt) > 0 {
			break
		}
	}
	if len(l.prompt) == 0 {
		return l, false, errors.New("no prompt distribution (want input_tokens, or text_tokens and media tokens)")
	}
	out, found, err := field("output_tokens")
	if err != nil {
		return l, false, err
	}
	if !found {
		return l, false, errors.New("no output_tokens distribution")
	}
	l.output = out
	return l, !idle, nil
}

// parsePMF reads "{224: 0.0003, 225: 0.0008, ...}": whole token counts and their probabilities, which
// need not sum to 1 (they are normalised) but must have a positive sum.
func parsePMF(s string) (pmf, error) {
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return pmf{}, errors.New("want {tokens: probability, ...}")
	}
	s = strings.TrimSpace(s[1 : len(s)-1])
	if s == "" {
		return pmf{}, errEmptyPMF
	}
	if n := strings.Count(s, ",") + 1; n > maxServeGenPMFValues {
		return pmf{}, fmt.Errorf("more than %d values", maxServeGenPMFValues)
	}
	type point struct {
		v int32
		p float64
	}
	var pts []point
	sum := 0.0
	for item := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(item, ":")
		if !ok {
			return pmf{}, fmt.Errorf("%q: want tokens: probability", clip(strings.TrimSpace(item)))
		}
		tok, err := strconv.ParseFloat(strings.TrimSpace(k), 64)
		if err != nil || tok < 0 || tok > maxRequestTokens || tok != math.Trunc(tok) {
			return pmf{}, fmt.Errorf("%q: tokens must be a whole number in [0, %d]", clip(strings.TrimSpace(k)), maxRequestTokens)
		}
		p, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(p) || math.IsInf(p, 0) || p < 0 || p > 1 {
			return pmf{}, fmt.Errorf("%q: probability must be in [0, 1]", clip(strings.TrimSpace(v)))
		}
		sum += p
		pts = append(pts, point{int32(tok), p})
	}
	if !(sum > 0) {
		return pmf{}, errors.New("probabilities sum to 0")
	}
	slices.SortFunc(pts, func(a, b point) int { return int(a.v - b.v) })
	d := pmf{values: make([]int32, len(pts)), cdf: make([]float64, len(pts))}
	acc := 0.0
	for i, pt := range pts {
		acc += pt.p
		d.values[i], d.cdf[i] = pt.v, acc/sum
	}
	d.cdf[len(d.cdf)-1] = 1
	return d, nil
}

// Lengths is where synthesised requests' token lengths come from: per client and window from its
// ServeGen distributions where it has them, else drawn uniformly from a real trace's requests.
type Lengths struct {
	pool    []Request
	clients [][]ServeGenLengths // by client (the folder's file order), each by window start; nil: pool
}

// PoolLengths draws every client's lengths from reqs' requests.
func PoolLengths(reqs []Request) *Lengths { return &Lengths{pool: reqs} }

// poolClients counts the clients of n that draw from the pool: those without distributions.
func (l *Lengths) poolClients(n int) int {
	if l.clients == nil {
		return n
	}
	k := 0
	for ci := range n {
		if len(l.clients[ci]) == 0 {
			k++
		}
	}
	return k
}

// draw returns the prompt and output tokens of client ci's request at t seconds of trace time.
func (l *Lengths) draw(rng *rand.Rand, ci int, t float64) (int, int) {
	if l.clients == nil || len(l.clients[ci]) == 0 {
		r := l.pool[rng.IntN(len(l.pool))]
		return r.PromptTokens, r.OutputTokens
	}
	ws := l.clients[ci]
	i, _ := slices.BinarySearchFunc(ws, t, func(w ServeGenLengths, t float64) int {
		if w.Start <= t {
			return -1
		}
		return 1
	})
	// i is the first window starting after t; before the first window, its distributions stand in.
	return ws[max(i-1, 0)].draw(rng)
}
