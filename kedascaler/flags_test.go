package kedascaler

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tokenscale/tokenscale/internal/options"
	"github.com/tokenscale/tokenscale/internal/pipeline"
)

func TestFlagsValidate(t *testing.T) {
	parse := func(args ...string) error {
		var o Options
		var po pipeline.Options
		cmd := options.New("tokenscale-keda-scaler")
		o.AddFlags(cmd.Section("serving"))
		po.AddFlags(cmd.Section("pools"))
		cmd.Validate(o.Validate, po.Validate)
		return cmd.Parse(args, &bytes.Buffer{})
	}
	if err := parse(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	if err := parse("--tls-cert-file=c", "--tls-private-key-file=k", "--client-ca-file=ca", "--max-streams=-1"); err != nil {
		t.Fatalf("TLS with client CA and no stream cap refused: %v", err)
	}
	err := parse("--grpc-address=", "--metrics-address=8080", "--tls-cert-file=c", "--keepalive-time=0s", "--max-streams=0", "--pod-selector=x in (", "--config-reload=-1s")
	if err == nil {
		t.Fatal("bad flags accepted")
	}
	for _, want := range []string{"--grpc-address is required", "--metrics-address", "go together", "--keepalive-time", "--max-streams 0", "--pod-selector", "--config-reload"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors %q lack %q", err, want)
		}
	}
	if err := parse("--client-ca-file=ca"); err == nil || !strings.Contains(err.Error(), "--client-ca-file needs") {
		t.Errorf("client CA without TLS: %v", err)
	}
	// Ports that cannot be listened on are refused before the pipeline starts, not when Serve listens.
	if err := parse("--metrics-address=127.0.0.1:8080", "--probe-address=:8081"); err != nil {
		t.Errorf("the manifests' addresses refused: %v", err)
	}
	err = parse("--grpc-address=:99999", "--metrics-address=:abc", "--probe-address=:9090")
	for _, want := range []string{`--grpc-address ":99999"`, `--metrics-address ":abc"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad ports: %v; want a problem naming %s", err, want)
		}
	}
	if err := parse("--metrics-address=:8081", "--probe-address=:8081"); err == nil || !strings.Contains(err.Error(), "--metrics-address") ||
		!strings.Contains(err.Error(), "--probe-address") || !strings.Contains(err.Error(), "same port") {
		t.Errorf("metrics and probe on one port: %v; want a problem naming both flags", err)
	}
	if err := parse("--probe-address=:9090"); err == nil || !strings.Contains(err.Error(), "--grpc-address") || !strings.Contains(err.Error(), "--probe-address") {
		t.Errorf("the probe on the gRPC port: %v; want a problem naming both flags", err)
	}
}

// --allow-cross-namespace is off unless given: a ScaledObject reads only its own namespace's pools.
func TestFlagAllowCrossNamespace(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{{nil, false}, {[]string{"--allow-cross-namespace"}, true}, {[]string{"--allow-cross-namespace=false"}, false}} {
		var o Options
		cmd := options.New("tokenscale-keda-scaler")
		o.AddFlags(cmd.Section("serving"))
		if err := cmd.Parse(c.args, &bytes.Buffer{}); err != nil || o.AllowCrossNamespace != c.want {
			t.Errorf("%v: AllowCrossNamespace %v, %v; want %v", c.args, o.AllowCrossNamespace, err, c.want)
		}
	}
}
