//go:build e2e

package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/tokenscale/tokenscale/adapter"
	"github.com/tokenscale/tokenscale/internal/localcluster"
)

// TestAdapterImageRuns runs the adapter from its image, as the Deployment runs it: the Deployment's own
// arguments, the image's non-root user, a read-only root filesystem, no capabilities, the config and the
// serving-certificate directory mounted where the manifests mount them. It is ready (/readyz: its loop
// publishes fresh snapshots from the local control plane's pods) or the image is broken. Outside a
// cluster the in-cluster credentials are replaced by a kubeconfig for the adapter's ServiceAccount.
func TestAdapterImageRuns(t *testing.T) {
	img := os.Getenv("TOKENSCALE_ADAPTER_IMAGE")
	podman, lookErr := exec.LookPath("podman")
	if img == "" || lookErr != nil {
		msg := "needs podman and an adapter image: run `bash hack/install-podman.sh && make images && make e2e` (`--sandbox` where podman runs inside a container) (make e2e passes the image it built as TOKENSCALE_ADAPTER_IMAGE); .ci/run does this"
		if os.Getenv("TOKENSCALE_REQUIRE_IMAGE") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	args := deploymentArgs(t, "../manifests/base/deployment.yaml", "adapter")

	// Files the image's user (65532) can read, and a serving-certificate directory it can write.
	dir := t.TempDir()
	kube, certs := filepath.Join(dir, "kube"), filepath.Join(dir, "serving-cert")
	for _, d := range []string{dir, kube} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(certs, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(certs, 0o777); err != nil {
		t.Fatal(err)
	}
	// A serving certificate from a CA of its own, as cert-manager would issue it, for the Service name the
	// aggregator verifies (service.namespace.svc).
	if err := localcluster.WriteMutualTLS(certs, imageService+".tokenscale.svc"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if err := os.Chmod(filepath.Join(certs, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := os.ReadFile(suite.cp.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := suite.stack.ServiceAccountToken(suite.ctx, "tokenscale", "tokenscale-adapter")
	if err != nil {
		t.Fatal(err)
	}
	const inKube = "/etc/tokenscale-e2e"
	kc := filepath.Join(kube, "kubeconfig")
	if err := suite.stack.WriteTokenKubeconfig(kc, "tokenscale-adapter", tok, inKube+"/ca.crt"); err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{filepath.Join(kube, "ca.crt"): ca, filepath.Join(dir, "config.yaml"): []byte(adapterConfig(suite.enginePort))} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(kc, 0o644); err != nil {
		t.Fatal(err)
	}

	// The Deployment's arguments, with the port moved off 6443 (the host network is shared) and the
	// in-cluster credentials replaced.
	port := localcluster.FreePort()
	for i, a := range args {
		if strings.HasPrefix(a, "--secure-port=") {
			args[i] = fmt.Sprintf("--secure-port=%d", port)
		}
	}
	args = append(args, "--tls-cert-file=/var/run/serving-cert/tls.crt", "--tls-private-key-file=/var/run/serving-cert/tls.key",
		"--bind-address=127.0.0.1", "--kubeconfig="+inKube+"/kubeconfig",
		"--authentication-kubeconfig="+inKube+"/kubeconfig", "--authorization-kubeconfig="+inKube+"/kubeconfig")
	name := fmt.Sprintf("tokenscale-e2e-adapter-%d", port)
	run := append([]string{"run", "--rm", "--name", name, "--network", "host", "--read-only", "--cap-drop", "ALL",
		"--security-opt", "no-new-privileges",
		"-v", filepath.Join(dir, "config.yaml") + ":/etc/tokenscale/config.yaml:ro",
		"-v", kube + ":" + inKube + ":ro",
		"-v", certs + ":/var/run/serving-cert",
		img}, args...)
	var out bytes.Buffer
	cmd := exec.Command(podman, run...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("podman run: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = exec.Command(podman, "rm", "-f", "-t", "5", name).Run()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("adapter container output:\n%s", out.String())
		}
	})

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	took := eventually(t, 90*time.Second, "the adapter image is ready (/readyz)", func() error {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("the container exited: %w", err)
		default:
		}
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/readyz", port))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	user, err := exec.Command(podman, "inspect", "--format", "{{.Config.User}}", name).Output()
	if err != nil {
		t.Fatalf("podman inspect: %v", err)
	}
	if u := strings.TrimSpace(string(user)); u != "65532:65532" {
		t.Errorf("the container runs as %q, want 65532:65532 (the Deployment's runAsUser)", u)
	}
	t.Logf("adapter image %s ready after %s with the Deployment's arguments %q", img, took.Round(time.Millisecond), args)

	caPEM, err := os.ReadFile(filepath.Join(certs, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	verifiedAPIService(t, port, caPEM)
}

// imageService is the Service the aggregator reaches the image's adapter through.
const imageService = "tokenscale-image"

// verifiedAPIService points v1beta2.custom.metrics.k8s.io at the image's adapter with a real caBundle and
// insecureSkipTLSVerify off: with another CA the aggregator refuses the adapter, with the one that
// signed its certificate the API is Available and answers. The APIService is restored afterwards.
func verifiedAPIService(t *testing.T, port int, caPEM []byte) {
	const apisvc = "v1beta2.custom.metrics.k8s.io"
	orig, err := kubectlRun("", "get", "apiservice", apisvc, "-o", "json")
	if err != nil {
		t.Fatalf("%v: %s", err, orig)
	}
	var before struct {
		Spec struct {
			Service               json.RawMessage `json:"service"`
			InsecureSkipTLSVerify bool            `json:"insecureSkipTLSVerify"`
			CABundle              []byte          `json:"caBundle"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(orig), &before); err != nil {
		t.Fatal(err)
	}
	svc := fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"name":%q,"namespace":"tokenscale"},
"spec":{"type":"ExternalName","externalName":"localhost","ports":[{"name":"https","port":%d,"targetPort":%d}]}}`, imageService, port, port)
	if out, err := kubectlRun(svc, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() {
		restore, _ := json.Marshal(map[string]any{"spec": map[string]any{"service": before.Spec.Service,
			"insecureSkipTLSVerify": before.Spec.InsecureSkipTLSVerify, "caBundle": before.Spec.CABundle}})
		if out, err := kubectlRun("", "patch", "apiservice", apisvc, "--type", "merge", "-p", string(restore)); err != nil {
			t.Errorf("restoring %s: %v: %s", apisvc, err, out)
		}
		_, _ = kubectlRun("", "delete", "service", "-n", "tokenscale", imageService, "--ignore-not-found")
		eventually(t, 60*time.Second, apisvc+" Available again on the suite's adapter", func() error { return available(apisvc, "True") })
	})
	point := func(ca []byte) {
		t.Helper()
		p, _ := json.Marshal(map[string]any{"spec": map[string]any{
			"service":               map[string]any{"namespace": "tokenscale", "name": imageService, "port": port},
			"insecureSkipTLSVerify": false, "caBundle": ca}})
		if out, err := kubectlRun("", "patch", "apiservice", apisvc, "--type", "merge", "-p", string(p)); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	// Another CA first: the aggregator must refuse the adapter's certificate.
	otherDir := t.TempDir()
	if err := localcluster.WriteMutualTLS(otherDir, imageService+".tokenscale.svc"); err != nil {
		t.Fatal(err)
	}
	otherCA, err := os.ReadFile(filepath.Join(otherDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	point(otherCA)
	eventually(t, 60*time.Second, apisvc+" unavailable with a caBundle that did not sign the adapter's certificate", func() error {
		return available(apisvc, "False")
	})
	point(caPEM)
	took := eventually(t, 60*time.Second, apisvc+" Available through the real caBundle", func() error {
		if err := available(apisvc, "True"); err != nil {
			return err
		}
		out, err := getRaw("/apis/custom.metrics.k8s.io/v1beta2")
		if err != nil {
			return err
		}
		if !bytes.Contains(out, []byte(adapter.ArrivalVelocity)) {
			return fmt.Errorf("discovery lists no tokenscale metric: %.200s", out)
		}
		return nil
	})
	t.Logf("%s served by the adapter image through a verified caBundle after %s", apisvc, took.Round(time.Millisecond))
}

// available checks an APIService's Available condition.
func available(name, want string) error {
	out, err := kubectlRun("", "get", "apiservice", name, "-o", `jsonpath={.status.conditions[?(@.type=="Available")].status} {.status.conditions[?(@.type=="Available")].message}`)
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	if got, _, _ := strings.Cut(out, " "); got != want {
		return fmt.Errorf("Available=%s, want %s: %s", got, want, out)
	}
	return nil
}

// deploymentArgs returns a container's args from a Deployment manifest.
func deploymentArgs(t *testing.T, path, container string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == container {
			return append([]string(nil), c.Args...)
		}
	}
	t.Fatalf("%s: no container %q", path, container)
	return nil
}
