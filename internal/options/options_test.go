package options

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"k8s.io/klog/v2"
)

func newTestCommand(port *int) *Command {
	c := New("tokenscale-test")
	fs := c.Section("serving")
	fs.IntVar(port, "port", 80, "port")
	c.Validate(func() []error {
		if *port <= 0 {
			return []error{errors.New("--port must be positive")}
		}
		return nil
	}, func() []error {
		if *port > 65535 {
			return []error{errors.New("--port too large")}
		}
		return nil
	})
	return c
}

func TestParseReportsEveryProblemAtOnce(t *testing.T) {
	var port int
	c := newTestCommand(&port)
	err := c.Parse([]string{"--port=-1", "--logging-format=xml"}, &bytes.Buffer{})
	if err == nil {
		t.Fatal("bad port and log format accepted")
	}
	var out bytes.Buffer
	PrintErrors(&out, c.Name, err)
	for _, want := range []string{"2 problems", "--port must be positive", `"xml"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("errors %q lack %q", out.String(), want)
		}
	}
	port = 0
	if err := newTestCommand(&port).Parse([]string{"--port=8080", "--logging-format=json", "-v=3"}, &bytes.Buffer{}); err != nil {
		t.Fatalf("good command line refused: %v", err)
	}
	if port != 8080 {
		t.Errorf("port %d, want 8080", port)
	}
	if err := newTestCommand(&port).Parse([]string{"--port=1", "stray"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "stray") {
		t.Errorf("stray argument: %v", err)
	}
	if err := newTestCommand(&port).Parse([]string{"--nope"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--help") {
		t.Errorf("unknown flag: %v, want a pointer to --help", err)
	}
}

func TestHelpIsGroupedAndVersionAnswers(t *testing.T) {
	var port int
	var out bytes.Buffer
	if err := newTestCommand(&port).Parse([]string{"--help"}, &out); !errors.Is(err, ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	help := out.String()
	serving, logging, generic := strings.Index(help, "Serving flags:"), strings.Index(help, "Logging flags:"), strings.Index(help, "Generic flags:")
	if serving < 0 || logging < serving || generic < logging {
		t.Fatalf("sections missing or out of order (own first, then logging, then generic):\n%s", help)
	}
	if !strings.Contains(help[logging:generic], "--logging-format") || !strings.Contains(help[serving:logging], "--port") {
		t.Errorf("flags in the wrong section:\n%s", help)
	}
	out.Reset()
	if err := newTestCommand(&port).Parse([]string{"--version"}, &out); !errors.Is(err, ErrHelp) || !strings.HasPrefix(out.String(), "tokenscale-test ") {
		t.Errorf("--version: %v %q", err, out.String())
	}
}

func TestKubeconfigErrorNamesTheFile(t *testing.T) {
	k := Kube{Kubeconfig: "/nonexistent/kubeconfig"}
	if _, err := k.RESTConfig(); err == nil || !strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Errorf("missing kubeconfig: %v", err)
	}
}

// TestJSONLogging runs Main in a child process (logging is process-wide) and reads its log lines.
func TestJSONLogging(t *testing.T) {
	if os.Getenv("TOKENSCALE_OPTIONS_CHILD") == "1" {
		os.Args = append([]string{"child"}, strings.Fields(os.Getenv("TOKENSCALE_OPTIONS_ARGS"))...)
		var port int
		newTestCommand(&port).Main(1, func(context.Context) error {
			klog.InfoS("Child running", "port", port)
			return nil
		})
		os.Exit(0)
	}
	run := func(args string) (stdout, stderr string, err error) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestJSONLogging$")
		cmd.Env = append(os.Environ(), "TOKENSCALE_OPTIONS_CHILD=1", "TOKENSCALE_OPTIONS_ARGS="+args)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}
	stdout, stderr, err := run("--port=7 --logging-format=json")
	if err != nil {
		t.Fatalf("child: %v\n%s", err, stderr)
	}
	var found bool
	for _, line := range strings.Split(stdout+stderr, "\n") {
		var rec struct {
			Msg  string `json:"msg"`
			Port int    `json:"port"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "Child running" {
			found = rec.Port == 7
		}
	}
	if !found {
		t.Fatalf("no JSON log line with msg and port 7:\nstdout: %s\nstderr: %s", stdout, stderr)
	}
	_, stderr, err = run("--port=0")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(stderr, "--port must be positive") {
		t.Errorf("bad flag: exit %v, stderr %q; want 2 and the problem", err, stderr)
	}
}

// A listen address whose port cannot be listened on, or two flags on one port, are refused when the
// flags are checked, naming the flags, not when the command first listens after starting everything.
func TestCheckListen(t *testing.T) {
	for _, c := range []struct {
		flags []Listen
		want  []string // each a problem's text; none: accepted
	}{
		{[]Listen{{Flag: "a", Value: ":9090"}, {Flag: "b", Value: "127.0.0.1:8080"}, {Flag: "c", Value: "[::1]:8081"}}, nil},
		{[]Listen{{Flag: "a", Value: ":0"}, {Flag: "b", Value: "127.0.0.1:0"}, {Flag: "c", Value: ""}}, nil}, // 0: any free port
		{[]Listen{{Flag: "a", Value: "127.0.0.1:8080"}, {Flag: "b", Value: "10.0.0.1:8080"}}, nil},           // different hosts
		{[]Listen{{Flag: "a", Value: "", Required: true}}, []string{"--a is required"}},
		{[]Listen{{Flag: "a", Value: "8080"}}, []string{`--a "8080"`}},
		{[]Listen{{Flag: "a", Value: ":99999"}}, []string{`--a ":99999": the port must be a number 0-65535`}},
		{[]Listen{{Flag: "a", Value: ":65536"}}, []string{`--a ":65536"`}},
		{[]Listen{{Flag: "a", Value: ":abc"}}, []string{`--a ":abc"`}},
		{[]Listen{{Flag: "a", Value: ":-1"}}, []string{`--a ":-1"`}},
		{[]Listen{{Flag: "metrics-address", Value: ":8081"}, {Flag: "probe-address", Value: ":8081"}},
			[]string{`--metrics-address ":8081" and --probe-address ":8081" listen on the same port`}},
		{[]Listen{{Flag: "a", Value: "127.0.0.1:8080"}, {Flag: "b", Value: ":8080"}}, []string{"--a", "--b", "the same port"}},
		{[]Listen{{Flag: "a", Value: "0.0.0.0:8080"}, {Flag: "b", Value: "[::1]:8080"}}, []string{"the same port"}},
		{[]Listen{{Flag: "a", Value: "[::1]:8080"}, {Flag: "b", Value: "[0:0:0:0:0:0:0:1]:8080"}}, []string{"the same port"}},
		{[]Listen{{Flag: "a", Value: "localhost:8080"}, {Flag: "b", Value: "LOCALHOST:8080"}}, []string{"the same port"}},
		{[]Listen{{Flag: "a", Value: ":http"}, {Flag: "b", Value: "127.0.0.1:80"}}, []string{"the same port"}}, // a service name, as net.Listen reads it
		// Every problem at once.
		{[]Listen{{Flag: "a", Value: ":1"}, {Flag: "b", Value: ":1"}, {Flag: "c", Value: ":1"}, {Flag: "d", Value: ":x"}},
			[]string{"--a \":1\" and --b", "--a \":1\" and --c", "--b \":1\" and --c", `--d ":x"`}},
	} {
		errs := CheckListen(c.flags...)
		if len(c.want) == 0 {
			if len(errs) > 0 {
				t.Errorf("%+v: %v; want accepted", c.flags, errs)
			}
			continue
		}
		all := fmt.Sprint(errs)
		for _, w := range c.want {
			if !strings.Contains(all, w) {
				t.Errorf("%+v: %v; want a problem saying %q", c.flags, errs, w)
			}
		}
	}
	// CheckAddress, a single flag, checks its port too.
	if errs := CheckAddress("metrics-address", ":99999", false); len(errs) != 1 || !strings.Contains(errs[0].Error(), "--metrics-address") {
		t.Errorf("CheckAddress with port 99999: %v", errs)
	}
}

// The client's rates reach its REST config; a component's own defaults hold unless the flags change
// them; and rates client-go would read as something else are refused.
func TestKubeClientRates(t *testing.T) {
	kubeconfig := t.TempDir() + "/kubeconfig"
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(k *Kube, args ...string) error {
		c := New("tokenscale-test")
		k.AddFlags(c.Section("kubernetes"))
		c.Validate(k.Validate)
		return c.Parse(append([]string{"--kubeconfig=" + kubeconfig}, args...), &bytes.Buffer{})
	}
	for _, tc := range []struct {
		name       string
		preset     Kube
		args       []string
		qps        float32
		burst      int
		wantErrSub string
		notSub     string // a flag the error must not name
	}{
		{name: "client-go's defaults", qps: 5, burst: 10},
		{name: "a component's own defaults", preset: Kube{QPS: 20, Burst: 40}, qps: 20, burst: 40},
		{name: "the flags win", preset: Kube{QPS: 20, Burst: 40}, args: []string{"--client-qps=50", "--client-burst=80"}, qps: 50, burst: 80},
		{name: "a zero rate is refused", args: []string{"--client-qps=0"}, wantErrSub: "--client-qps 0 must be positive", notSub: "--client-burst"},
		{name: "a negative rate is refused", args: []string{"--client-qps=-1"}, wantErrSub: "--client-qps -1"},
		{name: "a zero burst is refused", args: []string{"--client-burst=0"}, wantErrSub: "--client-burst 0 must be at least 1", notSub: "--client-qps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := tc.preset
			err := parse(&k, tc.args...)
			if tc.wantErrSub != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSub) {
					t.Fatalf("%v: %v, want an error containing %q", tc.args, err, tc.wantErrSub)
				}
				if tc.notSub != "" && strings.Contains(err.Error(), tc.notSub) {
					t.Errorf("%v: %v also names %s, whose value is fine", tc.args, err, tc.notSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := k.RESTConfig()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.QPS != tc.qps || cfg.Burst != tc.burst {
				t.Errorf("REST config QPS %g burst %d, want %g and %d", cfg.QPS, cfg.Burst, tc.qps, tc.burst)
			}
		})
	}
}

// A run that ends on a stop signal exits 0, whatever it returns: a scaler stopped while its informer was
// still syncing said "pod informer did not sync (can the ServiceAccount list and watch pods?)" and exited
// 1, sending whoever read the log after a rollout looking for an RBAC fault. Without a signal an error
// still exits 1.
func TestStopDuringStartIsNoFailure(t *testing.T) {
	if os.Getenv("TOKENSCALE_OPTIONS_CHILD") == "stop" {
		os.Args = []string{"child", "--port=7"}
		var port int
		newTestCommand(&port).Main(1, func(ctx context.Context) error {
			if os.Getenv("TOKENSCALE_OPTIONS_SIGNAL") == "1" {
				_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
				<-ctx.Done()
			}
			return errors.New("pod informer did not sync")
		})
		os.Exit(0)
	}
	for _, tc := range []struct {
		signal string
		code   int
	}{{"1", 0}, {"0", 1}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStopDuringStartIsNoFailure$")
		cmd.Env = append(os.Environ(), "TOKENSCALE_OPTIONS_CHILD=stop", "TOKENSCALE_OPTIONS_SIGNAL="+tc.signal)
		var e bytes.Buffer
		cmd.Stderr = &e
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code {
			t.Errorf("signal %s: exit %d, want %d\n%s", tc.signal, code, tc.code, e.String())
		}
	}
}
