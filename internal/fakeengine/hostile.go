package fakeengine

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Attack is a way a pod's /metrics page can be hostile or broken: the cases the adapter must survive
// without serving a wrong number, growing without bound or letting other pools go stale.
type Attack string

// The attacks, each modelled on a page a buggy exporter, a misconfigured sidecar or a hostile tenant
// can serve.
const (
	EndlessBody Attack = "endless-body"     // the engine's page, then comment lines until the client hangs up
	HugeLabels  Attack = "huge-labels"      // a 1 MiB label value, different on every scrape
	BadFloat    Attack = "bad-float"        // a 4 MiB malformed sample value
	ManySeries  Attack = "many-series"      // 60,000 distinct series of a known gauge (about 2.5 MB)
	Slowloris   Attack = "slowloris"        // headers, then one byte a second
	CounterHuge Attack = "counter-1e308"    // token counters jump to 1e308 and stay there
	Glitch      Attack = "glitch"           // token counters 1e12 higher on every tenth scrape, normal otherwise
	QueueHuge   Attack = "queue-1e308"      // num_requests_waiting is 1e308 on one scrape in ten
	TypeFlip    Attack = "type-flip"        // the page switches between vLLM's and SGLang's names every scrape
	Redirect    Attack = "redirect"         // a 302 to another address
	Duplicate   Attack = "duplicate-series" // every token counter sample twice
	Garbage     Attack = "garbage"          // an HTML error page
)

// Attacks lists every Attack.
var Attacks = []Attack{EndlessBody, HugeLabels, BadFloat, ManySeries, Slowloris, CounterHuge, Glitch, QueueHuge, TypeFlip, Redirect, Duplicate, Garbage}

// Hostile serves e's page spoiled by attack.
func Hostile(e *Engine, attack Attack) http.Handler {
	h := &hostile{e: e, attack: attack}
	if attack == TypeFlip {
		cfg := e.cfg
		cfg.Flavor = SGLang
		if e.cfg.Flavor == SGLang || e.cfg.Flavor == SGLangOld {
			cfg.Flavor = VLLMV1
		}
		h.alt = New(cfg)
	}
	return h
}

type hostile struct {
	e      *Engine
	alt    *Engine
	attack Attack
	mu     sync.Mutex
	n      int // scrapes served
}

func (h *hostile) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.n++
	n := h.n
	h.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	page := func(e *Engine) []byte {
		b := e.render()
		defer pages.Put(b)
		return bytes.Clone(b.Bytes())
	}
	switch h.attack {
	case EndlessBody:
		_, _ = w.Write(page(h.e))
		line := []byte("# " + strings.Repeat("x", 1022) + "\n")
		for r.Context().Err() == nil {
			if _, err := w.Write(line); err != nil {
				return
			}
		}
	case HugeLabels:
		_, _ = w.Write(page(h.e))
		label := make([]byte, 1<<20)
		for i := range label {
			label[i] = 'a' + byte(rand.IntN(26))
		}
		fmt.Fprintf(w, "vllm:num_requests_running{model_name=%q} 1\n", label)
	case BadFloat:
		_, _ = w.Write(page(h.e))
		fmt.Fprintf(w, "vllm:num_requests_running{model_name=\"m\"} 1%s\n", strings.Repeat(".1", 2<<20))
	case ManySeries:
		var b bytes.Buffer
		b.Write(page(h.e))
		for i := range 60000 {
			fmt.Fprintf(&b, "vllm:num_requests_running{model_name=\"m\",shard=\"%d\"} %d\n", i, i%7)
		}
		_, _ = w.Write(b.Bytes())
	case Slowloris:
		w.WriteHeader(http.StatusOK)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			if _, err := w.Write([]byte("#")); err != nil {
				return
			}
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
		}
	case CounterHuge:
		_, _ = w.Write(rewrite(page(h.e), isTokenCounter, func(float64) string { return "1e308" }))
	case Glitch:
		p := page(h.e)
		if n%10 == 3 {
			p = rewrite(p, isTokenCounter, func(v float64) string { return strconv.FormatFloat(v+1e12, 'g', -1, 64) })
		}
		_, _ = w.Write(p)
	case QueueHuge:
		p := page(h.e)
		if n%10 == 3 {
			p = rewrite(p, func(name string) bool {
				return strings.HasSuffix(name, "num_requests_waiting") || strings.HasSuffix(name, "num_queue_reqs")
			},
				func(float64) string { return "1e308" })
		}
		_, _ = w.Write(p)
	case TypeFlip:
		if n%2 == 0 {
			_, _ = w.Write(page(h.alt))
			return
		}
		_, _ = w.Write(page(h.e))
	case Redirect:
		http.Redirect(w, r, "http://127.0.0.1:1/metrics", http.StatusFound)
	case Duplicate:
		var b bytes.Buffer
		for _, line := range bytes.SplitAfter(page(h.e), []byte("\n")) {
			b.Write(line)
			if name, _, ok := sample(line); ok && isTokenCounter(name) {
				b.Write(line)
			}
		}
		_, _ = w.Write(b.Bytes())
	case Garbage:
		writeGarbage(w)
	default:
		http.Error(w, "unknown attack "+string(h.attack), http.StatusInternalServerError)
	}
}

// writeGarbage writes what a proxy in front of a dead engine may answer: HTML, then a broken sample.
func writeGarbage(w io.Writer) {
	fmt.Fprint(w, "<html><body>502 Bad Gateway</body></html>\nvllm:prompt_tokens_total{model_name=\"x\" 12\n")
}

// isTokenCounter says whether a metric name is one of the engines' token counters.
func isTokenCounter(name string) bool {
	for _, s := range []string{"prompt_tokens_total", "generation_tokens_total", "realtime_tokens_total"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// sample splits a sample line into its metric name and value.
func sample(line []byte) (name string, value float64, ok bool) {
	s := strings.TrimSpace(string(line))
	if s == "" || s[0] == '#' {
		return "", 0, false
	}
	end := strings.IndexAny(s, "{ ")
	sp := strings.LastIndexByte(s, ' ')
	if end < 0 || sp < 0 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(s[sp+1:], 64)
	return s[:end], v, err == nil
}

// rewrite replaces the value of every sample whose name match selects.
func rewrite(page []byte, match func(string) bool, value func(float64) string) []byte {
	var b bytes.Buffer
	for _, line := range bytes.SplitAfter(page, []byte("\n")) {
		name, v, ok := sample(line)
		if !ok || !match(name) {
			b.Write(line)
			continue
		}
		s := strings.TrimRight(string(line), "\n")
		b.WriteString(s[:strings.LastIndexByte(s, ' ')+1] + value(v) + "\n")
	}
	return b.Bytes()
}
