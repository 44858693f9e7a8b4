//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
	"github.com/tokenscale/tokenscale/internal/localcluster"
)

// The suite shares one control plane and one adapter; each test works in its own namespace.
var suite struct {
	ctx        context.Context
	stack      *localcluster.Stack
	cp         *localcluster.ControlPlane
	adapter    *localcluster.Adapter
	enginePort int
	k8sBin     string // the control-plane binaries
}

// Engine capacity of every fake pod, and the pool profile the adapter is configured with (the same).
const (
	prefillTPS = 10000.0
	decodeTPS  = 2500.0
)

// adapterConfig is the adapter's pool config: llm-d roles, one prefill and one decode Deployment per
// namespace, short windows so the tests see scale-down within a minute. TOKENSCALE_PERF_SPREAD sets
// scrape.spread (at most 500ms here), for the serving-latency comparison in docs/performance.md.
func adapterConfig(port int) string {
	spread := ""
	if v := os.Getenv("TOKENSCALE_PERF_SPREAD"); v != "" {
		spread = ", spread: " + v
	}
	return fmt.Sprintf(`version: tokenscale.io/v1alpha1
scrape: {port: %d, interval: 1s, timeout: 500ms%s, staleAfter: 3s}
policy: {scaleDownWindow: 5s, coldStart: 5s, releaseHold: 5s, calibrate: false}
pools:
- name: prefill
  role: prefill
  selector: {llm-d.ai/role: prefill}
  workload: {kind: Deployment, name: llama-prefill}
  profile: {prefillTokensPerSecond: %g, decodeTokensPerSecond: %g}
  maxReplicas: 6
- name: decode
  role: decode
  selector: {llm-d.ai/role: decode}
  workload: {kind: Deployment, name: llama-decode}
  profile: {prefillTokensPerSecond: %g, decodeTokensPerSecond: %g}
  maxReplicas: 6
`, port, spread, prefillTPS, decodeTPS, prefillTPS, decodeTPS)
}

func TestMain(m *testing.M) { os.Exit(runSuite(m)) }

func runSuite(m *testing.M) int {
	bin := os.Getenv("TOKENSCALE_K8S_BIN")
	if bin == "" {
		out, err := exec.Command("bash", "../hack/build-control-plane.sh").Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building the control plane (hack/build-control-plane.sh): %v\n", err)
			return 1
		}
		bin = strings.TrimSpace(string(out))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "tokenscale-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	start := time.Now()
	suite.ctx, suite.enginePort, suite.k8sBin = ctx, localcluster.FreePort(), bin
	stack, err := localcluster.StartStack(ctx, localcluster.StackOptions{RepoRoot: "..", BinDir: bin, Dir: dir, HPASyncPeriod: time.Second,
		AdapterConfig: adapterConfig(suite.enginePort)})
	if stack != nil {
		defer stack.Stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		fmt.Printf("e2e failed: control-plane and adapter logs are kept in %s\n", dir)
		return 1
	}
	fmt.Printf("control plane up and adapter installed in %s\n", time.Since(start).Round(time.Millisecond))
	suite.stack, suite.cp, suite.adapter = stack, stack.CP, stack.Adapter
	code := m.Run()
	if code == 0 {
		_ = os.RemoveAll(dir)
	} else {
		fmt.Printf("e2e failed: control-plane and adapter logs are kept in %s\n", dir)
	}
	return code
}

// preflight runs hack/preflight.sh against the test cluster.
func preflight(args ...string) (string, error) { return suite.stack.Preflight(args...) }

func kubectlRun(stdin string, args ...string) (string, error) {
	return suite.stack.Kubectl(stdin, args...)
}

func serviceAccountKubeconfig(ctx context.Context, dir, ns, name string) (string, error) {
	return suite.stack.ServiceAccountKubeconfig(ctx, dir, ns, name)
}

func kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := kubectlRun(stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return out
}

// namespace creates a test's namespace and runs a fake kubelet for it until the test ends.
func namespace(t *testing.T, name string, nodes ...string) *localcluster.Kubelet {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := suite.cp.Client.CoreV1().Namespaces().Create(suite.ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	k := localcluster.NewKubelet(suite.cp.Client, localcluster.KubeletOptions{Namespace: name, Port: suite.enginePort, Nodes: nodes,
		Engine: fakeengine.Config{PrefillTokensPerSec: prefillTPS, DecodeTokensPerSec: decodeTPS}})
	ctx, cancel := context.WithCancel(suite.ctx)
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("fake kubelet: %v", err)
		}
		// Deleting the namespace lets the garbage collector remove HPAs and Deployments; nothing waits on it.
		_ = suite.cp.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return k
}

// deployment creates an llm-d style Deployment of fake engines: role is llm-d.ai/role and the load group.
func deployment(t *testing.T, ns, name, role string, flavor fakeengine.Flavor, replicas int32, podAnnotations ...string) {
	t.Helper()
	dep := localcluster.Deployment(ns, name, role, flavor, replicas, podAnnotations...)
	if _, err := suite.cp.Client.AppsV1().Deployments(ns).Create(suite.ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// metricValue is one item of a custom metrics response (both API versions share these fields).
type metricValue struct {
	DescribedObject struct{ Kind, Name, Namespace string } `json:"describedObject"`
	Value           string                                 `json:"value"`
}

// getRaw is `kubectl get --raw PATH` through the aggregator; it returns the body or the API error.
// A "?labelSelector=" suffix is sent as the query parameter.
func getRaw(path string) ([]byte, error) {
	req := suite.cp.Client.Discovery().RESTClient().Get()
	if p, sel, ok := strings.Cut(path, "?labelSelector="); ok {
		req = req.AbsPath(p).Param("labelSelector", sel)
	} else {
		req = req.AbsPath(path)
	}
	body, err := req.DoRaw(suite.ctx)
	if err != nil {
		// The body is the API's Status; its message is what a user of kubectl get --raw reads.
		return body, fmt.Errorf("GET %s: %w: %s", path, err, body)
	}
	return body, nil
}

// podValues reads a pods metric for a selector; it returns pod name -> value.
func podValues(ns, metric, selector string) (map[string]float64, error) {
	body, err := getRaw(fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/%s?labelSelector=%s", ns, metric, selector))
	if err != nil {
		return nil, err
	}
	var list struct{ Items []metricValue }
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, it := range list.Items {
		v, err := parseQuantity(it.Value)
		if err != nil {
			return nil, err
		}
		out[it.DescribedObject.Name] = v
	}
	return out, nil
}

// objectValue reads an Object metric of a Deployment.
func objectValue(ns, deployment, metric string) (float64, error) {
	body, err := getRaw(fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/deployments.apps/%s/%s", ns, deployment, metric))
	if err != nil {
		return 0, err
	}
	// A named object's metric comes back as a list of one.
	var list struct{ Items []metricValue }
	if err := json.Unmarshal(body, &list); err != nil {
		return 0, err
	}
	if len(list.Items) != 1 {
		return 0, fmt.Errorf("%d items for one object: %s", len(list.Items), body)
	}
	return parseQuantity(list.Items[0].Value)
}

// eventually polls cond every 500 ms until it returns nil or limit passes; the last error fails the test.
func eventually(t *testing.T, limit time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for {
		if last = cond(); last == nil {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s: %v", what, limit, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// within reports whether got is within tol (a fraction) of want.
func within(got, want, tol float64) error {
	if d := got - want; d > tol*want || d < -tol*want {
		return fmt.Errorf("got %.4g, want %.4g ± %.0f%%", got, want, tol*100)
	}
	return nil
}

// statusCode extracts the HTTP status of an API error, 0 if none.
func statusCode(err error) int {
	var se interface{ Status() metav1.Status }
	if errors.As(err, &se) {
		return int(se.Status().Code)
	}
	return 0
}

func parseQuantity(s string) (float64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("value %q: %w", s, err)
	}
	return q.AsApproximateFloat64(), nil
}
