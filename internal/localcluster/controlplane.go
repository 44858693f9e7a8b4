package localcluster

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// ControlPlane is a running etcd + kube-apiserver + kube-controller-manager.
type ControlPlane struct {
	Dir             string // certificates, kubeconfigs, logs, etcd data
	Server          string // https://127.0.0.1:PORT
	AdminKubeconfig string
	CAFile          string
	Client          *kubernetes.Clientset
	procs           []*exec.Cmd
}

// ControlPlaneOptions configure StartControlPlane.
type ControlPlaneOptions struct {
	BinDir string // holds etcd, kube-apiserver, kube-controller-manager (hack/build-control-plane.sh)
	Dir    string // working directory; a temporary one when empty
	// HPASyncPeriod is the HPA controller's sync period (production default 15s; tests shorten it).
	HPASyncPeriod time.Duration
}

// StartControlPlane brings the control plane up and waits until the API server is ready.
func StartControlPlane(ctx context.Context, o ControlPlaneOptions) (cp *ControlPlane, err error) {
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "tokenscale-e2e-"); err != nil {
			return nil, err
		}
	}
	if err = os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	if o.HPASyncPeriod == 0 {
		o.HPASyncPeriod = time.Second
	}
	cp = &ControlPlane{Dir: o.Dir}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()
	etcdPort, peerPort, apiPort, kcmPort := FreePort(), FreePort(), FreePort(), FreePort()
	cp.Server = "https://127.0.0.1:" + strconv.Itoa(apiPort)

	ca, err := newCA("tokenscale-e2e-ca")
	if err != nil {
		return cp, err
	}
	cp.CAFile, _, err = ca.write(o.Dir, "ca")
	if err != nil {
		return cp, err
	}
	serving, err := ca.sign("kube-apiserver", nil, []string{"localhost", "127.0.0.1", "10.96.0.1", "kubernetes.default.svc"})
	if err != nil {
		return cp, err
	}
	servingCrt, servingKey, err := serving.write(o.Dir, "apiserver")
	if err != nil {
		return cp, err
	}
	admin, err := ca.sign("admin", []string{"system:masters"}, nil)
	if err != nil {
		return cp, err
	}
	adminCrt, adminKey, err := admin.write(o.Dir, "admin")
	if err != nil {
		return cp, err
	}
	kcm, err := ca.sign("system:kube-controller-manager", nil, nil)
	if err != nil {
		return cp, err
	}
	kcmCrt, kcmKey, err := kcm.write(o.Dir, "kcm")
	if err != nil {
		return cp, err
	}
	fpCA, err := newCA("front-proxy-ca")
	if err != nil {
		return cp, err
	}
	fpCAFile, _, err := fpCA.write(o.Dir, "front-proxy-ca")
	if err != nil {
		return cp, err
	}
	fp, err := fpCA.sign("front-proxy-client", nil, nil)
	if err != nil {
		return cp, err
	}
	fpCrt, fpKey, err := fp.write(o.Dir, "front-proxy-client")
	if err != nil {
		return cp, err
	}
	saKey, err := writeSAKey(o.Dir)
	if err != nil {
		return cp, err
	}
	cp.AdminKubeconfig = filepath.Join(o.Dir, "admin.kubeconfig")
	if err = writeKubeconfig(cp.AdminKubeconfig, cp.Server, cp.CAFile, adminCrt, adminKey, "admin"); err != nil {
		return cp, err
	}
	kcmConfig := filepath.Join(o.Dir, "kcm.kubeconfig")
	if err = writeKubeconfig(kcmConfig, cp.Server, cp.CAFile, kcmCrt, kcmKey, "kcm"); err != nil {
		return cp, err
	}

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	if err = cp.run(o.BinDir, "etcd", "--data-dir", filepath.Join(o.Dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--initial-advertise-peer-urls", "http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--initial-cluster", "default=http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--unsafe-no-fsync"); err != nil {
		return cp, err
	}
	if err = cp.run(o.BinDir, "kube-apiserver",
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		"--etcd-servers="+etcdURL, "--endpoint-reconciler-type=none", "--service-cluster-ip-range=10.96.0.0/16",
		"--tls-cert-file="+servingCrt, "--tls-private-key-file="+servingKey, "--client-ca-file="+cp.CAFile,
		"--authorization-mode=RBAC", "--service-account-issuer="+cp.Server,
		"--service-account-key-file="+saKey, "--service-account-signing-key-file="+saKey,
		"--requestheader-client-ca-file="+fpCAFile, "--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+fpCrt, "--proxy-client-key-file="+fpKey, "--enable-aggregator-routing=false"); err != nil {
		return cp, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig)
	if err != nil {
		return cp, err
	}
	// This client also writes the status of every fake pod (it stands in for every node's kubelet): at
	// client-go's default 5 requests/s, 1,000 pods took 200 s to become Ready.
	cfg.QPS, cfg.Burst = 200, 400
	if cp.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return cp, err
	}
	if err = cp.waitReady(ctx, 90*time.Second); err != nil {
		return cp, err
	}
	err = cp.run(o.BinDir, "kube-controller-manager",
		"--kubeconfig="+kcmConfig, "--authentication-kubeconfig="+kcmConfig, "--authorization-kubeconfig="+kcmConfig,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(kcmPort), "--leader-elect=false",
		"--use-service-account-credentials=true", "--service-account-private-key-file="+saKey, "--root-ca-file="+cp.CAFile,
		"--controllers=deployment-controller,replicaset-controller,horizontal-pod-autoscaler-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller",
		"--horizontal-pod-autoscaler-sync-period="+o.HPASyncPeriod.String())
	return cp, err
}

func (cp *ControlPlane) run(binDir, name string, args ...string) error {
	log, err := os.Create(filepath.Join(cp.Dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	cp.procs = append(cp.procs, cmd)
	return nil
}

func (cp *ControlPlane) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		body, err := cp.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("kube-apiserver not ready after %s (logs in %s): %w", limit, cp.Dir, last)
}

// Stop kills every process started, newest first, and waits for them.
func (cp *ControlPlane) Stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		p := cp.procs[i]
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	cp.procs = nil
}

// writeSAKey writes the service-account signing key (the API server reads its public half from it too).
func writeSAKey(dir string) (string, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "sa.key")
	return path, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
}

// Go is the Go toolchain the harness builds components with: $GO (the Makefile passes its GO), or go.
func Go() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(errors.New("no free loopback port: " + err.Error()))
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
