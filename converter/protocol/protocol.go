// Package protocol is the convertible-decoder protocol written on pods: the annotations the converter's
// controller and node agents exchange, their status and refusal values, and PoolLabels, which keeps a
// converted decoder in its decode pool. It imports nothing else of tokenscale, so the pod lister of the
// adapter and the KEDA scaler can use it without linking the converter.
package protocol

import (
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Pod annotations and the capability declaration of the protocol.
const (
	// AnnotationConvertUntil (written by the controller) asks the pod's agent to keep the pod converted
	// until this RFC 3339 time; the controller renews it while the conversion is wanted.
	AnnotationConvertUntil = "tokenscale.io/convert-until"
	// AnnotationStatus (written by the agent): "converted", "decode" or "refused: <reason>".
	AnnotationStatus = "tokenscale.io/conversion"
	// AnnotationFlippedAt (written by the agent): RFC 3339 time of the pod's last flip, so the minimum
	// interval between flips survives agent restarts.
	AnnotationFlippedAt = "tokenscale.io/flipped-at"
	// AnnotationStatusAt (written by the agent): when AnnotationStatus last changed; the controller backs
	// off from a pod that refused recently.
	AnnotationStatusAt = "tokenscale.io/conversion-at"
	// AnnotationConvertedFrom (written with the label by the label actuator, in the same patch):
	// "key=value", the role label the pod had before conversion. tokenscale keeps a converted pod in the
	// pool that label selects (it still decodes), although the router now sees the converted value.
	AnnotationConvertedFrom = "tokenscale.io/converted-from"
	// AnnotationKVProducer declares that the pod's engine can produce KV for other decoders (vLLM
	// kv_producer or kv_both, SGLang started with --enable-pd-role-switch). Without "true" a pod is never
	// converted: a kv_consumer-only engine cannot serve remote prefill.
	AnnotationKVProducer = "tokenscale.io/kv-producer"
)

// Status values of AnnotationStatus.
const (
	StatusConverted = "converted"
	StatusDecode    = "decode"
	refusedPrefix   = "refused: "
)

// Refusal reasons an agent records (also the values of the refusals metric's reason label).
const (
	ReasonNotKVProducer = "not-kv-producer"
	ReasonNoGPUs        = "no-gpus"
	ReasonMemoryShort   = "memory-short"
	ReasonBusy          = "gpu-busy"
	ReasonUnhealthy     = "gpu-unhealthy"
	ReasonNVMLError     = "nvml-error"
	ReasonTooSoon       = "flipped-too-recently"
	ReasonActuator      = "actuator-failed"
	// ReasonOwnerSelector: the pod's ReplicaSet or StatefulSet selects on the label a conversion flips.
	ReasonOwnerSelector = "owner-selector"
	// ReasonAlreadyConverted: the pod's label already shows it converted without an agent's status (its
	// owner deployed it so, or someone else flipped it); it is left as it is, never taken over.
	ReasonAlreadyConverted = "already-converted"
)

// Refused formats a refusal status.
func Refused(reason, detail string) string {
	if detail == "" {
		return refusedPrefix + reason
	}
	return refusedPrefix + reason + " (" + detail + ")"
}

// IsRefused reports whether a status is a refusal.
func IsRefused(status string) bool { return strings.HasPrefix(status, refusedPrefix) }

// RefusalReason returns a refusal status's reason (a Reason* constant), or "" for any other status.
func RefusalReason(status string) string {
	rest, ok := strings.CutPrefix(status, refusedPrefix)
	if !ok {
		return ""
	}
	reason, _, _ := strings.Cut(rest, " ")
	return reason
}

// LeaseUntil returns the pod's conversion lease, if it has a valid one.
func LeaseUntil(pod *corev1.Pod) (time.Time, bool) {
	v, ok := pod.Annotations[AnnotationConvertUntil]
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
}

// Leased reports whether the pod holds an unexpired conversion lease at now.
func Leased(pod *corev1.Pod, now time.Time) bool {
	t, ok := LeaseUntil(pod)
	return ok && now.Before(t)
}

// DefaultMaxLease bounds how far ahead a lease may end: the controller never writes a later end, and an
// agent ignores one (a bad clock or a hand-written lease must not pin a pod converted for hours).
const DefaultMaxLease = 2 * time.Minute

// LeasedWithin reports whether the pod holds an unexpired lease that ends at most maxAhead after now; a
// lease ending later is invalid. maxAhead <= 0 means no bound.
func LeasedWithin(pod *corev1.Pod, now time.Time, maxAhead time.Duration) bool {
	t, ok := LeaseUntil(pod)
	return ok && now.Before(t) && (maxAhead <= 0 || !t.After(now.Add(maxAhead)))
}

// FlippedAt returns the pod's last flip time as recorded by an agent.
func FlippedAt(pod *corev1.Pod) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, pod.Annotations[AnnotationFlippedAt])
	return t, err == nil
}

// MaxClockSkew is how far ahead of a reader's clock a time written on a pod may be and still count:
// agents on other nodes write them with their own clocks. A time further ahead is a wrong clock or a hand
// edit, and read as recent it would hold a pod out of conversions for good.
const MaxClockSkew = time.Minute

// Within reports whether at is less than d before now and not more than MaxClockSkew after it.
func Within(at, now time.Time, d time.Duration) bool {
	return now.Sub(at) < d && at.Sub(now) <= MaxClockSkew
}

// Heartbeat is how often an agent writes conversion-at again on a pod it keeps converted, and
// HeartbeatStale how old that time may grow before the controller reads the agent as gone: it renews
// no lease of such a pod, which would otherwise stay converted, its headroom unchecked, for as long as
// conversions were wanted after its agent died without reverting it (an OOM kill, a node's agent
// deleted).
const (
	Heartbeat      = time.Minute
	HeartbeatStale = 5 * Heartbeat
)

// Silent reports a pod recorded converted whose agent has not written its status within
// HeartbeatStale (or whose status time is missing, or further ahead than clocks differ).
func Silent(pod *corev1.Pod, now time.Time) bool {
	if pod.Annotations[AnnotationStatus] != StatusConverted {
		return false
	}
	at, ok := StatusAt(pod)
	return !ok || !Within(at, now, HeartbeatStale)
}

// StatusAt returns when the pod's status last changed, or, for a converted pod, when its agent last
// said it still holds it (Heartbeat).
func StatusAt(pod *corev1.Pod) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, pod.Annotations[AnnotationStatusAt])
	return t, err == nil
}

// PoolLabels returns the labels that decide a pod's pool: its labels, with the role label a label
// actuator changed put back to its value before conversion.
func PoolLabels(pod *corev1.Pod) map[string]string {
	from, ok := pod.Annotations[AnnotationConvertedFrom]
	k, v, found := strings.Cut(from, "=")
	if !ok || !found {
		return pod.Labels
	}
	if _, has := pod.Labels[k]; !has {
		return pod.Labels
	}
	out := make(map[string]string, len(pod.Labels))
	for lk, lv := range pod.Labels {
		out[lk] = lv
	}
	out[k] = v
	return out
}

// FormatTime is the protocol's time format.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
