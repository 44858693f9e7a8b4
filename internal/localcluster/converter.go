package localcluster

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// InstallConverter applies manifests/overlays/converter (RBAC, admission policies, the controller
// Deployment and agent DaemonSet, which stay Pending here: no kubelet serves namespace tokenscale) and
// builds the tokenscale-converter binary into dir. It returns the binary's path.
func (s *Stack) InstallConverter(dir string) (string, error) {
	out, err := exec.Command(s.KubectlPath(), "kustomize", filepath.Join(s.o.RepoRoot, "manifests/overlays/converter")).Output()
	if err != nil {
		return "", fmt.Errorf("kubectl kustomize manifests/overlays/converter: %w", err)
	}
	if msg, err := s.Kubectl(string(out), "apply", "-f", "-"); err != nil {
		return "", fmt.Errorf("applying the converter manifests: %w\n%s", err, msg)
	}
	bin := filepath.Join(dir, "tokenscale-converter")
	build := exec.Command(Go(), "build", "-o", bin, "./cmd/tokenscale-converter")
	build.Dir = s.o.RepoRoot
	if msg, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the converter: %w\n%s", err, msg)
	}
	return bin, nil
}

// AgentClient registers a GPU node and a placeholder converter-agent pod bound to it, and returns a client
// whose token is bound to that pod, as the DaemonSet pod's projected token is, so the admission policies
// see the node's name. cleanup deletes the pod and the node.
func (s *Stack) AgentClient(ctx context.Context, dir, node string) (c kubernetes.Interface, cleanup func(), err error) {
	client := s.CP.Client
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node,
		Labels: map[string]string{"nvidia.com/gpu.present": "true"}}}, metav1.CreateOptions{}); err != nil {
		return nil, nil, fmt.Errorf("creating node %s: %w", node, err)
	}
	pod, err := client.CoreV1().Pods("tokenscale").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "converter-agent-" + node},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "tokenscale-converter-agent",
			Containers: []corev1.Container{{Name: "agent", Image: "tokenscale-converter"}}},
	}, metav1.CreateOptions{})
	cleanup = func() {
		if pod != nil {
			_ = client.CoreV1().Pods("tokenscale").Delete(context.Background(), pod.Name, metav1.DeleteOptions{})
		}
		_ = client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{})
	}
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("creating the agent pod on %s: %w", node, err)
	}
	hour := int64(3600)
	tok, err := client.CoreV1().ServiceAccounts("tokenscale").CreateToken(ctx, "tokenscale-converter-agent", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &hour,
			BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("agent token for %s: %w", node, err)
	}
	path := filepath.Join(dir, node+".kubeconfig")
	if err := s.WriteTokenKubeconfig(path, "agent-"+node, tok.Status.Token, s.CP.CAFile); err != nil {
		cleanup()
		return nil, nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err == nil {
		c, err = kubernetes.NewForConfig(cfg)
	}
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return c, cleanup, nil
}
