package converter

import (
	"os"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	"go.yaml.in/yaml/v3"
)

// admissionPolicy is the part of a ValidatingAdmissionPolicy the test evaluates.
type admissionPolicy struct {
	Metadata struct{ Name string } `yaml:"metadata"`
	Spec     struct {
		MatchConditions []struct{ Name, Expression string }    `yaml:"matchConditions"`
		Variables       []struct{ Name, Expression string }    `yaml:"variables"`
		Validations     []struct{ Expression, Message string } `yaml:"validations"`
	} `yaml:"spec"`
}

// admit evaluates a policy as the API server does (match conditions, variables, then every validation)
// and returns whether it matched and the first failed validation's message ("" when allowed).
func (p admissionPolicy) admit(t *testing.T, in map[string]any) (matched bool, denied string) {
	t.Helper()
	env, err := cel.NewEnv(cel.Variable("object", cel.DynType), cel.Variable("oldObject", cel.DynType),
		cel.Variable("request", cel.DynType), cel.Variable("variables", cel.DynType))
	if err != nil {
		t.Fatal(err)
	}
	eval := func(expr string) any {
		ast, iss := env.Compile(expr)
		if iss.Err() != nil {
			t.Fatalf("policy %s: %q: %v", p.Metadata.Name, expr, iss.Err())
		}
		prg, err := env.Program(ast)
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := prg.Eval(in)
		if err != nil {
			t.Fatalf("policy %s: %q: %v", p.Metadata.Name, expr, err)
		}
		return out.Value()
	}
	for _, m := range p.Spec.MatchConditions {
		if eval(m.Expression) != true {
			return false, ""
		}
	}
	vars := map[string]any{}
	in["variables"] = vars
	for _, v := range p.Spec.Variables {
		vars[v.Name] = eval(v.Expression)
	}
	for _, v := range p.Spec.Validations {
		if eval(v.Expression) != true {
			return true, v.Message
		}
	}
	return true, ""
}

func loadAdmission(t *testing.T) map[string]admissionPolicy {
	t.Helper()
	raw, err := os.ReadFile("../manifests/components/converter/admission.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]admissionPolicy{}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var p admissionPolicy
		if err := yaml.Unmarshal([]byte(doc), &p); err != nil {
			t.Fatal(err)
		}
		if len(p.Spec.Validations) > 0 {
			out[p.Metadata.Name] = p
		}
	}
	return out
}

// owned gives a pod an owner, as a ReplicaSet's pods have.
func owned(pod map[string]any) map[string]any {
	pod["metadata"].(map[string]any)["ownerReferences"] = []any{map[string]any{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "llama-decode-5d9c", "uid": "1", "controller": true}}
	return pod
}

// finalized gives a pod a finalizer.
func finalized(pod map[string]any) map[string]any {
	pod["metadata"].(map[string]any)["finalizers"] = []any{"example.com/hold"}
	return pod
}

// The admission policies' CEL, evaluated on the requests an agent and the controller make and on those
// they must not: the agent only on its node's decode-pool pods, only decode <-> prefill-decode of the
// role label (old value checked too), in whatever namespace the converter is installed. e2e
// TestConverter runs the same policies on a real API server.
func TestAdmissionPolicies(t *testing.T) {
	pols := loadAdmission(t)
	agent, ctrl := pols["tokenscale-converter-agent"], pols["tokenscale-converter-controller"]
	pod := func(node string, labels, ann map[string]any) map[string]any {
		md := map[string]any{}
		if labels != nil {
			md["labels"] = labels
		}
		if ann != nil {
			md["annotations"] = ann
		}
		return map[string]any{"metadata": md, "spec": map[string]any{"nodeName": node}}
	}
	role := func(r string) map[string]any { return map[string]any{"llm-d.ai/role": r, "app": "llama"} }
	user := func(ns, sa string) map[string]any {
		return map[string]any{"userInfo": map[string]any{"username": "system:serviceaccount:" + ns + ":" + sa,
			"extra": map[string]any{"authentication.kubernetes.io/node-name": []any{"gpu-a"}}}}
	}
	const agentSA, ctrlSA = "tokenscale-converter-agent", "tokenscale-converter-controller"
	status := map[string]any{"tokenscale.io/conversion": "converted"}
	lease := map[string]any{"tokenscale.io/convert-until": "2026-01-01T00:00:00Z"}
	cases := []struct {
		name     string
		pol      admissionPolicy
		req      map[string]any
		old, new map[string]any
		denied   string // "" allowed; else a part of the message
	}{
		{"agent converts", agent, user("tokenscale", agentSA), pod("gpu-a", role("decode"), nil), pod("gpu-a", role("prefill-decode"), status), ""},
		{"agent installed in another namespace converts", agent, user("gpu-ops", agentSA), pod("gpu-a", role("decode"), nil), pod("gpu-a", role("prefill-decode"), status), ""},
		{"agent reverts", agent, user("tokenscale", agentSA), pod("gpu-a", role("prefill-decode"), status), pod("gpu-a", role("decode"), nil), ""},
		// The sglang actuator switches the engine and records only its status: no label moves.
		{"agent records an engine's switch", agent, user("tokenscale", agentSA), pod("gpu-a", role("decode"), nil), pod("gpu-a", role("decode"), status), ""},
		{"agent records a refusal", agent, user("tokenscale", agentSA), pod("gpu-a", role("decode"), nil), pod("gpu-a", role("decode"), map[string]any{"tokenscale.io/conversion": "refused: x"}), ""},
		{"another node's pod", agent, user("tokenscale", agentSA), pod("gpu-b", role("decode"), nil), pod("gpu-b", role("prefill-decode"), nil), "own node only"},
		{"a prefill pod relabelled decode", agent, user("tokenscale", agentSA), pod("gpu-a", role("prefill"), nil), pod("gpu-a", role("decode"), nil), "only decode-pool pods"},
		{"the role added to an unrelated pod", agent, user("tokenscale", agentSA), pod("gpu-a", map[string]any{"app": "x"}, nil), pod("gpu-a", map[string]any{"app": "x", "llm-d.ai/role": "prefill-decode"}, nil), "only decode-pool pods"},
		{"the role added to a pod without labels", agent, user("tokenscale", agentSA), pod("gpu-a", nil, nil), pod("gpu-a", map[string]any{"llm-d.ai/role": "decode"}, nil), "only decode-pool pods"},
		{"decode set to prefill", agent, user("tokenscale", agentSA), pod("gpu-a", role("decode"), nil), pod("gpu-a", role("prefill"), nil), "decode or prefill-decode only"},
		{"the role removed", agent, user("tokenscale", agentSA), pod("gpu-a", role("decode"), nil), pod("gpu-a", map[string]any{"app": "llama"}, nil), "no label but llm-d.ai/role"},
		{"another label", agent, user("tokenscale", agentSA), pod("gpu-a", role("decode"), nil), pod("gpu-a", map[string]any{"llm-d.ai/role": "decode", "app": "stolen"}, nil), "no label but llm-d.ai/role"},
		{"agent writes a lease", agent, user("elsewhere", agentSA), pod("gpu-a", role("decode"), nil), pod("gpu-a", role("decode"), lease), "only its tokenscale.io/conversion"},
		{"controller writes a lease", ctrl, user("gpu-ops", ctrlSA), pod("gpu-a", role("decode"), nil), pod("gpu-a", role("decode"), lease), ""},
		{"controller relabels", ctrl, user("tokenscale", ctrlSA), pod("gpu-a", role("decode"), nil), pod("gpu-a", role("prefill-decode"), nil), "only the tokenscale.io/convert-until"},
		// Orphaning a pod makes its ReplicaSet start another GPU pod; a finalizer keeps it from being deleted.
		{"agent orphans a pod", agent, user("tokenscale", agentSA), owned(pod("gpu-a", role("decode"), nil)), pod("gpu-a", role("decode"), nil), "owners or finalizers"},
		{"agent adds a finalizer", agent, user("tokenscale", agentSA), pod("gpu-a", role("decode"), nil), finalized(pod("gpu-a", role("decode"), nil)), "owners or finalizers"},
		{"controller orphans a pod", ctrl, user("tokenscale", ctrlSA), owned(pod("gpu-a", role("decode"), nil)), pod("gpu-a", role("decode"), lease), "owners or finalizers"},
		{"controller adds a finalizer", ctrl, user("tokenscale", ctrlSA), pod("gpu-a", role("decode"), nil), finalized(pod("gpu-a", role("decode"), lease)), "owners or finalizers"},
		{"agent converts an owned pod", agent, user("tokenscale", agentSA), owned(pod("gpu-a", role("decode"), nil)), owned(pod("gpu-a", role("prefill-decode"), status)), ""},
		{"controller leases an owned pod", ctrl, user("tokenscale", ctrlSA), owned(pod("gpu-a", role("decode"), nil)), owned(pod("gpu-a", role("decode"), lease)), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			matched, denied := c.pol.admit(t, map[string]any{"object": c.new, "oldObject": c.old, "request": c.req})
			if !matched {
				t.Fatalf("the policy did not match %v", c.req["userInfo"].(map[string]any)["username"])
			}
			if c.denied == "" && denied != "" {
				t.Errorf("denied: %s", denied)
			}
			if c.denied != "" && !strings.Contains(denied, c.denied) {
				t.Errorf("denial %q, want one naming %q", denied, c.denied)
			}
		})
	}
	// Other users are not matched (RBAC and the other policy govern them).
	if matched, _ := agent.admit(t, map[string]any{"object": pod("gpu-a", nil, nil), "oldObject": pod("gpu-a", nil, nil),
		"request": user("tokenscale", "tokenscale-converter-agent-impostor")}); matched {
		t.Error("the agent policy matched another ServiceAccount")
	}
}
