package fakeengine

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
)

// Bucket layouts as the engines declare them (vLLM v1/metrics/loggers.py; SGLang collector.py).
var (
	ttftBuckets    = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560}
	itlBuckets     = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}
	latencyBuckets = []float64{0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680}
	tokenBuckets   = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000}
	iterBuckets    = []float64{1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}
)

type hist struct {
	bounds []float64
	counts []float64 // non-cumulative per bucket, last is +Inf
	sum    float64
	count  float64
}

func newHist(b []float64) *hist { return &hist{bounds: b, counts: make([]float64, len(b)+1)} }

// observeN records n observations of value v (n may be fractional: the model is fluid; the page
// rounds counts down so they stay monotonic and integral, as real engines show them).
func (h *hist) observeN(v, n float64) {
	if n <= 0 {
		return
	}
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i] += n
	h.sum += v * n
	h.count += n
}

// page renders exposition text into a buffer without allocating per sample: a fake engine serves its
// page every second on the same machine as the adapter under measurement, so its cost is kept small.
type page struct {
	w          *bytes.Buffer
	labels     string   // rendered common labels, without braces
	num, bound [32]byte // scratch for formatting a value and a bucket bound
}

func (p *page) family(name, typ, help string) {
	for _, s := range [...]string{"# HELP ", name, " ", help, "\n# TYPE ", name, " ", typ, "\n"} {
		p.w.WriteString(s)
	}
}

func (p *page) sample(name, extra string, v float64) { p.line(name, "", nil, extra, v) }

// line writes name+suffix{le="le",extra,labels} v, leaving out what is empty.
func (p *page) line(name, suffix string, le []byte, extra string, v float64) {
	w := p.w
	w.WriteString(name)
	w.WriteString(suffix)
	sep := byte('{')
	if le != nil {
		w.WriteByte(sep)
		w.WriteString(`le="`)
		w.Write(le)
		w.WriteByte('"')
		sep = ','
	}
	for _, part := range [...]string{extra, p.labels} {
		if part != "" {
			w.WriteByte(sep)
			w.WriteString(part)
			sep = ','
		}
	}
	if sep == ',' {
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.Write(appendFloat(p.num[:0], v))
	w.WriteByte('\n')
}

var inf = []byte("+Inf")

func (p *page) hist(name string, h *hist, share float64) {
	cum := 0.0
	for i, b := range h.bounds {
		cum += h.counts[i]
		p.line(name, "_bucket", appendFloat(p.bound[:0], b), "", floor(cum*share))
	}
	cum += h.counts[len(h.bounds)]
	p.line(name, "_bucket", inf, "", floor(cum*share))
	p.line(name, "_count", nil, "", floor(cum*share))
	p.line(name, "_sum", nil, "", h.sum*share)
}

func floor(v float64) float64 { return float64(int64(v)) }

func fmtFloat(v float64) string { return string(appendFloat(nil, v)) }

// appendFloat formats v as prometheus_client does: shortest form, with ".0" on whole numbers.
func appendFloat(dst []byte, v float64) []byte {
	n := len(dst)
	dst = strconv.AppendFloat(dst, v, 'g', -1, 64)
	if !bytes.ContainsAny(dst[n:], ".eEn") {
		dst = append(dst, ".0"...)
	}
	return dst
}

var pages = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// WriteMetrics writes the engine's /metrics page in its flavor's format.
func (e *Engine) WriteMetrics(out io.Writer) {
	buf := e.render()
	defer pages.Put(buf)
	_, _ = out.Write(buf.Bytes())
}

// render returns the page in a pooled buffer; put it back in pages when done.
func (e *Engine) render() *bytes.Buffer {
	buf := pages.Get().(*bytes.Buffer)
	buf.Reset()
	e.mu.Lock()
	defer e.mu.Unlock()
	switch e.cfg.Flavor {
	case SGLang, SGLangOld:
		e.writeSGLang(buf)
	default:
		e.writeVLLM(buf)
	}
	return buf
}

func (e *Engine) writeVLLM(w *bytes.Buffer) {
	w.WriteString(processMetrics)
	v1 := e.cfg.Flavor == VLLMV1
	n := e.cfg.Engines
	share := 1 / float64(n)
	p := &page{w: w}
	engineLabels := make([]string, n)
	for i := range engineLabels {
		if v1 {
			engineLabels[i] = fmt.Sprintf(`engine="%d",model_name="%s"`, i, e.cfg.Model)
		} else {
			engineLabels[i] = fmt.Sprintf(`model_name="%s"`, e.cfg.Model)
		}
	}
	forEach := func(f func()) {
		for i := 0; i < n; i++ {
			p.labels = engineLabels[i]
			f()
			if !v1 {
				return // V0 has no data-parallel engine label: one series carries everything
			}
		}
	}
	if !v1 {
		share = 1
	}
	gauge := func(name, help string, v float64) {
		p.family(name, "gauge", help)
		forEach(func() { p.sample(name, "", v*share) })
	}
	counter := func(name, help string, v float64) {
		p.family(name+"_total", "counter", help)
		forEach(func() { p.sample(name+"_total", "", floor(v*share)) })
		p.family(name+"_created", "gauge", help)
		forEach(func() { p.sample(name+"_created", "", e.started) })
	}
	histo := func(name, help string, h *hist) {
		p.family(name, "histogram", help)
		forEach(func() { p.hist(name, h, share) })
	}
	gauge("vllm:num_requests_running", "Number of requests in model execution batches.", e.running)
	gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", e.waiting)
	if v1 {
		p.family("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.")
		forEach(func() { p.sample("vllm:kv_cache_usage_perc", "", e.kvUsage) })
		counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.", e.cacheQueries)
		counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", e.cacheHits)
	} else {
		p.family("vllm:gpu_cache_usage_perc", "gauge", "GPU KV-cache usage. 1 means 100 percent usage.")
		forEach(func() { p.sample("vllm:gpu_cache_usage_perc", "", e.kvUsage) })
		gauge("vllm:cpu_cache_usage_perc", "CPU KV-cache usage. 1 means 100 percent usage.", 0)
		gauge("vllm:num_requests_swapped", "Number of requests swapped to CPU.", 0)
	}
	counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", 0)
	counter("vllm:prompt_tokens", "Number of prefill tokens processed.", e.promptTokens)
	counter("vllm:generation_tokens", "Number of generation tokens processed.", e.generationTokens)
	histo("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", e.iter)
	p.family("vllm:request_success_total", "counter", "Count of successfully processed requests.")
	reasonLabel := "finished_reason"
	forEach(func() {
		for _, r := range []string{"stop", "length", "abort"} {
			p.sample("vllm:request_success_total", reasonLabel+`="`+r+`"`, floor(e.finished[r]*share))
		}
	})
	histo("vllm:request_prompt_tokens", "Number of prefill tokens processed.", e.promptLen)
	histo("vllm:request_generation_tokens", "Number of generation tokens processed.", e.genLen)
	histo("vllm:request_max_num_generation_tokens", "Histogram of maximum number of requested generation tokens.", e.genLen)
	histo("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", e.genLen)
	histo("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", e.ttft)
	histo("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", e.itl)
	if v1 {
		histo("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", e.itl)
	}
	histo("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", e.e2e)
	histo("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", e.queueTime)
	histo("vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.", e.e2e)
	histo("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", e.ttft)
	histo("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", e.e2e)
	p.family("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig")
	forEach(func() {
		p.sample("vllm:cache_config_info", fmt.Sprintf(`block_size="16",cache_dtype="auto",enable_prefix_caching="True",gpu_memory_utilization="0.9",num_gpu_blocks="%d"`, int(e.cfg.KVCapacityTokens/16)), 1)
	})
	w.WriteString(httpMetrics)
}

func (e *Engine) writeSGLang(w *bytes.Buffer) {
	old := e.cfg.Flavor == SGLangOld
	p := &page{w: w}
	ranks := e.cfg.TPRanks
	if old {
		ranks = 1
	}
	modelLabel := fmt.Sprintf(`model_name="%s"`, e.cfg.Model)
	rankLabels := make([]string, ranks)
	for r := range rankLabels {
		if old {
			rankLabels[r] = modelLabel
		} else {
			rankLabels[r] = fmt.Sprintf(`engine_type="%s",model_name="%s",pp_rank="0",tp_rank="%d"`, e.cfg.Role, e.cfg.Model, r)
		}
	}
	sched := func(f func()) { // scheduler metrics: one series per reporting TP rank, identical values
		for r := 0; r < ranks; r++ {
			p.labels = rankLabels[r]
			f()
		}
	}
	tok := func(f func()) { // tokenizer metrics: one series
		p.labels = modelLabel
		f()
	}
	gauge := func(name, help string, v float64) {
		p.family(name, "gauge", help)
		sched(func() { p.sample(name, "", v) })
	}
	// Older SGLang's token counters move at request finish; the model credits them as decode completes.
	promptDone := e.promptTokens
	if old {
		promptDone = e.genLenDoneTokens()
	}
	p.family("sglang:prompt_tokens_total", "counter", "Number of prefill tokens processed.")
	tok(func() { p.sample("sglang:prompt_tokens_total", "", floor(promptDone)) })
	p.family("sglang:generation_tokens_total", "counter", "Number of generation tokens processed.")
	tok(func() { p.sample("sglang:generation_tokens_total", "", floor(e.generationTokens)) })
	if !old {
		p.family("sglang:cached_tokens_total", "counter", "Number of cached prompt tokens.")
		tok(func() { p.sample("sglang:cached_tokens_total", "", floor(e.cacheHits)) })
		p.family("sglang:num_requests_total", "counter", "Number of requests processed.")
		tok(func() { p.sample("sglang:num_requests_total", "", floor(e.finished["stop"]+e.finished["length"])) })
		p.family("sglang:realtime_tokens_total", "counter", "Total number of tokens processed, updated in real time.")
		sched(func() {
			p.sample("sglang:realtime_tokens_total", `mode="prefill_compute"`, floor(e.promptTokens-e.cacheHits))
			p.sample("sglang:realtime_tokens_total", `mode="prefill_cache"`, floor(e.cacheHits))
			p.sample("sglang:realtime_tokens_total", `mode="decode"`, floor(e.generationTokens))
		})
	}
	gauge("sglang:num_running_reqs", "The number of running requests.", e.running)
	gauge("sglang:num_used_tokens", "The number of used tokens.", e.kvUsage*e.cfg.KVCapacityTokens)
	gauge("sglang:token_usage", "The token usage.", e.kvUsage)
	gauge("sglang:gen_throughput", "The generation throughput (token/s).", 0)
	gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.", e.waiting)
	gauge("sglang:cache_hit_rate", "The prefix cache hit rate.", e.cfg.PrefixHitRatio)
	ttftName, itlName := "sglang:time_to_first_token_seconds", "sglang:inter_token_latency_seconds"
	if old {
		itlName = "sglang:time_per_output_token_seconds"
	}
	for _, h := range []struct {
		name string
		h    *hist
	}{{ttftName, e.ttft}, {itlName, e.itl}, {"sglang:e2e_request_latency_seconds", e.e2e}} {
		p.family(h.name, "histogram", "Histogram.")
		tok(func() { p.hist(h.name, h.h, 1) })
	}
}

// genLenDoneTokens approximates prompt tokens of finished requests for the old SGLang flavor.
func (e *Engine) genLenDoneTokens() float64 {
	if e.generationTokens == 0 || e.promptLen.count == 0 {
		return 0
	}
	return e.genLen.count * e.promptLen.sum / e.promptLen.count
}

// processMetrics imitates prometheus_client's process and Python collectors at the top of a page.
const processMetrics = `# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12345.0
python_gc_objects_collected_total{generation="1"} 2345.0
python_gc_objects_collected_total{generation="2"} 345.0
# HELP python_info Python platform information
# TYPE python_info gauge
python_info{implementation="CPython",major="3",minor="12",patchlevel="11",version="3.12.11"} 1.0
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 1.2345678848e+11
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 4.567891968e+09
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1234.56
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 123.0
`

// httpMetrics imitates the prometheus-fastapi-instrumentator families vLLM's API server exposes, which
// make up much of a real page and which the extractor must skip cheaply. They do not move, so they are
// rendered once.
var httpMetrics = renderHTTPMetrics()

func renderHTTPMetrics() string {
	w := new(strings.Builder)
	handlers := []string{"/v1/completions", "/v1/chat/completions", "/metrics", "/health"}
	w.WriteString("# HELP http_requests_total Total number of requests by method, status and handler.\n# TYPE http_requests_total counter\n")
	for _, h := range handlers {
		fmt.Fprintf(w, "http_requests_total{handler=%q,method=\"POST\",status=\"2xx\"} 1234.0\n", h)
	}
	bounds := []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60}
	w.WriteString("# HELP http_request_duration_highr_seconds Latency with many buckets but no API specific labels.\n# TYPE http_request_duration_highr_seconds histogram\n")
	for i, b := range bounds {
		fmt.Fprintf(w, "http_request_duration_highr_seconds_bucket{le=\"%s\"} %d.0\n", fmtFloat(b), 100*(i+1))
	}
	fmt.Fprintf(w, "http_request_duration_highr_seconds_bucket{le=\"+Inf\"} %d.0\nhttp_request_duration_highr_seconds_count %d.0\nhttp_request_duration_highr_seconds_sum 1234.5\n", 100*len(bounds), 100*len(bounds))
	w.WriteString("# HELP http_request_duration_seconds Latency with only few buckets by handler.\n# TYPE http_request_duration_seconds histogram\n")
	for _, h := range handlers {
		for i, b := range []float64{0.1, 0.5, 1} {
			fmt.Fprintf(w, "http_request_duration_seconds_bucket{handler=%q,le=\"%s\",method=\"POST\"} %d.0\n", h, fmtFloat(b), 10*(i+1))
		}
		fmt.Fprintf(w, "http_request_duration_seconds_bucket{handler=%q,le=\"+Inf\",method=\"POST\"} 40.0\n", h)
		fmt.Fprintf(w, "http_request_duration_seconds_count{handler=%q,method=\"POST\"} 40.0\n", h)
		fmt.Fprintf(w, "http_request_duration_seconds_sum{handler=%q,method=\"POST\"} 12.5\n", h)
	}
	return w.String()
}
