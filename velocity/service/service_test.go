package service

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
)

type podList []Pod

func (l *podList) Pods() []Pod { return *l }

// serve starts a fake engine on ln, as a pod with its own IP and the pool's port.
func serve(t *testing.T, ln net.Listener, cfg fakeengine.Config) *fakeengine.Engine {
	t.Helper()
	e := fakeengine.New(cfg)
	srv := &http.Server{Handler: e}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return e
}

// listenAll binds one port on each of 127.0.0.<hosts>, the pods' addresses. A port found free on one
// address can be taken on another before its engine listens there, so the port is chosen by binding
// them all at once, and another is tried if one is taken.
func listenAll(t *testing.T, hosts ...int) (int, map[int]net.Listener) {
	t.Helper()
	for range 20 {
		probe, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", hosts[0]))
		if err != nil {
			t.Fatal(err)
		}
		port := probe.Addr().(*net.TCPAddr).Port
		lns := map[int]net.Listener{hosts[0]: probe}
		for _, h := range hosts[1:] {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", h, port))
			if err != nil {
				break
			}
			lns[h] = ln
		}
		if len(lns) == len(hosts) {
			return port, lns
		}
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	t.Fatalf("no port free on every address of 127.0.0.%v in 20 tries", hosts)
	return 0, nil
}

func TestServiceEndToEnd(t *testing.T) {
	port, lns := listenAll(t, 2, 3, 4, 5, 6)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`version: tokenscale.io/v1alpha1
scrape: {port: %d, staleAfter: 1h}
# The engines and the scrapes run on the test's clock, 1 s a step: a 1 s cold start keeps the sizing
# rate's smoothing (policy.coldStart) from holding the first readings for a minute.
policy: {coldStart: 1s}
pools:
- {name: prefill, role: prefill, selector: {llm-d.ai/role: prefill}, profile: {prefillTokensPerSecond: 10000}}
- {name: decode, role: decode, selector: {llm-d.ai/role: decode}, profile: {decodeTokensPerSecond: 2500}}
`, port)))
	if err != nil {
		t.Fatal(err)
	}
	pods := podList{}
	var engines []*fakeengine.Engine
	add := func(host int, ns, name, role string, ready bool) {
		e := serve(t, lns[host], fakeengine.Config{Role: role, PrefillTokensPerSec: 10000, DecodeTokensPerSec: 2500})
		engines = append(engines, e)
		e.SetLoad(fakeengine.Load{PromptTokensPerSec: 9000, OutputTokensPerSec: 1500})
		pods = append(pods, Pod{Key: store.PodKey{Namespace: ns, Name: name}, Labels: map[string]string{"llm-d.ai/role": role},
			IP: fmt.Sprintf("127.0.0.%d", host), Ready: ready})
	}
	add(2, "a", "p1", "prefill", true)
	add(3, "a", "p2", "prefill", true)
	add(4, "a", "d1", "decode", true)
	add(5, "b", "p1", "prefill", true)
	add(6, "a", "p3", "prefill", false) // not Ready: neither scraped nor counted
	s, err := New(func() *config.Config { return cfg }, &pods, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Engines, scrapes and decisions on one clock, so the rates do not depend on how fast this machine is.
	// Started at the wall clock, whose time the store judges staleness by (scrape.staleAfter is an hour).
	now := time.Now()
	s.src.(*scrapeSource).scraper.SetClock(func() time.Time { return now })
	var snap *Snapshot
	for i := 0; i < 8; i++ {
		now = now.Add(time.Second)
		for _, e := range engines {
			e.Advance(time.Second)
		}
		snap = s.Step(context.Background(), now)
	}
	pa := snap.Pools[PoolKey{"a", "prefill"}]
	if pa == nil || pa.Err != nil {
		t.Fatalf("pool a/prefill: %+v", pa)
	}
	if pa.Status.Pods != 2 || len(pa.Pods) != 2 {
		t.Errorf("a/prefill pods = %d, want 2 (the unready pod is excluded)", pa.Status.Pods)
	}
	if pa.Status.Served < 15000 || pa.Status.Served > 21000 || !pa.HasDesired || pa.Desired != 3 {
		t.Errorf("a/prefill served %.0f desired %d (has %v), want ~18000 and ceil(18000/8500)=3", pa.Status.Served, pa.Desired, pa.HasDesired)
	}
	if pb := snap.Pools[PoolKey{"b", "prefill"}]; pb == nil || pb.Status.Pods != 1 || pb.Group != "b/b" {
		t.Errorf("namespace b pool: %+v", pb)
	}
	if _, ok := snap.Decisions["a/a"]; !ok {
		t.Errorf("no decision for group a/a: %v", snap.Decisions)
	}
	// A reload acts from the next round: a lower maxReplicas clamps the answer at once, and a lower
	// targetUtilisation sizes on it (ceil(18000 / (10000 × 0.5)) = 4).
	reload := func(policy, prefillMax string) {
		t.Helper()
		c, err := config.Parse([]byte(fmt.Sprintf(`version: tokenscale.io/v1alpha1
scrape: {port: %d, staleAfter: 1h}
policy: {coldStart: 1s%s}
pools:
- {name: prefill, role: prefill, selector: {llm-d.ai/role: prefill}, profile: {prefillTokensPerSecond: 10000}%s}
- {name: decode, role: decode, selector: {llm-d.ai/role: decode}, profile: {decodeTokensPerSecond: 2500}}
`, port, policy, prefillMax)))
		if err != nil {
			t.Fatal(err)
		}
		cfg = c
		now = now.Add(time.Second)
		for _, e := range engines {
			e.Advance(time.Second)
		}
		snap = s.Step(context.Background(), now)
	}
	reload("", ", maxReplicas: 2")
	if pa := snap.Pools[PoolKey{"a", "prefill"}]; pa == nil || !pa.HasDesired || pa.Desired != 2 {
		t.Errorf("after a reload to maxReplicas 2: a/prefill %+v, want desired 2", pa)
	}
	reload(", targetUtilisation: 0.5", "")
	if pa := snap.Pools[PoolKey{"a", "prefill"}]; pa == nil || !pa.HasDesired || pa.Desired != 4 {
		t.Errorf("after a reload to targetUtilisation 0.5: a/prefill %+v, want desired 4", pa)
	}
	// A pod vanishing from the lister is dropped at once.
	pods = pods[:1]
	snap = s.Step(context.Background(), now.Add(time.Second))
	if n := snap.Pools[PoolKey{"a", "prefill"}].Status.Pods; n != 1 {
		t.Errorf("after pods vanished: %d pods", n)
	}
	if s.store.Len() != 1 {
		t.Errorf("store still tracks %d pods", s.store.Len())
	}
	if d := snap.Pools[PoolKey{"a", "decode"}]; d != nil {
		t.Errorf("decode pool without pods should not exist in namespace-less config: %+v", d)
	}
}

func TestFixedNamespacePoolWithoutPodsIsUnknown(t *testing.T) {
	cfg, _ := config.Parse([]byte("version: tokenscale.io/v1alpha1\npools:\n- {name: prefill, namespace: llm, role: prefill, selector: {a: b}}\n"))
	s, err := New(func() *config.Config { return cfg }, &podList{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap := s.Step(context.Background(), time.Now())
	v := snap.Pools[PoolKey{"llm", "prefill"}]
	if v == nil || v.Err == nil || !strings.Contains(v.Err.Error(), "no pods") || v.HasDesired {
		t.Fatalf("want an unknown pool with an error, got %+v", v)
	}
}

// With scrape.prometheusURL the service reads the same series from Prometheus' HTTP API instead of
// scraping: only pods the pod cache maps to a pool count, and a Prometheus that fails makes the pool
// unknown, never zero. (A real Prometheus is used by the e2e lag test.)
func TestServicePrometheusSource(t *testing.T) {
	var mu sync.Mutex
	scraped := time.Now().Add(-50 * time.Second) // Prometheus' last scrape of the pods (its third, 30 s later, still in the past)
	prompt := 1e6
	down, empty := false, false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
			return
		}
		ts := float64(scraped.UnixMilli()) / 1000
		w.Header().Set("Content-Type", "application/json")
		if empty { // Prometheus no longer scrapes the pool's pods: only another pod's series
			fmt.Fprintf(w, `{"status":"success","data":{"resultType":"matrix","result":[
{"metric":{"__name__":"vllm:prompt_tokens_total","namespace":"a","pod":"gone","engine":"0"},"values":[[%.3f,"5"]]}]}}`, ts)
			return
		}
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"matrix","result":[
{"metric":{"__name__":"vllm:prompt_tokens_total","namespace":"a","pod":"p1","engine":"0"},"values":[[%.3f,"%.0f"]]},
{"metric":{"__name__":"vllm:generation_tokens_total","namespace":"a","pod":"p1","engine":"0"},"values":[[%.3f,"%.0f"]]},
{"metric":{"__name__":"vllm:num_requests_waiting","namespace":"a","pod":"p1","engine":"0"},"values":[[%.3f,"0"]]},
{"metric":{"__name__":"vllm:num_requests_running","namespace":"a","pod":"p1","engine":"0"},"values":[[%.3f,"4"]]},
{"metric":{"__name__":"vllm:prompt_tokens_total","namespace":"a","pod":"gone","engine":"0"},"values":[[%.3f,"5"]]}]}}`, ts, prompt, ts, prompt/10, ts, ts, ts)
	}))
	defer srv.Close()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`version: tokenscale.io/v1alpha1
scrape: {prometheusURL: %q}
pools:
- {name: prefill, role: prefill, selector: {llm-d.ai/role: prefill}, profile: {prefillTokensPerSecond: 10000}}
`, srv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Scrape.StaleAfter.Duration != 45*time.Second {
		t.Errorf("staleAfter with a Prometheus source = %s, want 45s (above a 15 s Prometheus scrape)", cfg.Scrape.StaleAfter)
	}
	pods := podList{{Key: store.PodKey{Namespace: "a", Name: "p1"}, Labels: map[string]string{"llm-d.ai/role": "prefill"}, IP: "10.0.0.1", Ready: true}}
	obs := &polls{}
	s, err := New(func() *config.Config { return cfg }, &pods, obs)
	if err != nil {
		t.Fatal(err)
	}
	// Each poll must succeed: the default 800 ms query timeout could expire on a loaded machine.
	s.src.(*prometheusSource).prom.Timeout = time.Minute
	var snap *Snapshot
	for i := 0; i < 3; i++ {
		snap = s.Step(context.Background(), time.Now())
		mu.Lock()
		scraped = scraped.Add(15 * time.Second) // Prometheus scraped again: 15 s of 3,000 tok/s
		prompt += 15 * 3000
		mu.Unlock()
	}
	v := snap.Pools[PoolKey{"a", "prefill"}]
	if v == nil || v.Err != nil || v.Status.Pods != 1 {
		t.Fatalf("pool a/prefill: %+v", v)
	}
	if v.Status.Served < 2900 || v.Status.Served > 3100 {
		t.Errorf("served %.0f tok/s from Prometheus' counters, want 3000", v.Status.Served)
	}
	if s.store.Len() != 1 {
		t.Errorf("store tracks %d pods; want 1 (a series of a pod the cache does not know is ignored)", s.store.Len())
	}
	// The scrape metrics follow the polls: the freshness gauge stayed at 0 and failed polls went uncounted.
	if got := obs.take(); strings.Join(got, ",") != "prefill ok,prefill ok,prefill ok" {
		t.Errorf("observed %v; want one good poll of pool prefill a round", got)
	}
	// A poll that succeeds with no sample of the pool's pods is no fresh scrape of the pool.
	mu.Lock()
	empty = true
	mu.Unlock()
	s.Step(context.Background(), time.Now())
	if got := obs.take(); strings.Join(got, ",") != "prefill failed" {
		t.Errorf("observed %v for a poll without the pool's samples; want it failed", got)
	}
	mu.Lock()
	empty = false
	mu.Unlock()
	mu.Lock()
	down, scraped = true, time.Now().Add(-time.Hour)
	mu.Unlock()
	// The last good sample ages past staleAfter: unknown, not zero. Simulated by a config with a short
	// staleAfter on a fresh service sharing nothing but the failing Prometheus.
	cfg2, _ := config.Parse([]byte(fmt.Sprintf("version: tokenscale.io/v1alpha1\nscrape: {prometheusURL: %q, staleAfter: 1s}\npools:\n- {name: prefill, role: prefill, selector: {llm-d.ai/role: prefill}}\n", srv.URL)))
	s2, err := New(func() *config.Config { return cfg2 }, &pods, obs)
	if err != nil {
		t.Fatal(err)
	}
	if v := s2.Step(context.Background(), time.Now()).Pools[PoolKey{"a", "prefill"}]; v == nil || v.Err == nil || v.HasDesired {
		t.Errorf("with Prometheus failing, the pool must be unknown: %+v", v)
	}
	if got := obs.take(); strings.Join(got, ",") != "prefill failed" {
		t.Errorf("observed %v with Prometheus failing; want the failed poll counted for pool prefill", got)
	}
}

// polls records what a source tells its observer, as "pool ok" or "pool failed".
type polls struct {
	mu  sync.Mutex
	got []string
}

func (p *polls) ObserveScrape(pool string, _ time.Duration, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.got = append(p.got, pool+" failed")
		return
	}
	p.got = append(p.got, pool+" ok")
}

func (p *polls) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.got
	p.got = nil
	return out
}

func TestServicePrometheusURLErrors(t *testing.T) {
	for _, u := range []string{"prometheus:9090", "ftp://x", "http://"} {
		_, err := config.Parse([]byte(fmt.Sprintf("version: tokenscale.io/v1alpha1\nscrape: {prometheusURL: %q}\npools:\n- {name: p, role: prefill, selector: {a: b}}\n", u)))
		if err == nil || !strings.Contains(err.Error(), "scrape.prometheusURL") {
			t.Errorf("prometheusURL %q: err = %v, want a clear config error", u, err)
		}
	}
}

func TestHostPortIPv6(t *testing.T) {
	if got := hostPort("fd00::1", 8000); got != "[fd00::1]:8000" {
		t.Errorf("got %s", got)
	}
}

// The store's smoothing follows the scrape interval: at any interval a step shows 1-e^-4 (98%) of itself
// after one full scrape at the new load, so a faster interval detects a step faster.
func TestStoreSmoothsPerScrape(t *testing.T) {
	for _, interval := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 5 * time.Second} {
		c := config.Default()
		c.Scrape.Interval.Duration = interval
		now := time.Unix(1000, 0)
		st := store.New(StoreOptions(c), func() time.Time { return now })
		pod := store.PodKey{Namespace: "ns", Name: "p"}
		prompt := 0.0
		record := func(tps float64) {
			now = now.Add(interval)
			prompt += tps * interval.Seconds()
			snap, err := fakePage(prompt)
			if err != nil {
				t.Fatal(err)
			}
			st.Record(pod, now, snap)
		}
		for range 10 {
			record(1000)
		}
		record(5000)
		v, err := st.Get(pod)
		if err != nil {
			t.Fatal(err)
		}
		want := 1000 + 4000*(1-math.Exp(-4))
		if math.Abs(v.PrefillTPS-want) > 1 {
			t.Errorf("interval %s: one scrape after a 1000→5000 step the rate is %.0f, want %.0f (98%% of the step)", interval, v.PrefillTPS, want)
		}
	}
}

// A step in load shows 90% of itself within two scrape intervals wherever it falls in the scrape cycle:
// the first scrape after it holds only the part of its interval at the new load, so that scrape crosses
// only for a step early in its interval, and the next scrape's full interval must then carry the rate
// across. Smoothed over half an interval, a step less than 0.3 of an interval before a scrape took a third.
func TestStepShowsWithinTwoScrapesAtEveryPhase(t *testing.T) {
	const low, high, phases = 1000.0, 5000.0, 20
	c := config.Default()
	interval := c.Scrape.Interval.Duration
	for i := range phases {
		// The step comes s intervals before the next scrape (scrapes at whole intervals).
		s := (float64(i) + 0.5) / phases
		base := time.Unix(1000, 0)
		// Times count in intervals after base; counter is the prompt tokens served by time k.
		stepAt := 10.0 - s
		counter := func(k float64) float64 {
			secs := interval.Seconds()
			return low*secs*min(k, stepAt) + high*secs*max(0, k-stepAt)
		}
		now := base
		st := store.New(StoreOptions(c), func() time.Time { return now })
		pod := store.PodKey{Namespace: "ns", Name: "p"}
		crossed := -1.0
		for k := 1; k <= 14 && crossed < 0; k++ {
			now = base.Add(time.Duration(k) * interval)
			snap, err := fakePage(counter(float64(k)))
			if err != nil {
				t.Fatal(err)
			}
			st.Record(pod, now, snap)
			if k < 2 {
				continue // a rate needs two scrapes
			}
			v, err := st.Get(pod)
			if err != nil {
				t.Fatal(err)
			}
			if float64(k) > stepAt && v.PrefillTPS >= low+0.9*(high-low) {
				crossed = float64(k) - stepAt
			}
		}
		if crossed < 0 || crossed > 2 {
			t.Errorf("a step %.2f of an interval before a scrape showed 90%% after %.2f intervals, want within 2", s, crossed)
		}
	}
}

// fakePage is a minimal vLLM page with the given prompt counter.
func fakePage(prompt float64) (*engine.Snapshot, error) {
	return engine.Extract(strings.NewReader(fmt.Sprintf(
		"vllm:prompt_tokens_total %g\nvllm:generation_tokens_total %g\nvllm:num_requests_waiting 0\nvllm:num_requests_running 1\n", prompt, prompt/10)), engine.VLLM)
}

type panickingPods struct{}

func (panickingPods) Pods() []Pod { panic("a broken pod cache") }

// A panic in a round is logged and publishes nothing, so the snapshot ages into 503s; the loop goes on.
func TestRoundPanicIsContained(t *testing.T) {
	c := config.Default()
	s, err := New(func() *config.Config { return c }, panickingPods{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.stepContained(context.Background(), time.Now())
	if s.Snapshot() != nil {
		t.Errorf("a round that panicked published a snapshot")
	}
}

// The Prometheus source's name, which every poll error and the start log show, keeps no credential: not
// the password, and not a token in the query string.
func TestRedactedHidesCredentials(t *testing.T) {
	got := redacted("https://reader:s3cret@prom.example:9090/select?access_token=t0ken&tenant=a")
	for _, secret := range []string{"s3cret", "t0ken"} {
		if strings.Contains(got, secret) {
			t.Errorf("redacted URL %q shows %q", got, secret)
		}
	}
	if !strings.Contains(got, "prom.example:9090/select") || !strings.Contains(got, "access_token=") {
		t.Errorf("redacted URL %q no longer says which endpoint it is", got)
	}
}
