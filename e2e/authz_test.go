//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tokenscale/tokenscale/adapter"
	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

// A ServiceAccount without RBAC for custom.metrics.k8s.io gets 403 through the aggregator; once bound to a
// reader role, the same request is answered.
func TestAuthzForbidsWithoutRBAC(t *testing.T) {
	const ns = "authz"
	k := namespace(t, ns)
	deployment(t, ns, "llama-prefill", "prefill", fakeengine.VLLMV1, 1)
	k.SetLoad("prefill", fakeengine.Load{PromptTokensPerSec: 1000})
	c := suite.cp.Client
	if _, err := c.CoreV1().ServiceAccounts(ns).Create(suite.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CoreV1().ServiceAccounts(ns).CreateToken(suite.ctx, "nobody", &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(&rest.Config{Host: suite.cp.Server, BearerToken: tok.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: suite.cp.CAFile}})
	if err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/%s", ns, adapter.PrefillVelocity)
	get := func() error {
		_, err := sa.Discovery().RESTClient().Get().AbsPath(path).Param("labelSelector", "llm-d.ai/role=prefill").DoRaw(suite.ctx)
		return err
	}
	if err := get(); statusCode(err) != http.StatusForbidden {
		t.Fatalf("ServiceAccount without RBAC: got %v (code %d), want 403", err, statusCode(err))
	}
	kubectl(t, `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-custom-metrics-reader}
rules: [{apiGroups: [custom.metrics.k8s.io], resources: ["*"], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: nobody-reads-metrics, namespace: authz}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-custom-metrics-reader}
subjects: [{kind: ServiceAccount, name: nobody, namespace: authz}]
`, "apply", "-f", "-")
	eventually(t, 30*time.Second, "the bound ServiceAccount reads the metric", get)
}
