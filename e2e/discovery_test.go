//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// Discovery through the real aggregator lists every metric tokenscale serves, in both API versions.
func TestDiscoveryThroughAggregator(t *testing.T) {
	for _, version := range []string{"v1beta1", "v1beta2"} {
		eventually(t, 90*time.Second, version+" discovery lists our 15 metrics", func() error {
			out, err := kubectlRun("", "get", "--raw", "/apis/custom.metrics.k8s.io/"+version)
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			var list struct {
				Resources []struct{ Name string } `json:"resources"`
			}
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				return err
			}
			names := map[string]bool{}
			for _, r := range list.Resources {
				names[r.Name] = true
			}
			for _, w := range []string{"pods/tokenscale_prefill_tokens_per_second", "deployments.apps/tokenscale_desired_replicas", "statefulsets.apps/tokenscale_predicted_backpressure"} {
				if !names[w] {
					return fmt.Errorf("%s missing from %d resources", w, len(list.Resources))
				}
			}
			if len(list.Resources) != 15 {
				return fmt.Errorf("%d resources, want 15: %v", len(list.Resources), names)
			}
			return nil
		})
	}
}
