package converter

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FuzzSGLangSwitchReply checks the agent's reading of any answer an engine's /pd_role_switch gives: a
// switch is taken only on a 2xx whose JSON says success true and names no other role; a 2xx that does
// not say (unreadable, no success) is no answer, never a refusal, since the engine may have switched; a
// redirect reached no switch; and every error names the pod and stays short and printable, as it is
// logged and written into the pod's status.
func FuzzSGLangSwitchReply(f *testing.F) {
	f.Add(200, []byte(`{"success": true, "new_role": "prefill"}`), "", false)
	f.Add(202, []byte(`{"success": true}`), "", true)
	f.Add(400, []byte(`{"success": false, "message": "not idle"}`), "", false)
	f.Add(404, []byte(`{"detail": "Not Found"}`), "", false)
	f.Add(200, []byte(`null`), "", false)
	f.Add(302, []byte(""), "http://elsewhere/\x1b[2J", false)
	f.Add(503, []byte("<html>\n"), "", true)
	f.Fuzz(func(t *testing.T, code int, body []byte, location string, revert bool) {
		code = 100 + (code%500+500)%500 // 100..599
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "ns"}, Status: corev1.PodStatus{PodIP: "10.0.0.1"}}
		rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			h := http.Header{}
			if location != "" {
				h.Set("Location", location)
			}
			return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader(string(body))), Request: r}, nil
		})
		a := &SGLangActuator{HTTP: &http.Client{Transport: rt}, Timeout: time.Hour}
		role, act := "prefill", a.Convert
		if revert {
			role, act = "decode", a.Revert
		}
		err := act(context.Background(), pod)
		var reply roleSwitchReply // read as the agent reads it: what is checked is what it makes of it
		parsed := json.Unmarshal(body, &reply) == nil
		ok := code >= 200 && code < 300
		if err == nil {
			if !ok || !parsed || reply.Success == nil || !*reply.Success || reply.NewRole != "" && reply.NewRole != role {
				t.Fatalf("HTTP %d %q taken as a switch to %s", code, body, role)
			}
			return
		}
		if ok && parsed && reply.Success != nil && *reply.Success && (reply.NewRole == "" || reply.NewRole == role) {
			t.Fatalf("HTTP %d %q refused: %v", code, body, err)
		}
		noAnswer, unchanged := errors.Is(err, ErrNoAnswer), errors.Is(err, ErrUnchanged)
		if ok && (!parsed || reply.Success == nil) && !noAnswer {
			t.Fatalf("HTTP %d %q, which does not say, read as a refusal: %v", code, body, err)
		}
		if noAnswer && (unchanged || !ok) {
			t.Fatalf("HTTP %d: an error both without an answer and unchanged, or no answer on a non-2xx: %v", code, err)
		}
		if code >= 300 && code < 400 && !unchanged {
			t.Fatalf("a redirect (HTTP %d) not read as reaching no switch: %v", code, err)
		}
		m := err.Error()
		if !strings.Contains(m, "ns/d") || len(m) > 1200 || !utf8.ValidString(m) || strings.ContainsAny(m, "\n\r\x1b") {
			t.Fatalf("error of %d bytes, not naming the pod or not printable: %q", len(m), m)
		}
	})
}
