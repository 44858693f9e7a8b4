package kedascaler

import (
	"math"
	"strings"
	"testing"

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
			got, err := ParseTrigger(&externalscaler.ScaledObjectRef{Namespace: c.ns, ScalerMetadata: c.md}, ParseOptions{AllowCrossNamespace: c.cross})
			if c.wantErr != "" {
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want InvalidArgument containing %q", err, c.wantErr)
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
		_, err := ParseTrigger(&externalscaler.ScaledObjectRef{Namespace: "llm", Name: "prefill", ScalerMetadata: md}, ParseOptions{})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "scaledobject llm/prefill: tokenscale trigger metadata: ") {
			t.Errorf("%s: %v; want InvalidArgument naming scaledobject llm/prefill", name, err)
		}
	}
	_, err := ParseTrigger(&externalscaler.ScaledObjectRef{Namespace: "llm", Name: strings.Repeat("n", 1<<20), ScalerMetadata: map[string]string{}}, ParseOptions{})
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
		_, err := ParseTrigger(&externalscaler.ScaledObjectRef{Namespace: "llm", ScalerMetadata: md}, ParseOptions{})
		if status.Code(err) != codes.InvalidArgument || len(err.Error()) > 600 || !strings.Contains(err.Error(), "(1048576 bytes)") {
			t.Errorf("%s: %d bytes of error, want InvalidArgument under 600 bytes saying the value's size: %.300s", name, len(err.Error()), err)
		}
	}
}

func FuzzParseTrigger(f *testing.F) {
	f.Add("prefill", "desiredReplicas", "1", "0", "")
	f.Add("decode", "arrivalVelocity", "1e4", "5", "prefill")
	f.Add("", "x", "-1", "NaN", " ")
	f.Fuzz(func(t *testing.T, pool, metric, target, activation, activationPool string) {
		tr, err := ParseTrigger(&externalscaler.ScaledObjectRef{Namespace: "ns", ScalerMetadata: map[string]string{
			"pool": pool, "metric": metric, "target": target, "activationThreshold": activation, "activationPool": activationPool}}, ParseOptions{})
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error is not InvalidArgument: %v", err)
			}
			if n := len(err.Error()); n > 1000 {
				t.Fatalf("error of %d bytes", n)
			}
			return
		}
		if len(validation.IsDNS1123Label(tr.Pool)) > 0 || len(validation.IsDNS1123Label(tr.ActivationPool)) > 0 {
			t.Fatalf("accepted pool %q, activation pool %q", tr.Pool, tr.ActivationPool)
		}
		if tr.Pool == "" || tr.ActivationPool == "" || !(tr.Target > 0) || math.IsInf(tr.Target, 0) ||
			!(tr.ActivationThreshold >= 0) || math.IsInf(tr.ActivationThreshold, 0) {
			t.Fatalf("accepted an invalid trigger: %+v", tr)
		}
		if _, ok := metricNames[tr.MetricName]; !ok {
			t.Fatalf("accepted metric %q", tr.MetricName)
		}
	})
}
