//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tokenscale/tokenscale/adapter"
	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

// Per-pod and Object values served through the aggregator match a known load: a vLLM V1 prefill pool and
// an SGLang decode pool, two pods each, every number within 10% of what the engines are doing.
func TestValuesForKnownLoad(t *testing.T) {
	const ns = "values"
	k := namespace(t, ns)
	deployment(t, ns, "llama-prefill", "prefill", fakeengine.VLLMV1, 2)
	deployment(t, ns, "llama-decode", "decode", fakeengine.SGLang, 2)
	const promptLoad, outputLoad = 8000.0, 3000.0
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: promptLoad, OutputTokensPerSec: 10})
	k.SetLoad("decode", fakeengine.Load{OutputTokensPerSec: outputLoad})

	perPod := func(metric, role string, want float64) func() error {
		return func() error {
			vals, err := podValues(ns, metric, "llm-d.ai/role="+role)
			if err != nil {
				return err
			}
			if len(vals) != 2 {
				return fmt.Errorf("%d pods served, want 2: %v", len(vals), vals)
			}
			for pod, v := range vals {
				if err := within(v, want, 0.1); err != nil {
					return fmt.Errorf("pod %s: %w", pod, err)
				}
			}
			return nil
		}
	}
	took := eventually(t, 90*time.Second, "prefill velocity per pod", perPod(adapter.PrefillVelocity, "prefill", promptLoad/2))
	t.Logf("per-pod prefill velocity correct %s after the load started", took.Round(time.Millisecond))
	eventually(t, 20*time.Second, "decode velocity per pod", perPod(adapter.DecodeVelocity, "decode", outputLoad/2))

	object := func(dep, metric string, want, tol float64) {
		t.Helper()
		// 45 s: a new adapter holds the pods running at its first decision for the policy's memory (5 ×
		// the suite's 5 s cold start), and the prefill pool starts with two pods where one is wanted.
		eventually(t, 45*time.Second, dep+" "+metric, func() error {
			v, err := objectValue(ns, dep, metric)
			if err != nil {
				return err
			}
			if tol == 0 {
				if v != want {
					return fmt.Errorf("got %g, want %g", v, want)
				}
				return nil
			}
			return within(v, want, tol)
		})
	}
	object("llama-prefill", adapter.ArrivalVelocity, promptLoad, 0.1)
	object("llama-prefill", adapter.CapacityVelocity, 2*prefillTPS, 0.1)
	object("llama-prefill", adapter.Utilisation, promptLoad/(2*prefillTPS), 0.1)
	object("llama-decode", adapter.ArrivalVelocity, outputLoad, 0.1)
	object("llama-decode", adapter.CapacityVelocity, 2*decodeTPS, 0.1)
	// Sizing at 85% target utilisation: ceil(8000/8500) = 1 prefill, ceil(3000/2125) = 2 decode.
	object("llama-prefill", adapter.DesiredReplicas, 1, 0)
	object("llama-decode", adapter.DesiredReplicas, 2, 0)
	object("llama-decode", adapter.Conversions, 0, 0)
	bp, err := objectValue(ns, "llama-prefill", adapter.Backpressure)
	if err != nil || bp >= 1 {
		t.Errorf("backpressure at 40%% utilisation = %v, %v; want < 1", bp, err)
	}

	// The same pool numbers through external.metrics.k8s.io (the adapter runs with --external-metrics).
	eventually(t, 20*time.Second, "external arrival for pool=prefill", func() error {
		body, err := getRaw("/apis/external.metrics.k8s.io/v1beta1/namespaces/" + ns + "/" + adapter.ArrivalVelocity + "?labelSelector=pool=prefill")
		if err != nil {
			return err
		}
		var list struct {
			Items []struct {
				MetricLabels map[string]string `json:"metricLabels"`
				Value        string            `json:"value"`
			}
		}
		if err := json.Unmarshal(body, &list); err != nil {
			return err
		}
		if len(list.Items) != 1 || list.Items[0].MetricLabels["workload"] != "llama-prefill" {
			return fmt.Errorf("want one item for the prefill pool: %s", body)
		}
		v, err := parseQuantity(list.Items[0].Value)
		if err != nil {
			return err
		}
		return within(v, promptLoad, 0.1)
	})

	// What does not exist is a 404 naming what does.
	_, err = objectValue(ns, "no-such-deployment", adapter.ArrivalVelocity)
	if statusCode(err) != 404 || !strings.Contains(err.Error(), "llama-prefill") {
		t.Errorf("unknown workload: got %v, want a 404 listing the namespace's pools", err)
	}
	_, err = podValues(ns, "tokenscale_no_such_metric", "llm-d.ai/role=prefill")
	if statusCode(err) != 404 || !strings.Contains(err.Error(), adapter.PrefillVelocity) {
		t.Errorf("unknown metric: got %v, want a 404 listing our metrics", err)
	}
	// A selector that does not parse is a short 400 naming it (custom-metrics-apiserver's own answer to
	// a bad metricLabelSelector is a 500, and the parser's message can repeat a token of it whole).
	for param, path := range map[string]string{
		"metricLabelSelector": "/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + ns + "/pods/*/" + adapter.PrefillVelocity,
		"labelSelector":       "/apis/external.metrics.k8s.io/v1beta1/namespaces/" + ns + "/" + adapter.ArrivalVelocity,
	} {
		body, err := suite.cp.Client.Discovery().RESTClient().Get().AbsPath(path).
			Param(param, "pool in (prefill"+strings.Repeat("x", 64<<10)).DoRaw(suite.ctx)
		if statusCode(err) != 400 || !strings.Contains(string(body), param) || len(body) > 2048 {
			t.Errorf("a %s that does not parse: %v, a body of %d bytes; want a short 400 naming it", param, err, len(body))
		}
	}
}

// The adapter's own /metrics (behind delegated authn/authz, read here with the cluster admin's client
// certificate) carries the scrape and request metrics, and /readyz is tied to fresh values.
func TestAdapterOwnMetrics(t *testing.T) {
	cfg := &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", suite.adapter.Port), TLSClientConfig: rest.TLSClientConfig{
		Insecure: true, CertFile: filepath.Join(suite.cp.Dir, "admin.crt"), KeyFile: filepath.Join(suite.cp.Dir, "admin.key")}}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "own metrics after a round of requests", func() error {
		if _, err := getRaw("/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/deployments.apps/x/" + adapter.ArrivalVelocity); statusCode(err) == 0 {
			return fmt.Errorf("a request for an unmapped workload should fail, but it answered (status %d)", statusCode(err))
		}
		body, err := c.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(suite.ctx)
		if err != nil {
			return fmt.Errorf("GET /metrics: %w", err)
		}
		for _, want := range []string{"tokenscale_scrape_duration_seconds_bucket", "tokenscale_last_scrape_timestamp_seconds",
			`tokenscale_metric_request_duration_seconds_count{api="custom",outcome="not_found",target="object"}`} {
			if !strings.Contains(string(body), want) {
				return fmt.Errorf("/metrics lacks %s", want)
			}
		}
		ready, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").Param("verbose", "1").DoRaw(suite.ctx)
		if err != nil {
			return fmt.Errorf("/readyz: %w", err)
		}
		if !strings.Contains(string(ready), "tokenscale-snapshot-fresh ok") {
			return fmt.Errorf("/readyz lacks tokenscale-snapshot-fresh ok: %s", ready)
		}
		return nil
	})
}
