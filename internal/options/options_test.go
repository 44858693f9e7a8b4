package options

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
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
