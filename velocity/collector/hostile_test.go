package collector

import (
	"context"
	"errors"
	"fmt"
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
	s := NewScraper(Options{}, st, func() []Target { return []Target{{Pod: pod, URL: redirect.URL}} }, nil)
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

// Pods that timed out come last in the next round, so that slow pods cannot hold the concurrency slots
// while healthy pods wait: the healthy pod is recorded before any slow pod's timeout. The order of
// outcomes is checked, not their times, so machine load cannot fail the test.
func TestSlowPodsDoNotDelayHealthyOnes(t *testing.T) {
	e := fakeengine.New(fakeengine.Config{})
	e.SetLoad(fakeengine.Load{PromptTokensPerSec: 5000, OutputTokensPerSec: 1000})
	good := httptest.NewServer(e)
	defer good.Close()
	slow := hangingServer(t)
	var targets []Target
	for i := 0; i < 4; i++ {
		targets = append(targets, Target{Pod: store.PodKey{Namespace: "ns", Name: fmt.Sprint("slow", i)}, URL: slow.URL})
	}
	healthy := store.PodKey{Namespace: "ns", Name: "healthy"}
	targets = append(targets, Target{Pod: healthy, URL: good.URL, Engine: engine.VLLM})
	st := store.New(store.Options{}, nil)
	var mu sync.Mutex
	var order []string
	rec := recorderFunc{st, func(k store.PodKey, err error) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, fmt.Sprintf("%s %v", k.Name, err != nil))
	}}
	s := NewScraper(Options{Concurrency: 2, Timeout: time.Second, Interval: time.Minute}, rec, func() []Target { return targets }, nil)
	s.ScrapeOnce(context.Background()) // learns which pods are slow
	for i := 0; i < 2; i++ {
		e.Advance(time.Second)
		mu.Lock()
		order = nil
		mu.Unlock()
		s.ScrapeOnce(context.Background())
		mu.Lock()
		if len(order) == 0 || order[0] != "healthy false" {
			t.Fatalf("round %d: outcomes in order %v, want the healthy pod first", i, order)
		}
		mu.Unlock()
	}
}

// A round starts no scrape after its dispatch deadline (one interval in), so pods that hang cannot hold
// it past interval + timeout however many they are: the pods still waiting are recorded as not scraped,
// and they start first next round, so every hanging pod is tried in turn. The deadline here fires when
// both slots hold hanging pods, so what is checked is order and outcome, not time.
func TestRoundEndsWhenPodsHang(t *testing.T) {
	e := fakeengine.New(fakeengine.Config{})
	e.SetLoad(fakeengine.Load{PromptTokensPerSec: 5000, OutputTokensPerSec: 1000})
	good := httptest.NewServer(e)
	defer good.Close()
	const conc, hanging = 2, 12
	var mu sync.Mutex
	var deadline chan time.Time
	var inRound int
	tried := map[string]int{}
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tried[r.URL.Path]++
		if inRound++; inRound == conc {
			close(deadline)
		}
		mu.Unlock()
		<-r.Context().Done()
	}))
	defer hang.Close()
	healthy := store.PodKey{Namespace: "ns", Name: "healthy"}
	targets := []Target{{Pod: healthy, URL: good.URL, Engine: engine.VLLM}}
	for i := 0; i < hanging; i++ {
		name := fmt.Sprint("hang", i)
		targets = append(targets, Target{Pod: store.PodKey{Namespace: "ns", Name: name}, URL: hang.URL + "/" + name})
	}
	var outcomes map[string][]error
	rec := recorderFunc{store.New(store.Options{}, nil), func(k store.PodKey, err error) {
		mu.Lock()
		defer mu.Unlock()
		outcomes[k.Name] = append(outcomes[k.Name], err)
	}}
	s := NewScraper(Options{Concurrency: conc, Timeout: 100 * time.Millisecond}, rec, func() []Target { return targets }, nil)
	s.after = func(time.Duration) <-chan time.Time { return deadline }
	for round := 0; round < hanging; round++ {
		mu.Lock()
		deadline, inRound, outcomes = make(chan time.Time), 0, map[string][]error{}
		mu.Unlock()
		e.Advance(time.Second)
		s.ScrapeOnce(context.Background())
		mu.Lock()
		notScraped := 0
		for _, tg := range targets {
			errs := outcomes[tg.Pod.Name]
			if len(errs) != 1 {
				t.Fatalf("round %d: pod %s has %d outcomes, want 1", round, tg.Pod.Name, len(errs))
			}
			if tg.Pod == healthy && errs[0] != nil {
				t.Fatalf("round %d: the healthy pod failed: %v", round, errs[0])
			}
			if errors.Is(errs[0], ErrNotScraped) {
				notScraped++
			}
		}
		mu.Unlock()
		if notScraped == 0 {
			t.Fatalf("round %d: every pod was scraped after the round's deadline; want the pods still waiting recorded as %v", round, ErrNotScraped)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// At least two hanging pods start each round and the waiting ones go first, so over 12 rounds each of
	// the 12 is tried at least twice: once pods that all timed out still take turns.
	for i := 0; i < hanging; i++ {
		if n := tried[fmt.Sprint("/hang", i)]; n < 2 {
			t.Fatalf("after %d rounds hang%d was tried %d times (all: %v); want every hanging pod tried in turn", hanging, i, n, tried)
		}
	}
}

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
