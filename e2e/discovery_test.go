//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/e2e/controlplane"
)

// startAdapter builds and runs tokenscale-adapter against the control plane, registered with the
// aggregator through an ExternalName Service (there is no kube-proxy here) and APIServices.
func startAdapter(t *testing.T, ctx context.Context, cp *controlplane.ControlPlane, bin string, configYAML string) {
	t.Helper()
	dir := t.TempDir()
	adapterBin := filepath.Join(dir, "tokenscale-adapter")
	if out, err := exec.Command("go", "build", "-o", adapterBin, "../cmd/tokenscale-adapter").CombinedOutput(); err != nil {
		t.Fatalf("building the adapter: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	port := controlplane.FreePort()
	log, _ := os.Create(filepath.Join(dir, "adapter.log"))
	cmd := exec.Command(adapterBin, "--config", cfg, "--secure-port", fmt.Sprint(port), "--bind-address", "127.0.0.1",
		"--cert-dir", dir, "--lister-kubeconfig", cp.AdminKubeconfig,
		"--authentication-kubeconfig", cp.AdminKubeconfig, "--authorization-kubeconfig", cp.AdminKubeconfig)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "adapter.log"))
			t.Logf("adapter log:\n%s", b)
		}
	})
	var objs strings.Builder
	fmt.Fprintf(&objs, "apiVersion: v1\nkind: Namespace\nmetadata: {name: tokenscale}\n---\n")
	fmt.Fprintf(&objs, "apiVersion: v1\nkind: Service\nmetadata: {name: tokenscale-adapter, namespace: tokenscale}\nspec: {type: ExternalName, externalName: localhost, ports: [{port: %d}]}\n", port)
	for _, v := range []string{"v1beta1", "v1beta2"} {
		fmt.Fprintf(&objs, "---\napiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: %s.custom.metrics.k8s.io}\n"+
			"spec: {group: custom.metrics.k8s.io, version: %s, insecureSkipTLSVerify: true, groupPriorityMinimum: 100, versionPriority: 100,"+
			" service: {name: tokenscale-adapter, namespace: tokenscale, port: %d}}\n", v, v, port)
	}
	kubectl(t, bin, cp, objs.String(), "apply", "-f", "-")
}

func kubectl(t *testing.T, bin string, cp *controlplane.ControlPlane, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "kubectl"), append([]string{"--kubeconfig", cp.AdminKubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Discovery through the real aggregator lists every metric tokenscale serves, in both API versions.
func TestDiscoveryThroughAggregator(t *testing.T) {
	ctx, cp, bin := startControlPlane(t)
	startAdapter(t, ctx, cp, bin, "version: tokenscale.io/v1alpha1\npools:\n"+
		"- {name: prefill, role: prefill, selector: {llm-d.ai/role: prefill}, workload: {name: llama-prefill}}\n"+
		"- {name: decode, role: decode, selector: {llm-d.ai/role: decode}, workload: {name: llama-decode}}\n")
	for _, version := range []string{"v1beta1", "v1beta2"} {
		var last string
		deadline := time.Now().Add(90 * time.Second)
		for {
			body, err := cp.Client.Discovery().RESTClient().Get().AbsPath("/apis/custom.metrics.k8s.io/" + version).DoRaw(ctx)
			if err == nil {
				var list struct {
					Resources []struct{ Name string } `json:"resources"`
				}
				if err := json.Unmarshal(body, &list); err != nil {
					t.Fatal(err)
				}
				names := map[string]bool{}
				for _, r := range list.Resources {
					names[r.Name] = true
				}
				want := []string{"pods/tokenscale_prefill_tokens_per_second", "deployments.apps/tokenscale_desired_replicas", "statefulsets.apps/tokenscale_predicted_backpressure"}
				ok := true
				for _, w := range want {
					ok = ok && names[w]
				}
				if ok && len(list.Resources) == 15 {
					break
				}
				last = fmt.Sprintf("%d resources: %v", len(list.Resources), names)
			} else {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s discovery through the aggregator never listed our 15 metrics: %s", version, last)
			}
			time.Sleep(time.Second)
		}
	}
}
