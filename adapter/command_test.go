package adapter

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/internal/options"
)

func TestCommandFlags(t *testing.T) {
	parse := func(args ...string) (*Command, string, error) {
		cmd := options.New("tokenscale-adapter")
		c := NewCommand(cmd)
		var out bytes.Buffer
		err := cmd.Parse(args, &out)
		return c, out.String(), err
	}
	c, _, err := parse("--kubeconfig=/k", "--external-metrics", "--pod-selector=llm-d.ai/role")
	if err != nil {
		t.Fatal(err)
	}
	if c.Base.RemoteKubeConfigFile != "/k" || !c.Options.ExternalMetrics || c.Options.PodSelector != "llm-d.ai/role" || c.Base.SecureServing.BindPort != 6443 {
		t.Errorf("parsed %+v, kubeconfig %q, port %d", c.Options, c.Base.RemoteKubeConfigFile, c.Base.SecureServing.BindPort)
	}
	// The library's 0 would re-read API discovery without pause once the refresh runs.
	if c.Base.DiscoveryInterval != 10*time.Minute {
		t.Errorf("--discovery-interval defaults to %s, want 10m", c.Base.DiscoveryInterval)
	}
	// The library's old name still works, for manifests written against it.
	if c, _, err := parse("--lister-kubeconfig=/old"); err != nil || c.Base.RemoteKubeConfigFile != "/old" {
		t.Errorf("--lister-kubeconfig: %v, %q", err, c.Base.RemoteKubeConfigFile)
	}
	_, help, err := parse("--help")
	if !errors.Is(err, options.ErrHelp) {
		t.Fatal(err)
	}
	last := -1
	for _, section := range []string{"Metrics flags:", "Kubernetes flags:", "Secure serving flags:", "Authentication flags:", "Authorization flags:", "Audit flags:", "Logging flags:"} {
		i := strings.Index(help, section)
		if i <= last {
			t.Fatalf("section %q missing or out of order in --help:\n%s", section, help)
		}
		last = i
	}
	if strings.Contains(help, "--lister-kubeconfig") {
		t.Errorf("the deprecated alias is listed in --help")
	}
	// The library would fall back silently to client-go's rates and to never re-reading discovery.
	for _, c := range []struct{ arg, flag string }{
		{"--client-qps=0", "--client-qps"}, {"--client-qps=-1", "--client-qps"}, {"--client-burst=0", "--client-burst"},
		{"--discovery-interval=-1s", "--discovery-interval"}, {"--discovery-interval=1ms", "--discovery-interval"},
	} {
		if _, _, err := parse(c.arg); err == nil || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%s: %v, want an error naming %s", c.arg, err, c.flag)
		}
	}
	if c, _, err := parse("--client-qps=50", "--client-burst=100", "--discovery-interval=0"); err != nil || c.Base.ClientQPS != 50 || c.Base.ClientBurst != 100 {
		t.Errorf("good rates: %v, qps %g, burst %d", err, c.Base.ClientQPS, c.Base.ClientBurst)
	}
	if _, _, err := parse("--secure-port=70000", "--namespace=NO"); err == nil || !strings.Contains(err.Error(), "--secure-port") || !strings.Contains(err.Error(), "--namespace") {
		t.Errorf("bad port and namespace: %v", err)
	}
}
