// Package converter turns idle decoders into prefill helpers during a burst (convertible decoders)
// without ever converting more pods than the policy asked for.
//
// The mechanism is a lease on each chosen pod, written centrally and acted on locally:
//   - the controller (one per cluster, next to the policy) picks which decode pods convert and writes
//     AnnotationConvertUntil on exactly that many, renewing it once a third of it has run; it removes it when fewer are
//     wanted;
//   - the node agent (a DaemonSet) acts only on pods of its own node that carry an unexpired lease: it
//     verifies the pod can produce KV, that its owner does not select on a label the flip changes, and
//     that its GPUs have headroom (PodResources + NVML), flips it with an Actuator, and reports the outcome in AnnotationStatus; a pod without a live lease is
//     flipped back;
//   - so converted pods are a subset of leased pods, and leased pods never exceed the policy's number. A
//     lost controller stops renewing, the leases expire and every agent converts back (fail safe).
package converter

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// podRef names a pod in messages.
func podRef(pod *corev1.Pod) string { return fmt.Sprintf("%s/%s", pod.Namespace, pod.Name) }
