//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

// Two adapter replicas give one answer: with a pool scaled to 4 and the load fallen to what 1 pod
// serves, one replica is restarted in the middle of the scale-down window; for the rest of the window
// both answer 4 (the restarted one does not drop early), and once the surviving replica's window has
// passed it answers 1, so the fall was real.
func TestReplicasHoldAcrossRestart(t *testing.T) {
	const ns = "replicas"
	const window = 30 * time.Second
	k := namespace(t, ns)
	deployment(t, ns, "llama-prefill", "prefill", fakeengine.VLLMV1, 4)
	deployment(t, ns, "llama-decode", "decode", fakeengine.SGLang, 1)
	k.SetLoad("decode", fakeengine.Load{OutputTokensPerSec: 500})
	// 4 pods at 10,000 tok/s and the 0.85 target: 30,000 tok/s needs 4, 3,000 needs 1.
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 30000, OutputTokensPerSec: 10})

	cfg := strings.Replace(adapterConfig(suite.enginePort), "scaleDownWindow: 5s", fmt.Sprintf("scaleDownWindow: %s", window), 1)
	if cfg == adapterConfig(suite.enginePort) {
		t.Fatal("adapterConfig no longer sets scaleDownWindow: 5s; update this test")
	}
	dir := t.TempDir()
	var replicas [2]*struct {
		name string
		read func() (float64, error)
	}
	token := readerToken(t, ns)
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/deployments.apps/llama-prefill/tokenscale_desired_replicas", ns)
	adapters := make([]interface {
		Start() error
		Stop() bool
	}, 2)
	for i := range replicas {
		a, err := suite.adapter.Sibling(filepath.Join(dir, fmt.Sprintf("replica-%d", i)), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Stop() })
		adapters[i] = a
		replicas[i] = &struct {
			name string
			read func() (float64, error)
		}{fmt.Sprintf("replica %d", i), directMetric(a.Port, token, path)}
	}
	both := func(want float64) func() error {
		return func() error {
			for _, r := range replicas {
				v, err := r.read()
				if err != nil {
					return fmt.Errorf("%s: %w", r.name, err)
				}
				if v != want {
					return fmt.Errorf("%s answers %g, want %g", r.name, v, want)
				}
			}
			return nil
		}
	}
	eventually(t, 90*time.Second, "both replicas ask for 4 prefill pods under load", both(4))

	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 3000, OutputTokensPerSec: 10})
	fell := time.Now()
	time.Sleep(window / 3)
	if err := both(4)(); err != nil {
		t.Fatalf("a third into the window: %v", err)
	}
	adapters[0].Stop()
	if err := adapters[0].Start(); err != nil {
		t.Fatal(err)
	}
	restarted := eventually(t, 30*time.Second, "the restarted replica answers", func() error { _, err := replicas[0].read(); return err })
	t.Logf("replica 0 restarted %s after the load fell and answered %s later", (window / 3).Round(time.Second), restarted.Round(100*time.Millisecond))
	polls := 0
	for time.Since(fell) < window-3*time.Second {
		if err := both(4)(); err != nil {
			t.Fatalf("%s after the load fell (window %s): %v", time.Since(fell).Round(100*time.Millisecond), window, err)
		}
		polls++
		time.Sleep(500 * time.Millisecond)
	}
	took := eventually(t, 20*time.Second, "the surviving replica follows the fall after its window", func() error {
		v, err := replicas[1].read()
		if err == nil && v != 1 {
			err = fmt.Errorf("replica 1 answers %g, want 1", v)
		}
		return err
	})
	t.Logf("both answered 4 in %d polls until %s into the window; replica 1 answered 1 at %s", polls, (window - 3*time.Second).Round(time.Second), (window - 3*time.Second + took).Round(100*time.Millisecond))
}
