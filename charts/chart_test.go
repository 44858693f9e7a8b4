// Package charts tests the Helm chart against the kustomize manifests it must stay equivalent to.
package charts

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/tokenscale/tokenscale/velocity/config"
)

type obj = map[string]any

const noHelm = "TOKENSCALE_HELM is unset: set it to a helm v3 binary to render the chart " +
	"(`bash hack/build-helm.sh` builds one from the Go module proxy and prints its path; `make chart` runs this test with it)"

// Each case renders the chart with some values and the kustomize overlay it must match.
var equivalents = []struct {
	overlay string
	set     []string
}{
	{"overlays/default", nil},
	{"overlays/external-metrics", []string{"externalMetrics.enabled=true"}},
	{"overlays/keda", []string{"adapter.enabled=false", "kedaScaler.enabled=true"}},
	{"overlays/adapter-and-keda", []string{"kedaScaler.enabled=true"}},
	{"overlays/converter", []string{"adapter.enabled=false", "converter.enabled=true"}},
	{"overlays/monitoring", []string{"monitoring.enabled=true"}},
}

// notInChart are the overlays the chart has no values for, and why.
var notInChart = map[string]string{
	"overlays/e2e": "a local control plane's: the adapter runs as a process, no Deployment",
}

// Every overlay is compared with the chart, or says why not: a new overlay must not escape the check.
func TestChartCoversEveryOverlay(t *testing.T) {
	dirs, err := os.ReadDir(filepath.Join("..", "manifests", "overlays"))
	if err != nil {
		t.Fatal(err)
	}
	compared := map[string]bool{}
	for _, c := range equivalents {
		compared[c.overlay] = true
	}
	for _, d := range dirs {
		name := "overlays/" + d.Name()
		if d.IsDir() && !compared[name] && notInChart[name] == "" {
			t.Errorf("%s is neither compared with the chart (equivalents) nor listed in notInChart with a reason", name)
		}
	}
}

// TestChartMatchesKustomize: the chart installs the same objects as the overlays (kinds, names,
// namespaces, images, args, RBAC rules, APIService specs, the pool config), apart from the Namespace
// object (helm install --create-namespace makes it) and the extra labels Helm adds.
func TestChartMatchesKustomize(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	for _, c := range equivalents {
		t.Run(strings.ReplaceAll(c.overlay, "/", "-"), func(t *testing.T) {
			want, err := kustomize(filepath.Join("..", "manifests", c.overlay))
			if err != nil {
				t.Fatalf("kustomize %s: %v", c.overlay, err)
			}
			got := render(t, helm, c.set...)
			compare(t, got, want)
		})
	}
}

// TestChartCertManager: in cert-manager mode the aggregator verifies the adapter: no APIService skips
// verification, each gets its CA from the serving Certificate, whose Secret the adapter serves from. The
// KEDA scaler's certificate is issued from the same CA into the Secret the scaler mounts.
func TestChartCertManager(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	got := render(t, helm, "tls.mode=cert-manager", "externalMetrics.enabled=true", "kedaScaler.enabled=true")
	cert := got["Certificate/tokenscale/tokenscale-adapter-serving"]
	if cert == nil {
		t.Fatalf("no serving Certificate; objects: %v", keys(got))
	}
	if s := str(cert, "spec", "secretName"); s != "tokenscale-adapter-serving-cert" {
		t.Errorf("serving Certificate's secretName %q", s)
	}
	if dns := fmt.Sprint(get(cert, "spec", "dnsNames")); !strings.Contains(dns, "tokenscale-adapter.tokenscale.svc") {
		t.Errorf("serving Certificate's dnsNames %s lack tokenscale-adapter.tokenscale.svc", dns)
	}
	for _, n := range []string{"Issuer/tokenscale/tokenscale-selfsigned", "Certificate/tokenscale/tokenscale-ca", "Issuer/tokenscale/tokenscale-ca"} {
		if got[n] == nil {
			t.Errorf("no %s", n)
		}
	}
	apiservices := 0
	for k, o := range got {
		if !strings.HasPrefix(k, "APIService/") {
			continue
		}
		apiservices++
		if v := get(o, "spec", "insecureSkipTLSVerify"); v != nil {
			t.Errorf("%s: insecureSkipTLSVerify %v in cert-manager mode", k, v)
		}
		if a := str(o, "metadata", "annotations", "cert-manager.io/inject-ca-from"); a != "tokenscale/tokenscale-adapter-serving" {
			t.Errorf("%s: inject-ca-from %q", k, a)
		}
	}
	if apiservices != 3 {
		t.Errorf("%d APIServices, want 3", apiservices)
	}
	dep := got["Deployment/tokenscale/tokenscale-adapter"]
	c := get(dep, "spec", "template", "spec", "containers").([]any)[0].(obj)
	args := fmt.Sprint(c["args"])
	for _, a := range []string{"--tls-cert-file=/var/run/serving-cert/tls.crt", "--tls-private-key-file=/var/run/serving-cert/tls.key", "--external-metrics"} {
		if !strings.Contains(args, a) {
			t.Errorf("adapter args %s lack %s", args, a)
		}
	}
	vols := fmt.Sprint(get(dep, "spec", "template", "spec", "volumes"))
	if !strings.Contains(vols, "secretName:tokenscale-adapter-serving-cert") {
		t.Errorf("adapter volumes %s do not mount the serving Secret", vols)
	}
	checkScalerCert(t, got, "tokenscale-keda-scaler-tls", "tokenscale-ca")

	// Prometheus checks the adapter's certificate against the chart's CA before it sends its token; with a
	// user's issuer, which may leave ca.crt out of the Secret, it does not.
	tlsOf := func(got map[string]obj) string {
		ep := get(got["ServiceMonitor/tokenscale/tokenscale-adapter"], "spec", "endpoints").([]any)[0].(obj)
		return fmt.Sprint(ep["tlsConfig"])
	}
	got = render(t, helm, "tls.mode=cert-manager", "monitoring.enabled=true")
	if tc := tlsOf(got); !strings.Contains(tc, "key:ca.crt name:tokenscale-adapter-serving-cert") || !strings.Contains(tc, "serverName:tokenscale-adapter.tokenscale.svc") || strings.Contains(tc, "insecureSkipVerify") {
		t.Errorf("cert-manager mode: the ServiceMonitor's tlsConfig %s, want the serving Secret's ca.crt and the Service's name", tc)
	}
	got = render(t, helm, "tls.mode=cert-manager", "monitoring.enabled=true", "tls.certManager.issuerRef.name=corp-ca", "tls.certManager.issuerRef.kind=ClusterIssuer")
	if tc := tlsOf(got); !strings.Contains(tc, "insecureSkipVerify:true") {
		t.Errorf("cert-manager mode with a user's issuer: the ServiceMonitor's tlsConfig %s", tc)
	}

	// The scaler alone: the chart's CA and the scaler's certificate, nothing of the adapter's; the Secret's
	// name follows kedaScaler.tls.secretName.
	got = render(t, helm, "tls.mode=cert-manager", "adapter.enabled=false", "kedaScaler.enabled=true", "kedaScaler.tls.secretName=scaler-tls")
	checkScalerCert(t, got, "scaler-tls", "tokenscale-ca")
	if got["Certificate/tokenscale/tokenscale-adapter-serving"] != nil {
		t.Error("the adapter's serving Certificate is rendered although the adapter is not")
	}
	for _, n := range []string{"Issuer/tokenscale/tokenscale-selfsigned", "Certificate/tokenscale/tokenscale-ca", "Issuer/tokenscale/tokenscale-ca"} {
		if got[n] == nil {
			t.Errorf("scaler only: no %s", n)
		}
	}
	// In insecure mode the chart issues nothing: the scaler's Secret is made by hand, as with kustomize.
	got = render(t, helm, "kedaScaler.enabled=true")
	for k := range got {
		if strings.HasPrefix(k, "Certificate/") || strings.HasPrefix(k, "Issuer/") {
			t.Errorf("tls.mode=insecure renders %s", k)
		}
	}
	// A user's issuer replaces the chart's own CA.
	got = render(t, helm, "tls.mode=cert-manager", "tls.certManager.issuerRef.name=corp-ca", "tls.certManager.issuerRef.kind=ClusterIssuer")
	if got["Issuer/tokenscale/tokenscale-ca"] != nil {
		t.Error("the chart's CA is rendered although an issuerRef is given")
	}
	if n := str(got["Certificate/tokenscale/tokenscale-adapter-serving"], "spec", "issuerRef", "name"); n != "corp-ca" {
		t.Errorf("serving Certificate's issuer %q, want corp-ca", n)
	}
	got = render(t, helm, "tls.mode=cert-manager", "kedaScaler.enabled=true", "tls.certManager.issuerRef.name=corp-ca", "tls.certManager.issuerRef.kind=ClusterIssuer")
	checkScalerCert(t, got, "tokenscale-keda-scaler-tls", "corp-ca")
	if got["Certificate/tokenscale/tokenscale-keda-client"] != nil {
		t.Error("a client Certificate is rendered although the scaler does not require one")
	}

	// Required client certificates: the chart issues KEDA's from the scaler's issuer, for client auth only.
	for _, c := range []struct {
		set            []string
		secret, issuer string
	}{
		{nil, "tokenscale-keda-client", "tokenscale-ca"},
		{[]string{"kedaScaler.tls.clientSecretName=keda-client", "tls.certManager.issuerRef.name=corp-ca", "tls.certManager.issuerRef.kind=ClusterIssuer"}, "keda-client", "corp-ca"},
	} {
		got = render(t, helm, append([]string{"tls.mode=cert-manager", "adapter.enabled=false", "kedaScaler.enabled=true", "kedaScaler.tls.requireClientCert=true"}, c.set...)...)
		checkScalerCert(t, got, "tokenscale-keda-scaler-tls", c.issuer)
		cert := got["Certificate/tokenscale/tokenscale-keda-client"]
		if cert == nil {
			t.Errorf("%v: no client Certificate; objects: %v", c.set, keys(got))
			continue
		}
		if s := str(cert, "spec", "secretName"); s != c.secret {
			t.Errorf("%v: client Certificate's secretName %q, want %q", c.set, s, c.secret)
		}
		if n := str(cert, "spec", "issuerRef", "name"); n != c.issuer {
			t.Errorf("%v: client Certificate's issuer %q, want %q", c.set, n, c.issuer)
		}
		if u := fmt.Sprint(get(cert, "spec", "usages")); u != "[digital signature client auth]" {
			t.Errorf("%v: client Certificate's usages %s, want client auth only", c.set, u)
		}
		if get(cert, "spec", "dnsNames") != nil {
			t.Errorf("%v: client Certificate names DNS names: %v", c.set, get(cert, "spec", "dnsNames"))
		}
		args := fmt.Sprint(get(got["Deployment/tokenscale/tokenscale-keda-scaler"], "spec", "template", "spec", "containers").([]any)[0].(obj)["args"])
		if !strings.Contains(args, "--client-ca-file=/etc/tokenscale-tls/ca.crt") {
			t.Errorf("%v: the scaler does not check client certificates: args %s", c.set, args)
		}
	}
	// In insecure mode the chart issues nothing, the client certificate included.
	got = render(t, helm, "kedaScaler.enabled=true", "kedaScaler.tls.requireClientCert=true")
	if got["Certificate/tokenscale/tokenscale-keda-client"] != nil {
		t.Error("tls.mode=insecure renders a client Certificate")
	}
}

// checkScalerCert: the KEDA scaler's Certificate is issued by issuer for its Service's DNS name into
// secret, and the scaler serves from that Secret.
func checkScalerCert(t *testing.T, got map[string]obj, secret, issuer string) {
	t.Helper()
	cert := got["Certificate/tokenscale/tokenscale-keda-scaler"]
	if cert == nil {
		t.Errorf("no KEDA scaler Certificate; objects: %v", keys(got))
		return
	}
	if s := str(cert, "spec", "secretName"); s != secret {
		t.Errorf("KEDA scaler Certificate's secretName %q, want %q", s, secret)
	}
	if dns := fmt.Sprint(get(cert, "spec", "dnsNames")); !strings.Contains(dns, "tokenscale-keda-scaler.tokenscale.svc") {
		t.Errorf("KEDA scaler Certificate's dnsNames %s lack tokenscale-keda-scaler.tokenscale.svc", dns)
	}
	if n := str(cert, "spec", "issuerRef", "name"); n != issuer {
		t.Errorf("KEDA scaler Certificate's issuer %q, want %q", n, issuer)
	}
	dep := got["Deployment/tokenscale/tokenscale-keda-scaler"]
	vols := fmt.Sprint(get(dep, "spec", "template", "spec", "volumes"))
	if !strings.Contains(vols, "secretName:"+secret+"]") {
		t.Errorf("KEDA scaler volumes %s do not mount the Secret %s", vols, secret)
	}
	args := fmt.Sprint(get(dep, "spec", "template", "spec", "containers").([]any)[0].(obj)["args"])
	for _, a := range []string{"--tls-cert-file=/etc/tokenscale-tls/tls.crt", "--tls-private-key-file=/etc/tokenscale-tls/tls.key"} {
		if !strings.Contains(args, a) {
			t.Errorf("KEDA scaler args %s lack %s", args, a)
		}
	}
}

// TestChartRefusesBadValues: the chart fails clearly on a value it cannot honour.
func TestChartRefusesBadValues(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	// Each error must name what to change.
	for _, c := range []struct {
		set  []string
		want string
	}{
		{[]string{"tls.mode=verify"}, "tls.mode"},
		{[]string{"logging.format=xml"}, "logging.format"},
		{[]string{"adapter.enabled=false", "externalMetrics.enabled=true"}, "needs adapter.enabled"},
		{[]string{"adapter.enabled=false"}, "enable"},
		{[]string{"kedaScaler.enabled=true", "kedaScaler.tls.secretName="}, "kedaScaler.tls.secretName"},
		{[]string{"kedaScaler.enabled=true", "kedaScaler.maxStreams=0"}, "kedaScaler.maxStreams 0 would refuse every stream"},
		{[]string{"kedaScaler.enabled=true", "tls.mode=cert-manager", "kedaScaler.tls.requireClientCert=true", "kedaScaler.tls.clientSecretName="}, "kedaScaler.tls.clientSecretName is empty"},
		{[]string{"kedaScaler.enabled=true", "tls.mode=cert-manager", "kedaScaler.tls.requireClientCert=true", "kedaScaler.tls.clientSecretName=tokenscale-keda-scaler-tls"}, "would replace that one"},
		{[]string{"kedaScaler.enabled=true", "tls.mode=cert-manager", "kedaScaler.tls.requireClientCert=true", "kedaScaler.tls.clientSecretName=tokenscale-ca"}, "its CA's tokenscale-ca"},
		{[]string{"kedaScaler.enabled=true", "tls.mode=cert-manager", "kedaScaler.tls.requireClientCert=true", "kedaScaler.tls.clientSecretName=tokenscale-adapter-serving-cert"}, "would replace that one"},
		{[]string{"converter.enabled=true", "converter.controller.leaderElection=false"}, "needs converter.controller.leaderElection"},
		{[]string{"converter.enabled=true", "converter.agent.minFlipInterval=10s"}, "converter.minFlipInterval"},
		{[]string{"converter.enabled=true", "converter.agent.actuator=label"}, "converter.admissionPolicies=false"},
		{[]string{"converter.enabled=true", "converter.agent.actuator=sglang-pd"}, "want llm-d, label or sglang"},
		{[]string{"adapter.podDisruptionBudget.minAvailable=50%"}, "whole number of pods"},
		// What every binary refuses at start, which crash-looped its pod.
		{[]string{"adapter.goMemLimit=900Mi"}, "GOMEMLIMIT takes a number of bytes"},
		{[]string{"converter.enabled=true", "converter.controller.goMemLimit=1G"}, "converter.controller.goMemLimit"},
		{[]string{"adapter.logLevel=-1"}, "adapter.logLevel -1: want a whole number from 0"},
		{[]string{"kedaScaler.enabled=true", "kedaScaler.logLevel=1.5"}, "kedaScaler.logLevel 1.5"},
		{[]string{"kedaScaler.enabled=true", "kedaScaler.maxStreams=1.5"}, "kedaScaler.maxStreams 1.5: want a whole number"},
		{[]string{"kedaScaler.enabled=true", "kedaScaler.keepalive.time=30"}, "kedaScaler.keepalive.time"},
		{[]string{"kedaScaler.enabled=true", "kedaScaler.keepalive.timeout=0s"}, "kedaScaler.keepalive.timeout"},
		{[]string{"kedaScaler.enabled=true", "kedaScaler.metricsAddress=:8081"}, "other than the scaler's gRPC 9090 and probe 8081"},
		{[]string{"kedaScaler.enabled=true", "kedaScaler.metricsAddress=8080"}, "want HOST:PORT"},
		{[]string{"kedaScaler.enabled=true", "kedaScaler.podDisruptionBudget.minAvailable=50%"}, "kedaScaler.podDisruptionBudget.minAvailable"},
		{[]string{"kedaScaler.enabled=true", "tls.mode=cert-manager", "kedaScaler.tls.secretName=tokenscale-ca"}, "kedaScaler.tls.secretName"},
		// What the converter's binaries refuse at start, which crash-looped their pods.
		{[]string{"converter.enabled=true", "converter.controller.lease=5m"}, `converter.controller.lease "5m" is longer than converter.maxLease "2m"`},
		{[]string{"converter.enabled=true", "converter.maxLease=10"}, `converter.maxLease "10": want a duration with its unit`},
		{[]string{"converter.enabled=true", "converter.maxLease=25h"}, "want at most 24h"},
		{[]string{"converter.enabled=true", "converter.controller.lease=500ms"}, "want at least 1s"},
		{[]string{"converter.enabled=true", "converter.minFlipInterval=0s"}, "converter.minFlipInterval"},
		{[]string{"converter.enabled=true", "converter.agent.recheckInterval=soon"}, "converter.agent.recheckInterval"},
		{[]string{"converter.enabled=true", "converter.controller.maxFraction=1.5"}, "converter.controller.maxFraction 1.5: want 0..1"},
		{[]string{"converter.enabled=true", "converter.agent.minFreeGiB=-1"}, "converter.agent.minFreeGiB"},
		{[]string{"converter.enabled=true", "converter.agent.maxUtilisation=-5"}, "converter.agent.maxUtilisation"},
		{[]string{"converter.enabled=true", "converter.agent.maxUtilisation=95.5"}, "whole percentage"},
	} {
		out, err := exec.Command(helm, helmArgs(c.set)...).CombinedOutput()
		if err == nil {
			t.Errorf("--set %v rendered; want an error", c.set)
		} else if !bytes.Contains(out, []byte(c.want)) {
			t.Errorf("--set %v: unclear error (want %q in it): %s", c.set, c.want, out)
		}
	}
}

func helmArgs(set []string) []string {
	args := []string{"template", "tokenscale", "tokenscale", "--namespace", "tokenscale"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return args
}

func render(t *testing.T, helm string, set ...string) map[string]obj {
	t.Helper()
	cmd := exec.Command(helm, helmArgs(set)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template --set %v: %v\n%s", set, err, stderr.String())
	}
	objs, err := decode(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("helm template output: %v", err)
	}
	return index(t, objs)
}

func compare(t *testing.T, got map[string]obj, want []obj) {
	t.Helper()
	wantIdx := map[string]obj{}
	for _, o := range want {
		if o["kind"] == "Namespace" {
			continue // the chart installs into --namespace (helm install --create-namespace)
		}
		wantIdx[key(o)] = o
	}
	if g, w := keys(got), keys(wantIdx); !reflect.DeepEqual(g, w) {
		t.Fatalf("objects differ:\n chart:     %v\n kustomize: %v", g, w)
	}
	for k, w := range wantIdx {
		g := got[k]
		// Helm adds labels; every label kustomize sets must be there too (but the ConfigMap's, whose
		// app.kubernetes.io/name names the base that happens to include it).
		if w["kind"] != "ConfigMap" {
			gl, _ := get(g, "metadata", "labels").(obj)
			wl, _ := get(w, "metadata", "labels").(obj)
			for lk, lv := range wl {
				if gl[lk] != lv {
					t.Errorf("%s: label %s=%v, kustomize has %v", k, lk, gl[lk], lv)
				}
			}
		}
		g, w = normalise(g, true), normalise(w, false)
		if w["kind"] == "ConfigMap" {
			var gc, wc any
			if err := yaml.Unmarshal([]byte(str(g, "data", "config.yaml")), &gc); err != nil {
				t.Fatalf("%s: chart config.yaml: %v", k, err)
			}
			if err := yaml.Unmarshal([]byte(str(w, "data", "config.yaml")), &wc); err != nil {
				t.Fatalf("%s: kustomize config.yaml: %v", k, err)
			}
			if !reflect.DeepEqual(gc, wc) {
				t.Errorf("%s: config.yaml differs:\n chart:     %v\n kustomize: %v", k, gc, wc)
			}
			delete(g["data"].(obj), "config.yaml")
			delete(w["data"].(obj), "config.yaml")
		}
		if !reflect.DeepEqual(g, w) {
			gy, wy := dump(g), dump(w)
			t.Errorf("%s differs:\n--- chart\n%s\n--- kustomize\n%s", k, gy, wy)
		}
	}
}

// normalise drops what legitimately differs: labels and annotations (checked above), pod template labels
// (the chart's are a superset of the selector's), and the chart's imagePullPolicy.
func normalise(o obj, chart bool) obj {
	o = deepCopy(o).(obj)
	md := o["metadata"].(obj)
	delete(md, "labels")
	delete(md, "annotations")
	if tmpl, ok := get(o, "spec", "template").(obj); ok {
		if tm, ok := tmpl["metadata"].(obj); ok {
			sel, _ := get(o, "spec", "selector", "matchLabels").(obj)
			tl, _ := tm["labels"].(obj)
			for k, v := range sel {
				if tl[k] != v {
					tm["labels"] = fmt.Sprintf("missing selector label %s=%v", k, v) // shows in the diff
					return o
				}
			}
			delete(tm, "labels")
			if a, ok := tm["annotations"].(obj); ok {
				delete(a, "checksum/scrape") // the chart's restart on a scrape change; kustomize users restart by hand
				if len(a) == 0 {
					delete(tm, "annotations")
				}
			}
			if len(tm) == 0 {
				delete(tmpl, "metadata")
			}
		}
		if spec, ok := tmpl["spec"].(obj); ok && chart {
			for _, c := range spec["containers"].([]any) {
				delete(c.(obj), "imagePullPolicy")
			}
		}
	}
	return o
}

// kustomization is what manifests/ uses of kustomize's kustomization.yaml.
type kustomization struct {
	Resources  []string `json:"resources"`
	Components []string `json:"components"`
	Images     []struct {
		Name, NewName, NewTag string
	} `json:"images"`
	Labels []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
	Patches []struct {
		Patch  string `json:"patch"`
		Target struct {
			Kind, Name string
		} `json:"target"`
	} `json:"patches"`
}

func readKustomization(dir string) (*kustomization, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	var all map[string]any
	if err := yaml.Unmarshal(raw, &all); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	for f := range all {
		switch f {
		case "apiVersion", "kind", "resources", "components", "images", "labels", "patches":
		default:
			return nil, fmt.Errorf("%s: kustomization field %q is not handled by this test's kustomize", dir, f)
		}
	}
	var k kustomization
	if err := yaml.Unmarshal(raw, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return &k, nil
}

// kustomize builds a kustomization the way `kubectl kustomize` does for what manifests/ uses: resources
// (files and directories), components (their resources join, then their patches and images apply to the
// including kustomization's objects), JSON 6902 patches with a target, images, and labels without
// selectors. Anything else fails, so a new kustomize feature in manifests/ must be taught here.
func kustomize(dir string) ([]obj, error) {
	k, err := readKustomization(dir)
	if err != nil {
		return nil, err
	}
	objs, err := resources(dir, k)
	if err != nil {
		return nil, err
	}
	for _, c := range k.Components {
		cdir := filepath.Join(dir, c)
		ck, err := readKustomization(cdir)
		if err != nil {
			return nil, err
		}
		if len(ck.Components) > 0 {
			return nil, fmt.Errorf("%s: nested components are not handled by this test's kustomize", cdir)
		}
		own, err := resources(cdir, ck)
		if err != nil {
			return nil, err
		}
		if objs, err = transform(cdir, ck, append(objs, own...)); err != nil {
			return nil, err
		}
	}
	return transform(dir, k, objs)
}

func resources(dir string, k *kustomization) ([]obj, error) {
	var objs []obj
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		var more []obj
		if st.IsDir() {
			more, err = kustomize(p)
		} else {
			more, err = decodeFile(p)
		}
		if err != nil {
			return nil, err
		}
		objs = append(objs, more...)
	}
	return objs, nil
}

func transform(dir string, k *kustomization, objs []obj) ([]obj, error) {
	for _, p := range k.Patches {
		if p.Target.Kind == "" {
			return nil, fmt.Errorf("%s: a patch without a target (strategic merge) is not handled by this test's kustomize", dir)
		}
		var ops []struct {
			Op, Path string
			Value    any
		}
		if err := yaml.Unmarshal([]byte(p.Patch), &ops); err != nil {
			return nil, fmt.Errorf("%s: patch: %w", dir, err)
		}
		for _, o := range objs {
			if o["kind"] != p.Target.Kind || (p.Target.Name != "" && str(o, "metadata", "name") != p.Target.Name) {
				continue
			}
			for _, op := range ops {
				if err := jsonPatch(o, op.Op, op.Path, op.Value); err != nil {
					return nil, fmt.Errorf("%s: %w", dir, err)
				}
			}
		}
	}
	for _, img := range k.Images {
		for _, o := range objs {
			spec, _ := get(o, "spec", "template", "spec").(obj)
			if spec == nil {
				continue
			}
			for _, c := range spec["containers"].([]any) {
				if c.(obj)["image"] == img.Name {
					c.(obj)["image"] = img.NewName + ":" + img.NewTag
				}
			}
		}
	}
	for _, l := range k.Labels {
		if l.IncludeSelectors {
			return nil, fmt.Errorf("%s: labels with includeSelectors are not handled by this test's kustomize", dir)
		}
		for _, o := range objs {
			md := o["metadata"].(obj)
			ls, _ := md["labels"].(obj)
			if ls == nil {
				ls = obj{}
				md["labels"] = ls
			}
			for lk, lv := range l.Pairs {
				ls[lk] = lv
			}
		}
	}
	return objs, nil
}

// jsonPatch applies one RFC 6902 add or replace whose path is a chain of object keys and array indexes,
// ending in an index or "-" (append).
func jsonPatch(o obj, op, path string, value any) error {
	if op != "add" && op != "replace" {
		return fmt.Errorf("JSON patch op %q is not handled by this test's kustomize", op)
	}
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	var parent any = o
	for _, p := range parts[:len(parts)-1] {
		switch c := parent.(type) {
		case obj:
			parent = c[p]
		case []any:
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 || n >= len(c) {
				return fmt.Errorf("JSON patch path %s: bad index %q", path, p)
			}
			parent = c[n]
		default:
			return fmt.Errorf("JSON patch path %s: nothing at %q", path, p)
		}
	}
	last := parts[len(parts)-1]
	switch c := parent.(type) {
	case obj:
		c[last] = value
		return nil
	case []any:
		if last == "-" && op == "add" {
			// The grown slice replaces the old one in its own parent.
			return jsonPatch(o, "replace", "/"+strings.Join(parts[:len(parts)-1], "/"), append(c, value))
		}
		n, err := strconv.Atoi(last)
		if err != nil || n < 0 || n >= len(c) {
			return fmt.Errorf("JSON patch path %s: bad index %q", path, last)
		}
		c[n] = value
		return nil
	}
	return fmt.Errorf("JSON patch path %s: nothing at %q", path, last)
}

func decodeFile(p string) ([]obj, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	objs, err := decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return objs, nil
}

func decode(r io.Reader) ([]obj, error) {
	yr := yaml.NewYAMLReader(bufio.NewReader(r))
	var objs []obj
	for {
		doc, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		var o obj
		if err := yaml.Unmarshal(doc, &o); err != nil {
			return nil, err
		}
		if len(o) > 0 {
			objs = append(objs, o)
		}
	}
}

func index(t *testing.T, objs []obj) map[string]obj {
	t.Helper()
	m := map[string]obj{}
	for _, o := range objs {
		k := key(o)
		if m[k] != nil {
			t.Fatalf("two objects %s", k)
		}
		m[k] = o
	}
	return m
}

func key(o obj) string {
	return fmt.Sprintf("%v/%s/%s", o["kind"], str(o, "metadata", "namespace"), str(o, "metadata", "name"))
}

func keys(m map[string]obj) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func get(o any, path ...string) any {
	for _, p := range path {
		m, ok := o.(obj)
		if !ok {
			return nil
		}
		o = m[p]
	}
	return o
}

func str(o any, path ...string) string {
	s, _ := get(o, path...).(string)
	return s
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case obj:
		c := obj{}
		for k, e := range x {
			c[k] = deepCopy(e)
		}
		return c
	case []any:
		c := make([]any, len(x))
		for i, e := range x {
			c[i] = deepCopy(e)
		}
		return c
	}
	return v
}

func dump(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// The sglang actuator changes no label, only the agent's status annotations, which the admission
// policies allow: the chart renders it with them (the label actuator it refuses, TestChartRefusesBadValues).
func TestChartSGLangActuatorKeepsTheAdmissionPolicies(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	objs := render(t, helm, "converter.enabled=true", "converter.agent.actuator=sglang")
	if objs["ValidatingAdmissionPolicy//tokenscale-converter-agent"] == nil {
		t.Errorf("no agent admission policy with the sglang actuator; objects: %v", keys(objs))
	}
	agent, _ := json.Marshal(objs["DaemonSet/tokenscale/tokenscale-converter-agent"])
	if !bytes.Contains(agent, []byte("--actuator=sglang")) {
		t.Errorf("the agent DaemonSet does not pass --actuator=sglang:\n%s", agent)
	}
}

// logging.format=json reaches every container of every component.
func TestChartJSONLogging(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	out, err := exec.Command(helm, helmArgs([]string{"logging.format=json", "kedaScaler.enabled=true", "converter.enabled=true"})...).CombinedOutput()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	// adapter, KEDA scaler, converter controller and agent
	if n := bytes.Count(out, []byte("- --logging-format=json\n")); n != 4 {
		t.Errorf("--logging-format=json in %d containers, want 4", n)
	}
}

// monitoring.dashboard.enabled renders manifests/grafana's dashboard for Grafana's sidecar, byte for byte.
func TestChartDashboard(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	want, err := os.ReadFile(filepath.Join("..", "manifests", "grafana", "tokenscale-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	got := render(t, helm, "monitoring.dashboard.enabled=true")["ConfigMap/tokenscale/tokenscale-dashboard"]
	if got == nil {
		t.Fatal("no dashboard ConfigMap")
	}
	if l := str(got, "metadata", "labels", "grafana_dashboard"); l != "1" {
		t.Errorf("grafana_dashboard label %q, want 1 (the sidecar's default)", l)
	}
	g, w := str(got, "data", "tokenscale-dashboard.json"), string(want)
	if len(w) < 1000 || strings.TrimSpace(g) != strings.TrimSpace(w) {
		t.Errorf("dashboard JSON differs from manifests/grafana's (%d vs %d bytes)", len(g), len(w))
	}
	if objs := render(t, helm); objs["ConfigMap/tokenscale/tokenscale-dashboard"] != nil {
		t.Error("dashboard rendered by default")
	}
}

// The KEDA scaler's container declares its metrics port, which the monitoring PodMonitor scrapes by name,
// only where --metrics-address leaves loopback.
func TestChartKEDAScalerMetricsPort(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	for _, tc := range []struct {
		addr, want string
	}{
		{"127.0.0.1:8080", ""},
		{":8080", "- {name: metrics, containerPort: 8080}"},
		{"0.0.0.0:9100", "- {name: metrics, containerPort: 9100}"},
	} {
		out, err := exec.Command(helm, helmArgs([]string{"kedaScaler.enabled=true", "monitoring.enabled=true", "kedaScaler.metricsAddress=" + tc.addr})...).CombinedOutput()
		if err != nil {
			t.Fatalf("helm template: %v\n%s", err, out)
		}
		has := bytes.Contains(out, []byte("name: metrics, containerPort"))
		if tc.want == "" && has || tc.want != "" && !bytes.Contains(out, []byte(tc.want)) {
			t.Errorf("metricsAddress %s: metrics port declared %v, want %q", tc.addr, has, tc.want)
		}
	}
}

// Integer flags render as integers when the values come from a file, where YAML numbers are floats and
// Go templates print a million as 1e+06, which the binaries' integer flags refuse.
func TestChartIntegerFlagsFromAValuesFile(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte("kedaScaler: {enabled: true, maxStreams: 1000000}\nconverter: {enabled: true, agent: {maxUtilisation: 80}}\nadapter: {logLevel: 4}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(helm, append(helmArgs(nil), "-f", values)...).CombinedOutput()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	for _, want := range []string{"- --max-streams=1000000\n", "- --max-utilisation=80\n", "- --v=4\n"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("rendered chart lacks %q", strings.TrimSpace(want))
		}
	}
}

// kedaScaler.allowCrossNamespace adds --allow-cross-namespace; by default it is absent, so a ScaledObject
// reads only its own namespace's pools.
func TestChartAllowCrossNamespace(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	for _, c := range []struct {
		set  []string
		want bool
	}{{[]string{"kedaScaler.enabled=true"}, false}, {[]string{"kedaScaler.enabled=true", "kedaScaler.allowCrossNamespace=true"}, true}} {
		out, err := exec.Command(helm, helmArgs(c.set)...).CombinedOutput()
		if err != nil {
			t.Fatalf("helm template %v: %v\n%s", c.set, err, out)
		}
		if got := bytes.Contains(out, []byte("- --allow-cross-namespace\n")); got != c.want {
			t.Errorf("%v: --allow-cross-namespace rendered %v, want %v", c.set, got, c.want)
		}
	}
}

// A budget one pod must keep would block every drain of its node: for the adapter, the KEDA scaler and
// the converter's controller, with one replica no PodDisruptionBudget is rendered, with two it is.
func TestChartBudgetsNeedASpareReplica(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	// Each workload with a budget: the values that enable it and set its replicas, and the budget's name.
	for _, w := range []struct{ enable, replicas, name string }{
		{"", "adapter.replicas", "tokenscale-adapter"},
		{"kedaScaler.enabled=true", "kedaScaler.replicas", "tokenscale-keda-scaler"},
		{"converter.enabled=true", "converter.controller.replicas", "tokenscale-converter-controller"},
	} {
		for replicas, want := range map[string]bool{"1": false, "2": true} {
			set := []string{w.replicas + "=" + replicas}
			if w.enable != "" {
				set = append(set, w.enable)
			}
			if w.replicas == "converter.controller.replicas" && replicas == "1" {
				set = append(set, "converter.controller.leaderElection=false")
			}
			got := render(t, helm, set...)["PodDisruptionBudget/tokenscale/"+w.name] != nil
			if got != want {
				t.Errorf("%s=%s: PodDisruptionBudget %s rendered %v, want %v", w.replicas, replicas, w.name, got, want)
			}
		}
	}
}

// scrapeTLS.secretName mounts the engines' CA Secret in every component that scrapes, where
// config.scrape.tls can name its files; by default nothing is mounted.
func TestChartScrapeTLS(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	scrapers := []string{"tokenscale-adapter", "tokenscale-keda-scaler", "tokenscale-converter-controller"}
	for _, secret := range []string{"engine-ca", ""} {
		got := render(t, helm, "kedaScaler.enabled=true", "converter.enabled=true", "scrapeTLS.secretName="+secret)
		for _, name := range scrapers {
			d := got["Deployment/tokenscale/"+name]
			if d == nil {
				t.Fatalf("no Deployment %s", name)
			}
			mounted, volume := "", ""
			containers, _ := get(d, "spec", "template", "spec", "containers").([]any)
			for _, c := range containers {
				mounts, _ := get(c, "volumeMounts").([]any)
				for _, m := range mounts {
					if str(m, "name") == "scrape-tls" {
						mounted = str(m, "mountPath")
					}
				}
			}
			volumes, _ := get(d, "spec", "template", "spec", "volumes").([]any)
			for _, v := range volumes {
				if str(v, "name") == "scrape-tls" {
					volume = str(v, "secret", "secretName")
				}
			}
			want := ""
			if secret != "" {
				want = "/etc/tokenscale-scrape-tls"
			}
			if mounted != want || volume != secret {
				t.Errorf("secretName %q: %s mounts %q from Secret %q, want %q from %q", secret, name, mounted, volume, want, secret)
			}
		}
	}
}

// TestChartRestartsOnScrapeChange: a reload refuses a change to config.scrape, so the pods that read it
// carry its checksum and restart when a helm upgrade changes it; a pool change is reloaded in place.
func TestChartRestartsOnScrapeChange(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	all := []string{"kedaScaler.enabled=true,converter.enabled=true"}
	base := render(t, helm, all...)
	scrape := render(t, helm, append(all, "config.scrape.port=30000")...)
	pools := render(t, helm, append(all, "config.policy.scaleDownWindow=120s")...)
	n := 0
	for k, o := range base {
		sum := str(o, "spec", "template", "metadata", "annotations", "checksum/scrape")
		if sum == "" {
			continue
		}
		n++
		if str(scrape[k], "spec", "template", "metadata", "annotations", "checksum/scrape") == sum {
			t.Errorf("%s: checksum/scrape unchanged by a new scrape.port", k)
		}
		if str(pools[k], "spec", "template", "metadata", "annotations", "checksum/scrape") != sum {
			t.Errorf("%s: checksum/scrape changed by a policy edit, which is reloaded without a restart", k)
		}
	}
	if n != 3 {
		t.Errorf("%d workloads carry checksum/scrape, want 3 (the adapter, the KEDA scaler, the converter's controller)", n)
	}
}

// Every workload can be placed: each one's nodeSelector and tolerations values reach its pod template
// (the converter's controller had neither, so clusters whose nodes need a toleration could not schedule it).
func TestChartPlacesEveryWorkload(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	workloads := map[string]string{ // values prefix: the workload it places
		"adapter":              "Deployment/tokenscale/tokenscale-adapter",
		"kedaScaler":           "Deployment/tokenscale/tokenscale-keda-scaler",
		"converter.controller": "Deployment/tokenscale/tokenscale-converter-controller",
		"converter.agent":      "DaemonSet/tokenscale/tokenscale-converter-agent",
	}
	set := []string{"kedaScaler.enabled=true", "converter.enabled=true"}
	for prefix := range workloads {
		set = append(set, prefix+".nodeSelector.pool="+prefix, prefix+".tolerations[0].key="+prefix, prefix+".tolerations[0].operator=Exists")
	}
	got := render(t, helm, set...)
	for prefix, k := range workloads {
		o := got[k]
		if o == nil {
			t.Errorf("%s: not rendered (have %v)", k, keys(got))
			continue
		}
		spec := get(o, "spec", "template", "spec")
		if v := get(spec, "nodeSelector", "pool"); v != prefix {
			t.Errorf("%s: nodeSelector pool = %v, want %q from %s.nodeSelector", k, v, prefix, prefix)
		}
		tol, _ := get(spec, "tolerations").([]any)
		found := false
		for _, x := range tol {
			found = found || get(x, "key") == prefix
		}
		if !found {
			t.Errorf("%s: tolerations %v, want one with key %q from %s.tolerations", k, tol, prefix, prefix)
		}
	}
}

// Every component's log verbosity can be set from values; at 0 the flag is left out, as the manifests
// leave it.
func TestChartLogLevels(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	got := render(t, helm, "kedaScaler.enabled=true", "converter.enabled=true",
		"kedaScaler.logLevel=2", "converter.controller.logLevel=3", "converter.agent.logLevel=4")
	for k, want := range map[string]string{
		"Deployment/tokenscale/tokenscale-keda-scaler":          "--v=2",
		"Deployment/tokenscale/tokenscale-converter-controller": "--v=3",
		"DaemonSet/tokenscale/tokenscale-converter-agent":       "--v=4",
	} {
		containers, _ := get(got[k], "spec", "template", "spec", "containers").([]any)
		if len(containers) == 0 {
			t.Errorf("%s: no containers rendered", k)
			continue
		}
		if args := fmt.Sprint(get(containers[0], "args")); !strings.Contains(args, want) {
			t.Errorf("%s: args %s, want %s", k, args, want)
		}
	}
}

// The rendered config is one every component accepts, at the default scrape interval and at 500 ms, which
// the docs suggest for a faster signal: the values set the timeout to 800 ms, longer than that interval,
// so such an install had every component refuse its config at start.
func TestChartConfigParses(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	for _, set := range [][]string{nil, {"config.scrape.interval=500ms"}, {"config.scrape.interval=10s"}} {
		var cm obj
		for _, o := range render(t, helm, set...) {
			if o["kind"] == "ConfigMap" && str(o, "metadata", "name") == "tokenscale-config" {
				cm = o
			}
		}
		text := str(cm, "data", "config.yaml")
		if text == "" {
			t.Fatalf("--set %v: no tokenscale-config ConfigMap with a config.yaml", set)
		}
		if _, err := config.Parse([]byte(text)); err != nil {
			t.Errorf("--set %v: the rendered config is refused: %v", set, err)
		}
	}
}

// The adapter's ServiceMonitor authorizes with a token Secret the chart makes, of a ServiceAccount bound to
// the ClusterRole that may GET /metrics, not with bearerTokenFile (deprecated, and refused where the
// Prometheus Operator denies monitors file access).
func TestChartServiceMonitorToken(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	objs := render(t, helm, "monitoring.enabled=true")
	sm := objs["ServiceMonitor/tokenscale/tokenscale-adapter"]
	eps, _ := get(sm, "spec", "endpoints").([]any)
	if len(eps) != 1 {
		t.Fatalf("ServiceMonitor endpoints %v, want one", eps)
	}
	if f := get(eps[0], "bearerTokenFile"); f != nil {
		t.Errorf("bearerTokenFile %v is set", f)
	}
	secret := objs["Secret/tokenscale/"+str(eps[0], "authorization", "credentials", "name")]
	if str(eps[0], "authorization", "credentials", "key") != "token" || str(secret, "type") != "kubernetes.io/service-account-token" {
		t.Fatalf("authorization %v names no service-account-token Secret's token", get(eps[0], "authorization"))
	}
	sa := str(secret, "metadata", "annotations", "kubernetes.io/service-account.name")
	if _, ok := objs["ServiceAccount/tokenscale/"+sa]; !ok {
		t.Fatalf("the token Secret's ServiceAccount %q is not rendered", sa)
	}
	bound := false
	for _, o := range objs {
		if o["kind"] != "ClusterRoleBinding" {
			continue
		}
		role := objs["ClusterRole//"+str(o, "roleRef", "name")]
		rules, _ := get(role, "rules").([]any)
		subs, _ := get(o, "subjects").([]any)
		for _, s := range subs {
			if str(s, "kind") == "ServiceAccount" && str(s, "namespace") == "tokenscale" && str(s, "name") == sa &&
				len(rules) == 1 && fmt.Sprint(get(rules[0], "nonResourceURLs"), get(rules[0], "verbs")) == "[/metrics] [get]" {
				bound = true
			}
		}
	}
	if !bound {
		t.Errorf("no ClusterRoleBinding gives ServiceAccount %q GET /metrics and nothing else", sa)
	}
}

// The ServiceMonitor checks the adapter's certificate where the chart knows its CA, and takes the user's
// tlsConfig where it does not (an issuer of theirs): it skipped the check with any issuer but the
// chart's own, with nothing to set, so the scraper's token went to whichever server answered.
func TestChartServiceMonitorTLS(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"monitoring.enabled=true"}, "map[insecureSkipVerify:true]"},
		{[]string{"monitoring.enabled=true", "tls.mode=cert-manager"},
			"map[ca:map[secret:map[key:ca.crt name:tokenscale-adapter-serving-cert]] serverName:tokenscale-adapter.tokenscale.svc]"},
		{[]string{"monitoring.enabled=true", "tls.mode=cert-manager", "tls.certManager.issuerRef.name=corp-ca", "tls.certManager.issuerRef.kind=ClusterIssuer",
			"monitoring.tlsConfig.ca.configMap.name=corp-ca", "monitoring.tlsConfig.ca.configMap.key=ca.crt", "monitoring.tlsConfig.serverName=tokenscale-adapter.tokenscale.svc"},
			"map[ca:map[configMap:map[key:ca.crt name:corp-ca]] serverName:tokenscale-adapter.tokenscale.svc]"},
	} {
		objs := render(t, helm, tc.set...)
		eps, _ := get(objs["ServiceMonitor/tokenscale/tokenscale-adapter"], "spec", "endpoints").([]any)
		if len(eps) != 1 {
			t.Fatalf("--set %v: ServiceMonitor endpoints %v, want one", tc.set, eps)
		}
		if got := fmt.Sprint(get(eps[0], "tlsConfig")); got != tc.want {
			t.Errorf("--set %v: tlsConfig %s, want %s", tc.set, got, tc.want)
		}
	}
}

// extraArgs are strings whatever they look like: rendered bare, an item such as "2" or "true" became a
// number or a boolean in the container's args, and the install failed to decode.
func TestChartExtraArgsStayStrings(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	adapter := render(t, helm, "adapter.extraArgs={--v,2,true}")["Deployment/tokenscale/tokenscale-adapter"]
	if adapter == nil {
		t.Fatal("no adapter Deployment rendered")
	}
	args, _ := get(adapter, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)["args"].([]any)
	var tail []any
	if len(args) >= 3 {
		tail = args[len(args)-3:]
	}
	for _, a := range tail {
		if _, ok := a.(string); !ok {
			t.Errorf("extraArgs rendered %#v (%T): want strings", a, a)
		}
	}
	if fmt.Sprint(tail) != "[--v 2 true]" {
		t.Errorf("the adapter's last args %v; want --v, 2 and true", tail)
	}
}

// The converter's durations are checked as Go reads them: a compound one such as 1m30s (90 s, within a
// maxLease of 1h) renders, and a lease equal to maxLease is allowed, as the binary allows it.
func TestChartConverterDurations(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	for _, set := range [][]string{
		{"converter.enabled=true", "converter.controller.lease=1m30s", "converter.maxLease=1h"},
		{"converter.enabled=true", "converter.controller.lease=2m", "converter.maxLease=120s"},
		{"converter.enabled=true", "converter.controller.lease=1.5s", "converter.maxLease=24h"},
	} {
		out, err := exec.Command(helm, helmArgs(set)...).CombinedOutput()
		if err != nil {
			t.Errorf("helm template %v: %v\n%s", set, err, out)
			continue
		}
		lease := strings.TrimPrefix(set[1], "converter.controller.lease=")
		if !bytes.Contains(out, []byte("- --lease="+lease+"\n")) {
			t.Errorf("%v: --lease=%s not rendered", set, lease)
		}
	}
}

// Values within the binaries' bounds still render: an IPv6 loopback or an open metrics address, no cap on
// streams, and a dashboard without labels of its own.
func TestChartAcceptsTheBinariesValues(t *testing.T) {
	helm := os.Getenv("TOKENSCALE_HELM")
	if helm == "" {
		t.Skip(noHelm)
	}
	for _, set := range [][]string{
		{"kedaScaler.enabled=true", "kedaScaler.metricsAddress=[::1]:8080"},
		{"kedaScaler.enabled=true", "kedaScaler.metricsAddress=0.0.0.0:9100"},
		{"kedaScaler.enabled=true", "kedaScaler.metricsAddress="},
		{"kedaScaler.enabled=true", "kedaScaler.maxStreams=-1", "kedaScaler.logLevel=2"},
		{"monitoring.dashboard.enabled=true", "monitoring.dashboard.labels=null"},
	} {
		if out, err := exec.Command(helm, helmArgs(set)...).CombinedOutput(); err != nil {
			t.Errorf("helm template %v: %v\n%s", set, err, out)
		}
	}
}
