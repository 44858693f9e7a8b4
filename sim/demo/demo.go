// Package demo runs tokenscale end to end on one machine without Kubernetes: fake vLLM engines on
// loopback serve /metrics, a replay of the embedded Azure trace drives them, the real scraper and store
// feed the adapter's decision round (service.Decide), which sizes the prefill and decode pools, and a simulated actuator adds engines after a cold start.
package demo

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
	"github.com/tokenscale/tokenscale/sim/trace"
	"github.com/tokenscale/tokenscale/velocity/collector"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/policy"
	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// Options tune the demo.
type Options struct {
	Duration  time.Duration // wall time to run, default 90s
	Speedup   float64       // trace seconds per wall second, default 3
	Skip      time.Duration // trace time to skip at the start, default 0
	ColdStart time.Duration // wall time before a new engine is Ready, default 8s
	Out       io.Writer
}

type pod struct {
	name    string
	eng     *fakeengine.Engine
	srv     *http.Server
	url     string
	readyAt time.Time
	stop    chan struct{}
}

func (pd *pod) close() {
	close(pd.stop)
	_ = pd.srv.Close()
}

type pool struct {
	cfg  *config.Pool
	pods []*pod
	seq  int
}

// Run runs the demo until ctx ends or Duration passes. It stops every server it started.
func Run(ctx context.Context, o Options) error {
	if o.Duration <= 0 {
		o.Duration = 90 * time.Second
	}
	if o.Speedup <= 0 {
		o.Speedup = 3
	}
	if o.ColdStart <= 0 {
		o.ColdStart = 8 * time.Second
	}
	reqs, err := trace.AzureCode()
	if err != nil {
		return err
	}
	if err := trace.CheckSkip(reqs, o.Skip); err != nil {
		return err
	}
	cfg := config.Default()
	cfg.Policy.ColdStart.Duration = max(o.ColdStart, config.MinPolicyDuration)
	cfg.Policy.ScaleDownWindow.Duration = 20 * time.Second
	// The demo's minutes are compressed like its cold start: the product's 2 min hold would keep a
	// conversion past the end of a default run (the Kubernetes demo holds 10 s too).
	cfg.Policy.ReleaseHold.Duration = 10 * time.Second
	pools := []*pool{{cfg: &cfg.Pools[0]}, {cfg: &cfg.Pools[1]}}
	defer func() {
		for _, p := range pools {
			for _, pd := range p.pods {
				pd.close()
			}
		}
	}()
	start := time.Now()
	for _, p := range pools {
		if err := p.add(start); err != nil {
			return err
		}
	}
	st := store.New(service.StoreOptions(cfg), nil)
	// Each tick's membership comes from the adapter's Assign; the scraper reads its targets.
	var members *service.Members
	scraper := collector.NewScraper(collector.Options{}, st, func() []collector.Target { return members.Targets }, nil)
	ctrl := service.NewController(cfg)
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()

	fmt.Fprintf(o.Out, "tokenscale demo: Azure LLM inference trace 2023 (code), %gx speed, cold start %s, scrape %s\n", o.Speedup, o.ColdStart, cfg.Scrape.Interval)
	fmt.Fprintf(o.Out, "%5s %9s %9s %9s %6s %6s %9s %7s %7s %5s\n", "t", "in tok/s", "λ_P", "cap_P", "ρ_P", "bp_P", "λ_D", "P have", "D have", "conv")
	fmt.Fprintf(o.Out, "%5s %9s %9s %9s %6s %6s %9s %7s %7s %5s\n", "", "(trace)", "measured", "N·V_P", "", "", "measured", "/want", "/want", "")
	tick := time.NewTicker(cfg.Scrape.Interval.Duration)
	defer tick.Stop()
	next := 0
	traceT := o.Skip
	for next < len(reqs) && reqs[next].Arrival < traceT {
		next++
	}
	conv := 0
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(o.Out, "demo finished; all fake engines stopped.")
			return nil
		case now := <-tick.C:
			// Offer the next second of trace (Speedup trace-seconds) to the Ready engines.
			traceT += time.Duration(o.Speedup * float64(time.Second))
			var in, out float64
			for next < len(reqs) && reqs[next].Arrival < traceT {
				in += float64(reqs[next].PromptTokens)
				out += float64(reqs[next].OutputTokens)
				next++
			}
			if next >= len(reqs) {
				fmt.Fprintln(o.Out, "trace finished")
				return nil
			}
			ready := func(p *pool) []*pod {
				var r []*pod
				for _, pd := range p.pods {
					if !pd.readyAt.After(now) {
						r = append(r, pd)
					}
				}
				return r
			}
			pr, dr := ready(pools[0]), ready(pools[1])
			// Converted decoders take a capped share of prefill work.
			convShare := float64(conv) * cfg.Policy.ConvertedPrefill * cfg.Pools[0].Profile.PrefillTPS
			prefillIn := math.Max(0, in-convShare)
			for _, pd := range pr {
				pd.eng.SetLoad(fakeengine.Load{PromptTokensPerSec: prefillIn / float64(len(pr))})
			}
			for _, pd := range dr {
				pd.eng.SetLoad(fakeengine.Load{OutputTokensPerSec: out * 8 / float64(len(dr))}) // ~8 tokens owed per output token/s in flight
			}
			members = assign(cfg, pools, now)
			scraper.ScrapeOnce(ctx)
			snap := service.Decide(cfg, members, st.List(members.Has), ctrl, now)
			views := map[string]*service.PoolView{}
			statuses := map[string]*policy.PoolStatus{}
			for _, p := range pools {
				v := snap.Pools[service.PoolKey{Namespace: demoNamespace, Name: p.cfg.Name}]
				views[p.cfg.Name] = v
				if v != nil && v.Err == nil {
					statuses[p.cfg.Name] = &v.Status
				}
				if v != nil && v.HasDesired {
					if err := p.scale(now, v.Desired, o.ColdStart); err != nil {
						return err
					}
				}
			}
			conv = 0
			if v := views["decode"]; v != nil {
				conv = v.Conversions
			}
			ps, ds := statuses["prefill"], statuses["decode"]
			if ps == nil || ds == nil {
				fmt.Fprintf(o.Out, "%5.0f %9.0f   (warming up: velocity needs two scrapes)\n", now.Sub(start).Seconds(), in)
				continue
			}
			fmt.Fprintf(o.Out, "%5.0f %9.0f %9.0f %9.0f %6.2f %6.2f %9.0f %3d/%-3d %3d/%-3d %5d\n",
				now.Sub(start).Seconds(), in, ps.Arrival, ps.Capacity, ps.Utilisation, ps.Backpressure, ds.Arrival,
				len(pr), desired(views["prefill"]), len(dr), desired(views["decode"]), conv)
		}
	}
}

// demoNamespace is the namespace of the demo's pods.
const demoNamespace = "demo"

// assign makes the Ready engines pods labelled as their pool selects, maps them to pools with the
// adapter's Assign, and points each target at its engine's own loopback port.
func assign(cfg *config.Config, pools []*pool, now time.Time) *service.Members {
	var pods []service.Pod
	urls := map[store.PodKey]string{}
	for _, p := range pools {
		for _, pd := range p.pods {
			if pd.readyAt.After(now) {
				continue
			}
			k := store.PodKey{Namespace: demoNamespace, Name: pd.name}
			// An address of its own (two pods on one are not scraped); the target's URL is the engine's, below.
			pods = append(pods, service.Pod{Key: k, Labels: p.cfg.Selector, IP: "2001:db8::" + strconv.FormatInt(int64(len(pods)+1), 16), Ready: true})
			urls[k] = pd.url
		}
	}
	m := service.Assign(cfg, pods)
	for i := range m.Targets {
		m.Targets[i].URL = urls[m.Targets[i].Pod]
	}
	return m
}

func desired(v *service.PoolView) int {
	if v == nil || !v.HasDesired {
		return 0
	}
	return v.Desired
}

// scale adds engines (Ready after coldStart) or removes the newest ones.
func (p *pool) scale(now time.Time, want int, coldStart time.Duration) error {
	for len(p.pods) < want {
		if err := p.add(now.Add(coldStart)); err != nil {
			return err
		}
	}
	if len(p.pods) > want {
		sort.SliceStable(p.pods, func(i, j int) bool { return p.pods[i].readyAt.Before(p.pods[j].readyAt) })
		for _, pd := range p.pods[want:] {
			pd.close()
		}
		p.pods = p.pods[:want]
	}
	return nil
}

func (p *pool) add(readyAt time.Time) error {
	p.seq++
	e := fakeengine.New(fakeengine.Config{Role: string(p.cfg.Role), PrefillTokensPerSec: p.cfg.Profile.PrefillTPS, DecodeTokensPerSec: p.cfg.Profile.DecodeTPS})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo engine listener: %w", err)
	}
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	stop := make(chan struct{})
	go e.Run(100*time.Millisecond, stop)
	p.pods = append(p.pods, &pod{name: fmt.Sprintf("%s-%d", p.cfg.Name, p.seq), eng: e, srv: srv,
		url: "http://" + ln.Addr().String() + "/metrics", readyAt: readyAt, stop: stop})
	return nil
}
