package collector

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
)

func TestScrapeFaultsAreIsolated(t *testing.T) {
	mk := func() (*fakeengine.Engine, *httptest.Server) {
		e := fakeengine.New(fakeengine.Config{})
		e.SetLoad(fakeengine.Load{PromptTokensPerSec: 5000, OutputTokensPerSec: 1000})
		return e, httptest.NewServer(e)
	}
	good, goodSrv := mk()
	junk, junkSrv := mk()
	_, deadSrv := mk()
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, strings.Repeat("# padding\n", 20000))
	}))
	// Closed after the last server of the test is made: closed first, its port went to the big page's
	// server now and then, and the dead pod read as a page over the size limit.
	deadSrv.Close()
	for _, s := range []*httptest.Server{goodSrv, junkSrv, big} {
		defer s.Close()
	}
	junk.SetGarbage(true)

	// No staleness in wall time: a stalled machine must not age the good pod out between rounds.
	st := store.New(store.Options{StaleAfter: time.Hour}, nil)
	pod := func(n string) store.PodKey { return store.PodKey{Namespace: "ns", Name: n} }
	targets := []Target{
		{Pod: pod("good"), URL: goodSrv.URL + "/metrics"},
		{Pod: pod("hung"), URL: "http://hung.invalid/metrics"},
		{Pod: pod("junk"), URL: junkSrv.URL + "/metrics"},
		{Pod: pod("dead"), URL: deadSrv.URL + "/metrics"},
		{Pod: pod("big"), URL: big.URL + "/metrics"},
	}
	// The hung engine answers nothing until every other pod of the round is recorded, then ends as the
	// scrape's own timeout would: no wall-clock timeout decides what the others' outcomes are, so a
	// starved machine cannot cut a healthy scrape short (the timeout is a hang guard).
	var mu sync.Mutex
	var release chan struct{}
	others := 0
	base := http.DefaultTransport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host != "hung.invalid" {
			return base.RoundTrip(r)
		}
		mu.Lock()
		ch := release
		mu.Unlock()
		select {
		case <-ch:
		case <-r.Context().Done():
			// Reached only if the other pods were not all recorded while this scrape hung.
			t.Error("the hung scrape held the others: they were not recorded within its timeout")
		}
		return nil, context.DeadlineExceeded
	})}
	rec := recorderFunc{st, func(k store.PodKey, _ error) {
		mu.Lock()
		defer mu.Unlock()
		if others++; k != pod("hung") && others == len(targets)-1 {
			close(release)
		}
	}}
	s := NewScraper(Options{Timeout: time.Minute, MaxBodyBytes: 128 << 10, Client: client}, rec, func() []Target { return targets }, nil)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		good.Advance(time.Second)
		mu.Lock()
		release, others = make(chan struct{}), 0
		mu.Unlock()
		s.ScrapeOnce(ctx)
	}
	if v, err := st.Get(pod("good")); err != nil || v.PrefillTPS <= 0 {
		t.Errorf("good pod: %+v, %v", v, err)
	}
	for name, want := range map[string]string{
		"hung": "deadline exceeded", "junk": "parsing metrics text", "dead": "connection refused", "big": "body size limit",
	} {
		_, err := st.Get(pod(name))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", name, err, want)
		}
	}
	// A target that disappears is forgotten at once.
	targets = targets[:1]
	s.ScrapeOnce(ctx)
	if st.Len() != 1 {
		t.Errorf("store has %d pods after targets shrank to 1", st.Len())
	}
}

// More engines than the old idle pool held (256): every connection must survive between rounds, or the
// scraper re-dials most engines every second.
func TestScrapeKeepsOneConnectionPerEngine(t *testing.T) {
	const n = 300
	e := fakeengine.New(fakeengine.Config{})
	e.SetLoad(fakeengine.Load{PromptTokensPerSec: 5000, OutputTokensPerSec: 1000})
	var mu sync.Mutex
	dialled := 0
	var targets []Target
	for i := 0; i < n; i++ {
		srv := httptest.NewUnstartedServer(e)
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				mu.Lock()
				dialled++
				mu.Unlock()
			}
		}
		srv.Start()
		defer srv.Close()
		targets = append(targets, Target{Pod: store.PodKey{Namespace: "ns", Name: fmt.Sprint(i)}, URL: srv.URL, Engine: engine.VLLM})
	}
	st := store.New(store.Options{}, nil)
	obs := &errCounter{}
	// A generous timeout: this test measures connection reuse, and on a loaded machine a scrape that
	// times out closes its connection, which says nothing about reuse.
	s := NewScraper(Options{Timeout: time.Minute}, st, func() []Target { return targets }, obs)
	const rounds = 3
	for round := 0; round < rounds; round++ {
		s.ScrapeOnce(context.Background())
	}
	mu.Lock()
	defer mu.Unlock()
	// Each engine is dialled once; a failed scrape may cost one more dial (its connection is closed),
	// never more. Without reuse, dials would be about rounds × n whatever the failures.
	if obs.errs >= rounds*n || dialled > n+obs.errs {
		t.Errorf("%d rounds over %d engines: %d connections dialled, %d failed scrapes; want at most %d + failed scrapes",
			rounds, n, dialled, obs.errs, n)
	}
	if obs.errs > 0 {
		t.Logf("%d failed scrapes (machine load); dials %d", obs.errs, dialled)
	}
}

// Engines gzip their page only when asked (prometheus_client does). By default the scraper asks for a
// plain page; with Compression it asks for gzip and reads the compressed page.
func TestScrapeCompression(t *testing.T) {
	e := fakeengine.New(fakeengine.Config{})
	e.SetLoad(fakeengine.Load{PromptTokensPerSec: 5000, OutputTokensPerSec: 1000})
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Header.Get("Accept-Encoding"))
		mu.Unlock()
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			e.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		defer zw.Close()
		e.WriteMetrics(zw)
	}))
	defer srv.Close()
	for _, compress := range []bool{false, true} {
		st := store.New(store.Options{StaleAfter: time.Hour}, nil) // no staleness in wall time
		key := store.PodKey{Namespace: "ns", Name: "p"}
		// A generous timeout: gzip and parsing under -race on a loaded machine must not read as a failure.
		s := NewScraper(Options{Compression: compress, Timeout: 30 * time.Second}, st, func() []Target { return []Target{{Pod: key, URL: srv.URL, Engine: engine.VLLM}} }, nil)
		for i := 0; i < 2; i++ {
			e.Advance(time.Second)
			s.ScrapeOnce(context.Background())
			time.Sleep(10 * time.Millisecond)
		}
		if v, err := st.Get(key); err != nil || v.PrefillTPS <= 0 {
			t.Errorf("compression %v: %+v, %v", compress, v, err)
		}
		mu.Lock()
		last := asked[len(asked)-1]
		mu.Unlock()
		if got := strings.Contains(last, "gzip"); got != compress {
			t.Errorf("compression %v: Accept-Encoding %q", compress, last)
		}
	}
}

type errCounter struct {
	mu   sync.Mutex
	errs int
}

func (c *errCounter) ObserveScrape(_ string, _ time.Duration, err error) {
	if err != nil {
		c.mu.Lock()
		c.errs++
		c.mu.Unlock()
	}
}

func TestScrapeRestartCountsReset(t *testing.T) {
	e := fakeengine.New(fakeengine.Config{})
	e.SetLoad(fakeengine.Load{PromptTokensPerSec: 5000, OutputTokensPerSec: 1000})
	srv := httptest.NewServer(e)
	defer srv.Close()
	st := store.New(store.Options{StaleAfter: time.Hour}, nil)
	key := store.PodKey{Namespace: "ns", Name: "p"}
	s := NewScraper(Options{Timeout: time.Minute}, st, func() []Target { return []Target{{Pod: key, URL: srv.URL, Engine: engine.VLLM}} }, nil)
	for i := 0; i < 6; i++ {
		e.Advance(time.Second)
		if i == 3 {
			e.Restart()
			e.Advance(time.Second)
		}
		s.ScrapeOnce(context.Background())
		time.Sleep(10 * time.Millisecond)
		if v, err := st.Get(key); err == nil && (v.PrefillTPS < 0 || v.DecodeTPS < 0) {
			t.Fatalf("negative velocity after restart: %+v", v)
		}
	}
	if v, _ := st.Get(key); v.Resets != 1 {
		t.Errorf("Resets = %d, want 1", v.Resets)
	}
}

func TestPrometheusSource(t *testing.T) {
	var queries []string
	prompt := 100000.0
	ts := 1700000000.0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		queries = append(queries, r.Form.Get("query"))
		w.Header().Set("Content-Type", "application/json")
		// Raw samples with their scrape times; the stale "gone" series stopped 30 s before the newest scrape.
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"matrix","result":[
{"metric":{"__name__":"vllm:prompt_tokens_total","namespace":"ns","pod":"p","engine":"0","instance":"10.0.0.1:8000"},"values":[[%.3f,"%v"],[%.3f,"%v"]]},
{"metric":{"__name__":"vllm:generation_tokens_total","namespace":"ns","pod":"p","engine":"0"},"values":[[%.3f,"100"],[%.3f,"100"]]},
{"metric":{"__name__":"vllm:num_requests_waiting","namespace":"ns","pod":"p","engine":"0"},"values":[[%.3f,"2"],[%.3f,"2"]]},
{"metric":{"__name__":"vllm:prompt_tokens_total","namespace":"ns","pod":"p","engine":"gone"},"values":[[%.3f,"1e9"]]},
{"metric":{"__name__":"vllm:prompt_tokens_total","namespace":"other","pod":"x"},"values":[[%.3f,"5"]]}]}}`,
			ts-15, prompt-15*3000, ts, prompt, ts-15, ts, ts-15, ts, ts-30, ts)
	}))
	defer srv.Close()
	q, err := NewPrometheusQuerier(srv.URL, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(store.Options{StaleAfter: time.Hour * 24 * 365 * 100}, nil)
	src := NewPrometheusSource(q, st, time.Second, 45*time.Second, engine.Auto, func(k store.PodKey) bool { return k.Namespace == "ns" })
	ctx := context.Background()
	if err := src.PollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	// A new pod's previous scrape is read too, so its rate is known at once; the series that went away
	// before the newest scrape is not summed in.
	if v, err := st.Get(store.PodKey{Namespace: "ns", Name: "p"}); err != nil || v.PrefillTPS < 2999 || v.PrefillTPS > 3001 {
		t.Fatalf("after the first poll: PrefillTPS %v, %v; want 3000 from the two scrapes in the answer", v.PrefillTPS, err)
	}
	// Prometheus has not scraped again: the same timestamp must not produce a zero rate.
	if err := src.PollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	ts += 15
	prompt += 15 * 3000
	if err := src.PollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := st.Get(store.PodKey{Namespace: "ns", Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if v.PrefillTPS < 2999 || v.PrefillTPS > 3001 {
		t.Errorf("PrefillTPS = %v, want 3000", v.PrefillTPS)
	}
	if st.Len() != 1 {
		t.Errorf("store has %d pods, want only the kept namespace", st.Len())
	}
	if want := `"}[45s]`; len(queries) == 0 || !strings.HasSuffix(queries[0], want) {
		t.Errorf("query %q: want a range selector over the lookback (%s)", queries, want)
	}
	// A failing Prometheus records nothing (pods go stale, never zero) and returns an error.
	srv.Close()
	if err := src.PollOnce(ctx); err == nil {
		t.Error("want an error when Prometheus is down")
	}
	if _, err := st.Get(store.PodKey{Namespace: "ns", Name: "p"}); errors.Is(err, store.ErrNotFound) {
		t.Error("pod must be kept (and go stale), not dropped, when Prometheus is unreachable")
	}
}

// With Spread, a round's scrapes start in hash-ordered slots over the spread instead of all at once,
// and each pod keeps its slot from round to round.
func TestScrapeSpread(t *testing.T) {
	const n, spread = 5, 500 * time.Millisecond // slots 100 ms apart: the order cannot blur
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived[r.URL.Query().Get("pod")] = time.Now()
		mu.Unlock()
		e := fakeengine.New(fakeengine.Config{})
		e.ServeHTTP(w, r)
	}))
	defer srv.Close()
	var targets []Target
	for i := range n {
		name := fmt.Sprintf("p%d", i)
		targets = append(targets, Target{Pod: store.PodKey{Namespace: "ns", Name: name}, URL: srv.URL + "/metrics?pod=" + name})
	}
	st := store.New(store.Options{}, nil)
	// A timeout no pause of the test process reaches: a scrape that timed out would change the next
	// round's order and leave its pod without an arrival.
	s := NewScraper(Options{Spread: spread, Timeout: 30 * time.Second}, st, func() []Target { return targets }, nil)
	// Each pod waits for its own slot, the k-th of the hash order starting no earlier than k × spread/n
	// into the round, in every round: lower bounds, which sleeping guarantees however slow the machine
	// (the arrival order itself can blur when a starved loop starts several goroutines at once).
	want := bySlot(targets)
	if fmt.Sprint(want) == fmt.Sprint(targets) {
		t.Fatal("the hash order is the targets' order: pick other names, or the test cannot tell them apart")
	}
	for round := range 2 {
		start := time.Now()
		s.ScrapeOnce(context.Background())
		if st.Len() != n {
			t.Fatalf("round %d: %d of %d pods recorded", round, st.Len(), n)
		}
		mu.Lock()
		for k, tg := range want {
			at, ok := arrived[tg.Pod.Name]
			if !ok {
				t.Errorf("round %d: %s was never scraped", round, tg.Pod.Name)
			} else if min := time.Duration(k) * spread / n; at.Sub(start) < min {
				t.Errorf("round %d: %s, slot %d of the hash order, arrived %s into the round, before its slot at %s", round, tg.Pod.Name, k, at.Sub(start), min)
			}
		}
		clear(arrived)
		mu.Unlock()
	}
	// Shutting down mid-round stops waiting for the later slots: over a 40 s spread a round that kept
	// waiting would take 32 s, one that stops takes the cancelled context's 50 ms and its scrapes.
	long := NewScraper(Options{Spread: 40 * time.Second, Timeout: 400 * time.Millisecond}, st, func() []Target { return targets }, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	long.ScrapeOnce(ctx)
	if d := time.Since(start); d >= 20*time.Second { // well under 32 s, well over any pause of a loaded machine
		t.Errorf("a cancelled round still took %s", d)
	}
}

// A Prometheus reply past the byte limit, or one that does not come within the source's timeout, is an
// error that records nothing (pods go stale), never the adapter's memory or a held round.
func TestPrometheusSourceIsBounded(t *testing.T) {
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"status":"success","data":{"resultType":"matrix","result":[`)
		for i := 0; i < 1000; i++ {
			fmt.Fprintf(w, `{"metric":{"__name__":"vllm:prompt_tokens_total","namespace":"ns","pod":"p%d"},"values":[[1700000000,"1"]]},`, i)
		}
		fmt.Fprint(w, `{"metric":{},"values":[]}]}}`)
	}))
	defer big.Close()
	st := store.New(store.Options{}, nil)
	q, err := NewPrometheusQuerier(big.URL, 4096, nil)
	if err != nil {
		t.Fatal(err)
	}
	src := NewPrometheusSource(q, st, time.Second, 45*time.Second, engine.Auto, nil)
	if err := src.PollOnce(context.Background()); err == nil || !strings.Contains(err.Error(), "larger than 4096 bytes") {
		t.Errorf("a reply over the limit: %v", err)
	}
	if q, _ = NewPrometheusQuerier(big.URL, 0, nil); NewPrometheusSource(q, st, time.Second, 45*time.Second, engine.Auto, nil).PollOnce(context.Background()) != nil {
		t.Errorf("the same reply under the default limit failed")
	}

	slow := hangingServer(t)
	q, _ = NewPrometheusQuerier(slow.URL, 0, nil)
	src = NewPrometheusSource(q, store.New(store.Options{}, nil), time.Second, 45*time.Second, engine.Auto, nil)
	src.Timeout = 50 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- src.PollOnce(context.Background()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("a Prometheus that never answers: no error")
		}
	case <-time.After(time.Minute):
		t.Fatal("PollOnce still waiting a minute after its 50ms timeout")
	}
}

// Replies the Prometheus API client decodes to no value (data null or absent) or to a nil series (a null
// in the result list) are errors or skipped series, never a crash of the process polling them.
func TestPrometheusSourceOddReplies(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{`{}`, "the reply holds no data"},
		{`{"status":"success"}`, "the reply holds no data"},
		{`{"status":"success","data":null}`, "the reply holds no data"},
		{`{"status":"success","data":{"resultType":"vector","result":[]}}`, "want a matrix, got vector"},
		{`{"status":"success","data":{"resultType":"matrix","result":[null]}}`, ""},
		{`{"status":"success","data":{"resultType":"matrix","result":[null,{"metric":{"__name__":"vllm:prompt_tokens_total","namespace":"ns","pod":"p"},"values":[[1700000000,"1"]]}]}}`, ""},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, c.body)
		}))
		q, err := NewPrometheusQuerier(srv.URL, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panic: %v", r)
				}
			}()
			return NewPrometheusSource(q, store.New(store.Options{}, nil), time.Second, 45*time.Second, engine.Auto, nil).PollOnce(context.Background())
		}()
		srv.Close()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.body, err, c.want)
		}
	}
}

// An endpoint's error text is repeated only in part: it is logged on every round.
func TestPrometheusErrorTextIsShort(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprintf(w, `{"status":"error","errorType":"execution","error":"%s"}`, strings.Repeat("e", 1<<20))
	}))
	defer srv.Close()
	q, err := NewPrometheusQuerier(srv.URL, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = NewPrometheusSource(q, store.New(store.Options{}, nil), time.Second, 45*time.Second, engine.Auto, nil).PollOnce(context.Background())
	if err == nil || len(err.Error()) > 1024 {
		t.Fatalf("a 1 MiB error message: an error of %d bytes, want at most 1 KiB", len(fmt.Sprint(err)))
	}
}

type panickingTransport struct{}

func (panickingTransport) RoundTrip(*http.Request) (*http.Response, error) { panic("a broken reader") }

// A panic while reading one pod's page is that pod's error, not the end of the process.
func TestScrapePanicIsThePodsError(t *testing.T) {
	st := store.New(store.Options{}, nil)
	key := store.PodKey{Namespace: "ns", Name: "p"}
	s := NewScraper(Options{Client: &http.Client{Transport: panickingTransport{}}}, st,
		func() []Target { return []Target{{Pod: key, URL: "http://127.0.0.1:1/metrics"}} }, nil)
	s.ScrapeOnce(context.Background())
	if _, err := st.Get(key); err == nil || !strings.Contains(err.Error(), "a broken reader") {
		t.Errorf("err = %v, want the panic as the pod's error", err)
	}
}
