package service

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/policy"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// An empty selector value matches only pods that carry the label empty, as Kubernetes' `role=` does;
// a pod without the label is not selected.
func TestMatchesLikeKubernetes(t *testing.T) {
	for _, c := range []struct {
		sel, labels map[string]string
		want        bool
	}{
		{map[string]string{"role": ""}, map[string]string{}, false},
		{map[string]string{"role": ""}, map[string]string{"role": ""}, true},
		{map[string]string{"role": "prefill"}, map[string]string{"role": "prefill", "x": "y"}, true},
		{map[string]string{"role": "prefill"}, map[string]string{"role": "decode"}, false},
		{map[string]string{}, map[string]string{"role": "decode"}, true},
	} {
		if got := Matches(c.sel, c.labels); got != c.want {
			t.Errorf("Matches(%v, %v) = %v, want %v", c.sel, c.labels, got, c.want)
		}
	}
}

// Two pools with one name, one in every namespace and one fixed to "team": the "team" instance takes its
// own pool's selector and workload, not the first pool's.
func TestAssignKeysPoolsByNamespaceAndName(t *testing.T) {
	cfg, err := config.Parse([]byte(`version: tokenscale.io/v1alpha1
pools:
- {name: prefill, role: prefill, selector: {role: prefill}, workload: {name: everywhere}}
- {name: prefill, namespace: team, role: prefill, selector: {tier: fast}, workload: {name: team-prefill}}
`))
	if err != nil {
		t.Fatal(err)
	}
	pods := []Pod{
		{Key: store.PodKey{Namespace: "team", Name: "a"}, Labels: map[string]string{"role": "prefill"}, IP: "10.0.0.1", Ready: true},
		{Key: store.PodKey{Namespace: "team", Name: "b"}, Labels: map[string]string{"tier": "fast"}, IP: "10.0.0.2", Ready: true},
		{Key: store.PodKey{Namespace: "other", Name: "c"}, Labels: map[string]string{"role": "prefill"}, IP: "10.0.0.3", Ready: true},
	}
	m := Assign(cfg, pods)
	if pk, ok := m.Pool[store.PodKey{Namespace: "team", Name: "b"}]; !ok || pk != (PoolKey{"team", "prefill"}) {
		t.Errorf("team/b: %v %v, want team/prefill by the team pool's selector", pk, ok)
	}
	if m.Has(store.PodKey{Namespace: "team", Name: "a"}) {
		t.Errorf("team/a joined team/prefill through the other pool's selector")
	}
	if !m.Has(store.PodKey{Namespace: "other", Name: "c"}) {
		t.Errorf("other/c is not in other/prefill")
	}
	snap := Decide(cfg, m, nil, policy.NewController(), time.Unix(0, 0))
	if v := snap.Pools[PoolKey{"team", "prefill"}]; v == nil || v.Config.Workload.Name != "team-prefill" {
		t.Errorf("team/prefill's config: %+v, want the team pool's (workload team-prefill)", v)
	}
	if v := snap.Pools[PoolKey{"other", "prefill"}]; v == nil || v.Config.Workload.Name != "everywhere" {
		t.Errorf("other/prefill's config: %+v, want the namespace-less pool's", v)
	}
	// Lookups by name and namespace find the pool that holds the name there, not the one it shadows: the
	// namespace-less pool's workload in team had a pool whose Ready pods were counted as none Ready.
	if p := snap.ConfiguredPool("team", "prefill"); p == nil || p.Workload.Name != "team-prefill" {
		t.Errorf("ConfiguredPool(team, prefill) = %+v, want the team pool", p)
	}
	if p := snap.WorkloadPool("team", "Deployment", "everywhere"); p != nil {
		t.Errorf("WorkloadPool(team, Deployment/everywhere) = %+v, want none: that pool makes no instance in team", p)
	}
	if p := snap.WorkloadPool("other", "Deployment", "everywhere"); p == nil || p.Namespace != "" {
		t.Errorf("WorkloadPool(other, Deployment/everywhere) = %+v, want the namespace-less pool", p)
	}
}

// A decode pool's conversions are a known 0 when its group has no prefill pool here; the prefill pool of
// the same name fixed to the namespace (in another group) made them unknown for as long as it had pods.
func TestConversionsIgnoreAShadowedPrefillPool(t *testing.T) {
	cfg, err := config.Parse([]byte(`version: tokenscale.io/v1alpha1
pools:
- {name: prefill, role: prefill, selector: {role: prefill}}
- {name: prefill, namespace: team, group: fast, role: prefill, selector: {tier: fast}}
- {name: decode, role: decode, selector: {role: decode}}
`))
	if err != nil {
		t.Fatal(err)
	}
	pods := []Pod{
		{Key: store.PodKey{Namespace: "team", Name: "fast"}, Labels: map[string]string{"tier": "fast"}, IP: "10.0.0.1", Ready: false},
		{Key: store.PodKey{Namespace: "team", Name: "dec"}, Labels: map[string]string{"role": "decode"}, IP: "10.0.0.2", Ready: true},
	}
	m := Assign(cfg, pods)
	dec := &PoolView{Key: PoolKey{"team", "decode"}, Group: "team/team"}
	if err := prefillUnknown(cfg, m, nil, dec); err != nil {
		t.Errorf("decode in group team/team, whose prefill pool makes no instance in team: %v, want a known 0", err)
	}
	if m.Matching[PoolKey{"team", "prefill"}] != 1 {
		t.Fatalf("the team pool's pod is not counted: %v", m.Matching)
	}
}

// Of two pools of one role in a group, the one with pods in the namespace is sized: a pool fixed to the
// namespace has an instance there with none, and sorting first by name it took the place of the pool
// whose Ready pods serve, which then answered every number as unknown. With pods in both, the first by
// name is sized and the other says which was.
func TestGroupSizesThePoolWithPods(t *testing.T) {
	cfg, err := config.Parse([]byte(`version: tokenscale.io/v1alpha1
pools:
- {name: a-prefill, namespace: llm, role: prefill, selector: {model: a}}
- {name: prefill, role: prefill, selector: {llm-d.ai/role: prefill}}
- {name: decode, role: decode, selector: {llm-d.ai/role: decode}}
`))
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(store.Options{StaleAfter: time.Hour}, nil)
	p, a, d := store.PodKey{Namespace: "llm", Name: "p"}, store.PodKey{Namespace: "llm", Name: "a"}, store.PodKey{Namespace: "llm", Name: "d"}
	t0 := time.Now()
	for _, k := range []store.PodKey{p, a, d} {
		st.Record(k, t0, prefillPage(0))
		st.Record(k, t0.Add(time.Second), prefillPage(100))
	}
	pods := []Pod{
		{Key: p, Labels: map[string]string{"llm-d.ai/role": "prefill"}, IP: "10.0.0.1", Ready: true},
		{Key: d, Labels: map[string]string{"llm-d.ai/role": "decode"}, IP: "10.0.0.2", Ready: true}}
	ctrl := policy.NewController()
	m := Assign(cfg, pods)
	snap := Decide(cfg, m, st.List(m.Has), ctrl, t0.Add(time.Second))
	sized, other := snap.Pools[PoolKey{"llm", "prefill"}], snap.Pools[PoolKey{"llm", "a-prefill"}]
	if sized == nil || sized.Err != nil || !sized.HasDesired {
		t.Fatalf("llm/prefill, the pool with a Ready pod: %+v, want it sized", sized)
	}
	if other == nil || other.Err == nil || !strings.Contains(other.Err.Error(), "(prefill) in group llm/llm is sized instead") {
		t.Fatalf("llm/a-prefill, no pods: %+v, want an error naming the pool sized instead", other)
	}
	m = Assign(cfg, append(pods, Pod{Key: a, Labels: map[string]string{"model": "a"}, IP: "10.0.0.3", Ready: true}))
	snap = Decide(cfg, m, st.List(m.Has), ctrl, t0.Add(2*time.Second))
	sized, other = snap.Pools[PoolKey{"llm", "a-prefill"}], snap.Pools[PoolKey{"llm", "prefill"}]
	if sized == nil || sized.Err != nil || !sized.HasDesired {
		t.Fatalf("llm/a-prefill, with pods in both: %+v, want it sized (first by name)", sized)
	}
	if other == nil || other.Err == nil || !strings.Contains(other.Err.Error(), "(a-prefill) in group llm/llm is sized instead") {
		t.Fatalf("llm/prefill, with pods in both: %+v, want an error naming the pool sized instead", other)
	}
	// The pool fixed to the namespace with no pods is sized while the other's pods are starting (no
	// instance): the decoders' conversions are unknown then, not a 0.
	m = Assign(cfg, []Pod{
		{Key: p, Labels: map[string]string{"llm-d.ai/role": "prefill"}, IP: "10.0.0.1"},
		{Key: d, Labels: map[string]string{"llm-d.ai/role": "decode"}, IP: "10.0.0.2", Ready: true}})
	snap = Decide(cfg, m, st.List(m.Has), ctrl, t0.Add(3*time.Second))
	if x, err := snap.Pools[PoolKey{"llm", "decode"}].Value(Conversions); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "none Ready") {
		t.Errorf("conversions while llm/prefill's pod starts: %v, %v; want ErrUnknown saying so", x, err)
	}
}

// A snapshot answers for pods as its round saw them: later scrapes recorded in the store do not change
// what it serves, so a pod's value and its pool's in one answer come from the same round.
func TestSnapshotServesItsOwnRound(t *testing.T) {
	cfg := config.Default()
	st := store.New(store.Options{StaleAfter: time.Hour}, nil)
	k := store.PodKey{Namespace: "llm", Name: "p1"}
	t0 := time.Now()
	st.Record(k, t0, prefillPage(0))
	st.Record(k, t0.Add(time.Second), prefillPage(1000))
	m := Assign(cfg, []Pod{{Key: k, Labels: map[string]string{"llm-d.ai/role": "prefill"}, IP: "10.0.0.1", Ready: true}})
	snap := Decide(cfg, m, st.List(m.Has), policy.NewController(), t0.Add(time.Second))
	before, err := snap.Pod(k)
	if err != nil {
		t.Fatal(err)
	}
	st.Record(k, t0.Add(2*time.Second), prefillPage(100000))
	after, err := snap.Pod(k)
	if err != nil {
		t.Fatal(err)
	}
	if after.PrefillTPS != before.PrefillTPS || after.Time != before.Time {
		t.Errorf("the snapshot's pod value moved with the store: %v at %v, then %v at %v", before.PrefillTPS, before.Time, after.PrefillTPS, after.Time)
	}
	if _, err := snap.Pod(store.PodKey{Namespace: "llm", Name: "nope"}); err == nil {
		t.Error("a pod outside the round has a value")
	}
	var n int
	snap.EachPod([]store.PodKey{k, {Namespace: "llm", Name: "nope"}}, func(v *store.Velocity, err error) {
		n++
		if v.Pod == k && err != nil {
			t.Errorf("EachPod: %v", err)
		}
		if v.Pod.Name == "nope" && err == nil {
			t.Error("EachPod: a pod outside the round has a value")
		}
	})
	if n != 2 {
		t.Errorf("EachPod called fn %d times, want 2", n)
	}
}

// A Ready pod without numbers this round (the Prometheus source has no series for it yet) counts in its
// pool as a pod of unknown velocity, not as no pod: capacity is not the pods with numbers alone.
func TestPodWithoutNumbersCounts(t *testing.T) {
	cfg := config.Default()
	st := store.New(store.Options{StaleAfter: time.Hour}, nil)
	a, b := store.PodKey{Namespace: "llm", Name: "a"}, store.PodKey{Namespace: "llm", Name: "b"}
	t0 := time.Now()
	st.Record(a, t0, prefillPage(0))
	st.Record(a, t0.Add(time.Second), prefillPage(1000))
	role := map[string]string{"llm-d.ai/role": "prefill"}
	m := Assign(cfg, []Pod{{Key: a, Labels: role, IP: "10.0.0.1", Ready: true}, {Key: b, Labels: role, IP: "10.0.0.2", Ready: true}})
	snap := Decide(cfg, m, st.List(m.Has), policy.NewController(), t0.Add(time.Second))
	v := snap.Pools[PoolKey{Namespace: "llm", Name: "prefill"}]
	if v == nil || v.Status.Pods != 2 || v.Status.Known != 1 || len(v.Status.Errors) != 1 || !errors.Is(v.Status.Errors[0], store.ErrNotFound) {
		t.Fatalf("pool with one pod of two reported: %+v, want 2 pods, 1 known, the other not found", v)
	}
	// The pod's own query gives the same reason, not that no pool tracks it.
	if _, err := snap.Pod(b); err == nil || !strings.Contains(err.Error(), "no numbers for it this round") {
		t.Errorf("the pod without numbers: %v; want the round's reason", err)
	}
}

// A pool with a fixed namespace whose pods are all starting has an instance without Ready pods: its
// numbers are unknown with its pod count, as a pool without a namespace reports it, not "no pods".
func TestFixedNamespacePoolWithNoReadyPodsSaysItsCount(t *testing.T) {
	cfg := config.Default()
	cfg.Pools[0].Namespace = "llm"
	role := map[string]string{"llm-d.ai/role": "prefill"}
	var pods []Pod
	for _, name := range []string{"a", "b", "c"} {
		pods = append(pods, Pod{Key: store.PodKey{Namespace: "llm", Name: name}, Labels: role, IP: "10.0.0.1"})
	}
	snap := Decide(cfg, Assign(cfg, pods), nil, policy.NewController(), time.Unix(0, 0))
	v := snap.Pools[PoolKey{Namespace: "llm", Name: "prefill"}]
	if v == nil {
		t.Fatal("the fixed-namespace pool has no instance")
	}
	_, err := v.Value(Desired)
	if err == nil || !strings.Contains(err.Error(), "(3 pods, none Ready)") || !errors.Is(v.Err, policy.ErrNoData) {
		t.Errorf("desired of a pool of 3 starting pods: %v; want it unknown, naming the 3 pods", err)
	}
	// With no pods at all it is at zero pods, and says so.
	snap = Decide(cfg, Assign(cfg, nil), nil, policy.NewController(), time.Unix(0, 0))
	if _, err := snap.Pools[PoolKey{Namespace: "llm", Name: "prefill"}].Value(Desired); err == nil || !strings.Contains(err.Error(), "(no pods)") {
		t.Errorf("desired of a pool without pods: %v; want it unknown, saying no pods", err)
	}
}

// Pods that are not Ready (a rolling restart, a failing readiness probe) are counted in their pool's
// Matching, and only there: they make no instance, no target and no member, so they are neither scraped
// nor sized. A front tells a pool at zero (no pods) from one whose pods are all unready by that count.
func TestAssignCountsPodsThatAreNotReady(t *testing.T) {
	cfg := config.Default()
	decode := map[string]string{"llm-d.ai/role": "decode"}
	var pods []Pod
	for i, name := range []string{"d0", "d1", "d2", "d3"} {
		pods = append(pods, Pod{Key: store.PodKey{Namespace: "llm", Name: name}, Labels: decode, IP: "10.0.0." + string(rune('1'+i))})
	}
	pods = append(pods, Pod{Key: store.PodKey{Namespace: "llm", Name: "nolabel"}, Labels: map[string]string{}, IP: "10.0.1.1"})
	m := Assign(cfg, pods)
	if len(m.Pool) != 0 || len(m.Targets) != 0 {
		t.Fatalf("pods that are not Ready became members %v or targets %v", m.Pool, m.Targets)
	}
	snap := Decide(cfg, m, nil, policy.NewController(), time.Unix(0, 0))
	dk := PoolKey{Namespace: "llm", Name: "decode"}
	if _, ok := snap.Pools[dk]; ok {
		t.Errorf("decode has an instance without a Ready pod")
	}
	if n := snap.Matching[dk]; n != 4 {
		t.Errorf("decode matches %d pods, want the 4 that are not Ready (counts: %v)", n, snap.Matching)
	}
	if n := snap.Matching[PoolKey{Namespace: "llm", Name: "prefill"}]; n != 0 {
		t.Errorf("prefill matches %d pods, want none", n)
	}
	// A Ready pod counts too: Matching is every pod of the pool, whatever its readiness. The pool's status
	// says how many it runs, starting ones included (a replica with no history holds them).
	pods[0].Ready = true
	m = Assign(cfg, pods)
	if n := m.Matching[dk]; n != 4 {
		t.Errorf("with one pod Ready decode matches %d pods, want 4", n)
	}
	if v := Decide(cfg, m, nil, policy.NewController(), time.Unix(0, 0)).Pools[dk]; v == nil || v.Status.Pods != 1 || v.Status.Running != 4 {
		t.Errorf("with one pod Ready, decode's status %+v; want 1 Ready pod of 4 running", v)
	}
	// Pods being deleted or finished do not: a pool scaled to zero is at zero while they terminate.
	pods[1].Gone, pods[2].Gone = true, true
	if n := Assign(cfg, pods).Matching[dk]; n != 2 {
		t.Errorf("with two pods gone decode matches %d pods, want 2", n)
	}
}

// prefillPage is a vLLM page whose prompt-token counter reads tokens, the rest idle.
func prefillPage(tokens float64) *engine.Snapshot {
	s := engine.NewSnapshot(engine.VLLM)
	s.SetScalar(engine.PromptTokens, tokens)
	s.SetScalar(engine.GenerationTokens, 0)
	s.SetScalar(engine.RequestsRunning, 0)
	s.SetScalar(engine.RequestsWaiting, 0)
	return s
}

// While a group's prefill pool is unknown the policy releases every conversion without deciding on any
// figure: the decode pool's conversions are unknown then, with the reason, not a 0 its HPA or KEDA
// trigger would read as a decision (the converter releases its leases on either).
func TestConversionsAreUnknownWhileThePrefillPoolIs(t *testing.T) {
	cfg := config.Default()
	st := store.New(store.Options{StaleAfter: time.Hour}, nil)
	p, d := store.PodKey{Namespace: "llm", Name: "p"}, store.PodKey{Namespace: "llm", Name: "d"}
	t0 := time.Now()
	st.Record(d, t0, prefillPage(0))
	st.Record(d, t0.Add(time.Second), prefillPage(0))
	m := Assign(cfg, []Pod{
		{Key: p, Labels: map[string]string{"llm-d.ai/role": "prefill"}, IP: "10.0.0.1", Ready: true},
		{Key: d, Labels: map[string]string{"llm-d.ai/role": "decode"}, IP: "10.0.0.2", Ready: true}})
	ctrl := policy.NewController()
	snap := Decide(cfg, m, st.List(m.Has), ctrl, t0.Add(time.Second))
	dec := snap.Pools[PoolKey{Namespace: "llm", Name: "decode"}]
	if dec == nil || dec.Err != nil {
		t.Fatalf("decode pool: %+v, want known", dec)
	}
	if _, err := dec.Value(Arrival); err != nil {
		t.Fatalf("the decode pool's own figures: %v, want known", err)
	}
	if x, err := dec.Value(Conversions); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "prefill pool llm/prefill is unknown") {
		t.Fatalf("conversions with the prefill pool unknown: %v, %v; want ErrUnknown naming the prefill pool", x, err)
	}
	// Once the prefill pool is known the number is the policy's decision again.
	st.Record(p, t0, prefillPage(0))
	st.Record(p, t0.Add(time.Second), prefillPage(100))
	snap = Decide(cfg, m, st.List(m.Has), ctrl, t0.Add(2*time.Second))
	if x, err := snap.Pools[PoolKey{Namespace: "llm", Name: "decode"}].Value(Conversions); err != nil || x != 0 {
		t.Fatalf("conversions with both pools known: %v, %v; want a known 0", x, err)
	}
	// A prefill pool whose pods are all failing their readiness probe has no instance: unknown too.
	m = Assign(cfg, []Pod{
		{Key: p, Labels: map[string]string{"llm-d.ai/role": "prefill"}, IP: "10.0.0.1"},
		{Key: d, Labels: map[string]string{"llm-d.ai/role": "decode"}, IP: "10.0.0.2", Ready: true}})
	snap = Decide(cfg, m, st.List(m.Has), ctrl, t0.Add(3*time.Second))
	if x, err := snap.Pools[PoolKey{Namespace: "llm", Name: "decode"}].Value(Conversions); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "1 pods, none Ready") {
		t.Fatalf("conversions with no prefill pod Ready: %v, %v; want ErrUnknown saying so", x, err)
	}
	// A namespace with decoders and no prefill pod at all has nothing to convert for: a known 0.
	m = Assign(cfg, []Pod{{Key: d, Labels: map[string]string{"llm-d.ai/role": "decode"}, IP: "10.0.0.2", Ready: true}})
	snap = Decide(cfg, m, st.List(m.Has), ctrl, t0.Add(4*time.Second))
	if x, err := snap.Pools[PoolKey{Namespace: "llm", Name: "decode"}].Value(Conversions); err != nil || x != 0 {
		t.Fatalf("conversions with no prefill pod: %v, %v; want a known 0", x, err)
	}
	// The same where the prefill pool is fixed to the namespace, so it has an instance with no pods (a
	// prefill pool scaled to zero, docs/keda.md), and unknown again once it has a pod that is not Ready.
	cfg.Pools[0].Namespace = "llm"
	if cfg.Pools[0].Role != config.RolePrefill {
		t.Fatalf("default pools: %+v, want prefill first", cfg.Pools)
	}
	m = Assign(cfg, []Pod{{Key: d, Labels: map[string]string{"llm-d.ai/role": "decode"}, IP: "10.0.0.2", Ready: true}})
	snap = Decide(cfg, m, st.List(m.Has), ctrl, t0.Add(5*time.Second))
	if x, err := snap.Pools[PoolKey{Namespace: "llm", Name: "decode"}].Value(Conversions); err != nil || x != 0 {
		t.Fatalf("conversions with no prefill pod, the prefill pool fixed to the namespace: %v, %v; want a known 0", x, err)
	}
	m = Assign(cfg, []Pod{
		{Key: p, Labels: map[string]string{"llm-d.ai/role": "prefill"}, IP: "10.0.0.1"},
		{Key: d, Labels: map[string]string{"llm-d.ai/role": "decode"}, IP: "10.0.0.2", Ready: true}})
	snap = Decide(cfg, m, st.List(m.Has), ctrl, t0.Add(6*time.Second))
	if x, err := snap.Pools[PoolKey{Namespace: "llm", Name: "decode"}].Value(Conversions); !errors.Is(err, ErrUnknown) {
		t.Fatalf("conversions with no prefill pod Ready, the prefill pool fixed to the namespace: %v, %v; want ErrUnknown", x, err)
	}
}

// Two pods of a pool on one metrics address (hostNetwork pods on one node) are one engine or a pod
// claiming another's: neither is scraped, and both read as unknown, saying why; before, the engine's
// counters were counted twice.
func TestPodsSharingAnAddressAreUnknown(t *testing.T) {
	cfg := config.Default()
	pod := func(name, ip string) Pod {
		return Pod{Key: store.PodKey{Namespace: "llm", Name: name}, Labels: map[string]string{"llm-d.ai/role": "prefill"}, IP: ip, Ready: true}
	}
	m := Assign(cfg, []Pod{pod("a", "10.0.0.5"), pod("b", "10.0.0.5"), pod("c", "10.0.0.6")})
	if st := m.ScrapeTargets(); len(st) != 1 || st[0].Pod.Name != "c" || len(m.Shared) != 2 || len(m.Targets) != 3 {
		t.Fatalf("scrape targets %+v, shared %v; want c scraped alone, a and b shared (their targets kept for Prometheus' engine and limit)", st, m.Shared)
	}
	snap := Decide(cfg, m, nil, policy.NewController(), time.Now())
	for _, name := range []string{"a", "b"} {
		if _, err := snap.Pod(store.PodKey{Namespace: "llm", Name: name}); err == nil || !strings.Contains(err.Error(), "metrics address http://10.0.0.5:8000/metrics too") {
			t.Errorf("pod %s: %v; want unknown, naming the shared address", name, err)
		}
	}
}
