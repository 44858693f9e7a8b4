//go:build e2e

package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tokenscale/tokenscale/e2e/controlplane"
	"github.com/tokenscale/tokenscale/e2e/localstack"
	"github.com/tokenscale/tokenscale/sim/fakeengine"
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
// 1 s with rate(...[10s]). After a load step up and a step down, each signal's time to cover 90% of the
// step is measured: tokenscale's Object metric through the aggregator, Prometheus' answer to the query.
// What KEDA's prometheus scaler (pollingInterval, 30 s by default) or prometheus-adapter and the HPA (15 s
// sync) add comes on top of the Prometheus figure and is not measured here.
func TestDetectionLagVsPrometheus(t *testing.T) {
	bin := os.Getenv("TOKENSCALE_PROMETHEUS")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("prometheus"); err != nil {
			t.Skip("no prometheus binary: run `make e2e` (hack/get-prometheus.sh extracts Debian's), install prometheus, or set TOKENSCALE_PROMETHEUS")
		}
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
	// One static target per pod, labelled with its namespace and pod as Kubernetes service discovery would,
	// so prometheus-adapter can map the series to pods.
	var targets []string
	for _, p := range k.Pods("prefill") {
		u, err := url.Parse(p.URL())
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, fmt.Sprintf("{targets: [%q], labels: {namespace: %s, pod: %s}}", u.Host, ns, p.Name))
	}
	dir := t.TempDir()
	setups := []*promSetup{
		{name: "Prometheus 15 s scrape, rate[1m]", scrape: 15 * time.Second, window: time.Minute},
		{name: "Prometheus 1 s scrape, rate[10s]", scrape: time.Second, window: 10 * time.Second},
	}
	for i, s := range setups {
		port := controlplane.FreePort()
		cfg := fmt.Sprintf("global: {scrape_interval: %s, evaluation_interval: %s}\nscrape_configs:\n- job_name: vllm\n  static_configs: [%s]\n",
			s.scrape, s.scrape, strings.Join(targets, ", "))
		cfgPath := filepath.Join(dir, fmt.Sprintf("prometheus-%d.yml", i))
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := localstack.StartProcess(dir, fmt.Sprintf("prometheus-%d", i), nil, bin, "--config.file="+cfgPath,
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("tsdb-%d", i)), "--web.listen-address="+net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Stop)
		s.url = fmt.Sprintf("http://127.0.0.1:%d", port)
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
	step := func(from, to float64) map[string]time.Duration {
		k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: to, OutputTokensPerSec: 5})
		start := time.Now()
		threshold := from + 0.9*(to-from)
		reached := map[string]time.Duration{}
		for len(reached) < len(order) && time.Since(start) < 240*time.Second {
			for _, name := range order {
				if _, done := reached[name]; done {
					continue
				}
				v, err := signals[name]()
				if err == nil && (to > from && v >= threshold || to < from && v <= threshold) {
					reached[name] = time.Since(start)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		return reached
	}

	settle(low)
	// prometheus-adapter on the 15 s Prometheus, when built (hack/build-prometheus-adapter.sh): the series
	// exist now, so its first list finds them.
	if pa := os.Getenv("TOKENSCALE_PROMETHEUS_ADAPTER"); pa != "" {
		name := "prometheus-adapter (15 s scrape, rate[1m])"
		signals[name] = startPrometheusAdapter(t, dir, pa, setups[0].url, ns)
		order = append(order, name)
		settle(low)
	} else {
		t.Log("prometheus-adapter not measured: run `bash hack/build-prometheus-adapter.sh` and set TOKENSCALE_PROMETHEUS_ADAPTER to its output")
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
	// The point of the project: the adapter's signal leads Prometheus' usual setup.
	if up[order[0]] >= up[order[1]] {
		t.Errorf("tokenscale (%s) did not lead %s (%s) on the step up", up[order[0]], order[1], up[order[1]])
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

// startPrometheusAdapter runs prometheus-adapter against Prometheus with a rule exposing the pods' prompt
// token rate as a custom metric (the documented rule shape, rate over 1m), and returns a reader of the
// namespace's summed value from its own HTTPS endpoint, as the aggregator would ask it.
func startPrometheusAdapter(t *testing.T, dir, bin, promURL, ns string) func() (float64, error) {
	t.Helper()
	rules := `rules:
- seriesQuery: 'vllm:prompt_tokens_total{namespace!="",pod!=""}'
  resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}
  name: {matches: "^vllm:prompt_tokens_total$", as: "vllm_prompt_tokens_per_second"}
  metricsQuery: 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)'
`
	rulesPath := filepath.Join(dir, "prometheus-adapter.yaml")
	if err := os.WriteFile(rulesPath, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	port := controlplane.FreePort()
	kc := suite.cp.AdminKubeconfig
	p, err := localstack.StartProcess(dir, "prometheus-adapter", nil, bin, "--prometheus-url="+promURL, "--config="+rulesPath,
		"--metrics-relist-interval=15s", "--secure-port="+strconv.Itoa(port), "--bind-address=127.0.0.1", "--cert-dir="+filepath.Join(dir, "pa-certs"),
		"--lister-kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc, "-v=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	// A reader with cluster-admin rights, authenticated by token through the adapter's delegated authn.
	kubectl(t, "", "create", "serviceaccount", "lag-reader", "-n", ns)
	kubectl(t, "", "create", "clusterrolebinding", "lag-reader", "--clusterrole=cluster-admin", "--serviceaccount="+ns+":lag-reader")
	token := strings.TrimSpace(kubectl(t, "", "create", "token", "lag-reader", "-n", ns, "--duration=1h"))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	u := fmt.Sprintf("https://127.0.0.1:%d/apis/custom.metrics.k8s.io/v1beta1/namespaces/%s/pods/%%2A/vllm_prompt_tokens_per_second", port, ns)
	return func() (float64, error) {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("prometheus-adapter: HTTP %d", resp.StatusCode)
		}
		var list struct{ Items []struct{ Value string } }
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			return 0, err
		}
		if len(list.Items) == 0 {
			return 0, fmt.Errorf("prometheus-adapter: no values yet")
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
