//go:build e2e

package e2e

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/adapter"
	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

// Broken engines next to healthy ones: a dead engine, one that hangs past the scrape timeout, one that
// serves garbage and one that restarts (counters reset). The adapter keeps serving the healthy pods,
// answers an error (never 0) for the broken ones, never spikes on the reset and never crashes. Then the
// adapter itself restarts and serving resumes.
func TestFaults(t *testing.T) {
	const ns = "faults"
	k := namespace(t, ns)
	deployment(t, ns, "llama-prefill", "prefill", fakeengine.VLLMV1, 5)
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 20000, OutputTokensPerSec: 10})
	eventually(t, 60*time.Second, "all 5 pods served at 4000 tokens/s", func() error {
		vals, err := podValues(ns, adapter.PrefillVelocity, "llm-d.ai/role=prefill")
		if err != nil {
			return err
		}
		if len(vals) != 5 {
			return fmt.Errorf("%d pods: %v", len(vals), vals)
		}
		for p, v := range vals {
			if err := within(v, 4000, 0.1); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	})
	pods := k.Pods("prefill")
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	dead, hung, garbage, restarted, healthy := pods[0], pods[1], pods[2], pods[3], pods[4]
	dead.Kill()
	hung.Engine.SetHang(true)
	garbage.Engine.SetGarbage(true)
	restarted.Engine.Restart()
	// The dead engine's share moves to the other four: 5000 tokens/s each.

	// For staleAfter (3 s) plus margin, the restarted pod is always served, never 0, never a spike.
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		vals, err := podValues(ns, adapter.PrefillVelocity, "llm-d.ai/role=prefill")
		if err != nil {
			t.Fatalf("serving stopped for the healthy pods: %v", err)
		}
		v, ok := vals[restarted.Name]
		if !ok || v < 2000 || v > 7500 {
			t.Fatalf("restarted pod: value %v (served %v); want a held rate within [2000, 7500]", v, ok)
		}
		if _, ok := vals[healthy.Name]; !ok {
			t.Fatalf("healthy pod missing: %v", vals)
		}
	}
	eventually(t, 10*time.Second, "only the working pods served, at 5000 tokens/s", func() error {
		vals, err := podValues(ns, adapter.PrefillVelocity, "llm-d.ai/role=prefill")
		if err != nil {
			return err
		}
		if len(vals) != 2 {
			return fmt.Errorf("want the restarted and healthy pods only, got %v", vals)
		}
		for _, p := range []string{restarted.Name, healthy.Name} {
			if err := within(vals[p], 5000, 0.15); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	})
	for _, c := range []struct {
		pod, why string
	}{{dead.Name, "refused"}, {hung.Name, "deadline"}, {garbage.Name, ""}} {
		body, err := getRaw(fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/%s/%s", ns, c.pod, adapter.PrefillVelocity))
		if statusCode(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), c.pod) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("broken pod %s: got %v %s; want a 503 naming the pod and %q", c.pod, err, body, c.why)
		} else {
			t.Logf("broken pod answer: %s", strings.TrimSpace(string(body)))
		}
	}
	// The pool stays sized from what is known: unknown pods are counted at the known pods' mean.
	arrival, err := objectValue(ns, "llama-prefill", adapter.ArrivalVelocity)
	if err != nil || arrival < 10000 || arrival > 30000 {
		t.Errorf("pool arrival with 3 of 5 pods unknown: %v, %v; want an estimate in [10000, 30000]", arrival, err)
	}
	if !suite.adapter.Alive() {
		t.Fatal("the adapter died")
	}

	// Healed engines are served again.
	hung.Engine.SetHang(false)
	garbage.Engine.SetGarbage(false)
	eventually(t, 10*time.Second, "healed pods served again", func() error {
		vals, err := podValues(ns, adapter.PrefillVelocity, "llm-d.ai/role=prefill")
		if err != nil {
			return err
		}
		if _, ok := vals[hung.Name]; !ok {
			return fmt.Errorf("hung pod not back: %v", vals)
		}
		if _, ok := vals[garbage.Name]; !ok {
			return fmt.Errorf("garbage pod not back: %v", vals)
		}
		return nil
	})

	// Adapter restart: serving resumes within two scrape intervals of the new process answering /healthz.
	if suite.adapter.Stop() {
		t.Fatal("the adapter had died before the restart")
	}
	start := time.Now()
	if err := suite.adapter.Start(); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	up := eventually(t, 30*time.Second, "restarted adapter answers /healthz", func() error {
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", suite.adapter.Port))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	serving := eventually(t, 30*time.Second, "values through the aggregator after the restart", func() error {
		vals, err := podValues(ns, adapter.PrefillVelocity, "llm-d.ai/role=prefill")
		if err != nil {
			return err
		}
		if len(vals) < 2 {
			return fmt.Errorf("%v", vals)
		}
		return nil
	})
	t.Logf("adapter restart: /healthz after %s, values through the aggregator %s later (%s from process start)",
		up.Round(10*time.Millisecond), serving.Round(10*time.Millisecond), time.Since(start).Round(10*time.Millisecond))
	if serving > 2*time.Second+500*time.Millisecond {
		t.Errorf("serving resumed %s after the adapter was up; want within two scrape intervals (2 s) plus one poll", serving)
	}
}
