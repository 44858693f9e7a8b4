//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

// Serving latency of a selector query over many pods (the HPA's Pods-metric call), at a steady 100
// requests/s, through the real aggregator and directly against the adapter. Quick by default (200 pods,
// 5 s each); TOKENSCALE_PERF=full runs 60 s with 1,000 pods, TOKENSCALE_PERF_PODS sets the pod count
// (docs/performance.md).
func TestServingLatency(t *testing.T) {
	pods, dur := int32(200), 5*time.Second
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

	directCfg := &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", suite.adapter.Port), QPS: -1,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true, CertFile: filepath.Join(suite.cp.Dir, "admin.crt"), KeyFile: filepath.Join(suite.cp.Dir, "admin.key")}}
	aggCfg, err := clientcmd.BuildConfigFromFlags("", suite.cp.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	aggCfg.QPS = -1 // no client-side throttling: the rate is the test's
	agg, direct := rawClient(t, aggCfg, runtime.ContentTypeJSON), rawClient(t, directCfg, runtime.ContentTypeJSON)
	// The HPA controller asks for protobuf (kube-controller-manager's --kube-api-content-type default)
	// and takes JSON otherwise; the adapter must answer it in protobuf, which is smaller and cheaper.
	aggProto, directProto := rawClient(t, aggCfg, runtime.ContentTypeProtobuf), rawClient(t, directCfg, runtime.ContentTypeProtobuf)
	for _, c := range []rest.Interface{aggProto, directProto} {
		body, err := c.Get().AbsPath(path).Param("labelSelector", "llm-d.ai/role=decode").DoRaw(suite.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(body, []byte("k8s\x00")) {
			t.Fatalf("asked for protobuf, got %.60q", body)
		}
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
		t.Logf("  p90 by the tenth of a second the request started in: %s", r.phases())
		if ours && r.errs > 0 {
			t.Errorf("%s: %d failed requests", name, r.errs)
		}
	}
	for _, c := range []struct {
		name   string
		client rest.Interface
	}{{"tokenscale through the aggregator, JSON", agg}, {"tokenscale directly, JSON", direct},
		{"tokenscale through the aggregator, protobuf", aggProto}, {"tokenscale directly, protobuf", directProto}} {
		before, start := cpuTimes(), time.Now()
		prof := profileAdapter(t, directCfg, c.name, dur)
		report(c.name, 100, load(c.client, path, 100, dur), true)
		t.Logf("  CPU during it: %s; adapter peak RSS so far %.0f MiB", cpuShare(before, cpuTimes(), time.Since(start)), peakRSS("tokenscale-adap"))
		prof()
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
	paCfg := rest.CopyConfig(directCfg)
	paCfg.Host = fmt.Sprintf("https://127.0.0.1:%d", paPort)
	pa := rawClient(t, paCfg, runtime.ContentTypeJSON)
	paPath := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta1/namespaces/%s/pods/*/vllm_generation_tokens_per_second", ns)
	eventually(t, 180*time.Second, fmt.Sprintf("prometheus-adapter values for all %d pods", pods), func() error {
		body, err := pa.Get().AbsPath(paPath).Param("labelSelector", "llm-d.ai/role=decode").DoRaw(suite.ctx)
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
	// tokenscale again while Prometheus and prometheus-adapter run beside it, before they are loaded: the
	// requests prometheus-adapter abandons keep Prometheus busy long after they time out.
	report("tokenscale directly, JSON, with Prometheus and prometheus-adapter running", 100, load(direct, path, 100, dur), true)
	report("prometheus-adapter directly", 10, load(pa, paPath, 10, dur), false)
	report("prometheus-adapter directly", 100, load(pa, paPath, 100, dur), false)
}

type loadResult struct {
	lat      []time.Duration // sorted, successful requests only
	errs     int
	firstErr error
	// byPhase holds the successful requests' latencies by the tenth of a second they started in: the
	// adapter's scrape rounds start at a fixed phase of each second, so the tail shows where they fall.
	byPhase [10][]time.Duration
}

// phases summarises byPhase as the p90 of each tenth of a second.
func (r loadResult) phases() string {
	var parts []string
	for i, b := range r.byPhase {
		if len(b) == 0 {
			continue
		}
		slices.Sort(b)
		parts = append(parts, fmt.Sprintf(".%d: %s", i, b[len(b)*9/10].Round(100*time.Microsecond)))
	}
	return strings.Join(parts, ", ")
}

// load sends GET path at rate per second for d (open loop: each request starts on schedule), each with a
// 30 s timeout.
func load(c rest.Interface, path string, rate int, d time.Duration) loadResult {
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
			_, err := c.Get().AbsPath(path).Param("labelSelector", "llm-d.ai/role=decode").DoRaw(ctx)
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
			phase := start.UnixNano() % int64(time.Second) / int64(100*time.Millisecond)
			r.byPhase[phase] = append(r.byPhase[phase], took)
		}()
	}
	wg.Wait()
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	return r
}

// rawClient sends requests for custom metrics with cfg, asking for contentType (JSON or protobuf, JSON
// accepted too as the HPA's client does).
func rawClient(t *testing.T, cfg *rest.Config, contentType string) rest.Interface {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.APIPath = "/apis"
	c.GroupVersion = &schema.GroupVersion{Group: "custom.metrics.k8s.io", Version: "v1beta2"}
	c.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	c.ContentType = contentType
	c.AcceptContentTypes = contentType
	if contentType == runtime.ContentTypeProtobuf {
		c.AcceptContentTypes += "," + runtime.ContentTypeJSON
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// profileAdapter records the adapter's CPU profile for d into $TOKENSCALE_PERF_PROFILE/<name>.pprof when
// that is set (the adapter serves /debug/pprof, --profiling); the returned func waits for it.
func profileAdapter(t *testing.T, cfg *rest.Config, name string, d time.Duration) func() {
	dir := os.Getenv("TOKENSCALE_PERF_PROFILE")
	if dir == "" {
		return func() {}
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion, c.NegotiatedSerializer = &schema.GroupVersion{}, scheme.Codecs.WithoutConversion()
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, strings.NewReplacer(" ", "-", ",", "").Replace(name)+".pprof")
	done := make(chan struct{})
	go func() {
		defer close(done)
		body, err := rc.Get().AbsPath("/debug/pprof/profile").Param("seconds", strconv.Itoa(int(d.Seconds()))).Timeout(d + 30*time.Second).DoRaw(suite.ctx)
		if err == nil {
			err = os.WriteFile(file, body, 0o644)
		}
		if err != nil {
			t.Errorf("profiling the adapter: %v", err)
		}
	}()
	return func() { <-done }
}
