// Package perfharness is tokenscale-perf's measurements of what the scraping side of tokenscale costs,
// repeatably:
//
//	Scrape   a sustained 1 Hz collector run (the adapter's scraper and velocity store) over N fake vLLM
//	         engines served by a child process on their own loopback addresses; reports this process's
//	         CPU (cores) and memory, and each round's wall time.
//	Memory   the velocity store holding N synthetic pods for many rounds: retained heap per pod, and
//	         whether it stays bounded.
//	Engines  the child that serves the fake engines (`tokenscale-perf engines`).
package perfharness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
	"github.com/tokenscale/tokenscale/internal/procstat"
	"github.com/tokenscale/tokenscale/velocity/collector"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// Engines serves n fake vLLM V1 engines, each on its own 127.1.x.y address and the same port (as
// pods share a port), under load; it prints one line per engine URL, then "ready".
func Engines(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("engines", flag.ExitOnError)
	n := fs.Int("n", 2000, "engines")
	port := fs.Int("port", 18000, "port every engine listens on")
	_ = fs.Parse(args)
	var engines []*fakeengine.Engine
	for i := range *n {
		ip := fmt.Sprintf("127.1.%d.%d", 1+i/250, 1+i%250)
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(*port)))
		if err != nil {
			return fmt.Errorf("engine %d: %w", i, err)
		}
		e := fakeengine.New(fakeengine.Config{Flavor: fakeengine.VLLMV1, PrefillTokensPerSec: 10000, DecodeTokensPerSec: 2500})
		e.SetLoad(fakeengine.Load{PromptTokensPerSec: 4000, OutputTokensPerSec: 800})
		engines = append(engines, e)
		srv := &http.Server{Handler: e, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		fmt.Printf("http://%s/metrics\n", ln.Addr())
	}
	fmt.Println("ready")
	// One ticker advances every engine, so the child's own cost stays small.
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			for _, e := range engines {
				e.Advance(200 * time.Millisecond)
			}
		}
	}
}

type scrapeResult struct {
	Endpoints         int     `json:"endpoints"`
	Seconds           float64 `json:"seconds"`
	Rounds            int     `json:"rounds"`
	CPUCores          float64 `json:"cpu_cores"`           // CPU seconds per wall second of this process
	EngineCPUCores    float64 `json:"engine_cpu_cores"`    // the same for the fake engines' child process
	CPUPerEndpointUs  float64 `json:"cpu_us_per_endpoint"` // CPU per scrape of one endpoint
	RoundP50Ms        float64 `json:"round_p50_ms"`        // wall time of one full round
	RoundP99Ms        float64 `json:"round_p99_ms"`
	ErrorsPerRound    float64 `json:"errors_per_round"`
	MaxRSSMiB         float64 `json:"max_rss_mib"`
	HeapInuseMiB      float64 `json:"heap_inuse_mib"`
	PageBytes         int     `json:"page_bytes"`
	Projected10kCores float64 `json:"projected_cores_10000_endpoints"`
	// Hanging is set with -hanging only.
	Hanging *hangingResult `json:"hanging_endpoints,omitempty"`
}

// hangingResult is what a run with endpoints that never answer adds: how many, the pods rounds left
// waiting, and how the healthy endpoints fared.
type hangingResult struct {
	Endpoints          int     `json:"endpoints"`
	NotStartedPerRound float64 `json:"not_started_per_round"`
	// HealthyMaxMissed is the longest run of rounds a healthy endpoint went without a successful scrape.
	HealthyMaxMissed    int     `json:"healthy_max_missed_rounds"`
	HealthyScrapedShare float64 `json:"healthy_scraped_share"`
	HealthyErrors       int64   `json:"healthy_errors"`
}

// countingObserver counts failed scrapes, the healthy endpoints' failures apart, and pods a round left
// waiting; scrapes report from their own goroutines.
type countingObserver struct{ errs, healthyErrs, notStarted atomic.Int64 }

func (c *countingObserver) ObserveScrape(pool string, _ time.Duration, err error) {
	switch {
	case err == nil:
	case errors.Is(err, collector.ErrNotScraped):
		c.notStarted.Add(1)
	default:
		c.errs.Add(1)
		if pool != hangingPool {
			c.healthyErrs.Add(1)
		}
	}
}

// hangingPool is the pool of the -hanging endpoints.
const hangingPool = "hanging"

// gapRecorder notes the round of each pod's last successful scrape.
type gapRecorder struct {
	*store.Store
	mu    sync.Mutex
	round int
	last  map[store.PodKey]int
}

func (g *gapRecorder) Record(pod store.PodKey, t time.Time, snap *engine.Snapshot) {
	g.Store.Record(pod, t, snap)
	g.mu.Lock()
	g.last[pod] = g.round
	g.mu.Unlock()
}

func Scrape(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("scrape", flag.ExitOnError)
	n := fs.Int("endpoints", 2000, "fake engines to scrape")
	dur := fs.Duration("duration", 60*time.Second, "how long to scrape at 1 Hz")
	conc := fs.Int("concurrency", 64, "scrapes in flight (the adapter's default)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measured rounds to this file")
	hanging := fs.Int("hanging", 0, "endpoints that accept and never answer, scraped beside the healthy ones")
	deadline := fs.Duration("deadline", 0, "the round deadline (0: none, whole rounds are timed; the adapter's loop uses 950ms at the defaults)")
	timeout := fs.Duration("timeout", 800*time.Millisecond, "per-scrape timeout")
	_ = fs.Parse(args)

	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.CommandContext(ctx, self, "engines", "-n", strconv.Itoa(*n))
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	var targets []collector.Target
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "ready" {
		targets = append(targets, collector.Target{Pod: store.PodKey{Namespace: "perf", Name: fmt.Sprintf("p%d", len(targets))}, Pool: "decode", URL: sc.Text()})
	}
	if len(targets) != *n {
		return fmt.Errorf("engine child started %d of %d engines", len(targets), *n)
	}
	page, err := fetch(targets[0].URL)
	if err != nil {
		return err
	}
	healthy := targets
	if *hanging > 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		hang := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		})}
		go func() { _ = hang.Serve(ln) }()
		defer hang.Close()
		for i := range *hanging {
			targets = append(targets, collector.Target{Pod: store.PodKey{Namespace: "perf", Name: fmt.Sprintf("hang%d", i)}, Pool: hangingPool,
				URL: fmt.Sprintf("http://%s/metrics?h=%d", ln.Addr(), i)})
		}
	}

	st := &gapRecorder{Store: store.New(store.Options{}, nil), last: map[store.PodKey]int{}}
	var rec collector.Recorder = st.Store // the measured path, unwrapped, unless gaps are counted
	if *hanging > 0 {
		rec = st
	}
	obs := &countingObserver{}
	// No round deadline by default: the harness measures how long a whole round takes.
	scraper := collector.NewScraper(collector.Options{Concurrency: *conc, Timeout: *timeout, RoundDeadline: *deadline}, rec,
		func() []collector.Target { return targets }, obs)
	scraper.ScrapeOnce(ctx) // warm up connections and the store
	obs.errs.Store(0)
	obs.healthyErrs.Store(0)
	obs.notStarted.Store(0)
	healthyScrapes, maxGap := 0, 0
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	cpu0, wall0 := cpuSeconds(), time.Now()
	engCPU0, engErr := procstat.CPU(child.Process.Pid)
	var rounds []time.Duration
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(wall0) < *dur {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		start := time.Now()
		st.mu.Lock()
		st.round++
		st.mu.Unlock()
		scraper.ScrapeOnce(ctx)
		rounds = append(rounds, time.Since(start))
		if *hanging > 0 {
			st.mu.Lock()
			for _, t := range healthy {
				if st.last[t.Pod] == st.round {
					healthyScrapes++
				}
				maxGap = max(maxGap, st.round-st.last[t.Pod])
			}
			st.mu.Unlock()
		}
	}
	wall, cpu := time.Since(wall0).Seconds(), cpuSeconds()-cpu0
	engCPU1, engErr1 := procstat.CPU(child.Process.Pid)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	sort.Slice(rounds, func(i, j int) bool { return rounds[i] < rounds[j] })
	pct := func(p float64) float64 { return float64(rounds[int(p*float64(len(rounds)-1))].Microseconds()) / 1000 }
	r := scrapeResult{
		Endpoints: *n, Seconds: wall, Rounds: len(rounds), CPUCores: cpu / wall,
		CPUPerEndpointUs: cpu / float64(len(rounds)**n) * 1e6, RoundP50Ms: pct(0.5), RoundP99Ms: pct(0.99),
		ErrorsPerRound: float64(obs.errs.Load()) / float64(len(rounds)), MaxRSSMiB: maxRSSMiB(), HeapInuseMiB: float64(ms.HeapInuse) / (1 << 20),
		PageBytes: len(page),
	}
	if *hanging > 0 {
		r.Hanging = &hangingResult{Endpoints: *hanging, HealthyMaxMissed: maxGap, HealthyErrors: obs.healthyErrs.Load(),
			NotStartedPerRound:  float64(obs.notStarted.Load()) / float64(len(rounds)),
			HealthyScrapedShare: float64(healthyScrapes) / float64(len(rounds)*len(healthy))}
	}
	r.Projected10kCores = r.CPUCores * 10000 / float64(*n)
	if engErr == nil && engErr1 == nil {
		r.EngineCPUCores = (engCPU1 - engCPU0).Seconds() / wall
	}
	if *asJSON {
		if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
			return err
		}
		return keptUp(r, int(obs.errs.Load()+obs.notStarted.Load()), *deadline, *timeout)
	}
	fmt.Printf("scraped %d fake vLLM V1 endpoints (%d-byte pages) at 1 Hz for %.0f s, concurrency %d, on %d CPUs:\n",
		r.Endpoints, r.PageBytes, r.Seconds, *conc, runtime.NumCPU())
	fmt.Printf("  CPU %.2f cores (%.0f µs per endpoint scrape: HTTP + parse + extract + store)\n", r.CPUCores, r.CPUPerEndpointUs)
	if engErr == nil && engErr1 == nil {
		fmt.Printf("  the fake engines' process: CPU %.2f cores (it shares this machine)\n", r.EngineCPUCores)
	}
	fmt.Printf("  round wall time p50 %.0f ms, p99 %.0f ms; errors per round %.1f\n", r.RoundP50Ms, r.RoundP99Ms, r.ErrorsPerRound)
	fmt.Printf("  max RSS %.0f MiB, heap in use %.0f MiB\n", r.MaxRSSMiB, r.HeapInuseMiB)
	fmt.Printf("  linear projection to 10,000 endpoints: %.1f cores\n", r.Projected10kCores)
	if h := r.Hanging; h != nil {
		fmt.Printf("  with %d endpoints that never answer (deadline %s, timeout %s): %.1f pods left waiting per round; healthy endpoints scraped in %.1f%% of rounds, missing at most %d rounds in a row, %d healthy errors\n",
			h.Endpoints, *deadline, *timeout, h.NotStartedPerRound, 100*h.HealthyScrapedShare, h.HealthyMaxMissed, h.HealthyErrors)
	}
	return keptUp(r, int(obs.errs.Load()+obs.notStarted.Load()), *deadline, *timeout)
}

// keptUp fails the run unless every scrape of the healthy fake engines on loopback started and
// succeeded and rounds fit in the 1 s interval. With hanging endpoints it fails if a healthy scrape
// failed or a healthy endpoint missed a round, or, with a deadline, if a round outlasted deadline +
// timeout by more than a quarter second. It is an error returned, not an exit, so the engines' child
// is still killed.
func keptUp(r scrapeResult, errs int, deadline, timeout time.Duration) error {
	if h := r.Hanging; h != nil {
		bound := float64((deadline + timeout + 250*time.Millisecond).Milliseconds())
		if h.HealthyErrors > 0 || h.HealthyMaxMissed > 0 || deadline > 0 && r.RoundP99Ms > bound {
			return fmt.Errorf("%d failed healthy scrapes, healthy endpoints missing up to %d rounds in a row, round p99 %.0f ms (bound %.0f ms)",
				h.HealthyErrors, h.HealthyMaxMissed, r.RoundP99Ms, bound)
		}
		return nil
	}
	if errs > 0 || r.RoundP99Ms > 1000 {
		return fmt.Errorf("%d failed scrapes, round p99 %.0f ms: the collector did not keep up", errs, r.RoundP99Ms)
	}
	return nil
}

func fetch(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, err = bufio.NewReader(resp.Body).WriteTo(&b)
	return []byte(b.String()), err
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func maxRSSMiB() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Maxrss) / 1024 // Linux reports KiB
}

func Memory(args []string) error {
	fs := flag.NewFlagSet("memory", flag.ExitOnError)
	pods := fs.Int("pods", 10000, "synthetic pods in the store")
	rounds := fs.Int("rounds", 120, "scrape rounds recorded (1 s apart in store time), at least 24")
	_ = fs.Parse(args)
	// Sampled after round 11, one past half and at the end: three distinct points (fewer rounds indexed
	// past the samples taken).
	if *rounds < 24 || *pods < 1 {
		return fmt.Errorf("-rounds %d must be at least 24 and -pods %d at least 1", *rounds, *pods)
	}
	// One fake engine under load gives each round's page (counters moving); every pod records its own copy
	// of the extracted snapshot, as each pod's scrape yields its own.
	eng := fakeengine.New(fakeengine.Config{Flavor: fakeengine.VLLMV1, PrefillTokensPerSec: 10000, DecodeTokensPerSec: 2500})
	eng.SetLoad(fakeengine.Load{PromptTokensPerSec: 4000, OutputTokensPerSec: 800})
	now := time.Unix(1_700_000_000, 0)
	st := store.New(store.Options{}, func() time.Time { return now })
	heap := func() float64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapAlloc)
	}
	base := heap()
	var samples []float64
	for r := range *rounds {
		now = now.Add(time.Second)
		eng.Advance(time.Second)
		rec := httptest.NewRecorder()
		eng.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		snap, err := engine.ExtractBytes(rec.Body.Bytes(), engine.Auto)
		if err != nil {
			return err
		}
		for p := range *pods {
			c := *snap
			st.Record(store.PodKey{Namespace: "perf", Name: strconv.Itoa(p)}, now, &c)
		}
		// After round 11, one past half and the last: at half the history window of the quick run (40
		// rounds) has only just filled, and its slices may still grow.
		if done := r + 1; done == 11 || done == *rounds/2+1 || done == *rounds {
			samples = append(samples, heap()-base)
		}
	}
	if st.Len() != *pods {
		return errors.New("store lost pods")
	}
	fmt.Printf("velocity store with %d pods, %d rounds: retained heap %.1f MiB after 11 rounds, %.1f MiB past half, %.1f MiB at the end (%.1f KiB per pod)\n",
		*pods, *rounds, samples[0]/(1<<20), samples[1]/(1<<20), samples[2]/(1<<20), samples[2]/float64(*pods)/1024)
	// Once the store's history window is full (by half the run), the heap must not keep growing.
	if samples[2] > 1.05*samples[1]+(1<<20) {
		return fmt.Errorf("store memory grows with rounds: %.1f MiB past half, %.1f MiB at the end", samples[1]/(1<<20), samples[2]/(1<<20))
	}
	return nil
}
