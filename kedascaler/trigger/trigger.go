// Package trigger validates a KEDA ScaledObject trigger's metadata for tokenscale's external scaler: the
// one parser of that outside input, kept apart from the gRPC server so its fuzz target compiles little.
package trigger

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// Metadata keys of a ScaledObject trigger (KEDA forwards the trigger's metadata as scalerMetadata).
const (
	KeyPool                = "pool"
	KeyNamespace           = "namespace"
	KeyMetric              = "metric"
	KeyTarget              = "target"
	KeyActivationThreshold = "activationThreshold"
	KeyActivationPool      = "activationPool"
	KeyActivationMetric    = "activationMetric"
)

// kedaKeys are consumed by KEDA itself and may appear in scalerMetadata.
var kedaKeys = map[string]bool{"scalerAddress": true, "enableTLS": true, "unsafeSsl": true}

// kedaAuthKeys are KEDA's TLS keys for its connection to the scaler, which KEDA's own docs show in the
// trigger's metadata but KEDA (2.21, pkg/scalers/external_scaler.go) reads only from a
// TriggerAuthentication: given in metadata they are ignored by KEDA and reach the scaler, where "unknown
// key" did not say what to do (tlsCertFile is the older name of tlsClientCert).
var kedaAuthKeys = map[string]bool{"caCert": true, "tlsClientCert": true, "tlsClientKey": true, "tlsCertFile": true}

// metricNames maps the metadata's metric names to the pool's numbers.
var metricNames = map[string]service.PoolMetric{
	"desiredReplicas":   service.Desired,
	"arrivalVelocity":   service.Arrival,
	"capacityVelocity":  service.Capacity,
	"utilisation":       service.Utilisation,
	"backpressure":      service.Backpressure,
	"queuedTokens":      service.Queued,
	"conversionsWanted": service.Conversions,
}

// Trigger is one ScaledObject trigger's validated metadata.
type Trigger struct {
	// Namespace and Pool name the pool instance; Namespace defaults to the ScaledObject's, and may differ
	// from it only with Options.AllowCrossNamespace.
	Namespace, Pool string
	// Metric is what GetMetrics returns; Target what GetMetricSpec asks the HPA to hold per replica.
	MetricName string
	Metric     service.PoolMetric
	Target     float64
	// The trigger is active while ActivationMetric of ActivationPool exceeds ActivationThreshold. A pool
	// at zero replicas has nothing to measure, so activation may read another pool of the group.
	ActivationPool       string
	ActivationMetricName string
	ActivationMetric     service.PoolMetric
	ActivationThreshold  float64
}

// HPAMetricName is the metric name announced to KEDA (it prefixes it with the trigger index).
func (t Trigger) HPAMetricName() string { return "tokenscale-" + t.Pool + "-" + t.MetricName }

func invalid(format string, a ...any) error {
	return fmt.Errorf("tokenscale trigger metadata: "+format, a...)
}

// invalidArgument is a refused trigger: a gRPC InvalidArgument whose message is the wrapped error's text
// (GRPCStatus), so the error keeps its chain and KEDA still sees the code.
type invalidArgument struct{ error }

func (e invalidArgument) Unwrap() error { return e.error }

func (e invalidArgument) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}

// Options are the scaler's rules for every trigger, set by its flags.
type Options struct {
	// AllowCrossNamespace lets a trigger's namespace key name another namespace than its ScaledObject's
	// (--allow-cross-namespace). Off by default: KEDA forwards every tenant's ScaledObjects over its one
	// connection, so the scaler cannot tell tenants apart by client certificate, only by the
	// ScaledObject's namespace KEDA reports.
	AllowCrossNamespace bool
}

func allowedMetrics() string {
	names := make([]string, 0, len(metricNames))
	for n := range metricNames {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Parse validates a ScaledObjectRef's metadata in one place; errors are gRPC InvalidArgument
// naming the ScaledObject (scaledobject <namespace>/<name>: …), the key and what it allows, since KEDA
// logs them far from the ScaledObject that caused them.
func Parse(ref *externalscaler.ScaledObjectRef, o Options) (Trigger, error) {
	if ref == nil {
		return Trigger{}, invalidArgument{invalid("no scaledObjectRef")}
	}
	t, err := parse(ref, o)
	if err != nil {
		return Trigger{}, invalidArgument{fmt.Errorf("scaledobject %s/%s: %w", Clip(ref.GetNamespace()), Clip(ref.GetName()), err)}
	}
	return t, nil
}

func parse(ref *externalscaler.ScaledObjectRef, o Options) (Trigger, error) {
	md := ref.GetScalerMetadata()
	if len(md) > MaxMetadataKeys {
		return Trigger{}, invalid("%d keys; at most %d (tokenscale reads 7, KEDA 3 more)", len(md), MaxMetadataKeys)
	}
	for k, v := range md {
		switch k {
		case KeyPool, KeyNamespace, KeyMetric, KeyTarget, KeyActivationThreshold, KeyActivationPool, KeyActivationMetric:
		default:
			if kedaAuthKeys[k] {
				// Its value, a path or a key's PEM, is not repeated.
				return Trigger{}, invalid("%q is KEDA's own TLS setting, which KEDA reads only from a TriggerAuthentication (its authenticationRef) and ignores in the trigger's metadata: move it there (docs/keda.md)", k)
			}
			if !kedaKeys[k] {
				return Trigger{}, invalid("unknown key %q; allowed: %s, %s, %s, %s, %s, %s, %s", Clip(k),
					KeyPool, KeyNamespace, KeyMetric, KeyTarget, KeyActivationThreshold, KeyActivationPool, KeyActivationMetric)
			}
		}
		if len(v) > MaxMetadataLen {
			return Trigger{}, invalid("%q is %q: longer than %d bytes", k, Clip(v), MaxMetadataLen)
		}
	}
	t := Trigger{Namespace: strings.TrimSpace(md[KeyNamespace]), Pool: strings.TrimSpace(md[KeyPool])}
	if t.Namespace == "" {
		t.Namespace = ref.GetNamespace()
	}
	if t.Namespace == "" {
		return Trigger{}, invalid("%q is empty and the ScaledObject has no namespace", KeyNamespace)
	}
	if t.Pool == "" {
		return Trigger{}, invalid("%q is required: the name of a pool in the tokenscale config (e.g. prefill)", KeyPool)
	}
	if err := dnsLabel(KeyNamespace, t.Namespace); err != nil {
		return Trigger{}, err
	}
	if t.Namespace != ref.GetNamespace() && !o.AllowCrossNamespace {
		// Whoever may create a ScaledObject in one namespace would otherwise read every other namespace's
		// pools: KEDA asks on behalf of all of them with the same credentials.
		return Trigger{}, invalid("%q is %q, not the ScaledObject's own namespace %q: a trigger reads only its own namespace's pools unless the scaler runs with --allow-cross-namespace",
			KeyNamespace, t.Namespace, Clip(ref.GetNamespace()))
	}
	if err := dnsLabel(KeyPool, t.Pool); err != nil {
		return Trigger{}, err
	}
	var err error
	if t.MetricName, t.Metric, err = metric(md, KeyMetric, "desiredReplicas"); err != nil {
		return Trigger{}, err
	}
	defTarget := ""
	if t.Metric == service.Desired {
		defTarget = "1" // with the default AverageValue metric type the HPA then holds replicas = desired
	}
	if t.Target, err = number(md, KeyTarget, defTarget, false); err != nil {
		return Trigger{}, err
	}
	if t.ActivationThreshold, err = number(md, KeyActivationThreshold, "0", true); err != nil {
		return Trigger{}, err
	}
	t.ActivationPool = strings.TrimSpace(md[KeyActivationPool])
	if t.ActivationPool == "" {
		t.ActivationPool = t.Pool
	} else if err := dnsLabel(KeyActivationPool, t.ActivationPool); err != nil {
		return Trigger{}, err
	}
	if t.ActivationMetricName, t.ActivationMetric, err = metric(md, KeyActivationMetric, "arrivalVelocity"); err != nil {
		return Trigger{}, err
	}
	// A trimmed value is a substring of the request's: a copy keeps a StreamIsActive stream, which holds
	// its Trigger for as long as KEDA runs, from pinning the whole padded value.
	t.Namespace, t.Pool = strings.Clone(t.Namespace), strings.Clone(t.Pool)
	if t.ActivationPool == t.Pool {
		t.ActivationPool = t.Pool // the pool's copy: one allocation fewer on every poll
	} else {
		t.ActivationPool = strings.Clone(t.ActivationPool)
	}
	return t, nil
}

func metric(md map[string]string, key, def string) (string, service.PoolMetric, error) {
	name := strings.TrimSpace(md[key])
	if name == "" {
		name = def
	}
	m, ok := metricNames[name]
	if !ok {
		return "", "", invalid("%q is %q; allowed: %s", key, Clip(name), allowedMetrics())
	}
	// The map's own key, not the trimmed value: that is a substring of the request (see parse).
	for n := range metricNames {
		if n == name {
			name = n
			break
		}
	}
	return name, m, nil
}

// number parses a finite float: > 0, or >= 0 when zeroOK. def "" makes the key required.
func number(md map[string]string, key, def string, zeroOK bool) (float64, error) {
	s := strings.TrimSpace(md[key])
	if s == "" {
		if def == "" {
			return 0, invalid("%q is required for this metric: the value per replica the HPA should hold", key)
		}
		s = def
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || (!zeroOK && v < minTarget) || v > service.MaxValue {
		// Above MaxValue the target would overflow KEDA's int64 TargetSize; below minTarget KEDA writes the
		// HPA's averageValue as 0 (it renders three decimals), which the API server rejects.
		want := "a number >= 0.001 and at most 1e15"
		if zeroOK {
			want = "a number >= 0 and at most 1e15"
		}
		return 0, invalid("%q is %q; want %s", key, Clip(s), want)
	}
	return v, nil
}

// dnsLabel refuses a pool or namespace name that no pool could have (pool names and namespaces are DNS
// labels): such a name would otherwise reach the HPA inside the announced metric name, which the API
// server rejects with an error that never mentions this trigger.
func dnsLabel(key, v string) error {
	if len(validation.IsDNS1123Label(v)) > 0 {
		return invalid("%q is %q; want a DNS label (lower-case letters, digits and '-', at most 63 characters), as pool names and namespaces are", key, Clip(v))
	}
	return nil
}

// MaxMetadataKeys and MaxMetadataLen bound a trigger's metadata (a longer key is unknown, so refused
// anyway): every value is a name, a number or KEDA's scalerAddress (a DNS name of at most 253 bytes and a
// port), so a larger one can only be hostile.
const (
	MaxMetadataKeys = 32
	MaxMetadataLen  = 512
)

// maxEcho bounds how much of a metadata key or value an error repeats: KEDA logs every error on every
// poll, and a value may be megabytes.
const maxEcho = 100

// Clip shortens s for an error message or a log line, cut on a character's boundary, with every character
// that is not printable escaped (engine.PrintableWithin): a ScaledObject's name from any client that
// reaches the port could hold a newline and forge the log lines after it (real KEDA sends only names the
// API server accepted).
func Clip(s string) string {
	if len(s) <= maxEcho {
		return engine.PrintableWithin(s, 4*maxEcho) // every byte fits escaped
	}
	return engine.PrintableWithin(strings.ToValidUTF8(s[:maxEcho], ""), 4*maxEcho) + fmt.Sprintf("… (%d bytes)", len(s))
}

// minTarget is the least target KEDA can write into an HPA: it renders the value with three decimals.
const minTarget = 0.001

// String describes the trigger for logs.
func (t Trigger) String() string {
	return fmt.Sprintf("%s/%s %s target %g (active: %s/%s %s > %g)", t.Namespace, t.Pool, t.MetricName, t.Target,
		t.Namespace, t.ActivationPool, t.ActivationMetricName, t.ActivationThreshold)
}
