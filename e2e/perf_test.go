//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tokenscale/tokenscale/sim/fakeengine"
)

// Serving latency of a selector query over many pods (the HPA's Pods-metric call), at a steady 100
// requests/s, through the real aggregator and directly against the adapter. Quick by default (200 pods,
// 10 s); TOKENSCALE_PERF=full runs 60 s with 1,000 pods, TOKENSCALE_PERF_PODS sets the pod count
// (docs/performance.md).
func TestServingLatency(t *testing.T) {
	pods, dur := int32(200), 10*time.Second
	if os.Getenv("TOKENSCALE_PERF") == "full" {
		pods, dur = 1000, 60*time.Second
	}
	if n, err := strconv.Atoi(os.Getenv("TOKENSCALE_PERF_PODS")); err == nil && n > 0 {
		pods = int32(n)
	}
	const ns = "perf"
	k := namespace(t, ns)
	deployment(t, ns, "llama-decode", "decode", fakeengine.VLLMV1, pods)
	k.SetLoad("decode", fakeengine.Load{OutputTokensPerSec: float64(pods) * 500})
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/tokenscale_decode_tokens_per_second", ns)
	eventually(t, 180*time.Second, fmt.Sprintf("values for all %d pods", pods), func() error {
		v, err := podValues(ns, "tokenscale_decode_tokens_per_second", "llm-d.ai/role=decode")
		if err != nil {
			return err
		}
		if len(v) != int(pods) {
			return fmt.Errorf("%d of %d pods have values", len(v), pods)
		}
		return nil
	})

	direct, err := kubernetes.NewForConfig(&rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", suite.adapter.Port), QPS: -1,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true, CertFile: filepath.Join(suite.cp.Dir, "admin.crt"), KeyFile: filepath.Join(suite.cp.Dir, "admin.key")}})
	if err != nil {
		t.Fatal(err)
	}
	aggCfg, err := clientcmd.BuildConfigFromFlags("", suite.cp.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	aggCfg.QPS = -1 // no client-side throttling: the rate is the test's
	agg, err := kubernetes.NewForConfig(aggCfg)
	if err != nil {
		t.Fatal(err)
	}
	// report logs a run; tokenscale must answer every request, a peer's failures are a measurement.
	report := func(name string, rate int, r loadResult, ours bool) {
		if len(r.lat) == 0 {
			t.Logf("%s: no request of %d succeeded; first error: %v", name, r.errs, r.firstErr)
			if ours {
				t.Errorf("%s: no request succeeded", name)
			}
			return
		}
		lat := r.lat
		p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
		t.Logf("%s: %d requests for %d pods at %d/s for %s: p50 %s, p90 %s, p99 %s, max %s, %d errors (first: %v)", name, len(lat), pods, rate, dur,
			p(0.5).Round(10*time.Microsecond), p(0.9).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond), r.errs, r.firstErr)
		if ours && r.errs > 0 {
			t.Errorf("%s: %d failed requests", name, r.errs)
		}
	}
	for _, c := range []struct {
		name   string
		client kubernetes.Interface
	}{{"tokenscale through the aggregator", agg}, {"tokenscale directly", direct}} {
		report(c.name, 100, load(c.client, path, 100, dur), true)
	}

	// The same selector query answered by prometheus-adapter v0.12.0 over a real Prometheus scraping the
	// same pods (every 5 s), read directly on its port with the same client certificate. The aggregator
	// path stays tokenscale's: one APIService per group version.
	promBin, ok := prometheusBinary()
	paBin := os.Getenv("TOKENSCALE_PROMETHEUS_ADAPTER")
	if !ok || paBin == "" {
		t.Log("prometheus-adapter not compared: run `make e2e` (it provides Prometheus and prometheus-adapter), or set TOKENSCALE_PROMETHEUS and TOKENSCALE_PROMETHEUS_ADAPTER")
		return
	}
	dir := t.TempDir()
	promURL := startPrometheus(t, dir, promBin, "prometheus", k, ns, "decode", 5*time.Second)
	paPort := startPrometheusAdapter(t, dir, paBin, promURL, "vllm:generation_tokens_total", "vllm_generation_tokens_per_second")
	pa, err := kubernetes.NewForConfig(&rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", paPort), QPS: -1,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true, CertFile: filepath.Join(suite.cp.Dir, "admin.crt"), KeyFile: filepath.Join(suite.cp.Dir, "admin.key")}})
	if err != nil {
		t.Fatal(err)
	}
	paPath := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta1/namespaces/%s/pods/*/vllm_generation_tokens_per_second", ns)
	eventually(t, 180*time.Second, fmt.Sprintf("prometheus-adapter values for all %d pods", pods), func() error {
		body, err := pa.Discovery().RESTClient().Get().AbsPath(paPath).Param("labelSelector", "llm-d.ai/role=decode").DoRaw(suite.ctx)
		if err != nil {
			return err
		}
		var list struct{ Items []metricValue }
		if err := json.Unmarshal(body, &list); err != nil {
			return err
		}
		if len(list.Items) != int(pods) {
			return fmt.Errorf("%d of %d pods have values", len(list.Items), pods)
		}
		return nil
	})
	// Prometheus' share: the query prometheus-adapter runs for the selector, sent to Prometheus directly,
	// one at a time.
	var names []string
	for _, p := range k.Pods("decode") {
		names = append(names, p.Name)
	}
	q := fmt.Sprintf(`sum(rate(vllm:generation_tokens_total{namespace=%q,pod=~%q}[1m])) by (pod)`, ns, strings.Join(names, "|"))
	var promLat []time.Duration
	for i := 0; i < 20; i++ {
		start := time.Now()
		resp, err := http.Get(promURL + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			t.Fatalf("prometheus query: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		promLat = append(promLat, time.Since(start))
	}
	sort.Slice(promLat, func(i, j int) bool { return promLat[i] < promLat[j] })
	t.Logf("Prometheus alone, the same query over %d pods, 20 in a row: p50 %s, max %s", len(names), promLat[10].Round(10*time.Microsecond), promLat[19].Round(10*time.Microsecond))
	// At 100/s every request becomes a PromQL query over all the pods; 10/s shows its latency unloaded.
	report("prometheus-adapter directly", 10, load(pa, paPath, 10, dur), false)
	report("prometheus-adapter directly", 100, load(pa, paPath, 100, dur), false)
	report("tokenscale directly, again", 100, load(direct, path, 100, dur), true)
}

type loadResult struct {
	lat      []time.Duration // sorted, successful requests only
	errs     int
	firstErr error
}

// load sends GET path at rate per second for d (open loop: each request starts on schedule), each with a
// 30 s timeout.
func load(c kubernetes.Interface, path string, rate int, d time.Duration) loadResult {
	var mu sync.Mutex
	var r loadResult
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(suite.ctx, 30*time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.Discovery().RESTClient().Get().AbsPath(path).Param("labelSelector", "llm-d.ai/role=decode").DoRaw(ctx)
			took := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if r.errs == 0 {
					r.firstErr = err
				}
				r.errs++
				return
			}
			r.lat = append(r.lat, took)
		}()
	}
	wg.Wait()
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	return r
}
