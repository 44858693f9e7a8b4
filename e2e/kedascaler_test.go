//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
	"github.com/tokenscale/tokenscale/internal/localcluster"
)

// The tokenscale-keda-scaler binary, installed with the manifests' RBAC (overlays/keda) and run as its
// ServiceAccount against the real control plane, answers KEDA's generated gRPC client: metric spec and
// values for real pods, and activation pushed when a burst reaches the activation pool. TestKEDAOperator
// runs the same binary behind the real KEDA operator.
func TestKEDAScalerBinary(t *testing.T) {
	const ns = "keda-scaler"
	k := namespace(t, ns)
	deployment(t, ns, "llama-prefill", "prefill", fakeengine.VLLMV1, 1)
	deployment(t, ns, "llama-decode", "decode", fakeengine.SGLang, 1)
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 6000, OutputTokensPerSec: 10})

	grpcAddr, _ := startScaler(t)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := externalscaler.NewExternalScalerClient(conn)
	ctx := suite.ctx
	ref := func(md map[string]string) *externalscaler.ScaledObjectRef {
		md["scalerAddress"] = "tokenscale-keda-scaler.tokenscale.svc:9090"
		return &externalscaler.ScaledObjectRef{Name: "llama-prefill", Namespace: ns, ScalerMetadata: md}
	}

	eventually(t, 60*time.Second, "gRPC health SERVING", func() error {
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: externalscaler.ExternalScaler_ServiceDesc.ServiceName})
		if err != nil {
			return err
		}
		if r.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("%s", r.Status)
		}
		return nil
	})
	arrival := ref(map[string]string{"pool": "prefill", "metric": "arrivalVelocity", "target": "8500"})
	eventually(t, 30*time.Second, "prefill arrival through KEDA's client", func() error {
		m, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: arrival, MetricName: "s0-tokenscale-prefill-arrivalVelocity"})
		if err != nil {
			return err
		}
		return within(m.MetricValues[0].MetricValueFloat, 6000, 0.1)
	})
	spec, err := c.GetMetricSpec(ctx, ref(map[string]string{"pool": "prefill"}))
	if err != nil || spec.MetricSpecs[0].TargetSizeFloat != 1 {
		t.Fatalf("GetMetricSpec for desired replicas: %v %v", spec, err)
	}
	if _, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"pool": "prefill", "metric": "rps"})}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "allowed:") {
		t.Errorf("bad metadata: %v, want InvalidArgument listing the allowed metrics", err)
	}

	// external-push: activation of the prefill trigger reads the decode pool, idle until the burst.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.StreamIsActive(sctx, ref(map[string]string{"pool": "prefill", "activationPool": "decode", "activationThreshold": "100"}))
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.Recv()
	if err != nil || first.Result {
		t.Fatalf("first push: %v %v, want inactive (decode idle)", first, err)
	}
	burst := time.Now()
	k.SetLoad("decode", fakeengine.Load{OutputTokensPerSec: 2000})
	got, err := st.Recv()
	if err != nil || !got.Result {
		t.Fatalf("push after the burst: %v %v, want active", got, err)
	}
	took := time.Since(burst)
	t.Logf("burst in the decode pool -> activation pushed to the KEDA client in %s (scrape interval 1 s)", took.Round(10*time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("activation pushed %s after the burst; want within about a second (two scrapes + smoothing)", took)
	}

	// Scaled to zero, the pool has nothing to measure: an error KEDA's fallback can count, never 0.
	if _, err := suite.cp.Client.AppsV1().Deployments(ns).UpdateScale(ctx, "llama-prefill", scaleTo("llama-prefill", ns, 0), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "an error for a pool with no pods", func() error {
		_, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: arrival})
		if status.Code(err) != codes.NotFound {
			return fmt.Errorf("got code %s, want NotFound", status.Code(err))
		}
		return nil
	})
	// desiredReplicas with activation read from the decode pool, which is below the threshold: the pool
	// should not run, so 0, not an error (KEDA asks GetMetrics before IsActive on every poll).
	idle := ref(map[string]string{"pool": "prefill", "activationPool": "decode", "activationThreshold": "1e12"})
	m, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: idle})
	if err != nil || len(m.MetricValues) != 1 || m.MetricValues[0].MetricValueFloat != 0 {
		t.Errorf("desiredReplicas of a pool at zero whose activation pool is idle: %v %v; want 0", m, err)
	}
}

// startScaler builds tokenscale-keda-scaler and runs it, as the ServiceAccount of overlays/keda (which it
// installs) with the suite's pool config, until the test ends; it returns the gRPC address and the
// address of its plain-HTTP /metrics.
func startScaler(t *testing.T, extra ...string) (grpcAddr, metricsAddr string) {
	t.Helper()
	out, err := kubectlRun("", "kustomize", "../manifests/overlays/keda")
	if err != nil {
		t.Fatalf("kubectl kustomize overlays/keda: %v\n%s", err, out)
	}
	kubectl(t, out, "apply", "-f", "-") // its Deployment stays Pending: no kubelet runs in namespace tokenscale
	dir := t.TempDir()
	kc, err := serviceAccountKubeconfig(suite.ctx, dir, "tokenscale", "tokenscale-keda-scaler")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tokenscale-keda-scaler")
	if out, err := exec.Command(localcluster.Go(), "build", "-o", bin, "../cmd/tokenscale-keda-scaler").CombinedOutput(); err != nil {
		t.Fatalf("building the scaler: %v\n%s", err, out)
	}
	grpcAddr = fmt.Sprintf("127.0.0.1:%d", localcluster.FreePort())
	metricsAddr = fmt.Sprintf("127.0.0.1:%d", localcluster.FreePort())
	startProcess(t, dir, "tokenscale-keda-scaler", nil, bin, append([]string{"--kubeconfig", kc, "--config", suite.adapter.Config,
		"--grpc-address", grpcAddr, "--metrics-address", metricsAddr, "-v=2"}, extra...)...)
	return grpcAddr, metricsAddr
}
