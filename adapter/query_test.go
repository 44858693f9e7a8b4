package adapter

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A selector that does not parse is a 400 naming the parameter, in short printable text, and never
// reaches the library (which answers a bad metricLabelSelector with a 500 and repeats a selector whole);
// one that parses, and any request outside the metrics APIs, is passed on as it came.
func TestCheckSelectors(t *testing.T) {
	const pods = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/*/" + PrefillVelocity
	const ext = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/" + DesiredReplicas
	huge := "pool in (" + strings.Repeat("\x1b[2J\u202e", 20000)
	for _, c := range []struct {
		path, param, value string
		refused            bool
	}{
		{pods, "metricLabelSelector", "a in (", true},
		{pods, "labelSelector", "llm-d.ai/role=prefill", false},
		{pods, "labelSelector", "role==", false}, // "==" is equality, and parses
		{pods, "labelSelector", huge, true},
		{pods, "fieldSelector", "metadata.name", true},
		{pods, "fieldSelector", "metadata.name=p1", false},
		{pods, "metricLabelSelector", "x notin (a,b)", false},
		{ext, "labelSelector", "pool in (prefill", true},
		{ext, "labelSelector", "pool in (prefill)", false},
		{"/apis/custom.metrics.k8s.io/v1beta1/namespaces/llm/pods/*/m", "labelSelector", "!!", true},
		{"/healthz", "labelSelector", "!!", false},
		{"/apis/apps/v1/deployments", "labelSelector", "!!", false},
	} {
		passed := false
		h := CheckSelectors(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { passed = true }))
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, c.path+"?"+url.Values{c.param: {c.value}}.Encode(), nil)
		h.ServeHTTP(w, r)
		name := c.path + " " + c.param + "=" + c.value[:min(len(c.value), 30)]
		if passed == c.refused {
			t.Errorf("%s: passed on %v, want %v", name, passed, !c.refused)
			continue
		}
		if !c.refused {
			continue
		}
		var st metav1.Status
		if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil || w.Code != http.StatusBadRequest || st.Code != http.StatusBadRequest || st.Reason != metav1.StatusReasonBadRequest {
			t.Errorf("%s: %d %s (%v), want a 400 Status", name, w.Code, w.Body.String(), err)
			continue
		}
		if !strings.Contains(st.Message, c.param) || len(st.Message) > 1024 ||
			strings.IndexFunc(st.Message, func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) }) >= 0 {
			t.Errorf("%s: message of %d bytes %.300q; want it short, printable and naming %s", name, len(st.Message), st.Message, c.param)
		}
	}
}
