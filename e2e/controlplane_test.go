//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenscale/tokenscale/e2e/controlplane"
)

// binDir builds (or finds cached) control-plane binaries with hack/build-control-plane.sh.
func binDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TOKENSCALE_K8S_BIN"); d != "" {
		return d
	}
	out, err := exec.Command("bash", "../hack/build-control-plane.sh").Output()
	if err != nil {
		t.Fatalf("building the control plane (hack/build-control-plane.sh): %v", err)
	}
	return strings.TrimSpace(string(out))
}

// startControlPlane builds (or reuses) the binaries, then starts a control plane stopped at test end.
func startControlPlane(t *testing.T) (context.Context, *controlplane.ControlPlane, string) {
	t.Helper()
	bin := binDir(t) // first, so a cold build does not eat the test's deadline
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: bin, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	return ctx, cp, bin
}

// The harness brings up a real control plane whose deployment controller creates pods.
func TestControlPlaneRunsControllers(t *testing.T) {
	ctx, cp, _ := startControlPlane(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cp-smoke"}}
	if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	replicas := int32(2)
	labels := map[string]string{"app": "smoke"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke", Namespace: "cp-smoke"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "engine", Image: "fake"}}},
			},
		},
	}
	if _, err := cp.Client.AppsV1().Deployments("cp-smoke").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		pods, err := cp.Client.CoreV1().Pods("cp-smoke").List(ctx, metav1.ListOptions{})
		if err == nil && len(pods.Items) == 2 {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("the deployment controller did not create 2 pods within 60s (logs in %s)", cp.Dir)
}
