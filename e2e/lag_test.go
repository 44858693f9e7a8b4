//go:build e2e

package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
	"github.com/tokenscale/tokenscale/internal/localcluster"
)

// promSetup is one way users feed an autoscaler from Prometheus: a scrape interval and the rate window
// of the PromQL query the KEDA prometheus scaler or prometheus-adapter would run.
type promSetup struct {
	name           string
	scrape, window time.Duration
	url            string
}

// The signal lag of tokenscale against Prometheus: the same fake vLLM engines are scraped by the adapter
// (1 s) and by a real Prometheus, at the common 15 s interval with rate(...[1m]) and at an aggressive
// 1 s with rate(...[10s]). The 15 s Prometheus is also read by prometheus-adapter, by the real KEDA
// operator's prometheus scaler, and by a second tokenscale adapter using its Prometheus source. After a
// load step up and a step down, each signal's time to cover 90% of the step is measured, each read as
// its consumer reads it: tokenscale's Object metric and KEDA's external metric through the aggregator,
// prometheus-adapter and the second adapter on their own ports, Prometheus by its query API. The HPA's
// sync (15 s by default) comes on top of every path alike. Then tokenscale's step alone is repeated with
// its start moved through the scrape cycle, on the suite's adapter and on a third one scraping every
// fastInterval.
func TestDetectionLagVsPrometheus(t *testing.T) {
	bin, ok := prometheusBinary()
	if !ok {
		t.Skip("no prometheus binary: run `make e2e` (hack/get-prometheus.sh extracts Debian's), install prometheus, or set TOKENSCALE_PROMETHEUS")
	}
	const ns, low, high = "lag", 5000.0, 20000.0
	k := namespace(t, ns)
	deployment(t, ns, "llama-prefill", "prefill", fakeengine.VLLMV1, 2)
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: low, OutputTokensPerSec: 5})
	eventually(t, 60*time.Second, "2 prefill pods serving", func() error {
		if n := len(k.Pods("prefill")); n != 2 {
			return fmt.Errorf("%d pods", n)
		}
		return nil
	})
	dir := t.TempDir()
	setups := []*promSetup{
		{name: "Prometheus 15 s scrape, rate[1m]", scrape: 15 * time.Second, window: time.Minute},
		{name: "Prometheus 1 s scrape, rate[10s]", scrape: time.Second, window: 10 * time.Second},
	}
	for i, s := range setups {
		s.url = startPrometheus(t, dir, bin, fmt.Sprintf("prometheus-%d", i), k, ns, "prefill", s.scrape)
	}

	ours := func() (float64, error) {
		return objectValue(ns, "llama-prefill", "tokenscale_arrival_tokens_per_second")
	}
	signals := map[string]func() (float64, error){"tokenscale (adapter, via the aggregator)": ours}
	order := []string{"tokenscale (adapter, via the aggregator)"}
	for _, s := range setups {
		q := fmt.Sprintf(`sum(rate(vllm:prompt_tokens_total[%s]))`, promDuration(s.window))
		u := s.url
		signals[s.name] = func() (float64, error) { return promQuery(u, q) }
		order = append(order, s.name)
	}
	settle := func(level float64) {
		for _, name := range order {
			eventually(t, 180*time.Second, name+" settled", func() error {
				v, err := signals[name]()
				if err != nil {
					return err
				}
				return within(v, level, 0.1)
			})
		}
	}
	// step changes the load and times each reader on its own poller, so a slow reader (KEDA through the
	// aggregator, prometheus-adapter) cannot delay noticing another's crossing.
	step := func(from, to float64) map[string]time.Duration {
		k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: to, OutputTokensPerSec: 5})
		start := time.Now()
		threshold := from + 0.9*(to-from)
		var mu sync.Mutex
		var wg sync.WaitGroup
		reached := map[string]time.Duration{}
		for _, name := range order {
			wg.Add(1)
			go func(name string) {
				defer wg.Done()
				for time.Since(start) < 240*time.Second {
					v, err := signals[name]()
					if err == nil && (to > from && v >= threshold || to < from && v <= threshold) {
						mu.Lock()
						reached[name] = time.Since(start)
						mu.Unlock()
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}(name)
		}
		wg.Wait()
		return reached
	}

	settle(low)
	// prometheus-adapter on the 15 s Prometheus, when built (hack/build-prometheus-adapter.sh): the series
	// exist now, so its first list finds them.
	if pa := os.Getenv("TOKENSCALE_PROMETHEUS_ADAPTER"); pa != "" {
		name := "prometheus-adapter (15 s scrape, rate[1m])"
		port := startPrometheusAdapter(t, dir, pa, setups[0].url, "vllm:prompt_tokens_total", "vllm_prompt_tokens_per_second")
		signals[name] = directMetric(port, readerToken(t, ns), fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta1/namespaces/%s/pods/%%2A/vllm_prompt_tokens_per_second", ns))
		order = append(order, name)
		settle(low)
	} else {
		t.Log("prometheus-adapter not measured: run `bash hack/build-prometheus-adapter.sh` and set TOKENSCALE_PROMETHEUS_ADAPTER to its output")
	}
	// tokenscale's own Prometheus source (scrape.prometheusURL) on the same 15 s Prometheus: a second
	// adapter, read on its own port as the aggregator would read it.
	{
		name := "tokenscale, Prometheus source (15 s scrape)"
		cfg := strings.Replace(adapterConfig(suite.enginePort), "staleAfter: 3s}", fmt.Sprintf("staleAfter: 45s, prometheusURL: %q}", setups[0].url), 1)
		signals[name] = siblingArrival(t, filepath.Join(dir, "adapter-prometheus"), ns, cfg, "adapter with the Prometheus source")
		order = append(order, name)
		settle(low)
	}
	// The real KEDA operator's prometheus scaler on the same 15 s Prometheus (the path llm-d's guides
	// recommend), read through the aggregator from KEDA's metrics server, as KEDA's HPA reads it.
	if os.Getenv("TOKENSCALE_KEDA_BIN") != "" {
		name := "KEDA prometheus scaler (15 s scrape, rate[1m])"
		signals[name] = startKEDAPrometheus(t, ns, setups[0].url)
		order = append(order, name)
		settle(low)
	} else {
		t.Log("KEDA's prometheus scaler not measured: run `make e2e`, or set TOKENSCALE_KEDA_BIN to the output of hack/build-keda.sh")
	}
	up := step(low, high)
	settle(high)
	down := step(high, low)
	for _, name := range order {
		u, okU := up[name]
		d, okD := down[name]
		if !okU || !okD {
			t.Errorf("%s never covered 90%% of a step within 240 s (up %v, down %v)", name, u, d)
			continue
		}
		t.Logf("%-42s 90%% of a %g→%g tok/s step after %5.1f s; of the step back after %5.1f s", name, low, high, u.Seconds(), d.Seconds())
	}
	for _, name := range order[1:] {
		if u, ok := up[name]; ok && up[order[0]] > 0 {
			t.Logf("%-42s %5.1fx tokenscale's time on the step up", name, u.Seconds()/up[order[0]].Seconds())
		}
	}
	// The point of the project: the adapter's signal leads Prometheus' usual setup by far (goal: 15x).
	if up[order[0]]*15 > up[order[1]] {
		t.Errorf("tokenscale (%s) is not 15x faster than %s (%s) on the step up", up[order[0]], order[1], up[order[1]])
	}

	// One step lands at one point of the adapter's scrape cycle; its lag depends on where. Repeat
	// tokenscale's steps with the start moved through the cycle, for the distribution: the suite's adapter
	// at its 1 s interval, and a second one at 500 ms (its smoothing follows the interval), read on its own
	// port.
	runs := 8
	if os.Getenv("TOKENSCALE_PERF") == "full" {
		runs = 40
	}
	// The suite's scrape settings with the fast interval; TOKENSCALE_PERF_SPREAD is left out, as a spread
	// plus the timeout must fit in the interval.
	scrape := fmt.Sprintf("scrape: {port: %d, interval: %s, timeout: %s, staleAfter: 3s}", suite.enginePort, fastInterval, fastInterval*4/5)
	fast := scrapeLine.ReplaceAllLiteralString(adapterConfig(suite.enginePort), scrape)
	if !strings.Contains(fast, scrape) {
		t.Fatalf("the suite's adapter config has no scrape line to replace:\n%s", fast)
	}
	fastRead := siblingArrival(t, filepath.Join(dir, "adapter-fast"), ns, fast, fmt.Sprintf("adapter scraping every %s", fastInterval))
	// Both adapters read the same steps, each polled on its own: one series of steps serves both
	// distributions.
	repeatSteps(t, k, runs, low, high,
		stepReader{"1 s scrapes, through the aggregator", ours, time.Second},
		stepReader{fmt.Sprintf("%s scrapes, on the adapter's port", fastInterval), fastRead, fastInterval})
}

// fastInterval is the shorter scrape interval the lag test measures beside the suite's 1 s.
const fastInterval = 500 * time.Millisecond

// siblingArrival starts a second adapter from the suite's binary with cfg, in dir, stopped (and its log's
// tail logged as what, when the test failed) at cleanup, and returns a reader of its
// tokenscale_arrival_tokens_per_second for llama-prefill in ns, on its own port.
func siblingArrival(t *testing.T, dir, ns, cfg, what string) func() (float64, error) {
	t.Helper()
	sib, err := suite.adapter.Sibling(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := sib.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sib.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(sib.Dir, "adapter.log"))
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("%s, log (tail):\n%s", what, b)
		}
	})
	return directMetric(sib.Port, readerToken(t, ns),
		fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/deployments.apps/llama-prefill/tokenscale_arrival_tokens_per_second", ns))
}

// scrapeLine is the scrape block of adapterConfig.
var scrapeLine = regexp.MustCompile(`scrape: \{[^}]*\}`)

// stepReader is one adapter's signal in repeatSteps: its name, how to read it, and its scrape interval.
type stepReader struct {
	name     string
	read     func() (float64, error)
	interval time.Duration
}

// repeatSteps steps the prefill load between low and high runs times, the step's start moved through one
// second (distinct phases of a 1 s and of a 500 ms cycle), and logs for each reader the distribution of
// the time it takes to cover 90% of a step, each reader polled in its own goroutine so that one's slow
// answer does not delay another's. It fails if any
// step takes a reader more than two of its intervals plus a second (two scrapes, the round, the read and
// the poll).
func repeatSteps(t *testing.T, k *localcluster.Kubelet, runs int, low, high float64, readers ...stepReader) {
	t.Helper()
	lags := make([][]time.Duration, len(readers))
	for i := range runs {
		from, to := low, high
		if i%2 == 1 {
			from, to = high, low
		}
		for _, r := range readers {
			eventually(t, 60*time.Second, "tokenscale settled ("+r.name+")", func() error {
				v, err := r.read()
				if err != nil {
					return err
				}
				return within(v, from, 0.05)
			})
		}
		// The starts move through a second in runs steps, the second half shifted by half a step: the
		// 500 ms adapter's cycle, which the first half already covers twice, then also sees runs phases.
		offset := time.Duration(i) * time.Second / time.Duration(runs)
		if 2*i >= runs {
			offset += time.Second / time.Duration(2*runs)
		}
		time.Sleep(500*time.Millisecond + offset)
		k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: to, OutputTokensPerSec: 5})
		start, threshold := time.Now(), from+0.9*(to-from)
		var wg sync.WaitGroup
		for j, r := range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < 30*time.Second {
					if v, err := r.read(); err == nil && (to > from && v >= threshold || to < from && v <= threshold) {
						lags[j] = append(lags[j], time.Since(start))
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
		wg.Wait()
	}
	for j, r := range readers {
		l := lags[j]
		if len(l) != runs {
			t.Errorf("tokenscale (%s) covered 90%% of the step in %d of %d runs within 30 s", r.name, len(l), runs)
			continue
		}
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		q := func(p float64) float64 { return l[int(p*float64(len(l)-1))].Seconds() }
		t.Logf("tokenscale's lag (%s) over %d steps spread over the scrape cycle: min %.2f s, p50 %.2f s, p90 %.2f s, max %.2f s", r.name, runs, q(0), q(0.5), q(0.9), q(1))
		if limit := (2*r.interval + time.Second).Seconds(); q(1) > limit {
			t.Errorf("tokenscale (%s) took %.2f s to cover 90%% of a step (bounded by about two scrape intervals: %.1f s)", r.name, q(1), limit)
		}
	}
}

// readerTokens caches, per namespace, a bearer token of a cluster-admin ServiceAccount.
var readerTokens = map[string]string{}

// readerToken returns a token that API servers with delegated authentication (prometheus-adapter, a
// second tokenscale adapter) accept, for reading them directly.
func readerToken(t *testing.T, ns string) string {
	t.Helper()
	if tok, ok := readerTokens[ns]; ok {
		return tok
	}
	kubectl(t, "", "create", "serviceaccount", "lag-reader", "-n", ns)
	kubectl(t, "", "create", "clusterrolebinding", "lag-reader-"+ns, "--clusterrole=cluster-admin", "--serviceaccount="+ns+":lag-reader")
	t.Cleanup(func() { _, _ = kubectlRun("", "delete", "clusterrolebinding", "lag-reader-"+ns) })
	tok := strings.TrimSpace(kubectl(t, "", "create", "token", "lag-reader", "-n", ns, "--duration=1h"))
	readerTokens[ns] = tok
	return tok
}

// directMetric reads a custom-metrics path from an API server on 127.0.0.1:port with a bearer token, and
// returns the sum of the items' values.
func directMetric(port int, token, path string) func() (float64, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	u := fmt.Sprintf("https://127.0.0.1:%d%s", port, path)
	return func() (float64, error) {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
			return 0, fmt.Errorf("%s: HTTP %d: %s", u, resp.StatusCode, b)
		}
		var list struct{ Items []struct{ Value string } }
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			return 0, err
		}
		if len(list.Items) == 0 {
			return 0, fmt.Errorf("%s: no values yet", u)
		}
		sum := 0.0
		for _, it := range list.Items {
			q, err := resource.ParseQuantity(it.Value)
			if err != nil {
				return 0, err
			}
			sum += q.AsApproximateFloat64()
		}
		return sum, nil
	}
}

// startKEDAPrometheus runs the real KEDA with a ScaledObject whose prometheus trigger runs the usual
// query, and returns a reader of KEDA's external metric through the aggregator. The ScaledObject scales a
// Deployment outside every pool, pinned at one replica, so it changes nothing the other readers see.
func startKEDAPrometheus(t *testing.T, ns, promURL string) func() (float64, error) {
	t.Helper()
	startKEDA(t)
	deployment(t, ns, "keda-target", "none", fakeengine.VLLMV1, 1)
	kubectl(t, fmt.Sprintf(`apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: lag-prometheus, namespace: %s}
spec:
  scaleTargetRef: {name: keda-target}
  minReplicaCount: 1
  maxReplicaCount: 1
  triggers:
  - type: prometheus
    metadata:
      serverAddress: %q
      query: 'sum(rate(vllm:prompt_tokens_total{namespace="%s"}[1m]))'
      threshold: "10000"
`, ns, promURL, ns), "apply", "-f", "-")
	var metric string
	eventually(t, 60*time.Second, "KEDA's HPA for the prometheus trigger", func() error {
		hpa, err := suite.cp.Client.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(suite.ctx, "keda-hpa-lag-prometheus", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(hpa.Spec.Metrics) != 1 || hpa.Spec.Metrics[0].External == nil {
			return fmt.Errorf("HPA metrics %+v", hpa.Spec.Metrics)
		}
		metric = hpa.Spec.Metrics[0].External.Metric.Name
		return nil
	})
	path := fmt.Sprintf("/apis/external.metrics.k8s.io/v1beta1/namespaces/%s/%s?labelSelector=scaledobject.keda.sh/name=lag-prometheus", ns, metric)
	return func() (float64, error) {
		body, err := getRaw(path)
		if err != nil {
			return 0, err
		}
		var ext struct{ Items []struct{ Value string } }
		if err := json.Unmarshal(body, &ext); err != nil {
			return 0, err
		}
		if len(ext.Items) != 1 {
			return 0, fmt.Errorf("KEDA's external metric %s: %s", metric, body)
		}
		return parseQuantity(ext.Items[0].Value)
	}
}

func promDuration(d time.Duration) string {
	if d%time.Minute == 0 {
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
	return fmt.Sprintf("%ds", int(d/time.Second))
}

// promQuery runs an instant query and returns its single scalar-like value.
func promQuery(base, q string) (float64, error) {
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" || len(r.Data.Result) != 1 {
		return 0, fmt.Errorf("query %q: status %s, %d series", q, r.Status, len(r.Data.Result))
	}
	s, ok := r.Data.Result[0].Value[1].(string)
	if !ok {
		return 0, fmt.Errorf("query %q: value %v", q, r.Data.Result[0].Value)
	}
	return strconv.ParseFloat(s, 64)
}

// startPrometheusAdapter runs prometheus-adapter against Prometheus with one rule exposing the pods'
// counter series as the custom metric as (the documented rule shape, rate over 1m), and returns its
// secure port on 127.0.0.1, which accepts the suite's admin client certificate and tokens.
func startPrometheusAdapter(t *testing.T, dir, bin, promURL, series, as string) int {
	t.Helper()
	rules := fmt.Sprintf(`rules:
- seriesQuery: '%[1]s{namespace!="",pod!=""}'
  resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}
  name: {matches: "^%[1]s$", as: "%[2]s"}
  metricsQuery: 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)'
`, series, as)
	rulesPath := filepath.Join(dir, "prometheus-adapter.yaml")
	if err := os.WriteFile(rulesPath, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	port := localcluster.FreePort()
	kc := suite.cp.AdminKubeconfig
	p, err := localcluster.StartProcess(dir, "prometheus-adapter", nil, bin, "--prometheus-url="+promURL, "--config="+rulesPath,
		"--metrics-relist-interval=15s", "--secure-port="+strconv.Itoa(port), "--bind-address=127.0.0.1", "--cert-dir="+filepath.Join(dir, "pa-certs"),
		"--lister-kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc, "-v=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return port
}

// startPrometheus runs a real Prometheus scraping the pods of role in ns every scrape, each target
// labelled with its namespace and pod as Kubernetes service discovery would, and returns its URL.
func startPrometheus(t *testing.T, dir, bin, name string, k *localcluster.Kubelet, ns, role string, scrape time.Duration) string {
	t.Helper()
	var targets []string
	for _, p := range k.Pods(role) {
		u, err := url.Parse(p.URL())
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, fmt.Sprintf("{targets: [%q], labels: {namespace: %s, pod: %s}}", u.Host, ns, p.Name))
	}
	port := localcluster.FreePort()
	cfg := fmt.Sprintf("global: {scrape_interval: %s, evaluation_interval: %s}\nscrape_configs:\n- job_name: vllm\n  static_configs: [%s]\n",
		scrape, scrape, strings.Join(targets, ", "))
	cfgPath := filepath.Join(dir, name+".yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := localcluster.StartProcess(dir, name, nil, bin, "--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, name+"-tsdb"), "--web.listen-address="+net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// prometheusBinary returns Debian's prometheus as `make e2e` provides it, or one on PATH.
func prometheusBinary() (string, bool) {
	if bin := os.Getenv("TOKENSCALE_PROMETHEUS"); bin != "" {
		return bin, true
	}
	bin, err := exec.LookPath("prometheus")
	return bin, err == nil
}
