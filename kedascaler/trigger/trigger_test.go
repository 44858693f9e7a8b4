package trigger

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tokenscale/tokenscale/velocity/service"
)

func TestParseTrigger(t *testing.T) {
	for _, c := range []struct {
		name    string
		md      map[string]string
		ns      string
		cross   bool // the scaler runs with --allow-cross-namespace
		want    Trigger
		wantErr string // substring of the InvalidArgument message
	}{
		{name: "defaults", md: map[string]string{"pool": "prefill"}, ns: "llm",
			want: Trigger{Namespace: "llm", Pool: "prefill", MetricName: "desiredReplicas", Metric: service.Desired, Target: 1,
				ActivationPool: "prefill", ActivationMetricName: "arrivalVelocity", ActivationMetric: service.Arrival}},
		{name: "everything", md: map[string]string{"pool": "prefill", "namespace": "other", "metric": "backpressure", "target": "0.8",
			"activationThreshold": "50", "activationPool": "decode", "activationMetric": "arrivalVelocity", "scalerAddress": "x:9090", "enableTLS": "true"}, ns: "llm", cross: true,
			want: Trigger{Namespace: "other", Pool: "prefill", MetricName: "backpressure", Metric: service.Backpressure, Target: 0.8,
				ActivationPool: "decode", ActivationMetricName: "arrivalVelocity", ActivationMetric: service.Arrival, ActivationThreshold: 50}},
		{name: "no pool", md: map[string]string{}, ns: "llm", wantErr: `"pool" is required`},
		{name: "no namespace", md: map[string]string{"pool": "p"}, wantErr: `"namespace" is empty`},
		{name: "bad metric", md: map[string]string{"pool": "p", "metric": "rps"}, ns: "llm", wantErr: `"metric" is "rps"; allowed: arrivalVelocity, backpressure`},
		{name: "target required", md: map[string]string{"pool": "p", "metric": "arrivalVelocity"}, ns: "llm", wantErr: `"target" is required`},
		{name: "target zero", md: map[string]string{"pool": "p", "target": "0"}, ns: "llm", wantErr: `"target" is "0"; want a number >= 0.001`},
		{name: "target below KEDA's three decimals", md: map[string]string{"pool": "p", "metric": "utilisation", "target": "0.0004"}, ns: "llm", wantErr: `"target" is "0.0004"; want a number >= 0.001`},
		{name: "target NaN", md: map[string]string{"pool": "p", "target": "NaN"}, ns: "llm", wantErr: `"target" is "NaN"`},
		{name: "target past int64", md: map[string]string{"pool": "p", "target": "1e300"}, ns: "llm", wantErr: `"target" is "1e300"; want a number >= 0.001 and at most 1e15`},
		{name: "negative activation", md: map[string]string{"pool": "p", "activationThreshold": "-1"}, ns: "llm", wantErr: `want a number >= 0`},
		{name: "typo", md: map[string]string{"pool": "p", "activationTreshold": "1"}, ns: "llm", wantErr: `unknown key "activationTreshold"`},
		// KEDA's docs show its TLS keys in metadata, where KEDA 2.21 ignores them: the refusal says where
		// they go, and a key's PEM given as the value is not repeated.
		{name: "KEDA's CA in metadata", md: map[string]string{"pool": "p", "caCert": "-----BEGIN CERTIFICATE-----MIIB"}, ns: "llm", wantErr: `"caCert" is KEDA's own TLS setting, which KEDA reads only from a TriggerAuthentication`},
		{name: "KEDA's client key in metadata", md: map[string]string{"pool": "p", "tlsClientKey": strings.Repeat("k", 2000)}, ns: "llm", wantErr: `"tlsClientKey" is KEDA's own TLS setting`},
		{name: "bad activation metric", md: map[string]string{"pool": "p", "activationMetric": "gpu"}, ns: "llm", wantErr: `"activationMetric" is "gpu"`},
		// A name no pool can have would reach the HPA inside the announced metric name.
		{name: "pool with a slash", md: map[string]string{"pool": "a/b"}, ns: "llm", wantErr: `"pool" is "a/b"; want a DNS label`},
		{name: "pool upper case", md: map[string]string{"pool": "Prefill"}, ns: "llm", wantErr: `"pool" is "Prefill"; want a DNS label`},
		{name: "pool past 63 characters", md: map[string]string{"pool": strings.Repeat("p", 64)}, ns: "llm", wantErr: `want a DNS label`},
		{name: "activation pool with a percent", md: map[string]string{"pool": "p", "activationPool": "x%y"}, ns: "llm", wantErr: `"activationPool" is "x%y"`},
		{name: "namespace with a dot", md: map[string]string{"pool": "p", "namespace": "a.b"}, ns: "llm", wantErr: `"namespace" is "a.b"`},
		// KEDA asks for every tenant with the same credentials: a ScaledObject in one namespace must not read
		// another's pools unless the scaler is told to allow it.
		{name: "another namespace", md: map[string]string{"pool": "p", "namespace": "b"}, ns: "a",
			wantErr: `"namespace" is "b", not the ScaledObject's own namespace "a": a trigger reads only its own namespace's pools unless the scaler runs with --allow-cross-namespace`},
		{name: "another namespace allowed", md: map[string]string{"pool": "p", "namespace": "b"}, ns: "a", cross: true,
			want: Trigger{Namespace: "b", Pool: "p", MetricName: "desiredReplicas", Metric: service.Desired, Target: 1,
				ActivationPool: "p", ActivationMetricName: "arrivalVelocity", ActivationMetric: service.Arrival}},
		{name: "its own namespace named", md: map[string]string{"pool": "p", "namespace": " a "}, ns: "a",
			want: Trigger{Namespace: "a", Pool: "p", MetricName: "desiredReplicas", Metric: service.Desired, Target: 1,
				ActivationPool: "p", ActivationMetricName: "arrivalVelocity", ActivationMetric: service.Arrival}},
		{name: "a namespace for a ScaledObject without one", md: map[string]string{"pool": "p", "namespace": "b"}, wantErr: `not the ScaledObject's own namespace ""`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse(&externalscaler.ScaledObjectRef{Namespace: c.ns, ScalerMetadata: c.md}, Options{AllowCrossNamespace: c.cross})
			if c.wantErr != "" {
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want InvalidArgument containing %q", err, c.wantErr)
				}
				if strings.Contains(err.Error(), "BEGIN CERTIFICATE") || strings.Contains(err.Error(), "kkkkkkkk") {
					t.Fatalf("err = %.300v: it repeats a TLS setting's value", err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, c.want)
			}
		})
	}
}

// Every refusal names the ScaledObject it is for, its name clipped as other echoed input is: KEDA logs the
// error far from the ScaledObject, and the scaler's operator must be able to find it.
func TestParseTriggerErrorsNameTheScaledObject(t *testing.T) {
	for name, md := range map[string]map[string]string{
		"no pool":         {},
		"bad metric":      {"pool": "p", "metric": "rps"},
		"unknown key":     {"pool": "p", "x": "1"},
		"oversize value":  {"pool": strings.Repeat("p", MaxMetadataLen+1)},
		"other namespace": {"pool": "p", "namespace": "other"},
	} {
		_, err := Parse(&externalscaler.ScaledObjectRef{Namespace: "llm", Name: "prefill", ScalerMetadata: md}, Options{})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "scaledobject llm/prefill: tokenscale trigger metadata: ") {
			t.Errorf("%s: %v; want InvalidArgument naming scaledobject llm/prefill", name, err)
		}
	}
	_, err := Parse(&externalscaler.ScaledObjectRef{Namespace: "llm", Name: strings.Repeat("n", 1<<20), ScalerMetadata: map[string]string{}}, Options{})
	if msg := status.Convert(err).Message(); !strings.HasPrefix(msg, "scaledobject llm/nnn") || !strings.Contains(msg, "(1048576 bytes)") || len(msg) > 400 {
		t.Errorf("a 1 MiB name: %d bytes of error, want the name clipped: %.300s", len(msg), msg)
	}
}

// An error repeats at most a bounded part of what it was given: KEDA logs it on every poll.
func TestParseTriggerErrorsAreBounded(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	for name, md := range map[string]map[string]string{
		"unknown key": {"pool": "p", huge: "1"},
		"pool":        {"pool": huge},
		"metric":      {"pool": "p", "metric": huge},
		"target":      {"pool": "p", "target": huge},
	} {
		_, err := Parse(&externalscaler.ScaledObjectRef{Namespace: "llm", ScalerMetadata: md}, Options{})
		if status.Code(err) != codes.InvalidArgument || len(err.Error()) > 600 || !strings.Contains(err.Error(), "(1048576 bytes)") {
			t.Errorf("%s: %d bytes of error, want InvalidArgument under 600 bytes saying the value's size: %.300s", name, len(err.Error()), err)
		}
	}
}

// A ScaledObject's name and namespace come from whoever calls the port: a newline in them would forge
// lines in the scaler's log, where every refusal is written, and a terminal escape would reach it raw.
func TestParseTriggerErrorsEscapeTheScaledObject(t *testing.T) {
	name := "x\nE0101 00:00:00.000000 1 rpc.go:1] forged\x1b[31m" + strings.Repeat("é", 60)
	_, err := Parse(&externalscaler.ScaledObjectRef{Namespace: "llm\r", Name: name, ScalerMetadata: map[string]string{}}, Options{})
	if err == nil || strings.ContainsAny(err.Error(), "\n\r\x1b") || !utf8.ValidString(err.Error()) || !strings.Contains(err.Error(), `x\x0aE0101`) {
		t.Errorf("error %q; want the ScaledObject's control characters escaped, cut on a character", err)
	}
	if got := Clip(name); strings.ContainsAny(got, "\n\x1b") || !utf8.ValidString(got) {
		t.Errorf("Clip(%q) = %q", name, got)
	}
}

// FuzzParseTrigger checks any ScaledObject: its namespace and name, and metadata of any keys (lines of
// key=value) with or without --allow-cross-namespace. A refusal is an InvalidArgument naming the
// ScaledObject, short and printable, since KEDA logs it; an accepted trigger keeps every bound.
func FuzzParseTrigger(f *testing.F) {
	f.Add("llm", "so", "pool=prefill\nmetric=desiredReplicas\ntarget=1\nactivationThreshold=0", false)
	f.Add("llm", "so", "pool=decode\nmetric=arrivalVelocity\ntarget=1e4\nactivationThreshold=5\nactivationPool=prefill\nactivationMetric=queuedTokens", false)
	f.Add("llm", "so", "pool=decode\nnamespace=other\nscalerAddress=tokenscale:9090\ntarget=1e16", true)
	f.Add("", "x\x1b[2J", "pool= \nmetric=x\ntarget=-1\nactivationThreshold=NaN\nactivationPool= ", false)
	f.Add("llm\r", "so", "Pool=prefill\npool=prefill\ntarget=0.0001", false)
	f.Fuzz(func(t *testing.T, namespace, name, metadata string, cross bool) {
		md := map[string]string{}
		for _, line := range strings.Split(metadata, "\n") {
			k, v, _ := strings.Cut(line, "=")
			md[k] = v
		}
		tr, err := Parse(&externalscaler.ScaledObjectRef{Namespace: namespace, Name: name, ScalerMetadata: md}, Options{AllowCrossNamespace: cross})
		if err != nil {
			m := err.Error()
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(m, "scaledobject ") {
				t.Fatalf("error is not an InvalidArgument naming the ScaledObject: %v", err)
			}
			if len(m) > 1000 || !utf8.ValidString(m) || strings.ContainsAny(m, "\n\r\x1b") {
				t.Fatalf("error of %d bytes, not printable: %q", len(m), m)
			}
			return
		}
		for _, n := range []string{tr.Namespace, tr.Pool, tr.ActivationPool} {
			if len(validation.IsDNS1123Label(n)) > 0 {
				t.Fatalf("accepted namespace %q, pool %q, activation pool %q", tr.Namespace, tr.Pool, tr.ActivationPool)
			}
		}
		if tr.Namespace != namespace && !cross {
			t.Fatalf("namespace %q read from a ScaledObject of %q without --allow-cross-namespace", tr.Namespace, namespace)
		}
		if !(tr.Target >= 0.001 && tr.Target <= service.MaxValue) || !(tr.ActivationThreshold >= 0 && tr.ActivationThreshold <= service.MaxValue) {
			t.Fatalf("accepted target %v, activation threshold %v", tr.Target, tr.ActivationThreshold)
		}
		if m, ok := metricNames[tr.MetricName]; !ok || m != tr.Metric {
			t.Fatalf("accepted metric %q (%q)", tr.MetricName, tr.Metric)
		}
		if m, ok := metricNames[tr.ActivationMetricName]; !ok || m != tr.ActivationMetric {
			t.Fatalf("accepted activation metric %q (%q)", tr.ActivationMetricName, tr.ActivationMetric)
		}
	})
}

// Metadata past the bounds is refused naming what is wrong; fails if a bound is dropped (the padded pool
// then parses as "prefill", the 33 keys fail as an unknown key) or set below a real scalerAddress.
func TestParseTriggerRefusesOversizeMetadata(t *testing.T) {
	padded := "prefill" + strings.Repeat(" ", MaxMetadataLen)
	_, err := Parse(ref(map[string]string{"pool": padded}), Options{})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"pool" is "prefill `) ||
		!strings.Contains(err.Error(), fmt.Sprintf("longer than %d bytes", MaxMetadataLen)) || len(err.Error()) > 400 {
		t.Errorf("a pool value of %d bytes: %v; want a short InvalidArgument naming the key and the bound", len(padded), err)
	}
	many := map[string]string{"pool": "prefill"}
	for i := range MaxMetadataKeys {
		many[fmt.Sprintf("k%d", i)] = "x"
	}
	_, err = Parse(ref(many), Options{})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), fmt.Sprintf("%d keys; at most %d", MaxMetadataKeys+1, MaxMetadataKeys)) {
		t.Errorf("%d keys: %v; want InvalidArgument saying how many are allowed", len(many), err)
	}
	// The longest scalerAddress KEDA can be given (a 253-byte DNS name and a port) still passes.
	host := strings.Repeat(strings.Repeat("a", 62)+".", 5)[:253]
	addr := host + ":65535"
	if _, err := Parse(ref(map[string]string{"pool": "prefill", "scalerAddress": addr}), Options{}); err != nil {
		t.Errorf("a %d-byte scalerAddress: %v", len(addr), err)
	}
	if _, err := Parse(ref(map[string]string{"pool": "prefill", "scalerAddress": strings.Repeat("a", MaxMetadataLen)}), Options{}); err != nil {
		t.Errorf("a value of exactly %d bytes: %v", MaxMetadataLen, err)
	}
}

// within says whether s's bytes lie inside big's.
func within(s, big string) bool {
	if len(s) == 0 {
		return false
	}
	p, lo := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(big)))
	return p >= lo && p < lo+uintptr(len(big))
}

// The kept strings share nothing with the request's values: a StreamIsActive stream keeps its Trigger
// for as long as KEDA runs. Fails if a trimmed value is kept as is (a substring of the padded value).
func TestParseTriggerKeepsNoPartOfTheRequest(t *testing.T) {
	md := map[string]string{"pool": "  prefill  ", "namespace": " llm ", "activationPool": " decode ", "metric": " backpressure ", "target": "1",
		"activationMetric": " utilisation "}
	tr, err := Parse(ref(md), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, kept := range map[string][2]string{
		"Pool": {tr.Pool, md["pool"]}, "Namespace": {tr.Namespace, md["namespace"]}, "ActivationPool": {tr.ActivationPool, md["activationPool"]},
		"MetricName": {tr.MetricName, md["metric"]}, "ActivationMetricName": {tr.ActivationMetricName, md["activationMetric"]},
	} {
		if within(kept[0], kept[1]) {
			t.Errorf("%s %q points into the request's value %q", name, kept[0], kept[1])
		}
	}
	if tr.Pool != "prefill" || tr.Namespace != "llm" || tr.ActivationPool != "decode" || tr.MetricName != "backpressure" || tr.ActivationMetricName != "utilisation" {
		t.Errorf("parsed %+v", tr)
	}
}

func ref(md map[string]string) *externalscaler.ScaledObjectRef {
	return &externalscaler.ScaledObjectRef{Name: "prefill", Namespace: "llm", ScalerMetadata: md}
}
