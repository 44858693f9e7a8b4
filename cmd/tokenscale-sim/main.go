// Command tokenscale-sim replays LLM request traces through a simulated disaggregated cluster under
// tokenscale's policy (the adapter's own velocity code), its ablations and the baselines, each with its
// tuning sweep, and reports SLO attainment and GPU-hours per trace. See docs/evaluation.md.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/sim/autoscale"
	"github.com/tokenscale/tokenscale/sim/cluster"
	"github.com/tokenscale/tokenscale/sim/eval"
	"github.com/tokenscale/tokenscale/sim/trace"
	"github.com/tokenscale/tokenscale/velocity/engine"
)

func main() {
	if version.Requested(os.Args[1:]) {
		version.Print(os.Stdout, "tokenscale-sim")
		return
	}
	// The policy's own logs (calibration, decisions) would drown the report; the report has the numbers.
	klog.SetLogger(logr.Discard())
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			// A trace file's text can reach the error (a field, a key): shown printable, a line each.
			fmt.Fprintln(os.Stderr, "tokenscale-sim:", engine.PrintableLines(err.Error(), 4<<10, 64<<10))
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tokenscale-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		traces       = fs.String("trace", "code,conv,mixed,burst,mooncake,servegen", "comma-separated traces: the embedded Azure 2023 `code` and `conv`, `mixed` (both at equal request rates), `burst` (conv with a 10x spike for 30 s at 45 min), `mooncake` (Mooncake's 17-minute long-prompt synthetic trace, with its own windows), `servegen` (three days of ServeGen production load, replayed as multi-day load; see --mean-rate), or files (Azure CSV, BurstGPT CSV, Mooncake JSONL)")
		format       = fs.String("format", "", "trace file format: azure, burstgpt, mooncake (default: guessed), or servegen for a ServeGen model folder of chunk-*-trace.csv files")
		lengths      = fs.String("lengths", "auto", "ServeGen load: where the synthesised requests' token lengths come from: dataset (each client's chunk-<n>-dataset.json distributions in the folder; clients without one draw from conv), code, conv, mooncake or a trace file (read whole, whatever its span; past 1,000,000 requests a seeded sample of that many); auto: dataset when the folder has any, else conv")
		skipBad      = fs.Bool("skip-bad", false, "skip and count malformed trace lines instead of failing")
		start        = fs.Duration("start", 0, "window start in trace time")
		duration     = fs.Duration("duration", 0, "window length in trace time (0: to the end; ServeGen load: 72h unless given)")
		timeScale    = fs.Float64("time-scale", 1, "replay speed, 0.01 to 1e6: 2 replays twice as fast (ServeGen load: 8 unless given)")
		rateScale    = fs.Float64("rate-scale", 1, "request-rate multiplier, up to 1000, keeping the timeline (ServeGen load: chosen by --mean-rate unless given)")
		meanRate     = fs.Float64("mean-rate", 15, "ServeGen load: scale every window's rate so the replayed mean is this many requests/s, unless --rate-scale is given")
		seed         = fs.Uint64("seed", 1, "seed of every random draw: rate scaling, ServeGen arrivals and token lengths, the mixed and burst traces, a --lengths file's sample")
		hwName       = fs.String("hardware", "llama3.1-8b-h100", "hardware profile name")
		profiles     = fs.String("profiles", "", "hardware profiles file (default: the built-in sim/cluster/profiles.yaml)")
		coldStart    = fs.Duration("cold-start", 60*time.Second, "time for a new instance to be Ready")
		router       = fs.Duration("router-delay", time.Second, "time for a conversion to reach the router")
		convChunk    = fs.Int("convert-chunk-tokens", 512, "most prompt tokens a converted decoder adds to one decode step (TokenScale's restricted chunked prefill; a stock vLLM decoder chunks at the profile's prefillBatchTokens)")
		convBudget   = fs.Duration("convert-step-budget", 50*time.Millisecond, "the step time a converted decoder's prompt chunk is sized to fill, with its decode batch (a stock vLLM decoder has none: give a long one)")
		convSwitch   = fs.Bool("convert-switch", false, "converted decoders switch role as the converter's sglang actuator does: only an idle decoder switches, it prefills as a prefiller and decodes nothing, and tokenscale runs with policy.convertedPrefill 1")
		policies     = fs.String("policies", "", "comma-separated policies (default: all)")
		goal         = fs.Float64("goal", 0.96, "joint SLO attainment to compare policies at; the target is the lower of it and the trace's ceiling less a point")
		tuning       = fs.Bool("tuning", false, "also print every tuning of the sweep")
		asJSON       = fs.Bool("json", false, "write the reports as JSON to stdout")
		plots        = fs.String("plots", "", "directory for PNG plots (load vs instances, TTFT over time)")
		workers      = fs.Int("workers", 0, "runs in parallel (default: GOMAXPROCS)")
		progress     = fs.Bool("progress", isTerminal(stderr), "show a progress bar on stderr")
		history      = fs.Duration("history", 20*time.Minute, "take the policies' offline statistics (V_D profile, means, peaks, P:D ratio, static sizes) from this first part of the trace, never scored; 0: from the scored trace itself (in sample)")
		tuneWin      = fs.Duration("tune-window", 20*time.Minute, "choose each policy's tuning on this window after the history and score the rest; 0: choose on the scored window")
		warmup       = fs.Duration("warmup", 10*time.Minute, "every run replays this much of the traffic before its window, unscored, so every policy enters the window warmed up")
		scrapeEvery  = fs.Duration("scrape-interval", 0, "tokenscale's scrape.interval, between 100ms and 1m: its decision round and its rates' smoothing follow it (0: the adapter's default, 1s)")
		hindsightSeg = fs.Duration("hindsight", 0, "also report the hindsight reference: fixed pool sizes resized this often (at least 1s, e.g. 1m) with the whole window known and no cold start, about the least any policy choosing among them could pay (0: off)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if !(*goal > 0 && *goal <= 1) {
		return fmt.Errorf("--goal %v must be in (0, 1]", *goal)
	}
	if *hindsightSeg != 0 && *hindsightSeg < time.Second {
		return fmt.Errorf("--hindsight %s must be 0 (off) or at least 1s", *hindsightSeg)
	}
	if *scrapeEvery != 0 && (*scrapeEvery < 100*time.Millisecond || *scrapeEvery > time.Minute) {
		return fmt.Errorf("--scrape-interval %s must be between 100ms and 1m, as scrape.interval must", *scrapeEvery)
	}
	if !(*meanRate > 0 && *meanRate <= 1e6) {
		return fmt.Errorf("--mean-rate %v must be a positive number of requests/s (at most 1e6)", *meanRate)
	}
	if !(*rateScale > 0 && *rateScale <= 1000) || !(*timeScale >= 0.01 && *timeScale <= 1e6) {
		// A rate scale allocates that many times the trace's requests; a time scale below 1 stretches it.
		return fmt.Errorf("--rate-scale %v must be in (0, 1000] and --time-scale %v in [0.01, 1e6]", *rateScale, *timeScale)
	}
	if *start < 0 || *duration < 0 {
		// Refused, not read as the trace's start or as no end, which would replay what was not asked for.
		return fmt.Errorf("--start %s and --duration %s must not be negative", *start, *duration)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"history", *history}, {"tune-window", *tuneWin}, {"warmup", *warmup}, {"cold-start", *coldStart}, {"router-delay", *router}} {
		if d.v < 0 {
			// Refused here, naming the flag: a negative window would run in sample quietly, and a negative
			// delay would fail every run of every sweep without naming it.
			return fmt.Errorf("--%s %s must not be negative", d.flag, d.v)
		}
	}
	if *coldStart == 0 || *router == 0 {
		// The cluster model reads 0 as its default (60 s, 1 s): a run asked for none would model them
		// and say so only in the report's header.
		return fmt.Errorf("--cold-start %s and --router-delay %s must be positive (instant readiness is not modelled)", *coldStart, *router)
	}
	if *convChunk < 64 || *convChunk > 1<<20 || *convBudget <= 0 {
		// 0 reads as the default in the cluster model, and below 64 the chunk's floor applies anyway.
		return fmt.Errorf("--convert-chunk-tokens %d must be 64 to 1048576 and --convert-step-budget %s positive", *convChunk, *convBudget)
	}
	if *workers < 0 || *workers > maxWorkers {
		return fmt.Errorf("--workers %d must be between 0 (GOMAXPROCS) and %d", *workers, maxWorkers)
	}
	if *duration > math.MaxInt64-*start {
		return fmt.Errorf("--start %s plus --duration %s is past the longest time a window can end at (%s)", *start, *duration, time.Duration(math.MaxInt64))
	}
	hw, err := hardware(*hwName, *profiles)
	if err != nil {
		return err
	}
	var names []string
	if *policies != "" {
		names = strings.Split(*policies, ",")
	}
	pols, err := autoscale.Select(names)
	if err != nil {
		return err
	}
	if *lengths == "dataset" && slices.ContainsFunc(strings.Split(*traces, ","), func(n string) bool { return strings.TrimSpace(n) == "servegen" }) {
		// Said before any trace runs: the default list runs five traces before the embedded days.
		return errors.New("--lengths dataset: the embedded ServeGen days carry no chunk-<n>-dataset.json (too large to embed); use code, conv or a trace file")
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	windowsGiven := explicit["history"] || explicit["tune-window"] || explicit["warmup"]
	var reports []*eval.Report
	for _, name := range strings.Split(*traces, ",") {
		name = strings.TrimSpace(name)
		opts := trace.Options{Format: trace.Format(*format), SkipBad: *skipBad, Start: *start, Duration: *duration,
			TimeScale: *timeScale, RateScale: *rateScale, Seed: *seed, MaxRequests: trace.DefaultMaxRequests}
		hist, tune, warm := *history, *tuneWin, *warmup
		if w, ok := windowPresets[name]; ok && !windowsGiven {
			hist, tune, warm = w[0], w[1], w[2]
		}
		multiDay := name == "servegen" || opts.Format == trace.ServeGen
		if multiDay {
			serveGenPreset(&opts, explicit, *meanRate)
		}
		lens := lengthsFor(name, opts, *lengths)
		tr, err := load(name, opts, lens)
		if err != nil {
			return err
		}
		if tr.Failed > 0 {
			fmt.Fprintf(stderr, "%s: left out %d requests the trace marks as failed (0 response tokens)\n", name, tr.Failed)
		}
		if tr.Skipped > 0 {
			fmt.Fprintf(stderr, "%s: skipped %d malformed lines, first: %s\n", name, tr.Skipped, strings.Join(tr.FirstSkipped, "; "))
		}
		var load string
		if multiDay {
			load = serveGenLoad(opts, tr, lengthsName(lens, tr))
			if !windowsGiven {
				// Multi-day load: a day (or a third of what there is) each for the statistics, the tuning
				// and the score, so the score covers a whole diurnal cycle the tuning has not seen.
				third := (tr.Requests[len(tr.Requests)-1].Arrival + time.Second) / 3
				hist, tune, warm = third, third, min(*warmup, third)
			}
		}
		if _, preset := windowPresets[name]; !multiDay && !preset && !windowsGiven {
			// A trace shorter than the default windows and a scored stretch (a 17-minute file, an hour at
			// --time-scale 2) gets a third each, as multi-day load does, instead of an empty window.
			if span := tr.Requests[len(tr.Requests)-1].Arrival + time.Second; span < hist+tune+minScored {
				third := span / 3
				hist, tune, warm = third, third, min(warm, third)
				fmt.Fprintf(stderr, "%s: %s of replayed trace is shorter than the windows (history, tuning, then at least %s to score): %s each\n",
					name, span.Round(time.Second), minScored, third.Round(time.Second))
			}
		}
		eo := eval.Options{Cluster: cluster.Config{Hardware: hw, ColdStart: *coldStart, RouterDelay: *router, ConvertChunkTokens: *convChunk, ConvertStepBudget: *convBudget, ConvertSwitch: *convSwitch}, Goal: *goal, Workers: *workers,
			History: hist, Tune: tune, Warmup: warm, Hindsight: *hindsightSeg, ScrapeInterval: *scrapeEvery}
		if hist <= 0 {
			eo.Tune, eo.Warmup = 0, 0
		}
		reqs := tr.Requests
		if span := reqs[len(reqs)-1].Arrival - eo.History - eo.Tune; span > 12*time.Hour {
			// A week-long file (the Azure 2024 release) scored whole runs for hours: say so before starting.
			fmt.Fprintf(stderr, "%s: scoring %s of trace time; every run of every policy's sweep replays all of it, which takes hours (--start and --duration pick a window)\n", name, span.Round(time.Hour))
		}
		if *progress {
			eo.Progress = func(done, total int) { bar(stderr, name, done, total) }
		}
		rep, err := eval.Evaluate(name, reqs, pols, eo)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rep.Load = load
		reports = append(reports, rep)
		if *plots != "" {
			if err := os.MkdirAll(*plots, 0o755); err != nil {
				return err
			}
			files, err := rep.Plot(filepath.Join(*plots, safeName(name)))
			if err != nil {
				return fmt.Errorf("plots: %w", err)
			}
			fmt.Fprintf(stderr, "wrote %s\n", strings.Join(files, ", "))
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(reports)
	}
	for _, rep := range reports {
		rep.WriteTable(stdout, *tuning)
		if v := rep.Verdict(); v != "" {
			fmt.Fprintln(stdout, "\n"+v)
		}
		fmt.Fprintln(stdout)
	}
	return nil
}

func hardware(name, file string) (cluster.Hardware, error) {
	if file == "" {
		return cluster.Profile(name)
	}
	ps, err := cluster.LoadProfiles(file)
	if err != nil {
		return cluster.Hardware{}, err
	}
	for _, p := range ps {
		if p.Name == name {
			return p, nil
		}
	}
	return cluster.Hardware{}, fmt.Errorf("%s has no profile %q", file, name)
}

func load(name string, o trace.Options, lengths string) (*trace.Trace, error) {
	if o.Format == trace.ServeGen {
		if lengths == "dataset" {
			// Clients without a dataset file draw from conv; the report counts them.
			o.ServeGenLengths, lengths = true, "conv"
		}
		l, err := loadLengths(lengths, o)
		if err != nil {
			return nil, err
		}
		return trace.ReadServeGen(name, l.Requests, o)
	}
	switch name {
	case "servegen":
		l, err := loadLengths(lengths, o)
		if err != nil {
			return nil, err
		}
		return trace.EmbeddedServeGen(l.Requests, o)
	case "code", "conv":
		return trace.Embedded(name, o)
	case "mooncake":
		return trace.Embedded(name, o)
	case "mixed":
		return trace.Mixed(o)
	case "burst":
		return trace.Burst(o)
	}
	if fi, err := os.Stat(name); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%s is a folder: a ServeGen model folder needs --format servegen", name)
	}
	return trace.ReadFile(name, o)
}

// loadLengths reads the trace named by --lengths for its token lengths: an embedded trace as it is, a
// file whole, whatever its span, as a bounded sample (trace.Options.LengthsOnly).
func loadLengths(name string, o trace.Options) (*trace.Trace, error) {
	var l *trace.Trace
	var err error
	switch name {
	case "servegen", "":
		return nil, errors.New("--lengths: ServeGen load has no token lengths of its own: name a trace to draw them from (conv, code, mooncake or a file)")
	case "code", "conv", "mooncake", "mixed", "burst":
		l, err = load(name, trace.Options{}, "")
	default:
		l, err = trace.ReadFile(name, trace.Options{LengthsOnly: true, SkipBad: o.SkipBad, Seed: o.Seed})
	}
	if err != nil {
		return nil, fmt.Errorf("--lengths: %w", err)
	}
	return l, nil
}

// lengthsFor resolves --lengths auto for trace name: a ServeGen folder's own per-client distributions
// when it has them, else the Azure conv trace.
func lengthsFor(name string, o trace.Options, lengths string) string {
	if lengths != "auto" {
		return lengths
	}
	if o.Format == trace.ServeGen && trace.HasServeGenDatasets(name) {
		return "dataset"
	}
	return "conv"
}

// serveGenDays is how much ServeGen load is replayed unless --duration says otherwise.
const serveGenDays = 3 * 24 * time.Hour

// serveGenPreset sets how ServeGen load is replayed where no flag says otherwise: three days from
// --start, each day in 3 hours (time scale 8), at a mean of meanRate requests/s. A day at the folder's
// real rate (about 200 requests/s for m-large) is 17 million requests; the simulator replays about
// half a million per run in the default comparison's time budget, so the day is compressed rather than
// the pools shrunk to one or two instances, where integer steps would decide the comparison.
func serveGenPreset(o *trace.Options, explicit map[string]bool, meanRate float64) {
	if !explicit["duration"] {
		o.Duration = serveGenDays
	}
	if !explicit["time-scale"] {
		o.TimeScale = 8
	}
	if !explicit["rate-scale"] {
		o.MeanRate = meanRate
	}
}

// serveGenLoad says how ServeGen load was replayed, for the report's header.
func serveGenLoad(o trace.Options, tr *trace.Trace, lengths string) string {
	ts := o.TimeScale // 0 is unset, 1; below 1 is slower, as --time-scale allows down to 0.01
	if ts <= 0 {
		ts = 1
	}
	span := time.Duration(float64(tr.Requests[len(tr.Requests)-1].Arrival) * ts).Round(time.Minute)
	return fmt.Sprintf("ServeGen load from %s for %s of trace time, replayed %g× faster (time scale) at rate scale %.4g, %d requests, token lengths drawn from %s",
		o.Start, span, ts, tr.RateScale, len(tr.Requests), lengths)
}

// lengthsName says where tr's token lengths came from, for the report's header.
func lengthsName(lengths string, tr *trace.Trace) string {
	if lengths != "dataset" {
		return lengths
	}
	s := "each client's chunk-<n>-dataset.json distributions"
	if tr.PoolLengthClients > 0 {
		s += fmt.Sprintf(" (%d of %d clients have none and draw from conv)", tr.PoolLengthClients, tr.Clients)
	}
	return s
}

// maxWorkers bounds --workers: each worker holds a run's state, and a sweep has a few hundred runs to share.
const maxWorkers = 1024

// minScored is the least scored stretch the default windows leave before a trace gets a third each.
const minScored = 10 * time.Minute

// windowPresets are the history, tuning and warm-up windows of embedded traces too short for the
// defaults (20, 20 and 10 minutes), used unless a window flag is given: the 17-minute Mooncake trace
// keeps its last 7 minutes for scoring.
var windowPresets = map[string][3]time.Duration{
	"mooncake": {5 * time.Minute, 5 * time.Minute, 2 * time.Minute},
}

func safeName(s string) string {
	s = strings.TrimSuffix(filepath.Base(s), filepath.Ext(s))
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, s)
}

// bar redraws a one-line progress bar.
func bar(w io.Writer, name string, done, total int) {
	const width = 30
	n := width * done / max(total, 1)
	fmt.Fprintf(w, "\r%-8s [%s%s] %d/%d runs", name, strings.Repeat("#", n), strings.Repeat(".", width-n), done, total)
	if done == total {
		fmt.Fprintln(w)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
