package trace

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ServeGen is a ServeGen model folder (Alibaba Bailian production load, arXiv 2505.09999): one
// chunk-<n>-trace.csv per anonymised client, each row a 600 s window
// "window_start_s,rate_req_per_s,cv_of_interarrival,iat_family,param1,param2". Per-request arrivals are
// synthesised from each window's rate and inter-arrival distribution, summed over clients.
const ServeGen Format = "servegen"

// ServeGenWindowSeconds is the length of a ServeGen window.
const ServeGenWindowSeconds = 600

// Limits that keep a hostile ServeGen file bounded in memory and time.
const (
	maxServeGenLine    = 4096
	maxServeGenRows    = 1 << 20
	maxServeGenRate    = 1e4              // requests/s of one client in one window
	maxServeGenStart   = 10 * 365 * 86400 // window starts, seconds
	maxServeGenShape   = 1e6
	minServeGenShape   = 1e-3
	minWeibullShape    = 0.05       // Γ(1+1/k) stays finite
	maxServeGenRequest = 20_000_000 // synthesised requests in all
	maxServeGenFiles   = 10_000     // chunk-*-trace.csv files (clients) of one folder
)

// maxServeGenFolderWindows bounds the windows a folder's files keep in all (64 bytes each), as
// maxServeGenRows bounds one file's: the embedded three days hold 55,296. A variable so a test can lower it.
var maxServeGenFolderWindows = 1 << 22

// maxServeGenFolderValues bounds the length-distribution values a folder's dataset files keep in all (12
// bytes each), as maxServeGenPMFValues bounds one field's: each file may hold 64 MB, but a folder of
// thousands would otherwise keep gigabytes. At the 29 bytes a value of testdata/servegen's file, the
// release's m-large (104 MB of dataset files) holds about 4 million, all windows together. A variable so a
// test can lower it.
var maxServeGenFolderValues = 1 << 25

// ServeGenWindow is one row of a client's file.
type ServeGenWindow struct {
	Start, Rate, CV float64
	Family          string // Weibull, Gamma, Exponential or "" (none fitted)
	P1, P2          float64
	line            int // in its file, so a synthesis error can name the window's line
}

// ParseServeGenClient reads one client's windows. Errors name the file and line.
func ParseServeGenClient(r io.Reader, name string) ([]ServeGenWindow, error) {
	return parseServeGenClient(r, name, nil, nil)
}

// parseServeGenClient is ParseServeGenClient keeping only the windows keep (nil: all) accepts, at most
// *budget of them (nil: no bound but the file's), which it lowers by those kept. Every row is checked.
func parseServeGenClient(r io.Reader, name string, keep func(ServeGenWindow) bool, budget *int) ([]ServeGenWindow, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxServeGenLine)
	var out []ServeGenWindow
	line, rows := 0, 0
	last := -1.0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		// Blank lines count: an endless run of them read forever.
		if rows++; rows > maxServeGenRows {
			return nil, lineError(name, line, "more than %d lines", maxServeGenRows)
		}
		if text == "" {
			continue
		}
		f := strings.Split(text, ",")
		if len(f) != 6 {
			return nil, lineError(name, line, "want 6 columns (window_start_s, rate, cv, family, param1, param2), got %d", len(f))
		}
		var v [5]float64
		for i, k := range []int{0, 1, 2, 4, 5} {
			x, err := strconv.ParseFloat(strings.TrimSpace(f[k]), 64)
			if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, lineError(name, line, "column %d: %q is not a finite number", k+1, clip(f[k]))
			}
			v[i] = x
		}
		w := ServeGenWindow{Start: v[0], Rate: v[1], CV: v[2], Family: strings.TrimSpace(f[3]), P1: v[3], P2: v[4], line: line}
		switch {
		case w.Start < 0 || w.Start > maxServeGenStart || w.Start != math.Trunc(w.Start):
			return nil, lineError(name, line, "window start %v must be a whole number of seconds in [0, %d]", w.Start, maxServeGenStart)
		case w.Start <= last:
			return nil, lineError(name, line, "window start %v does not follow %v", w.Start, last)
		case last >= 0 && w.Start < last+ServeGenWindowSeconds:
			// Each row is a window of ServeGenWindowSeconds: overlapping rows would add their rates.
			return nil, lineError(name, line, "window start %v is within %d s of the window at %v (each row is a %d s window)", w.Start, ServeGenWindowSeconds, last, ServeGenWindowSeconds)
		case w.Rate < 0 || w.Rate > maxServeGenRate:
			return nil, lineError(name, line, "rate %v must be in [0, %g] requests/s", w.Rate, maxServeGenRate)
		case w.CV < 0:
			return nil, lineError(name, line, "inter-arrival CV %v is negative", w.CV)
		}
		switch w.Family {
		case "", "Exponential":
		case "Weibull", "Gamma":
			lo := minServeGenShape
			if w.Family == "Weibull" {
				lo = minWeibullShape
			}
			if w.Rate > 0 && (w.P1 < lo || w.P1 > maxServeGenShape) {
				return nil, lineError(name, line, "%s shape %v must be in [%g, %g]", w.Family, w.P1, lo, maxServeGenShape)
			}
		default:
			return nil, lineError(name, line, "unknown inter-arrival family %q (want Weibull, Gamma, Exponential or empty)", clip(w.Family))
		}
		last = w.Start
		if keep != nil && !keep(w) {
			continue
		}
		if budget != nil {
			if *budget <= 0 {
				return nil, lineError(name, line, "more than %d windows in the replayed range, all chunk files together: pick a window with --start and --duration", maxServeGenFolderWindows)
			}
			*budget--
		}
		out = append(out, w)
	}
	if err := sc.Err(); err != nil {
		return nil, lineError(name, line+1, "%w", err)
	}
	return out, nil
}

// gamma draws Gamma(k, 1) (Marsaglia and Tsang; boosted for k < 1).
func gamma(rng *rand.Rand, k float64) float64 {
	if k < 1 {
		return gamma(rng, k+1) * math.Pow(rng.Float64(), 1/k)
	}
	d := k - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if math.Log(u) < 0.5*x*x+d-d*v+d*math.Log(v) {
			return d * v
		}
	}
}

// interArrival draws one inter-arrival time of a window, in seconds, with mean 1/rate: the fitted
// family's shape (param1) sets the burstiness, the window's rate its mean. Without a fitted family a
// positive CV gives a Gamma of that CV, else exponential.
func interArrival(rng *rand.Rand, w ServeGenWindow) float64 {
	var x float64 // mean 1
	switch {
	case w.Family == "Weibull":
		k := w.P1
		x = math.Pow(rng.ExpFloat64(), 1/k) / math.Gamma(1+1/k)
	case w.Family == "Gamma":
		x = gamma(rng, w.P1) / w.P1
	case w.Family == "" && w.CV > 0 && w.CV != 1:
		k := math.Min(math.Max(1/(w.CV*w.CV), minServeGenShape), maxServeGenShape)
		x = gamma(rng, k) / k
	default:
		x = rng.ExpFloat64()
	}
	if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 {
		x = rng.ExpFloat64()
	}
	return math.Max(x, 1e-9) / w.Rate
}

// firstArrival draws the time from a window's start to its first arrival, in seconds, as a stationary
// renewal process of the window's gaps has it: a uniform point in a size-biased gap (the equilibrium
// residual). A fresh process at each window's start (a uniform point in an ordinary gap) over-counts
// bursty clients, whose short gaps then come first: on m-large it drew 6–9% more requests than the
// windows' rates, and a third more than the mean in each window's first tenth, at once for every client.
func firstArrival(rng *rand.Rand, w ServeGenWindow) float64 {
	var x float64 // a size-biased gap of interArrival's mean-1 gaps
	switch {
	case w.Family == "Weibull":
		// Weighting E^(1/k) by itself makes E, an exponential, a Gamma(1+1/k).
		k := w.P1
		x = math.Pow(gamma(rng, 1+1/k), 1/k) / math.Gamma(1+1/k)
	case w.Family == "Gamma":
		x = gamma(rng, w.P1+1) / w.P1
	case w.Family == "" && w.CV > 0 && w.CV != 1:
		k := math.Min(math.Max(1/(w.CV*w.CV), minServeGenShape), maxServeGenShape)
		x = gamma(rng, k+1) / k
	default:
		return rng.ExpFloat64() / w.Rate // memoryless: the residual is another gap
	}
	if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 {
		return rng.ExpFloat64() / w.Rate
	}
	return rng.Float64() * x / w.Rate
}

// SynthesizeServeGen turns clients' windows into requests arriving in [from, to) seconds (from >= 0; to
// <= 0 or +Inf: to the last window's end), with token lengths drawn from lengths, seeded. Arrivals are
// relative to from. rateScale (> 0; 1 keeps the trace's rates) scales every window's rate before
// synthesis: each client's arrival process keeps its fitted family and shape, so its burstiness, at the
// new mean rate. More than maxRequests requests (at most, and for <= 0, 20 million) is an error.
func SynthesizeServeGen(clients [][]ServeGenWindow, lengths *Lengths, from, to float64, seed uint64, rateScale float64, maxRequests int) ([]Request, error) {
	return synthesizeServeGen(clients, lengths, from, to, seed, rateScale, maxRequests, 0)
}

// serveGenSpanError is a synthesised request past the replay's span bound, in clients[client][window].
type serveGenSpanError struct {
	client, window int
	err            error
}

func (e *serveGenSpanError) Error() string { return e.err.Error() }
func (e *serveGenSpanError) Unwrap() error { return e.err }

// synthesizeServeGen is SynthesizeServeGen that, for timeScale > 0, refuses (with a *serveGenSpanError)
// a request more than maxTraceSpan into the window once replayed at that time scale, as Read does.
func synthesizeServeGen(clients [][]ServeGenWindow, lengths *Lengths, from, to float64, seed uint64, rateScale float64, maxRequests int, timeScale float64) ([]Request, error) {
	if maxRequests <= 0 || maxRequests > maxServeGenRequest {
		maxRequests = maxServeGenRequest
	}
	switch {
	case !(from >= 0) || math.IsInf(from, 0) || math.IsNaN(to):
		// Arrivals are t - from: a negative from could push them past what a Duration holds.
		return nil, fmt.Errorf("servegen: window [%v, %v) s must start at a finite, non-negative time", from, to)
	case lengths == nil:
		return nil, errors.New("servegen: no token lengths")
	case lengths.clients != nil && len(lengths.clients) != len(clients):
		return nil, fmt.Errorf("servegen: token lengths for %d clients, arrivals for %d", len(lengths.clients), len(clients))
	case len(lengths.pool) == 0 && lengths.poolClients(len(clients)) > 0:
		return nil, errors.New("servegen: no requests to draw token lengths from")
	}
	if !(rateScale > 0) || math.IsInf(rateScale, 0) {
		return nil, fmt.Errorf("servegen: rate scale %g must be a positive number", rateScale)
	}
	var out []Request
	// Draws before from are discarded and do not count against maxRequests, so they get a bound of their
	// own: windows of a high rate overlapping a short span (rows 1 s apart, which the parser refuses but
	// a caller may pass) drew billions of arrivals to keep a few thousand.
	drawn, drawCap := 0, 4*maxRequests
	for ci, ws := range clients {
		// One stream per client draws arrivals and lengths alike, so runs drawing lengths from a trace and
		// from the client's distributions share seeds, not arrival draws.
		rng := rand.New(rand.NewPCG(seed, uint64(ci)+0x5e4e))
		for wi, w := range ws {
			end := w.Start + ServeGenWindowSeconds
			w.Rate *= rateScale
			if w.Rate <= 0 || end <= from || (to > 0 && w.Start >= to) {
				continue
			}
			if n := float64(len(out)) + w.Rate*ServeGenWindowSeconds; n > float64(maxRequests) {
				return nil, fmt.Errorf("servegen: more than %d requests in the window; use --start/--duration or a lower rate", maxRequests)
			}
			// A very bursty fit can draw near-zero gaps for long; cap a window at 20× its mean count.
			limit := int(20*w.Rate*ServeGenWindowSeconds) + 100
			for t, k := w.Start+firstArrival(rng, w), 0; t < end && k < limit; t, k = t+interArrival(rng, w), k+1 {
				if to > 0 && t >= to {
					break // arrivals only grow
				}
				if drawn++; drawn > drawCap {
					return nil, fmt.Errorf("servegen: more than %d arrivals drawn to keep %d from %v s on: windows of high rates reach far before it; use --start/--duration or a lower rate", drawCap, len(out), from)
				}
				if t < from {
					continue
				}
				if len(out) >= maxRequests {
					return nil, fmt.Errorf("servegen: more than %d requests in the window; use --start/--duration or a lower rate", maxRequests)
				}
				if timeScale > 0 {
					// In float nanoseconds, before the conversion below: far past the bound it could overflow.
					if err := checkSpanNanos((t-from)*float64(time.Second), timeScale); err != nil {
						return nil, &serveGenSpanError{client: ci, window: wi, err: err}
					}
				}
				p, o := lengths.draw(rng, ci, t)
				out = append(out, Request{Arrival: time.Duration((t - from) * float64(time.Second)), PromptTokens: p, OutputTokens: o})
			}
		}
	}
	slices.SortStableFunc(out, byArrival)
	return out, nil
}

// meanRateScale is the rate scale that gives the windows overlapping [from, to) seconds (to +Inf: to the
// last window's end) a mean of mean requests/s after time scale ts (<= 0: 1).
func meanRateScale(clients [][]ServeGenWindow, from, to, mean, ts float64) (float64, error) {
	if ts <= 0 {
		ts = 1
	}
	// The mean is over the windows the folder has in [from, to), idle ones included, not over a longer
	// asked span: a two-hour folder asked for three days has two hours of load.
	var count, end float64
	for _, ws := range clients {
		for _, w := range ws {
			lo, hi := math.Max(w.Start, from), math.Min(w.Start+ServeGenWindowSeconds, to)
			if hi > lo {
				count += w.Rate * (hi - lo)
				end = math.Max(end, hi)
			}
		}
	}
	if count <= 0 {
		return 0, errors.New("servegen: no load in the window to scale")
	}
	return mean * (end - from) / ts / count, nil
}

// ReadServeGen reads every chunk-*-trace.csv of a ServeGen model folder and synthesises the requests of
// o's Start/Duration window (the whole folder when Duration is 0) at o's rate scale, then applies its
// time scale. Token lengths are drawn from lengths, a real trace's requests (name it in the report), or,
// with o.ServeGenLengths, from each client's chunk-<n>-dataset.json distributions where it has one.
func ReadServeGen(dir string, lengths []Request, o Options) (*Trace, error) {
	return readServeGen(os.DirFS(dir), dir, lengths, o)
}

// HasServeGenDatasets reports whether the ServeGen model folder dir holds any chunk-*-dataset.json.
func HasServeGenDatasets(dir string) bool {
	m, err := fs.Glob(os.DirFS(dir), "chunk-*-dataset.json")
	return err == nil && len(m) > 0
}

// openRegular opens a member of a ServeGen folder that is a regular file: a FIFO of a trace file's name
// blocked the read forever (the trace itself may be a pipe, read as a stream; a folder's files may not).
func openRegular(fsys fs.FS, name string) (fs.File, error) {
	fi, err := fs.Stat(fsys, name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", name, fi.Mode().Type())
	}
	return fsys.Open(name)
}

// readServeGen reads the model folder fsys (named dir in errors).
func readServeGen(fsys fs.FS, dir string, pool []Request, o Options) (*Trace, error) {
	if err := o.checkScales(dir); err != nil {
		return nil, err
	}
	files, err := fs.Glob(fsys, "chunk-*-trace.csv")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no chunk-*-trace.csv files (a ServeGen model folder has one per client)", dir)
	}
	if len(files) > maxServeGenFiles {
		return nil, fmt.Errorf("%s: %d chunk-*-trace.csv files, more than %d (a ServeGen model folder has one per client)", dir, len(files), maxServeGenFiles)
	}
	sort.Strings(files)
	// The window as Read takes it: a negative start is the trace's start, and an explicit flag, not a to
	// of 0 or less, says it has an end, so a negative start cannot turn a window into the whole folder.
	from := max(o.Start, 0).Seconds()
	hasEnd := o.Duration > 0
	to := math.Inf(1)
	if hasEnd {
		to = from + o.Duration.Seconds()
	}
	clients := make([][]ServeGenWindow, 0, len(files))
	lengths := PoolLengths(pool)
	if o.ServeGenLengths {
		lengths.clients = make([][]ServeGenLengths, 0, len(files))
	}
	// Windows synthesizeServeGen would skip are not kept: they draw nothing and add no load to
	// meanRateScale, so a windowed read of a long folder costs the window's memory only.
	inRange := func(w ServeGenWindow) bool {
		return !(w.Start+ServeGenWindowSeconds <= from) && !(to > 0 && w.Start >= to)
	}
	budget, values := maxServeGenFolderWindows, maxServeGenFolderValues
	for _, f := range files {
		fh, err := openRegular(fsys, f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		ws, err := parseServeGenClient(fh, path.Join(dir, f), inRange, &budget)
		fh.Close()
		if err != nil {
			return nil, err
		}
		clients = append(clients, ws)
		if !o.ServeGenLengths {
			continue
		}
		// The client's lengths file shares its trace file's chunk number; a client without one draws
		// from the pool, and the trace counts it.
		df := strings.TrimSuffix(f, "-trace.csv") + "-dataset.json"
		fh, err = openRegular(fsys, df)
		if errors.Is(err, fs.ErrNotExist) {
			lengths.clients = append(lengths.clients, nil)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		ls, err := ParseServeGenDataset(fh, path.Join(dir, df), from, to)
		fh.Close()
		if err != nil {
			return nil, err
		}
		for _, l := range ls {
			values -= l.values()
		}
		if values < 0 {
			return nil, fmt.Errorf("%s: more than %d length-distribution values in the replayed range, all dataset files together: pick a window with --start and --duration, or --lengths conv", path.Join(dir, df), maxServeGenFolderValues)
		}
		lengths.clients = append(lengths.clients, ls) // none when idle in every window: it draws from the pool
	}
	k := o.RateScale
	if k == 0 {
		k = 1
	}
	if o.MeanRate > 0 {
		if k, err = meanRateScale(clients, from, to, o.MeanRate, o.TimeScale); err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
	}
	ts := o.TimeScale
	if ts <= 0 {
		ts = 1
	}
	reqs, err := synthesizeServeGen(clients, lengths, from, to, o.Seed, k, o.MaxRequests, ts)
	if se := (*serveGenSpanError)(nil); errors.As(err, &se) {
		return nil, lineError(path.Join(dir, files[se.client]), clients[se.client][se.window].line, "%w", se.err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if len(reqs) == 0 {
		return nil, fmt.Errorf("%s: no requests in the window", dir)
	}
	t := &Trace{Requests: reqs, RateScale: k, Clients: len(clients), PoolLengthClients: lengths.poolClients(len(clients))}
	if o.TimeScale > 0 && o.TimeScale != 1 {
		for i := range t.Requests {
			t.Requests[i].Arrival = time.Duration(float64(t.Requests[i].Arrival) / o.TimeScale)
		}
	}
	return t, nil
}
