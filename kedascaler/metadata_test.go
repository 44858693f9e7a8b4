package kedascaler

import (
	"math"
	"strings"
	"testing"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenscale/tokenscale/velocity/service"
)

func TestParseTrigger(t *testing.T) {
	for _, c := range []struct {
		name    string
		md      map[string]string
		ns      string
		want    Trigger
		wantErr string // substring of the InvalidArgument message
	}{
		{name: "defaults", md: map[string]string{"pool": "prefill"}, ns: "llm",
			want: Trigger{Namespace: "llm", Pool: "prefill", MetricName: "desiredReplicas", Metric: service.Desired, Target: 1,
				ActivationPool: "prefill", ActivationMetricName: "arrivalVelocity", ActivationMetric: service.Arrival}},
		{name: "everything", md: map[string]string{"pool": "prefill", "namespace": "other", "metric": "backpressure", "target": "0.8",
			"activationThreshold": "50", "activationPool": "decode", "activationMetric": "arrivalVelocity", "scalerAddress": "x:9090", "enableTLS": "true"}, ns: "llm",
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
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseTrigger(&externalscaler.ScaledObjectRef{Namespace: c.ns, ScalerMetadata: c.md})
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

func FuzzParseTrigger(f *testing.F) {
	f.Add("prefill", "desiredReplicas", "1", "0", "")
	f.Add("decode", "arrivalVelocity", "1e4", "5", "prefill")
	f.Add("", "x", "-1", "NaN", " ")
	f.Fuzz(func(t *testing.T, pool, metric, target, activation, activationPool string) {
		tr, err := ParseTrigger(&externalscaler.ScaledObjectRef{Namespace: "ns", ScalerMetadata: map[string]string{
			"pool": pool, "metric": metric, "target": target, "activationThreshold": activation, "activationPool": activationPool}})
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error is not InvalidArgument: %v", err)
			}
			return
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
