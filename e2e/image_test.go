//go:build e2e

package e2e

import (
	"bytes"
	"crypto/tls"
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
		msg := "needs podman (hack/install-podman.sh) and TOKENSCALE_ADAPTER_IMAGE naming an image `make images` built; .ci/run sets both"
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
	args = append(args, "--bind-address=127.0.0.1", "--lister-kubeconfig="+inKube+"/kubeconfig",
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
