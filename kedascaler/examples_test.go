package kedascaler

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"sigs.k8s.io/yaml"

	"github.com/tokenscale/tokenscale/kedascaler/trigger"
)

// Every shipped ScaledObject trigger that points at the scaler turns TLS on with enableTLS, and the
// scaler accepts its metadata. KEDA dials TLS only for enableTLS or a non-empty caCert or client
// certificate, and reads a missing Secret or key as "": a misnamed CA Secret would then connect in
// plaintext and fail with "error reading server preface" rather than naming the certificate.
func TestExampleTriggersEnableTLS(t *testing.T) {
	files, err := filepath.Glob("../manifests/examples/keda/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	triggers := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(b), "\n---") {
			var obj struct {
				Kind     string
				Metadata struct{ Name string }
				Spec     struct {
					Triggers []struct {
						Type              string
						Metadata          map[string]string
						AuthenticationRef *struct{ Name string } `json:"authenticationRef"`
					}
				}
			}
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if obj.Kind != "ScaledObject" {
				continue
			}
			for i, tr := range obj.Spec.Triggers {
				if (tr.Type != "external" && tr.Type != "external-push") || !strings.HasPrefix(tr.Metadata["scalerAddress"], "tokenscale-keda-scaler.") {
					continue
				}
				triggers++
				where := fmt.Sprintf("%s trigger %d", filepath.Base(f), i)
				if tr.Metadata["enableTLS"] != "true" {
					t.Errorf("%s: enableTLS %q; want \"true\"", where, tr.Metadata["enableTLS"])
				}
				if tr.AuthenticationRef == nil || tr.AuthenticationRef.Name != "tokenscale-keda-scaler" {
					t.Errorf("%s: authenticationRef %+v; want the example TriggerAuthentication (the scaler's CA)", where, tr.AuthenticationRef)
				}
				ref := &externalscaler.ScaledObjectRef{Name: obj.Metadata.Name, Namespace: "llm-d", ScalerMetadata: tr.Metadata}
				if _, err := trigger.Parse(ref, trigger.Options{}); err != nil {
					t.Errorf("%s: the scaler refuses the metadata: %v", where, err)
				}
			}
		}
	}
	if triggers < 2 {
		t.Errorf("%d triggers pointing at the scaler in %v; want the prefill and decode examples'", triggers, files)
	}
}
