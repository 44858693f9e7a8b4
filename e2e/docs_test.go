//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

// Every tokenscale_* metric the README and docs name is one a user can get: listed in the custom or
// external metrics discovery through the aggregator, or on the adapter's own /metrics.
func TestDocsNameOnlyServedMetrics(t *testing.T) {
	const ns = "docs"
	k := namespace(t, ns)
	deployment(t, ns, "llama-prefill", "prefill", fakeengine.VLLMV1, 1)
	deployment(t, ns, "llama-decode", "decode", fakeengine.SGLang, 1)
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 3000, OutputTokensPerSec: 10})
	// A second namespace keeps a live decode pool, whose numbers (conversions_wanted is a decode pool's
	// only) are served while the first namespace's are unknown.
	const live = "docs-live"
	namespace(t, live)
	deployment(t, live, "llama-prefill", "prefill", fakeengine.VLLMV1, 1)
	deployment(t, live, "llama-decode", "decode", fakeengine.VLLMV1, 1)
	// The decode pool's only engine dies, so its numbers are unknown and tokenscale_pool_value_unknown shows.
	eventually(t, 30*time.Second, "the decode pod running", func() error {
		if pods := k.Pods("decode"); len(pods) == 1 {
			pods[0].Kill()
			return nil
		}
		return fmt.Errorf("no decode pod yet")
	})

	served := map[string]bool{}
	for _, api := range []string{"/apis/custom.metrics.k8s.io/v1beta2", "/apis/external.metrics.k8s.io/v1beta1"} {
		eventually(t, 60*time.Second, "discovery of "+api, func() error {
			body, err := getRaw(api)
			if err != nil {
				return err
			}
			var list struct{ Resources []struct{ Name string } }
			if err := json.Unmarshal(body, &list); err != nil {
				return err
			}
			for _, r := range list.Resources {
				served[r.Name[strings.LastIndex(r.Name, "/")+1:]] = true // pods/NAME, deployments.apps/NAME or NAME
			}
			return nil
		})
	}
	cfg := &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", suite.adapter.Port), TLSClientConfig: rest.TLSClientConfig{
		Insecure: true, CertFile: filepath.Join(suite.cp.Dir, "admin.crt"), KeyFile: filepath.Join(suite.cp.Dir, "admin.key")}}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	family := regexp.MustCompile(`(?m)^# TYPE (tokenscale_\w+) `)
	eventually(t, 30*time.Second, "the pool gauges on the adapter's /metrics", func() error {
		if _, err := objectValue(ns, "llama-prefill", "tokenscale_desired_replicas"); err != nil {
			return err // one answered request, so the request-latency histogram has a series
		}
		body, err := c.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(suite.ctx)
		if err != nil {
			return err
		}
		for _, m := range family.FindAllStringSubmatch(string(body), -1) {
			served[m[1]] = true
		}
		if !strings.Contains(string(body), `tokenscale_pool_desired_replicas{namespace="docs",pool="prefill",role="prefill"}`) {
			return fmt.Errorf("no desired replicas gauge for docs/prefill yet")
		}
		if !strings.Contains(string(body), `tokenscale_pool_value_unknown{namespace="docs",pool="decode"`) {
			return fmt.Errorf("the dead decode pool's numbers are not flagged unknown yet")
		}
		if !strings.Contains(string(body), `tokenscale_pool_conversions_wanted{namespace="docs-live",pool="decode"`) {
			return fmt.Errorf("no conversions gauge for the live decode pool yet")
		}
		return nil
	})

	// The KEDA scaler's own /metrics, after one answered call and one push stream.
	grpcAddr, metricsAddr := startScaler(t)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ref := &externalscaler.ScaledObjectRef{Name: "llama-prefill", Namespace: ns, ScalerMetadata: map[string]string{"pool": "prefill"}}
	eventually(t, 30*time.Second, "the KEDA scaler's /metrics", func() error {
		sctx, cancel := context.WithCancel(suite.ctx)
		defer cancel()
		if _, err := externalscaler.NewExternalScalerClient(conn).GetMetricSpec(sctx, ref); err != nil {
			return err
		}
		st, err := externalscaler.NewExternalScalerClient(conn).StreamIsActive(sctx, ref)
		if err != nil {
			return err
		}
		if _, err := st.Recv(); err != nil {
			return err
		}
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		for _, m := range family.FindAllStringSubmatch(string(body), -1) {
			served[m[1]] = true
		}
		if !strings.Contains(string(body), "tokenscale_keda_request_duration_seconds_count") {
			return fmt.Errorf("no request recorded yet")
		}
		return nil
	})

	named := regexp.MustCompile("tokenscale_[a-z_]*[a-z]")
	docs := []string{"../README.md", "../docs/metrics.md", "../docs/keda.md", "../manifests/README.md"}
	var missing []string
	checked := 0
	for _, f := range docs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range named.FindAllString(string(b), -1) {
			base := n
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(n, s); ok && served[b] {
					base = b
				}
			}
			checked++
			if !served[base] && !documentedNonMetric[n] {
				missing = append(missing, fmt.Sprintf("%s: %s", strings.TrimPrefix(f, "../"), n))
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("docs name metrics nobody serves:\n%s", strings.Join(missing, "\n"))
	}
	if checked < 20 {
		t.Errorf("only %d metric names found in the docs; the check is not reading them", checked)
	}
}

// documentedNonMetric are tokenscale_* words in the docs that are not metric names.
var documentedNonMetric = map[string]bool{
	"tokenscale_no_such_metric": true, // an example of a 404
	"tokenscale_pool":           true, // the prefix in "tokenscale_pool_* gauges"
}
