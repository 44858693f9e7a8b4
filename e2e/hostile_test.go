//go:build e2e

package e2e

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/tokenscale/tokenscale/adapter"
	"github.com/tokenscale/tokenscale/internal/fakeengine"
	"github.com/tokenscale/tokenscale/internal/localcluster"
	"github.com/tokenscale/tokenscale/internal/procstat"
	"github.com/tokenscale/tokenscale/velocity/policy"
)

// TestHostileEngines is the hostile-engine soak: beside a namespace of healthy pools, a namespace whose
// pools hold healthy pods and pods serving every fakeengine.Attack. For the whole soak, every value the
// adapter serves is finite, non-negative and within its plausible bound, the healthy pools never go stale,
// and the adapter's peak RSS stays under its manifest's memory limit. CI runs the quick version (one pod per
// attack, 45 s); TOKENSCALE_SOAK_PODS, TOKENSCALE_SOAK_DURATION and TOKENSCALE_SOAK_ATTACKS (a comma list)
// run a longer or heavier one, e.g. the memory worst case:
//
//	TOKENSCALE_SOAK_PODS=64 TOKENSCALE_SOAK_ATTACKS=endless-body,bad-float,huge-labels make e2e E2E_RUN=TestHostileEngines
func TestHostileEngines(t *testing.T) {
	perAttack, err := strconv.Atoi(envOr("TOKENSCALE_SOAK_PODS", "1"))
	if err != nil || perAttack < 1 {
		t.Fatalf("TOKENSCALE_SOAK_PODS %q: want a positive count", os.Getenv("TOKENSCALE_SOAK_PODS"))
	}
	soak, err := time.ParseDuration(envOr("TOKENSCALE_SOAK_DURATION", "45s"))
	if err != nil {
		t.Fatalf("TOKENSCALE_SOAK_DURATION: %v", err)
	}
	attacks := fakeengine.Attacks
	if v := os.Getenv("TOKENSCALE_SOAK_ATTACKS"); v != "" {
		attacks = nil
		for _, a := range strings.Split(v, ",") {
			if !slices.Contains(fakeengine.Attacks, fakeengine.Attack(a)) {
				t.Fatalf("TOKENSCALE_SOAK_ATTACKS: unknown attack %q; known: %v", a, fakeengine.Attacks)
			}
			attacks = append(attacks, fakeengine.Attack(a))
		}
	}
	limit := manifestMemoryLimit(t)

	const healthyNS, hostileNS = "soak-healthy", "soak-hostile"
	load := func(k *localcluster.Kubelet) {
		k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 6000, OutputTokensPerSec: 10})
		k.SetLoad("decode", fakeengine.Load{OutputTokensPerSec: 2000})
	}
	load(namespace(t, healthyNS))
	deployment(t, healthyNS, "llama-prefill", "prefill", fakeengine.VLLMV1, 2)
	deployment(t, healthyNS, "llama-decode", "decode", fakeengine.SGLang, 2)
	load(namespace(t, hostileNS))
	deployment(t, hostileNS, "llama-prefill", "prefill", fakeengine.VLLMV1, 1)
	deployment(t, hostileNS, "llama-decode", "decode", fakeengine.SGLang, 1)
	pods := map[string]int{"prefill": 1, "decode": 1} // members of each hostile-namespace pool
	for i, a := range attacks {
		role, flavor := "prefill", fakeengine.VLLMV1
		if i%2 == 1 {
			role, flavor = "decode", fakeengine.SGLang
		}
		deployment(t, hostileNS, "attack-"+string(a), role, flavor, int32(perAttack), localcluster.AttackAnnotation, string(a))
		pods[role] += perAttack
	}

	// Warm-up: the healthy pools' numbers are served.
	for _, dep := range []string{"llama-prefill", "llama-decode"} {
		eventually(t, 90*time.Second, healthyNS+"/"+dep+" desired replicas", func() error {
			_, err := objectValue(healthyNS, dep, adapter.DesiredReplicas)
			return err
		})
	}

	// The bounds a served value must respect: token rates within policy.PlausibleFactor of the profile
	// per pod (and per member for pools), desired replicas within maxReplicas (adapterConfig), the
	// documented backpressure cap, conversions within the pool.
	perPod := policy.PlausibleFactor * math.Max(prefillTPS, decodeTPS)
	poolBound := func(metric string, members int) float64 {
		switch metric {
		case adapter.ArrivalVelocity, adapter.CapacityVelocity:
			return perPod * float64(members)
		case adapter.DesiredReplicas:
			return 6
		case adapter.Backpressure:
			return 1000
		case adapter.Conversions:
			return float64(members)
		}
		return 1e6 // utilisation: arrival over capacity, both bounded above
	}
	podBound := map[string]float64{adapter.PrefillVelocity: perPod, adapter.DecodeVelocity: perPod, adapter.QueuedTokens: 1e9}

	var violations []string
	violate := func(format string, args ...any) {
		if len(violations) < 40 {
			violations = append(violations, fmt.Sprintf(format, args...))
		}
	}
	check := func(what string, v, bound float64) {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > bound {
			violate("%s = %g, want within [0, %g]", what, v, bound)
		}
	}
	pid := suite.adapter.Pid()
	var rounds, stale, hostileRefused, hostileServed, podServed int
	var peak int64
	start := time.Now()
	for time.Since(start) < soak {
		round := time.Now()
		rounds++
		for _, ns := range []string{healthyNS, hostileNS} {
			for _, role := range []string{"prefill", "decode"} {
				members := 2
				if ns == hostileNS {
					members = pods[role]
				}
				for _, metric := range []string{adapter.ArrivalVelocity, adapter.CapacityVelocity, adapter.Utilisation, adapter.Backpressure, adapter.DesiredReplicas, adapter.Conversions} {
					if metric == adapter.Conversions && role != "decode" {
						continue // a number the prefill pool lacks: a 400, never a value (adapter unit tests)
					}
					v, err := objectValue(ns, "llama-"+role, metric)
					switch {
					case err != nil && ns == healthyNS:
						stale++
						violate("healthy pool %s/llama-%s %s not served at %s: %v", ns, role, metric, time.Since(start).Round(time.Second), err)
					case err != nil:
						hostileRefused++ // refusing is allowed where pods lie; a wrong number is not
					default:
						if ns == hostileNS {
							hostileServed++
						}
						check(fmt.Sprintf("%s/llama-%s %s", ns, role, metric), v, poolBound(metric, members))
					}
				}
			}
		}
		for metric, bound := range podBound {
			for _, role := range []string{"prefill", "decode"} {
				vals, err := podValues(hostileNS, metric, "llm-d.ai/role="+role)
				if err != nil {
					continue // every pod unknown: a 503, not a number
				}
				for pod, v := range vals {
					podServed++
					check(fmt.Sprintf("pod %s/%s %s", hostileNS, pod, metric), v, bound)
				}
			}
		}
		if rss, err := procstat.PeakRSS(pid); err != nil {
			t.Fatalf("adapter RSS: %v", err)
		} else {
			peak = max(peak, rss)
		}
		time.Sleep(time.Second - min(time.Since(round), time.Second))
	}
	t.Logf("soak: %d attacks x %d pods for %s, %d rounds: adapter peak RSS %.0f MiB (limit %.0f MiB); hostile pools: %d values served, %d refused; %d hostile-namespace pod values served; healthy pools stale %d times",
		len(attacks), perAttack, soak, rounds, float64(peak)/(1<<20), float64(limit)/(1<<20), hostileServed, hostileRefused, podServed, stale)
	if peak > limit {
		t.Errorf("adapter peak RSS %d bytes exceeds the manifest's memory limit %d", peak, limit)
	}
	if hostileServed == 0 {
		t.Errorf("the hostile namespace's pools were never served: its healthy pods' numbers should be")
	}
	sort.Strings(violations)
	for _, v := range violations {
		t.Error(v)
	}
}

// manifestMemoryLimit is the adapter container's memory limit in manifests/base/deployment.yaml.
func manifestMemoryLimit(t *testing.T) int64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "manifests", "base", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(raw), "\n---") {
		var d appsv1.Deployment
		if yaml.Unmarshal([]byte(doc), &d) != nil || d.Kind != "Deployment" {
			continue
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if m, ok := c.Resources.Limits["memory"]; ok {
				return m.Value()
			}
		}
	}
	t.Fatal("no memory limit in manifests/base/deployment.yaml")
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
