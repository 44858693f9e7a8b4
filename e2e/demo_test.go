//go:build e2e

package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/internal/localcluster"
)

// `tokenscale-demo` (what `make demo` runs) on its own control plane: the trace's first burst reaches the
// prefill pool, tokenscale's numbers show through the aggregator and the real HPA scales the Deployment;
// then Ctrl-C (SIGINT) stops it cleanly, leaving no process and no files behind.
func TestDemoRunsAndStopsClean(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "tokenscale-demo")
	if out, err := exec.Command(localcluster.Go(), "build", "-o", bin, "../cmd/tokenscale-demo").CombinedOutput(); err != nil {
		t.Fatalf("building tokenscale-demo: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--repo", "..")
	cmd.Env = append(os.Environ(), "TOKENSCALE_K8S_BIN="+suite.k8sBin)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(filepath.Join(dir, "demo.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()

	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var workDir string
	var seen []string
	scaled, converted := false, false
	timeout := time.After(150 * time.Second)
	for !scaled || !converted {
		select {
		case l, ok := <-lines:
			if !ok {
				b, _ := os.ReadFile(filepath.Join(dir, "demo.stderr"))
				t.Fatalf("demo ended early:\n%s\nstderr:\n%s", strings.Join(seen, "\n"), b)
			}
			seen = append(seen, l)
			if i := strings.Index(l, "--kubeconfig "); i >= 0 && workDir == "" {
				kc := strings.Fields(l[i+len("--kubeconfig "):])[0]
				workDir = filepath.Dir(filepath.Dir(kc)) // DIR/cp/admin.kubeconfig
			}
			// A row: t | prompt λ_P cap_P bp want ready | out λ_D want ready | conversions wanted/done
			cols := strings.Split(l, "|")
			if len(cols) < 4 {
				continue
			}
			if wd := strings.Split(strings.TrimSpace(cols[3]), "/"); len(wd) == 2 && !converted {
				if n, err := strconv.Atoi(wd[1]); err == nil && n >= 1 {
					converted = true
					t.Logf("demo row when the converter had relabelled a decoder: %s", l)
				}
			}
			p := strings.Fields(cols[1])
			if len(p) != 6 {
				continue
			}
			want, err1 := strconv.Atoi(p[4])
			spec, err2 := strconv.Atoi(p[5][strings.Index(p[5], "/")+1:])
			if err1 == nil && err2 == nil && want >= 3 && spec >= 3 && !scaled {
				scaled = true
				t.Logf("demo row when the HPA had scaled prefill: %s", l)
			}
		case <-timeout:
			t.Fatalf("within 150 s: HPA scaled prefill to >= 3: %v; a decoder converted: %v\n%s", scaled, converted, strings.Join(seen, "\n"))
		}
	}
	if workDir == "" || !strings.Contains(workDir, "tokenscale-demo-") {
		t.Fatalf("demo did not print its kubeconfig (got work dir %q)", workDir)
	}

	// etcd, kube-apiserver, kube-controller-manager, the adapter and the converter controller run with the
	// work dir in their arguments.
	if running := processesMentioning(workDir); len(running) < 5 {
		t.Fatalf("only %d processes name the demo's work dir before Ctrl-C; want >= 5: %v", len(running), running)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	done := make(chan error, 1)
	go func() {
		for range lines { // drain so the demo never blocks on a full pipe
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo exited with %v after Ctrl-C; want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo still running 30 s after Ctrl-C")
	}
	t.Logf("demo stopped %s after Ctrl-C", time.Since(stopped).Round(10*time.Millisecond))
	if left := processesMentioning(workDir); len(left) > 0 {
		t.Errorf("processes left behind after Ctrl-C: %v", left)
	}
	if _, err := os.Stat(workDir); !os.IsNotExist(err) {
		t.Errorf("work dir %s still exists after a clean stop (%v)", workDir, err)
	}
}

// processesMentioning lists the command lines of live processes that name s (every process the demo
// starts has its work dir in its arguments).
func processesMentioning(s string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			out = append(out, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}
