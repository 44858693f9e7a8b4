//go:build e2e

package e2e

import (
	"errors"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Every kustomization under manifests/ renders, and the installable ones pass a server-side dry run
// against the real API server (schemas, RBAC references, APIService specs).
func TestManifestsRenderAndDryRun(t *testing.T) {
	var dirs []string
	err := filepath.WalkDir("../manifests", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(p))
		}
		return err
	})
	if err != nil || len(dirs) < 6 {
		t.Fatalf("found kustomizations %v (%v); want base, the component's overlays, e2e and examples", dirs, err)
	}
	rendered := map[string]string{}
	for _, d := range dirs {
		out, err := kubectlRun("", "kustomize", d)
		if err != nil {
			t.Errorf("kubectl kustomize %s: %v\n%s", d, err, out)
			continue
		}
		rendered[strings.TrimPrefix(d, "../")] = out
	}
	if !strings.Contains(rendered["manifests/overlays/external-metrics"], "--external-metrics") ||
		strings.Contains(rendered["manifests/overlays/default"], "external.metrics.k8s.io\n  version") {
		t.Error("external metrics must be opt-in: in overlays/external-metrics only")
	}
	if _, err := suite.cp.Client.CoreV1().Namespaces().Create(suite.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "llm-d"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"manifests/overlays/default", "manifests/overlays/external-metrics", "manifests/overlays/adapter-and-keda", "manifests/examples", "manifests/grafana"} {
		if out, err := kubectlRun(rendered[d], "apply", "--dry-run=server", "-f", "-"); err != nil {
			t.Errorf("server-side dry run of %s: %v\n%s", d, err, out)
		}
	}
}

// hack/preflight.sh passes where tokenscale owns the APIs and refuses, naming the owner, where another
// server owns one it would register.
func TestPreflightRefusesForeignAPIService(t *testing.T) {
	if out, err := preflight("--external-metrics"); err != nil || !strings.Contains(out, "already served by tokenscale") {
		t.Fatalf("preflight with tokenscale installed: %v\n%s", err, out)
	}
	// Hand external.metrics.k8s.io to a KEDA-like owner, as in most clusters; restore it afterwards.
	kubectl(t, "", "patch", "apiservice", "v1beta1.external.metrics.k8s.io", "--type=merge",
		"-p", `{"spec":{"service":{"namespace":"keda","name":"keda-operator-metrics-apiserver"}}}`)
	t.Cleanup(func() {
		objs, err := suite.stack.Overlay(suite.adapter.Port)
		if err == nil {
			_, err = kubectlRun(objs, "apply", "-f", "-")
		}
		if err != nil {
			t.Errorf("restoring the APIService: %v", err)
		}
	})
	out, err := preflight("--external-metrics")
	var exit *exec.ExitError
	if err == nil || !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "keda/keda-operator-metrics-apiserver") {
		t.Fatalf("preflight with a foreign owner: %v\n%s; want exit 1 naming keda/keda-operator-metrics-apiserver", err, out)
	}
	if out, err := preflight(); err != nil {
		t.Fatalf("preflight without external metrics must pass (custom metrics are tokenscale's): %v\n%s", err, out)
	}
}
