// The stack installs tokenscale on a local control plane the way a user does, for the e2e suite
// and the Kubernetes demo: the preflight check, `kubectl apply` of manifests/overlays/e2e (RBAC,
// ServiceAccount, APIServices, a Service pointing the aggregator at this machine), then the adapter binary
// run as a process with its ServiceAccount's token, so the manifests' RBAC is what it gets.

package localcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StackOptions configure StartStack.
type StackOptions struct {
	RepoRoot      string // the tokenscale checkout: manifests/, hack/, cmd/
	BinDir        string // control-plane binaries (hack/build-control-plane.sh)
	Dir           string // working directory for certificates, logs and the adapter
	HPASyncPeriod time.Duration
	AdapterConfig string // the adapter's pool config (YAML)
}

// Stack is a running control plane with the adapter installed.
type Stack struct {
	CP      *ControlPlane
	Adapter *Adapter
	o       StackOptions
}

// StartStack brings up the control plane and installs and starts the adapter. On error everything started is
// stopped again.
func StartStack(ctx context.Context, o StackOptions) (s *Stack, err error) {
	cp, err := StartControlPlane(ctx, ControlPlaneOptions{BinDir: o.BinDir, Dir: filepath.Join(o.Dir, "cp"), HPASyncPeriod: o.HPASyncPeriod})
	if err != nil {
		if cp != nil {
			cp.Stop()
		}
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	s = &Stack{CP: cp, o: o}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	a, err := newAdapter(o.RepoRoot, filepath.Join(o.Dir, "adapter"), o.AdapterConfig)
	if err != nil {
		return s, err
	}
	s.Adapter = a
	if out, err := s.Preflight(); err != nil {
		return s, fmt.Errorf("preflight on a fresh cluster: %w\n%s", err, out)
	}
	objs, err := s.Overlay(a.Port)
	if err != nil {
		return s, err
	}
	if out, err := s.Kubectl(objs, "apply", "-f", "-"); err != nil {
		return s, fmt.Errorf("installing manifests/overlays/e2e: %w\n%s", err, out)
	}
	if a.kubeconfig, err = s.ServiceAccountKubeconfig(ctx, a.dir, "tokenscale", "tokenscale-adapter"); err != nil {
		return s, err
	}
	return s, a.Start()
}

// Stop stops the adapter and the control plane.
func (s *Stack) Stop() {
	if s.Adapter != nil {
		s.Adapter.Stop()
	}
	s.CP.Stop()
}

// Overlay renders manifests/overlays/e2e with the adapter's port in place of 6443.
func (s *Stack) Overlay(port int) (string, error) {
	out, err := s.Kubectl("", "kustomize", filepath.Join(s.o.RepoRoot, "manifests/overlays/e2e"))
	if err != nil {
		return "", fmt.Errorf("kubectl kustomize manifests/overlays/e2e: %w\n%s", err, out)
	}
	if n := strings.Count(out, ": 6443"); n < 4 {
		return "", fmt.Errorf("manifests/overlays/e2e names port 6443 %d times; want the Service and 3 APIServices", n)
	}
	return strings.ReplaceAll(out, ": 6443", fmt.Sprintf(": %d", port)), nil
}

// Preflight runs hack/preflight.sh against the cluster.
func (s *Stack) Preflight(args ...string) (string, error) {
	cmd := exec.Command("bash", append([]string{filepath.Join(s.o.RepoRoot, "hack/preflight.sh")}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECTL="+s.KubectlPath(), "KUBECONFIG="+s.CP.AdminKubeconfig)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// KubectlPath is the kubectl binary built with the control plane.
func (s *Stack) KubectlPath() string { return filepath.Join(s.o.BinDir, "kubectl") }

// Kubectl runs kubectl as the cluster admin with stdin; it returns combined output.
func (s *Stack) Kubectl(stdin string, args ...string) (string, error) {
	cmd := exec.Command(s.KubectlPath(), append([]string{"--kubeconfig", s.CP.AdminKubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ServiceAccountKubeconfig writes a kubeconfig into dir that authenticates with a token of the
// ServiceAccount ns/name.
func (s *Stack) ServiceAccountKubeconfig(ctx context.Context, dir, ns, name string) (string, error) {
	tok, err := s.ServiceAccountToken(ctx, ns, name)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name+".kubeconfig")
	return path, s.WriteTokenKubeconfig(path, name, tok, s.CP.CAFile)
}

// ServiceAccountToken returns a 4-hour token of the ServiceAccount ns/name.
func (s *Stack) ServiceAccountToken(ctx context.Context, ns, name string) (string, error) {
	hours := int64(4 * 3600)
	tok, err := s.CP.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &hours}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", ns, name, err)
	}
	return tok.Status.Token, nil
}

// WriteTokenKubeconfig writes a kubeconfig for the cluster that authenticates with a bearer token and
// trusts the CA at caPath (the cluster's CA file, or where a container sees a copy of it).
func (s *Stack) WriteTokenKubeconfig(path, user, token, caPath string) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: %s, user: {token: %q}}]
contexts: [{name: local, context: {cluster: local, user: %s}}]
current-context: local
`, s.CP.Server, caPath, user, token, user)
	return os.WriteFile(path, []byte(kc), 0o600)
}

// Adapter is the tokenscale-adapter binary run as a process, as in a cluster.
type Adapter struct {
	Port   int    // secure port on 127.0.0.1
	Config string // path of the pool config file
	Dir    string // its log (adapter.log), certificates and kubeconfig

	dir, bin, kubeconfig string
	proc                 *Process
}

func newAdapter(root, dir, configYAML string) (*Adapter, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	a := &Adapter{Port: FreePort(), Config: filepath.Join(dir, "config.yaml"), Dir: dir, dir: dir, bin: filepath.Join(dir, "tokenscale-adapter")}
	build := exec.Command(Go(), "build", "-o", a.bin, "./cmd/tokenscale-adapter")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the adapter: %w\n%s", err, out)
	}
	return a, os.WriteFile(a.Config, []byte(configYAML), 0o600)
}

// Sibling returns a second adapter from the same binary and credentials with another config, in dir; it
// is not registered with the aggregator, so it is read on its own port.
func (a *Adapter) Sibling(dir, configYAML string) (*Adapter, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b := &Adapter{Port: FreePort(), Config: filepath.Join(dir, "config.yaml"), Dir: dir, dir: dir, bin: a.bin, kubeconfig: a.kubeconfig}
	return b, os.WriteFile(b.Config, []byte(configYAML), 0o600)
}

// Start runs the adapter (with external metrics on) until Stop; its output goes to adapter.log.
func (a *Adapter) Start() error {
	kc := a.kubeconfig
	p, err := StartProcess(a.dir, "adapter", nil, a.bin, "--config", a.Config, "--secure-port", fmt.Sprint(a.Port), "--bind-address", "127.0.0.1",
		"--cert-dir", a.dir, "--kubeconfig", kc, "--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc,
		"--external-metrics", "-v=2")
	if err != nil {
		return fmt.Errorf("starting the adapter: %w", err)
	}
	a.proc = p
	return nil
}

// Stop ends the adapter with SIGTERM (SIGKILL after 10 s) and reports whether it had already died.
func (a *Adapter) Stop() (diedEarly bool) {
	if a.proc == nil {
		return false
	}
	diedEarly = !a.proc.Alive()
	a.proc.Stop()
	a.proc = nil
	return diedEarly
}

// Alive reports whether the adapter process is still running.
func (a *Adapter) Alive() bool { return a.proc.Alive() }

// Pid is the running adapter's process id.
func (a *Adapter) Pid() int { return a.proc.Pid() }
