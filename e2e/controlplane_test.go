//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

// The harness's control plane runs the real deployment controller, and the fake kubelet makes its pods
// Running and Ready on their own loopback addresses.
func TestControlPlaneRunsControllers(t *testing.T) {
	namespace(t, "cp-smoke")
	deployment(t, "cp-smoke", "smoke", "prefill", fakeengine.VLLMV1, 2)
	eventually(t, 60*time.Second, "2 Ready pods with distinct IPs", func() error {
		pods, err := suite.cp.Client.CoreV1().Pods("cp-smoke").List(suite.ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		ips := map[string]bool{}
		for _, p := range pods.Items {
			if p.Status.PodIP != "" {
				ips[p.Status.PodIP] = true
			}
		}
		if len(pods.Items) != 2 || len(ips) != 2 {
			return fmt.Errorf("%d pods, %d distinct IPs", len(pods.Items), len(ips))
		}
		return nil
	})
}
