package trace

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// Draws follow the window's distribution: only its values, at its probabilities (normalised), and the
// window in force at t is the last one starting at or before t.
func TestServeGenDatasetDraws(t *testing.T) {
	in := `{"0": {"input_tokens": "{100: 0.25, 300: 0.75}", "output_tokens": "{10: 0.4, 20: 0.4}"},
		"21600": {"input_tokens": "{5000: 1.0}", "output_tokens": "{7: 1.0}", "reason_ratio": "{0.0: 1.0}"}}`
	ls, err := ParseServeGenDataset(strings.NewReader(in), "d.json", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[0].Start != 0 || ls[1].Start != 21600 {
		t.Fatalf("windows %+v", ls)
	}
	l := &Lengths{clients: [][]ServeGenLengths{ls}}
	rng := rand.New(rand.NewPCG(1, 2))
	count := map[[2]int]int{}
	const n = 20000
	for range n {
		p, o := l.draw(rng, 0, 21599)
		count[[2]int{p, o}]++
	}
	for k, c := range count {
		if (k[0] != 100 && k[0] != 300) || (k[1] != 10 && k[1] != 20) {
			t.Fatalf("drew %v, not in the first window's distributions", k)
		}
		want := n * map[int]float64{100: 0.25, 300: 0.75}[k[0]] * 0.5
		if math.Abs(float64(c)-want) > 0.05*want {
			t.Errorf("%v drawn %d times, want about %.0f", k, c, want)
		}
	}
	if p, o := l.draw(rng, 0, 21600); p != 5000 || o != 7 {
		t.Errorf("at the second window's start: %d, %d", p, o)
	}
	// A window cut keeps the window in force at its start and those starting before its end.
	cut, err := ParseServeGenDataset(strings.NewReader(in), "d.json", 21700, 30000)
	if err != nil || len(cut) != 1 || cut[0].Start != 21600 {
		t.Errorf("cut [21700, 30000): %+v, %v", cut, err)
	}
	cut, err = ParseServeGenDataset(strings.NewReader(in), "d.json", 100, 21600)
	if err != nil || len(cut) != 1 || cut[0].Start != 0 {
		t.Errorf("cut [100, 21600): %+v, %v", cut, err)
	}
}

// An idle window ({} distributions, as the release writes a client's quiet 6 hours) is left out: the
// window with data before it stands in, or the first after when none is before.
func TestServeGenDatasetIdleWindows(t *testing.T) {
	in := `{"0": {"input_tokens": "{}", "output_tokens": "{}"},
		"21600": {"input_tokens": "{100: 1}", "output_tokens": "{10: 1}"},
		"43200": {"input_tokens": "{}", "output_tokens": "{}"},
		"64800": {"input_tokens": "{300: 1}", "output_tokens": "{30: 1}"}}`
	for _, c := range []struct {
		from, to float64
		want     []float64
	}{
		{0, 100, []float64{21600}},
		{50000, 60000, []float64{21600}},
		{50000, 70000, []float64{21600, 64800}},
		{0, 0, []float64{21600, 64800}},
	} {
		ls, err := ParseServeGenDataset(strings.NewReader(in), "d.json", c.from, c.to)
		if err != nil {
			t.Fatal(err)
		}
		var got []float64
		for _, l := range ls {
			got = append(got, l.Start)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("[%v, %v): windows %v, want %v", c.from, c.to, got, c.want)
		}
	}
	ls, err := ParseServeGenDataset(strings.NewReader(`{"0": {"input_tokens": "{}", "output_tokens": "{}"}}`), "d.json", 0, 0)
	if err != nil || len(ls) != 0 {
		t.Errorf("a client idle throughout: %+v, %v; want no windows and no error", ls, err)
	}
}

// A multimodal window's prompt is its text plus its media tokens: one draw of a medium's tokens per item
// of its count (ServeGen's construct.py), or one draw where the window gives no count.
func TestServeGenDatasetMultimodal(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{`{"0": {"text_tokens": "{136: 1.0}", "image_tokens": "{1196: 1.0}", "audio_tokens": "{0: 1.0}",
		"video_tokens": "{0: 1.0}", "image_count": "{1: 1.0}", "output_tokens": "{21: 1.0}"}}`, 136 + 1196},
		{`{"0": {"text_tokens": "{136: 1.0}", "image_tokens": "{100: 1.0}", "audio_tokens": "{40: 1.0}",
		"video_tokens": "{0: 1.0}", "image_count": "{3: 1.0}", "audio_count": "{0: 1.0}", "video_count": "{0: 1.0}",
		"output_tokens": "{21: 1.0}"}}`, 136 + 3*100},
		{`{"0": {"text_tokens": "{136: 1.0}", "image_tokens": "{100: 1.0}", "output_tokens": "{21: 1.0}"}}`, 136 + 100},
	} {
		ls, err := ParseServeGenDataset(strings.NewReader(tc.in), "mm.json", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if p, o := ls[0].draw(rand.New(rand.NewPCG(1, 1))); p != tc.want || o != 21 {
			t.Errorf("%s: drew %d, %d; want %d, 21", tc.in, p, o, tc.want)
		}
	}
	// Counts of 0 to 3 images, equally likely: the mean prompt is the text plus 1.5 images.
	in := `{"0": {"text_tokens": "{10: 1.0}", "image_tokens": "{100: 0.5, 300: 0.5}", "image_count": "{0: 1, 1: 1, 2: 1, 3: 1}",
		"output_tokens": "{1: 1.0}"}}`
	ls, err := ParseServeGenDataset(strings.NewReader(in), "mm.json", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(2, 2))
	sum, n := 0, 20000
	for range n {
		p, _ := ls[0].draw(rng)
		sum += p
	}
	if mean := float64(sum) / float64(n); math.Abs(mean-(10+1.5*200)) > 6 {
		t.Errorf("mean prompt %.1f, want about %v", mean, 10+1.5*200)
	}
}

func TestServeGenDatasetErrors(t *testing.T) {
	for in, want := range map[string]string{
		`[1, 2]`: "d.json: want a JSON object",
		`{}`:     "d.json: no windows",
		`{"-600": {"input_tokens": "{1: 1}", "output_tokens": "{1: 1}"}}`:                                                   `d.json: window "-600"`,
		`{"0": {"input_tokens": "{1: 1}"}}`:                                                                                 "d.json: window 0: no output_tokens",
		`{"0": {"output_tokens": "{1: 1}"}}`:                                                                                "d.json: window 0: no prompt distribution",
		`{"0": {"input_tokens": "{1: NaN}", "output_tokens": "{1: 1}"}}`:                                                    "input_tokens: \"NaN\": probability",
		`{"0": {"input_tokens": "{1.5: 1}", "output_tokens": "{1: 1}"}}`:                                                    "input_tokens: \"1.5\": tokens",
		`{"0": {"input_tokens": "{1: 0, 2: 0}", "output_tokens": "{1: 1}"}}`:                                                "input_tokens: probabilities sum to 0",
		`{"0": {"input_tokens": "{1e9: 1}", "output_tokens": "{1: 1}"}}`:                                                    "tokens must be a whole number in [0, 10000000]",
		`{"0": {"input_tokens": 5, "output_tokens": "{1: 1}"}}`:                                                             "input_tokens: want a string",
		`{"0": {"input_tokens": "{1 1}", "output_tokens": "{1: 1}"}}`:                                                       `"1 1": want tokens: probability`,
		`{"0": {"text_tokens": "{1: 1}", "image_tokens": "{9: 1}", "image_count": "{5000: 1}", "output_tokens": "{1: 1}"}}`: "image_count: 5000 items, more than 100",
		// A repeated window or field is refused, not read as its last copy, as "0" and "00" are.
		`{"0": {"input_tokens": "{1: 1}", "output_tokens": "{1: 1}"}, "0": {"input_tokens": "{2: 1}", "output_tokens": "{1: 1}"}}`:  `d.json: window "0": start 0 given twice (first as "0")`,
		`{"0": {"input_tokens": "{1: 1}", "output_tokens": "{1: 1}"}, "00": {"input_tokens": "{2: 1}", "output_tokens": "{1: 1}"}}`: `d.json: window "00": start 0 given twice (first as "0")`,
		`{"0": {"input_tokens": "{1: 1}", "input_tokens": "{2: 1}", "output_tokens": "{1: 1}"}}`:                                    "d.json: window 0: input_tokens given twice",
		// Malformed JSON is placed by its byte offset.
		`{"0": {"input_tokens": "{1: 1}" "output_tokens": "{1: 1}"}}`:    "d.json: window 0: at byte 32: invalid character '\"' after object key:value pair",
		`{"0": {"input_tokens": "{1: 1}"`:                                "d.json: window 0: at byte 31: unexpected EOF",
		`{"0": [1]}`:                                                     "d.json: window 0: want a JSON object of windows, each an object of distributions: at byte 7: got [",
		`{"0": {"input_tokens": "{1: 1}", "output_tokens": "{1: 1}"}} x`: "d.json: at byte 51: invalid character 'x' looking for beginning of value",
	} {
		_, err := ParseServeGenDataset(strings.NewReader(in), "d.json", 0, 0)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", in, err, want)
		}
	}
	big := strings.NewReader(strings.Repeat(" ", maxServeGenDatasetBytes+1))
	if _, err := ParseServeGenDataset(big, "d.json", 0, 0); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: %v", err)
	}
}

// A file of more windows than the cap is refused at the first window past it, before the rest is decoded:
// what follows is never read (garbage there does not change the error), and a file four times longer
// allocates no more (json.Unmarshal into a map built every window first, about 30 times the file's size).
func TestServeGenDatasetWindowCap(t *testing.T) {
	windows := func(n int) *bytes.Buffer {
		var b bytes.Buffer
		b.WriteString("{")
		for i := range n {
			fmt.Fprintf(&b, `"%d": {}, `, i)
		}
		return &b
	}
	capped := windows(maxServeGenDatasetKeys + 1)
	capped.WriteString("not JSON")
	const want = "d.json: more than 16384 windows"
	if _, err := ParseServeGenDataset(capped, "d.json", 0, 0); err == nil || err.Error() != want {
		t.Errorf("the cap's window then garbage: %v, want %q", err, want)
	}
	alloc := func(n int) (uint64, int) {
		t.Helper()
		data := windows(n).Bytes()
		data[len(data)-2] = '}'
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := ParseServeGenDataset(bytes.NewReader(data), "d.json", 0, 0)
		runtime.ReadMemStats(&after)
		if err == nil || err.Error() != want {
			t.Errorf("%d windows: %v, want %q", n, err, want)
		}
		return after.TotalAlloc - before.TotalAlloc, len(data)
	}
	a1, n1 := alloc(10 * maxServeGenDatasetKeys)
	a4, n4 := alloc(40 * maxServeGenDatasetKeys)
	t.Logf("allocated %.1f MB for %.1f MB, %.1f MB for %.1f MB", float64(a1)/1e6, float64(n1)/1e6, float64(a4)/1e6, float64(n4)/1e6)
	if a4 > a1+uint64(n4-n1)/4 {
		t.Errorf("allocated %.1f MB for a %.1f MB file and %.1f MB for %.1f MB: it grows with what follows the cap", float64(a1)/1e6, float64(n1)/1e6, float64(a4)/1e6, float64(n4)/1e6)
	}
}

// The test folder's client 0 has its real distributions; client 15 has none and draws from the lengths
// trace, and the trace says so. Without ServeGenLengths both draw from the trace, as before.
func TestReadServeGenWithDatasets(t *testing.T) {
	pool := []Request{{PromptTokens: 7, OutputTokens: 3}}
	tr, err := ReadServeGen("testdata/servegen", pool, Options{Seed: 3, ServeGenLengths: true})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Clients != 2 || tr.PoolLengthClients != 1 {
		t.Errorf("clients %d, from the pool %d; want 2 and 1", tr.Clients, tr.PoolLengthClients)
	}
	f, err := os.ReadFile("testdata/servegen/chunk-0-dataset.json")
	if err != nil {
		t.Fatal(err)
	}
	ls, err := ParseServeGenDataset(bytes.NewReader(f), "chunk-0-dataset.json", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	in := func(d pmf, v int) bool {
		for _, x := range d.values {
			if int(x) == v {
				return true
			}
		}
		return false
	}
	var fromData, fromPool int
	for _, r := range tr.Requests {
		switch {
		case r.PromptTokens == 7 && r.OutputTokens == 3:
			fromPool++
		case in(ls[0].prompt[0].tokens, r.PromptTokens) && in(ls[0].output, r.OutputTokens):
			fromData++
		default:
			t.Fatalf("request %+v drew from neither client 0's distributions nor the pool", r)
		}
	}
	if fromData == 0 || fromPool == 0 {
		t.Errorf("%d requests from client 0's distributions, %d from the pool; want both", fromData, fromPool)
	}
	plain, err := ReadServeGen("testdata/servegen", pool, Options{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if plain.PoolLengthClients != 2 {
		t.Errorf("without ServeGenLengths %d of 2 clients draw from the pool", plain.PoolLengthClients)
	}
	for _, r := range plain.Requests {
		if r.PromptTokens != 7 {
			t.Fatalf("without ServeGenLengths a request drew %+v", r)
		}
	}
}

// Any input gives an error naming the file, or windows whose distributions draw in-range lengths.
func FuzzParseServeGenDataset(f *testing.F) {
	f.Add([]byte(`{"0": {"input_tokens": "{224: 0.0003, 225: 0.0008}", "output_tokens": "{40: 0.5, 41: 0.5}"}}`))
	f.Add([]byte(`{"0": {"text_tokens": "{136: 1.0}", "image_tokens": "{1196: 1.0}", "output_tokens": "{21: 1.0}"}}`))
	f.Add([]byte(`{"0": {"input_tokens": "{1: 4.77e-05}", "output_tokens": "{1: 1}"}, "21600": {}}`))
	f.Add([]byte(`{"0": "\u001b[2J\u202e` + strings.Repeat("x", 5000) + `"}`))
	f.Add([]byte(`["\u001b[2J"]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The cut comes from the input too, so window selection is fuzzed with the parser.
		var from, to float64
		if len(data) > 1 {
			from, to = float64(data[0])*600, float64(data[1])*1200
		}
		ls, err := ParseServeGenDataset(bytes.NewReader(data), "f.json", from, to)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.json:") {
				t.Fatalf("error without the file: %v", err)
			}
			// The file's strings reach errors quoted and clipped: a window's value given as a string of
			// an escape sequence, or of megabytes, is not repeated as it is.
			if msg := err.Error(); len(msg) > 2048 || strings.IndexFunc(msg, func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) }) >= 0 {
				t.Fatalf("an error of %d bytes, not short and printable: %.300q", len(msg), msg)
			}
			return
		}
		rng := rand.New(rand.NewPCG(1, 1))
		for i, l := range ls {
			if i > 0 && l.Start <= ls[i-1].Start {
				t.Fatalf("windows out of order: %v after %v", l.Start, ls[i-1].Start)
			}
			ds := []pmf{l.output}
			for _, p := range l.prompt {
				ds = append(ds, p.tokens)
				if p.count != nil {
					ds = append(ds, *p.count)
				}
			}
			for _, d := range ds {
				if len(d.cdf) == 0 || d.cdf[len(d.cdf)-1] != 1 {
					t.Fatalf("distribution %+v does not end at 1", d)
				}
				for j := 1; j < len(d.cdf); j++ {
					if d.cdf[j] < d.cdf[j-1] {
						t.Fatalf("CDF falls: %v", d.cdf)
					}
				}
			}
			for range 10 {
				if p, o := l.draw(rng); p < 0 || o < 0 || o > maxRequestTokens || p > maxRequestTokens {
					t.Fatalf("drew %d, %d", p, o)
				}
			}
		}
	})
}
