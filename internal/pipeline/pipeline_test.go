package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/config"
)

// --config-reload is 0 (never) or at least a second: each check re-reads the file, and a bad file is
// parsed and logged at every check, so a millisecond period would spin.
func TestValidateConfigReload(t *testing.T) {
	for _, tc := range []struct {
		every time.Duration
		want  string
	}{
		{0, ""},
		{time.Second, ""},
		{10 * time.Second, ""},
		{time.Millisecond, "--config-reload 1ms: want 0 (never) or at least 1s"},
		{999 * time.Millisecond, "--config-reload 999ms: want 0 (never) or at least 1s"},
		{-time.Second, "--config-reload -1s: want 0 (never) or at least 1s"},
	} {
		var got string
		for _, err := range (&Options{ConfigReload: tc.every}).Validate() {
			got += err.Error()
		}
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("--config-reload %s: errors %q, want %q", tc.every, got, tc.want)
		}
	}
}

// A pool fixed to a namespace the pod informer does not watch is refused, at start and on reload: its
// pods would never be seen, and every read of it would say it has no pods, sending the user to pods that
// are there.
func TestScopeRefusesPoolsOutsideTheNamespace(t *testing.T) {
	const yml = "version: tokenscale.io/v1alpha1\npools:\n- {name: prefill, role: prefill, namespace: %s, selector: {llm-d.ai/role: prefill}}\n- {name: decode, role: decode, selector: {llm-d.ai/role: decode}}\n"
	parse := func(ns string) *config.Config {
		c, err := config.Parse([]byte(fmt.Sprintf(yml, ns)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	check := (&Options{Namespace: "a", PodSelector: "llm-d.ai/role"}).scope()
	if err := check(parse("b")); err == nil || !strings.Contains(err.Error(), `pool prefill is fixed to namespace "b", but --namespace "a"`) {
		t.Errorf("a pool fixed to b under --namespace a: %v, want it refused", err)
	}
	if err := check(parse("a")); err != nil {
		t.Errorf("a pool fixed to the watched namespace: %v", err)
	}
	if err := (&Options{}).scope()(parse("b")); err != nil {
		t.Errorf("every namespace watched: %v", err)
	}
	// On reload the watcher keeps the config in force.
	dir := t.TempDir()
	path := filepath.Join(dir, "pools.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, yml, "a"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := config.NewWatcher(path)
	if err != nil {
		t.Fatal(err)
	}
	w.Check = check
	if err := os.WriteFile(path, fmt.Appendf(nil, yml, "b"), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := w.Reload(); changed || err == nil || !strings.Contains(err.Error(), "--namespace") {
		t.Errorf("reload to a pool outside --namespace: changed %v, %v; want it rejected", changed, err)
	}
	if got := w.Current().Pools[0].Namespace; got != "a" {
		t.Errorf("config in force has prefill in %q after a rejected reload, want a", got)
	}
}

// Sees says whether the informer surely sees a pool's pods: its namespace is watched, and its selector
// satisfies --pod-selector.
func TestSees(t *testing.T) {
	p := &config.Pool{Name: "decode", Selector: map[string]string{"llm-d.ai/role": "decode"}}
	for _, c := range []struct {
		o    Options
		ns   string
		want bool
	}{
		{Options{}, "b", true},
		{Options{Namespace: "a"}, "a", true},
		{Options{Namespace: "a"}, "b", false},
		{Options{PodSelector: "llm-d.ai/role"}, "b", true},
		{Options{PodSelector: "app=vllm"}, "b", false},
		// A negative requirement, or one on a value, may filter out some of the pool's pods.
		{Options{PodSelector: "llm-d.ai/role,!canary"}, "b", false},
		{Options{PodSelector: "llm-d.ai/role=decode"}, "b", false},
	} {
		if got := c.o.Sees(c.ns, p); got != c.want {
			t.Errorf("%+v in %s: %v, want %v", c.o, c.ns, got, c.want)
		}
	}
}
