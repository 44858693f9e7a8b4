//go:build e2e

package e2e

import (
	"errors"
	"io/fs"
	"os"
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
	// Moved to another namespace, nothing is left in tokenscale and the auth-reader binding stays in
	// kube-system, where extension-apiserver-authentication is.
	moved := rendered["manifests/examples/other-namespace"]
	if strings.Contains(moved, "namespace: tokenscale\n") {
		t.Error("manifests/examples/other-namespace still names the tokenscale namespace")
	}
	binding := ""
	for _, doc := range strings.Split(moved, "\n---\n") {
		doc += "\n" // the separator took the last line's newline
		if strings.Contains(doc, "kind: RoleBinding\n") && strings.Contains(doc, "name: tokenscale-adapter-auth-reader\n") {
			binding = doc
		}
	}
	if !strings.Contains(binding, "  namespace: kube-system\n") || !strings.Contains(binding, "  namespace: inference\n") {
		t.Errorf("manifests/examples/other-namespace: want the auth-reader RoleBinding in kube-system for a ServiceAccount in inference, got:\n%s", binding)
	}
	for _, ns := range []string{"llm-d", "inference"} {
		if _, err := suite.cp.Client.CoreV1().Namespaces().Create(suite.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"manifests/overlays/default", "manifests/overlays/external-metrics", "manifests/overlays/adapter-and-keda", "manifests/examples", "manifests/examples/other-namespace", "manifests/grafana"} {
		if out, err := kubectlRun(rendered[d], "apply", "--dry-run=server", "-f", "-"); err != nil {
			t.Errorf("server-side dry run of %s: %v\n%s", d, err, out)
		}
	}
	// The monitoring component needs the Prometheus Operator's CRDs, taken from its Go module.
	crds := os.Getenv("TOKENSCALE_PROMETHEUS_OPERATOR_CRDS")
	t.Run("monitoring", func(t *testing.T) {
		if crds == "" {
			t.Skip("TOKENSCALE_PROMETHEUS_OPERATOR_CRDS is unset: `bash hack/get-prometheus-operator-crds.sh` fetches the CRDs and prints their directory (`make e2e` sets it)")
		}
		installMonitoringCRDs(t, crds)
		if out, err := kubectlRun(rendered["manifests/overlays/monitoring"], "apply", "--dry-run=server", "-f", "-"); err != nil {
			t.Errorf("server-side dry run of manifests/overlays/monitoring: %v\n%s", err, out)
		}
	})
	// The chart with every component on (the certificate objects of tls.mode=cert-manager need
	// cert-manager's CRDs, which no test here installs: the chart test renders that mode).
	t.Run("chart", func(t *testing.T) {
		helm := os.Getenv("TOKENSCALE_HELM")
		if helm == "" || crds == "" {
			t.Skip("TOKENSCALE_HELM or TOKENSCALE_PROMETHEUS_OPERATOR_CRDS is unset: `bash hack/build-helm.sh` and `bash hack/get-prometheus-operator-crds.sh` print them (`make e2e` sets both)")
		}
		installMonitoringCRDs(t, crds)
		cmd := exec.Command(helm, "template", "tokenscale", "../charts/tokenscale", "--namespace", "tokenscale",
			"--set", "externalMetrics.enabled=true", "--set", "kedaScaler.enabled=true", "--set", "converter.enabled=true",
			"--set", "monitoring.enabled=true", "--set", "monitoring.dashboard.enabled=true")
		var stderr strings.Builder
		cmd.Stderr = &stderr // kept apart from the rendered objects, which are applied
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("helm template: %v\n%s", err, stderr.String())
		}
		if msg, err := kubectlRun(string(out), "apply", "--dry-run=server", "-f", "-"); err != nil {
			t.Errorf("server-side dry run of the chart: %v\n%s", err, msg)
		} else {
			t.Logf("the chart with every component and monitoring on: %d objects pass a server-side dry run", strings.Count(msg, "(server dry run)"))
		}
	})
}

// installMonitoringCRDs applies the ServiceMonitor and PodMonitor CRDs from dir and waits until served.
func installMonitoringCRDs(t *testing.T, dir string) {
	t.Helper()
	kubectl(t, "", "apply", "--server-side", "-f", dir)
	kubectl(t, "", "wait", "--for=condition=Established", "--timeout=60s",
		"crd/servicemonitors.monitoring.coreos.com", "crd/podmonitors.monitoring.coreos.com")
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
	// With the rendered install (what `make preflight OVERLAY=...` passes), the overlay says which APIs.
	// A render saved with CRLF lines is read as the same objects (it read as "no APIService"), and a render
	// for another namespace is checked against its own Service, so tokenscale's install here is another
	// owner to it.
	// A kind written quoted is read as the same kind, and an APIService the script cannot read (inside a
	// List) refuses the render: both passed as "registers no APIService" (exit 0).
	list := "apiVersion: v1\nkind: List\nitems:\n- apiVersion: apiregistration.k8s.io/v1\n  kind: APIService\n" +
		"  metadata: {name: v1beta1.external.metrics.k8s.io}\n  spec: {service: {namespace: tokenscale, name: tokenscale-adapter}}\n"
	for _, c := range []struct {
		dir, want string
		crlf      bool
		exit      int
		edit      func(string) string
	}{
		{"overlays/external-metrics", "keda/keda-operator-metrics-apiserver", false, 1, nil},
		{"overlays/default", "already served by tokenscale", false, 0, nil},
		{"overlays/default", "already served by tokenscale", true, 0, nil},
		{"overlays/keda", "registers no APIService", false, 0, nil},
		{"examples/other-namespace", "not inference/tokenscale-adapter", false, 1, nil},
		{"overlays/default", "already served by tokenscale", false, 0, func(r string) string {
			return strings.ReplaceAll(r, "kind: APIService", `kind: "APIService"`)
		}},
		{"overlays/keda", "has 1 APIService objects, of which this script reads 0", false, 2, func(r string) string {
			return r + "---\n" + list
		}},
	} {
		rendered := kubectl(t, "", "kustomize", filepath.Join("..", "manifests", c.dir))
		if c.crlf {
			rendered = strings.ReplaceAll(rendered, "\n", "\r\n")
		}
		if c.edit != nil {
			rendered = c.edit(rendered)
		}
		f := filepath.Join(t.TempDir(), "rendered.yaml")
		if err := os.WriteFile(f, []byte(rendered), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := preflight("--from", f)
		code := 0
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.exit || !strings.Contains(out, c.want) {
			t.Errorf("preflight --from %s (CRLF %v): exit %d, want %d saying %q\n%s", c.dir, c.crlf, code, c.exit, c.want, out)
		}
	}
}
