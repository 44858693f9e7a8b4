package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/engine"
)

// pageSep separates the pages of a FuzzPageSequence input. Each page starts with a control byte c: the
// page is scraped (c%9)×250 ms after the last one, 0 to 2 s, and read as pageKinds[c/9%3].
const pageSep = "\x1e"

var (
	pageKinds  = [...]engine.Kind{engine.VLLM, engine.SGLang, engine.Auto}
	pageLimits = [...]float64{0, 1000, 50000, 1e6, 1e7, 1e9} // SetRateLimit's argument; 0 and 1e9: the cap
)

// maxFuzzPages bounds the pages one input records, so an input of many empty pages stays quick.
const maxFuzzPages = 64

// pageSeq encodes pages for FuzzPageSequence, each scraped step×250 ms after the last as kind kinds[i].
func pageSeq(step int, kind engine.Kind, pages ...string) []byte {
	k := 0
	for i, pk := range pageKinds {
		if pk == kind {
			k = i
		}
	}
	var b []byte
	for i, p := range pages {
		if i > 0 {
			b = append(b, pageSep...)
		}
		b = append(b, byte(k*9+step))
		b = append(b, p...)
	}
	return b
}

// vllmSeqPage is a vLLM page with a TTFT histogram of one finite bucket.
func vllmSeqPage(prompt, gen, waiting, done, fast, all float64) string {
	return fmt.Sprintf(`vllm:prompt_tokens_total %g
vllm:generation_tokens_total %g
vllm:num_requests_waiting %g
vllm:num_requests_running 3
vllm:request_success_total{finished_reason="stop"} %g
vllm:prefix_cache_hits_total %g
vllm:kv_cache_usage_perc 0.5
vllm:time_to_first_token_seconds_bucket{le="0.5"} %g
vllm:time_to_first_token_seconds_bucket{le="+Inf"} %g
vllm:time_to_first_token_seconds_count %g
vllm:time_to_first_token_seconds_sum %g
`, prompt, gen, waiting, done, prompt/4, fast, all, all, all/10)
}

// FuzzPageSequence records sequences of whole pages, read by the engine package as a scrape's are, into
// a store with a rate limit: histograms, running, KV usage, computed tokens, cache hits and source or
// engine changes reach the store as they do from pods. Whatever the pages say, after each one every value
// the store serves is finite, non-negative where it must be, and within the limit, and its latency
// windows are windows (checkSaneLimit).
func FuzzPageSequence(f *testing.F) {
	// The pages of TestInconsistentHistogramWindowIsUnknown's "window not cumulative" case.
	f.Add(byte(1), pageSeq(4, engine.VLLM, vllmSeqPage(1000, 100, 0, 1, 0, 1e6), vllmSeqPage(2000, 200, 0, 2, 1e6, 1e6+1000)))
	// TestFinishedJumpTeachesNoLength: steady pages, then 10^6 more finished requests.
	var steady []string
	for i := range 5 {
		x := float64(i)
		done := x
		if i == 4 {
			done += 1e6
		}
		steady = append(steady, vllmSeqPage(2000*x, 200*x, 10, done, x, x))
	}
	f.Add(byte(2), pageSeq(4, engine.VLLM, steady...))
	// The real and synthetic captures, each scraped twice (the fuzzer moves the second's numbers), and a
	// vLLM pod whose page turns into SGLang's.
	files, _ := filepath.Glob("../engine/testdata/*.txt")
	if len(files) == 0 {
		f.Fatal("no captures in ../engine/testdata")
	}
	var pages []string
	for i, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		pages = append(pages, string(b))
		f.Add(byte(i), pageSeq(4, engine.Auto, string(b), string(b)))
	}
	f.Add(byte(3), pageSeq(2, engine.Auto, pages...))
	f.Fuzz(func(t *testing.T, limitSel byte, in []byte) {
		c := &clock{t: time.Unix(1000, 0)}
		s := New(Options{}, c.now)
		pod := PodKey{"ns", "p"}
		// The low bits pick the tokens' limit, the high ones a decoder's prompt limit (0: none).
		s.SetRateLimit(pod, Limit{Tokens: pageLimits[int(limitSel)%len(pageLimits)], Prompt: pageLimits[int(limitSel)/len(pageLimits)%len(pageLimits)]})
		gen := s.limitOf(s.pods[pod], engine.GenerationTokens)
		limit := max(gen, s.limitOf(s.pods[pod], engine.PromptTokens))
		for i, p := range bytes.Split(in, []byte(pageSep)) {
			if i == maxFuzzPages {
				break
			}
			if len(p) == 0 {
				continue
			}
			c.t = c.t.Add(time.Duration(p[0]%9) * 250 * time.Millisecond)
			snap, err := engine.ExtractBytes(p[1:], pageKinds[p[0]/9%3])
			if err != nil {
				s.RecordError(pod, c.t, err)
			} else {
				s.Record(pod, c.t, snap)
			}
			// Values read with an error are the pod's last ones, which the store keeps as sane as any.
			v, _ := s.Get(pod)
			checkSaneLimit(t, v, s.Options(), limit)
			if v.DecodeTPS > gen*(1+1e-9) || v.WindowDecodeTPS > gen*(1+1e-9) {
				t.Fatalf("decode %g tok/s (window %g) past the tokens' limit %g", v.DecodeTPS, v.WindowDecodeTPS, gen)
			}
		}
	})
}
