package collector

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// A redirect is an error naming the pod and the status: the scraper never asks another host, and never
// shows what a target sent.
func TestScrapeFollowsNoRedirect(t *testing.T) {
	var hit atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hit.Add(1)
		fmt.Fprint(w, "SECRET-INTERNAL-PAGE")
	}))
	defer elsewhere.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			t.Errorf("scraper sent %s", r.Method)
		}
		w.Header().Set("Location", elsewhere.URL)
		w.WriteHeader(http.StatusFound)
		fmt.Fprint(w, "REDIRECT-BODY")
	}))
	defer redirect.Close()
	st := store.New(store.Options{}, nil)
	pod := store.PodKey{Namespace: "ns", Name: "redirector"}
	// The timeout is a hang guard: the default 800 ms could end a loaded machine's scrape before the 302.
	s := NewScraper(Options{Timeout: time.Minute}, st, func() []Target { return []Target{{Pod: pod, URL: redirect.URL}} }, nil)
	s.ScrapeOnce(context.Background())
	_, err := st.Get(pod)
	if err == nil || !strings.Contains(err.Error(), "302") || !strings.Contains(err.Error(), "ns/redirector") {
		t.Fatalf("err = %v, want one naming the pod and HTTP 302", err)
	}
	if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "REDIRECT-BODY") {
		t.Fatalf("err echoes a body: %v", err)
	}
	if hit.Load() != 0 {
		t.Fatalf("the redirect was followed (%d requests elsewhere)", hit.Load())
	}
}

// A huge malformed value is rejected with a short error, not one holding the value.
func TestScrapeErrorTextIsShort(t *testing.T) {
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "vllm:prompt_tokens_total ")
		fmt.Fprint(w, strings.Repeat("9x", 1<<20))
		fmt.Fprint(w, "\n")
	}))
	defer bad.Close()
	st := store.New(store.Options{}, nil)
	pod := store.PodKey{Namespace: "ns", Name: "bad"}
	s := NewScraper(Options{}, st, func() []Target { return []Target{{Pod: pod, URL: bad.URL}} }, nil)
	s.ScrapeOnce(context.Background())
	_, err := st.Get(pod)
	if err == nil || len(err.Error()) > 1024 {
		t.Fatalf("error is %d bytes, want an error of at most 1 KiB", len(fmt.Sprint(err)))
	}
}

// Pooled buffers do not keep the largest page ever seen.
func TestOversizedBuffersAreNotPooled(t *testing.T) {
	s := NewScraper(Options{}, store.New(store.Options{}, nil), func() []Target { return nil }, nil)
	b := s.getBuf()
	*b = append((*b)[:0], make([]byte, 3<<20)...)
	s.putBuf(b)
	for i := 0; i < 10; i++ {
		if c := cap(*s.getBuf()); c > maxPooledBuf {
			t.Fatalf("pool handed out a %d-byte buffer, want at most %d", c, maxPooledBuf)
		}
	}
}

// Pods that timed out start after the others in the next round (all but one, retried first, which holds
// one slot), so that slow pods cannot hold the concurrency slots while healthy pods wait: the healthy pod
// is recorded before any slow pod's timeout. No network and no timer: a transport answers the healthy pod
// from the fake engine and holds each slow pod's request until the healthy pod is recorded, or until
// every slot holds a slow pod (the healthy pod waits then), and ends it as its timeout would.
func TestSlowPodsDoNotDelayHealthyOnes(t *testing.T) {
	e := fakeengine.New(fakeengine.Config{})
	e.SetLoad(fakeengine.Load{PromptTokensPerSec: 5000, OutputTokensPerSec: 1000})
	const conc = 2
	var mu sync.Mutex
	var release chan struct{} // closed when the slow pods' requests may end
	var hung int
	free := func() { // with mu held
		select {
		case <-release:
		default:
			close(release)
		}
	}
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host == "healthy" {
			return inProcess(e, r), nil
		}
		mu.Lock()
		if hung++; hung == conc {
			free()
		}
		ch := release
		mu.Unlock()
		<-ch
		return nil, context.DeadlineExceeded // what the scrape's own timeout would end it with
	})}
	var targets []Target
	for i := 0; i < 4; i++ {
		name := fmt.Sprint("slow", i)
		targets = append(targets, Target{Pod: store.PodKey{Namespace: "ns", Name: name}, URL: "http://" + name + "/metrics"})
	}
	healthy := store.PodKey{Namespace: "ns", Name: "healthy"}
	targets = append(targets, Target{Pod: healthy, URL: "http://healthy/metrics", Engine: engine.VLLM})
	st := store.New(store.Options{}, nil)
	var order []string
	rec := recorderFunc{st, func(k store.PodKey, err error) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, fmt.Sprintf("%s %v", k.Name, err != nil))
		if k == healthy {
			free()
		}
	}}
	s := NewScraper(Options{Concurrency: conc, Timeout: time.Hour, Client: client}, rec, func() []Target { return targets }, nil)
	for round := range 3 { // the first round learns which pods are slow
		e.Advance(time.Second)
		mu.Lock()
		order, release, hung = nil, make(chan struct{}), 0
		mu.Unlock()
		s.ScrapeOnce(context.Background())
		mu.Lock()
		if round > 0 && (len(order) == 0 || order[0] != "healthy false") {
			t.Fatalf("round %d: outcomes in order %v, want the healthy pod first", round, order)
		}
		mu.Unlock()
	}
}

// A round starts no scrape after its deadline, so pods that hang cannot hold it past deadline + timeout
// however many they are. The pods a round had no time for keep their last data (nothing is recorded for
// them; the Observer hears ErrNotScraped) and get their turn, and once the hanging pods are known the
// healthy pod is scraped every round while the hanging ones are retried in turn. No network and no timer: a transport answers the healthy pod from the fake engine and holds
// each hanging pod's request until the round's deadline, which the test fires once both slots hold one.
func TestRoundEndsWhenPodsHang(t *testing.T) {
	e := fakeengine.New(fakeengine.Config{})
	e.SetLoad(fakeengine.Load{PromptTokensPerSec: 5000, OutputTokensPerSec: 1000})
	const conc, hanging, rounds = 2, 12, 40
	var mu sync.Mutex
	var deadline chan time.Time
	var hungNow int
	tried := map[string]int{}
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host == "healthy" {
			return inProcess(e, r), nil
		}
		mu.Lock()
		tried[r.URL.Host]++
		if hungNow++; hungNow == conc {
			close(deadline)
		}
		d := deadline
		mu.Unlock()
		<-d
		return nil, context.DeadlineExceeded // what the scrape's own timeout would end it with
	})}
	healthy := store.PodKey{Namespace: "ns", Name: "healthy"}
	targets := []Target{{Pod: healthy, Pool: healthy.Name, URL: "http://healthy/metrics", Engine: engine.VLLM}}
	for i := 0; i < hanging; i++ {
		name := fmt.Sprint("hang", i)
		targets = append(targets, Target{Pod: store.PodKey{Namespace: "ns", Name: name}, Pool: name, URL: "http://" + name + "/metrics"})
	}
	var recorded, observed map[string][]error
	rec := recorderFunc{store.New(store.Options{}, nil), func(k store.PodKey, err error) {
		mu.Lock()
		defer mu.Unlock()
		recorded[k.Name] = append(recorded[k.Name], err)
	}}
	obs := observerFunc(func(pod string, err error) {
		mu.Lock()
		defer mu.Unlock()
		observed[pod] = append(observed[pod], err)
	})
	s := NewScraper(Options{Concurrency: conc, Timeout: time.Hour, RoundDeadline: time.Hour, Client: client}, rec, func() []Target { return targets }, obs)
	s.after = func(time.Duration) <-chan time.Time { return deadline }
	allKnown := false
	for round := 0; round < rounds; round++ {
		mu.Lock()
		deadline, hungNow, recorded, observed = make(chan time.Time), 0, map[string][]error{}, map[string][]error{}
		mu.Unlock()
		e.Advance(time.Second)
		s.ScrapeOnce(context.Background())
		mu.Lock()
		notStarted := 0
		for _, tg := range targets {
			name := tg.Pod.Name
			if len(observed[name]) != 1 {
				t.Fatalf("round %d: pod %s observed %d times, want once", round, name, len(observed[name]))
			}
			switch err := observed[name][0]; {
			case errors.Is(err, ErrNotScraped):
				notStarted++
				if len(recorded[name]) != 0 {
					t.Fatalf("round %d: pod %s was not started but something was recorded for it: %v", round, name, recorded[name])
				}
			case len(recorded[name]) != 1:
				t.Fatalf("round %d: pod %s started but has %d records", round, name, len(recorded[name]))
			}
			if name == healthy.Name {
				if len(recorded[name]) == 1 && recorded[name][0] != nil {
					t.Fatalf("round %d: the healthy pod failed: %v", round, recorded[name][0])
				}
				if allKnown && len(recorded[name]) != 1 {
					t.Fatalf("round %d: every hanging pod is known, yet the healthy pod was not scraped (observed %v)", round, observed[name])
				}
			}
		}
		if notStarted == 0 {
			t.Fatalf("round %d: every pod started after the round's deadline; want the rest left waiting", round)
		}
		allKnown = len(tried) == hanging
		mu.Unlock()
	}
	// Two or more hanging pods are tried each round, in turn: over 40 rounds each of the 12 is retried.
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < hanging; i++ {
		if n := tried[fmt.Sprint("hang", i)]; n < 3 {
			t.Fatalf("after %d rounds hang%d was tried %d times (all: %v); want the hanging pods tried in turn", rounds, i, n, tried)
		}
	}
}

// When pods that answer, slowly, fill every round, the hanging pods still get one retry a round (with
// two or more slots), and the answering pods and a pod that appears later take turns: none waits more
// than a few rounds. With one slot no hanging pod is retried first, or it would hold the only slot every
// round. Busy pods answer, and hanging pods fail, when the round's deadline fires, which the test fires
// once every slot is taken.
func TestFullRoundsStillTakeTurns(t *testing.T) {
	for _, conc := range []int{1, 2} {
		t.Run(fmt.Sprint(conc, " slots"), func(t *testing.T) { fullRounds(t, conc) })
	}
}

func fullRounds(t *testing.T, conc int) {
	e := fakeengine.New(fakeengine.Config{})
	e.SetLoad(fakeengine.Load{PromptTokensPerSec: 5000, OutputTokensPerSec: 1000})
	const rounds = 30
	var mu sync.Mutex
	var deadline chan time.Time
	var inFlight int
	started := map[string][]int{} // pod -> rounds its scrape started in
	round := 0
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		started[r.URL.Host] = append(started[r.URL.Host], round)
		if inFlight++; inFlight == conc {
			close(deadline)
		}
		d := deadline
		mu.Unlock()
		<-d
		if strings.HasPrefix(r.URL.Host, "hang") {
			return nil, context.DeadlineExceeded
		}
		w := httptest.NewRecorder()
		e.ServeHTTP(w, r)
		return w.Result(), nil
	})}
	var targets []Target
	add := func(name string) {
		targets = append(targets, Target{Pod: store.PodKey{Namespace: "ns", Name: name}, URL: "http://" + name + "/metrics", Engine: engine.VLLM})
	}
	for i := 0; i < 4; i++ {
		add(fmt.Sprint("busy", i))
	}
	for i := 0; i < 3; i++ {
		add(fmt.Sprint("hang", i))
	}
	s := NewScraper(Options{Concurrency: conc, Timeout: time.Hour, RoundDeadline: time.Hour, Client: client}, store.New(store.Options{}, nil),
		func() []Target { return targets }, nil)
	s.after = func(time.Duration) <-chan time.Time { return deadline }
	for round = 0; round < rounds; round++ {
		if round == rounds/2 {
			add("late")
		}
		mu.Lock()
		deadline, inFlight = make(chan time.Time), 0
		mu.Unlock()
		e.Advance(time.Second)
		s.ScrapeOnce(context.Background())
	}
	mu.Lock()
	defer mu.Unlock()
	// Each round starts one scrape a slot. Once every hanging pod has timed out once, with two slots one
	// of them is retried each round and one answering pod is scraped, so in the last ten rounds each
	// hanging pod starts at least three times; with one slot the answering pods take every turn. Either
	// way each answering pod, the late one included, starts at least twice.
	for _, tg := range targets {
		name, n := tg.Pod.Name, 0
		for _, r := range started[name] {
			if r >= rounds-10 {
				n++
			}
		}
		want := 2
		if strings.HasPrefix(name, "hang") {
			want = 3
			if conc == 1 {
				want = 0
			}
		}
		if n < want {
			t.Errorf("%s started in rounds %v: %d times in the last ten rounds, want at least %d", name, started[name], n, want)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type observerFunc func(pod string, err error)

// ObserveScrape hears a pool, not a pod: the test gives each pod a pool of its own name.
func (f observerFunc) ObserveScrape(pool string, _ time.Duration, err error) { f(pool, err) }

type recorderFunc struct {
	*store.Store
	on func(store.PodKey, error)
}

func (r recorderFunc) Record(k store.PodKey, t time.Time, s *engine.Snapshot) {
	r.Store.Record(k, t, s)
	r.on(k, nil)
}

func (r recorderFunc) RecordError(k store.PodKey, t time.Time, err error) {
	r.Store.RecordError(k, t, err)
	r.on(k, err)
}

// hangingServer answers no request until the client gives up or the test ends.
func hangingServer(t *testing.T) *httptest.Server {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	return srv
}

// A pod's reply headers are bounded: past 64 KiB the scrape is the pod's error, not 10 MiB of memory.
func TestScrapeHeadersAreBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		for i := range 200 {
			w.Header().Set(fmt.Sprintf("X-Pad-%d", i), strings.Repeat("p", 1000))
		}
		fmt.Fprint(w, "vllm:num_requests_running 1\n")
	}))
	defer srv.Close()
	st := store.New(store.Options{}, nil)
	pod := store.PodKey{Namespace: "ns", Name: "headers"}
	s := NewScraper(Options{}, st, func() []Target { return []Target{{Pod: pod, URL: srv.URL, Engine: engine.VLLM}} }, nil)
	s.ScrapeOnce(context.Background())
	if _, err := st.Get(pod); err == nil || !strings.Contains(err.Error(), "ns/headers") {
		t.Fatalf("a reply with 200 KB of headers: err = %v, want the pod's error", err)
	}
}

// Pod scrapes ignore HTTP(S)_PROXY: the proxy is for egress, and pods are scraped where they are.
func TestScrapeUsesNoProxy(t *testing.T) {
	s := NewScraper(Options{}, store.New(store.Options{}, nil), func() []Target { return nil }, nil)
	if tr, ok := s.opts.Client.Transport.(*http.Transport); !ok || tr.Proxy != nil {
		t.Fatalf("the scrape transport has a proxy function")
	}
}

// An announced Content-Length allocates at most maxPrealloc before the bytes arrive.
func TestAnnouncedLengthIsNotPreallocated(t *testing.T) {
	buf, _ := readLimited(strings.NewReader("x"), nil, 64<<20, 64<<20)
	if cap(buf) > maxPrealloc {
		t.Fatalf("a 64 MiB announcement preallocated %d bytes", cap(buf))
	}
}

// inProcess answers r from h without a network.
func inProcess(h http.Handler, r *http.Request) *http.Response {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

// A scrape is stamped with the time its answer arrived: an engine builds its page before it sends the
// headers, so a page 0.7 s slow holds counters 0.7 s newer than the request's start, and stamped with
// that start a steady 1,000 tokens/s read as 300 over the next interval. Engine, scraper and store share
// one fake clock, which the engine moves while it prepares its first page.
func TestScrapeIsStampedWhenThePageArrives(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	var mu sync.Mutex
	now, served := t0, 0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return inProcess(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			mu.Lock()
			if served++; served == 1 {
				now = now.Add(700 * time.Millisecond) // the first page takes 0.7 s to build
			}
			prompt := 1000 * now.Sub(t0).Seconds() // a steady 1,000 prompt tokens/s
			mu.Unlock()
			fmt.Fprintf(w, "vllm:prompt_tokens_total %g\nvllm:generation_tokens_total %g\nvllm:num_requests_waiting 0\nvllm:num_requests_running 1\n", prompt, prompt/10)
		}), r), nil
	})}
	pod := store.PodKey{Namespace: "ns", Name: "p"}
	st := store.New(store.Options{StaleAfter: time.Hour}, clock)
	// The page's lateness is the fake clock's; a minute of real time keeps a loaded machine's pause from
	// failing the scrape (the default timeout is 800 ms of real time).
	s := NewScraper(Options{Client: client, Timeout: time.Minute}, st, func() []Target {
		return []Target{{Pod: pod, URL: "http://p/metrics", Engine: engine.VLLM}}
	}, nil)
	s.SetClock(clock)
	s.ScrapeOnce(context.Background()) // started at t0, answered at t0 + 0.7 s
	mu.Lock()
	now = t0.Add(time.Second)
	mu.Unlock()
	s.ScrapeOnce(context.Background()) // started and answered at t0 + 1 s
	v, err := st.Get(pod)
	if err != nil || math.Abs(v.PrefillTPS-1000) > 1 {
		t.Fatalf("PrefillTPS %v (%v), want 1000", v.PrefillTPS, err)
	}
}

// A page still parsing at the pod's deadline held its concurrency slot as long as one that never
// answered, so it marks the pod slow (it starts last in the next round) as a timeout does; the parse
// timeout was read as any other error, and such pods kept the first slots round after round.
func TestParseTimeoutMarksThePodSlow(t *testing.T) {
	parse := fmt.Errorf("scrape ns/p: %w", clip(fmt.Errorf("%w (abandoned at line %d)", engine.ErrParseTimeout, 1024)))
	long := fmt.Errorf("scrape ns/p: %w", clip(fmt.Errorf("%w: %s", engine.ErrParseTimeout, strings.Repeat("x", 2*maxErrText))))
	noAnswer := fmt.Errorf("scrape ns/p: %w", context.DeadlineExceeded)
	for _, err := range []error{parse, long, noAnswer} {
		if !timedOut(err) {
			t.Errorf("%.80v: not taken for a timeout", err)
		}
	}
	for _, err := range []error{fmt.Errorf("scrape ns/p: %w", ErrBodyTooLarge), errors.New("connection refused"), nil} {
		if timedOut(err) {
			t.Errorf("%v: taken for a timeout", err)
		}
	}
}
