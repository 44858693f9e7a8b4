package converter

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
)

// relabeler is an actuator that converts a pod by changing its labels.
type relabeler interface {
	// ConvertedLabels returns the labels the pod would carry once converted.
	ConvertedLabels(pod *corev1.Pod) map[string]string
	// FlippedByAgent reports whether the pod shows the actuator's own conversion.
	FlippedByAgent(pod *corev1.Pod) bool
}

// ConvertedLabels is the pod's labels with the role label at its converted value.
func (a *LabelActuator) ConvertedLabels(pod *corev1.Pod) map[string]string {
	out := make(map[string]string, len(pod.Labels)+1)
	for k, v := range pod.Labels {
		out[k] = v
	}
	out[a.Key] = a.ConvertedVal
	return out
}

// ownerKeeps reports whether the pod's controlling ReplicaSet or StatefulSet still selects it with the
// labels a conversion gives it. A workload that selects on the flipped label (llm-d-modelservice's decode
// Deployment selects on llm-d.ai/role) lets go of the converted pod and starts a replacement, a new
// decoder asking for a GPU, and on revert deletes one of the two. Other owners, and pods with none, are
// not checked. detail says why not, or what could not be read.
func ownerKeeps(ctx context.Context, c kubernetes.Interface, pod *corev1.Pod, after map[string]string) (ok bool, detail string) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return true, ""
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil || gv.Group != "apps" {
		return true, ""
	}
	var sel *metav1.LabelSelector
	switch ref.Kind {
	case "ReplicaSet":
		rs, err := c.AppsV1().ReplicaSets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return false, fmt.Sprintf("reading its ReplicaSet %s: %v", ref.Name, err)
		}
		sel = rs.Spec.Selector
	case "StatefulSet":
		ss, err := c.AppsV1().StatefulSets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return false, fmt.Sprintf("reading its StatefulSet %s: %v", ref.Name, err)
		}
		sel = ss.Spec.Selector
	default:
		return true, ""
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, fmt.Sprintf("%s %s has a selector that does not parse: %v", ref.Kind, ref.Name, err)
	}
	if s.Matches(labels.Set(after)) {
		return true, ""
	}
	return false, fmt.Sprintf("%s %s selects %s: converted, the pod would leave it and it would start a replacement; flip a label outside the selector", ref.Kind, ref.Name, s)
}
