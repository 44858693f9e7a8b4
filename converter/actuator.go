package converter

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

// Actuator flips one pod between decode-only and taking prefill work. Both directions are idempotent:
// flipping a pod that is already in the target state succeeds and changes nothing.
type Actuator interface {
	Name() string
	// Converted reports the pod's current state as far as the Kubernetes object shows it.
	Converted(pod *corev1.Pod) bool
	Convert(ctx context.Context, pod *corev1.Pod) error
	Revert(ctx context.Context, pod *corev1.Pod) error
}

// LabelActuator flips a role label: routers that select pods by label (llm-d's EPP re-reads
// llm-d.ai/role on every pod update) start or stop sending prefill work.
type LabelActuator struct {
	Client               kubernetes.Interface
	Key                  string // e.g. llm-d.ai/role
	Decode, ConvertedVal string // e.g. decode, prefill-decode
}

// LLMD is the llm-d actuator: llm-d.ai/role decode <-> prefill-decode.
func LLMD(c kubernetes.Interface) *LabelActuator {
	return &LabelActuator{Client: c, Key: "llm-d.ai/role", Decode: "decode", ConvertedVal: "prefill-decode"}
}

func (a *LabelActuator) Name() string { return "label:" + a.Key }

func (a *LabelActuator) Converted(pod *corev1.Pod) bool { return pod.Labels[a.Key] == a.ConvertedVal }

// FlippedByAgent reports the converted label with protocol.AnnotationConvertedFrom at this actuator's decode
// value: only Convert writes that annotation, in the same patch as the label, so the flip is an agent's.
func (a *LabelActuator) FlippedByAgent(pod *corev1.Pod) bool {
	return a.Converted(pod) && pod.Annotations[protocol.AnnotationConvertedFrom] == a.Key+"="+a.Decode
}

func (a *LabelActuator) Convert(ctx context.Context, pod *corev1.Pod) error {
	// A lease is outside input (anyone who may edit pods can write one): a pod labelled anything but a
	// decoder would be counted in the decode pool once flipped, and labelled a decoder for good at its revert.
	if v := pod.Labels[a.Key]; v != a.Decode && v != a.ConvertedVal {
		return fmt.Errorf("pod %s is labelled %s=%.64q, not %q: only a decoder is converted", podRef(pod), a.Key, v, a.Decode)
	}
	return a.set(ctx, pod, a.ConvertedVal, a.Key+"="+a.Decode)
}

func (a *LabelActuator) Revert(ctx context.Context, pod *corev1.Pod) error {
	if v := pod.Labels[a.Key]; v != a.Decode && v != a.ConvertedVal {
		// Never converted (Convert refuses such a pod): its role is someone else's to keep.
		return nil
	}
	return a.set(ctx, pod, a.Decode, nil)
}

// set writes the label and protocol.AnnotationConvertedFrom in one patch, so tokenscale never sees the pod leave
// its pool between the two.
func (a *LabelActuator) set(ctx context.Context, pod *corev1.Pod, v string, from any) error {
	_, hasFrom := pod.Annotations[protocol.AnnotationConvertedFrom]
	if pod.Labels[a.Key] == v && hasFrom == (from != nil) {
		return nil
	}
	meta := map[string]any{
		"labels":      map[string]string{a.Key: v},
		"annotations": map[string]any{protocol.AnnotationConvertedFrom: from},
	}
	if pod.UID != "" {
		// A precondition: a pod recreated under this name since the copy was read is not flipped.
		meta["uid"] = pod.UID
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	if _, err := a.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1PatchOptions); err != nil {
		return fmt.Errorf("setting %s=%s on pod %s: %w", a.Key, v, podRef(pod), err)
	}
	return nil
}

// SGLangActuator calls SGLang's POST /pd_role_switch on pods started with --enable-pd-role-switch. The
// engine drains first and refuses while busy ("not idle"); the refusal is returned as an error, so the
// agent retries on its next pass. A call that gets no answer returns an error wrapping ErrNoAnswer. The
// pod's state is the agent's status annotation, since the engine's role is not on the pod object.
type SGLangActuator struct {
	Port    int           // the engine's HTTP port (default 30000)
	HTTP    *http.Client  // only its Transport is used (nil: direct, no proxy); the call is one round trip, so a redirect is never followed
	Timeout time.Duration // one call's limit (default 5s)
}

// ErrNoAnswer marks a role switch whose outcome is unknown (a timeout, a transport error, an unreadable
// success reply): the engine may still switch, so the agent keeps the pod converted rather than racing it.
var ErrNoAnswer = errors.New("no answer, the switch may still happen")

// ErrUnchanged marks a role switch that reached no engine's switch: never sent (no IP, the node's
// network), answered by a redirect, or a 4xx that does not say success (no such endpoint, an engine
// started without --enable-pd-role-switch). Nothing is to be undone then; an undo sent the same way failed
// the same way and left the pod marked converted for good. A refusal in words (success false, whatever
// the status: SGLang answers "not idle" with 400) is not one: the engine may have been prefilling already
// (an agent restarted, a switch sent again), so it is undone.
var ErrUnchanged = errors.New("the engine did not switch")

func (a *SGLangActuator) Name() string { return "sglang:/pd_role_switch" }

// Converted is true: the engine's role is not on the pod object, so the agent's status is the record.
func (a *SGLangActuator) Converted(*corev1.Pod) bool { return true }

func (a *SGLangActuator) Convert(ctx context.Context, pod *corev1.Pod) error {
	return a.switchRole(ctx, pod, "prefill")
}

func (a *SGLangActuator) Revert(ctx context.Context, pod *corev1.Pod) error {
	return a.switchRole(ctx, pod, "decode")
}

// roleSwitchReply is SGLang's PdRoleSwitchReqOutput.
type roleSwitchReply struct {
	Success *bool  `json:"success"` // nil: the reply does not say
	Message string `json:"message"`
	OldRole string `json:"old_role"`
	NewRole string `json:"new_role"`
}

func (a *SGLangActuator) switchRole(ctx context.Context, pod *corev1.Pod, role string) error {
	if pod.Status.PodIP == "" {
		return fmt.Errorf("pod %s has no IP: %w", podRef(pod), ErrUnchanged)
	}
	if pod.Spec.HostNetwork {
		// The pod's IP is its node's: the call on the one --sglang-port reaches whichever engine of the node
		// listens there, perhaps a prefill server, while the checks ran on this pod.
		return fmt.Errorf("pod %s uses its node's network: which engine /pd_role_switch on port %d reaches is unknown, so it is not called: %w", podRef(pod), cmp.Or(a.Port, 30000), ErrUnchanged)
	}
	port, timeout := a.Port, a.Timeout
	if port == 0 {
		port = 30000
	}
	if timeout == 0 {
		// The call blocks the agent's loop and must fit its 20 s shutdown budget; a conversion that does not
		// answer in time stays marked converted (ErrNoAnswer), and the agent sends it again (Agent.resend).
		timeout = 5 * time.Second
	}
	// One round trip, not a client's Do: a client parses a redirect's Location before any redirect policy
	// sees it, and a Location it cannot parse came back as a transport error, read as no answer (the switch
	// may still happen) where the engine had answered with a redirect (FuzzSGLangSwitchReply).
	var rt http.RoundTripper = directTransport
	if a.HTTP != nil && a.HTTP.Transport != nil {
		rt = a.HTTP.Transport
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, _ := json.Marshal(map[string]string{"new_role": role})
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(port)) + "/pd_role_switch"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("pod %s: POST /pd_role_switch %s: %w: %w", podRef(pod), role, ErrNoAnswer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return fmt.Errorf("pod %s: /pd_role_switch to %s answered a redirect (HTTP %d to %q), which is not followed: %w", podRef(pod), role, resp.StatusCode, truncate([]byte(resp.Header.Get("Location"))), ErrUnchanged)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("pod %s: reading /pd_role_switch reply: %w: %w", podRef(pod), ErrNoAnswer, err)
	}
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	badRequest := resp.StatusCode >= 400 && resp.StatusCode < 500 // not taken: no such endpoint, a bad call
	var out roleSwitchReply
	if err := json.Unmarshal(raw, &out); err != nil {
		if ok {
			// A success status whose reply cannot be read is no refusal: the engine may have switched.
			err = fmt.Errorf("%w: %w", ErrNoAnswer, err)
		} else if badRequest {
			err = fmt.Errorf("%w: %w", ErrUnchanged, err)
		}
		return fmt.Errorf("pod %s: /pd_role_switch answered HTTP %d with %q: %w", podRef(pod), resp.StatusCode, truncate(raw), err)
	}
	if ok && out.Success == nil {
		// A success status whose reply does not say success (null, {}) is no refusal either.
		return fmt.Errorf("pod %s: /pd_role_switch answered HTTP %d with %q, which does not say success: %w", podRef(pod), resp.StatusCode, truncate(raw), ErrNoAnswer)
	}
	if !ok || !*out.Success {
		err := fmt.Errorf("pod %s: /pd_role_switch to %s refused (HTTP %d): %q", podRef(pod), role, resp.StatusCode, truncate([]byte(out.Message)))
		if badRequest && out.Success == nil {
			err = fmt.Errorf("%w: %w", err, ErrUnchanged)
		}
		return err
	}
	if out.NewRole != "" && out.NewRole != role {
		return fmt.Errorf("pod %s: /pd_role_switch answered new_role %q, asked %q", podRef(pod), truncate([]byte(out.NewRole)), role)
	}
	return nil
}

// directTransport reaches a pod where it is: an HTTP(S)_PROXY set in the agent's environment (a webhook
// may inject one) would send the switch through the proxy and take its answer for the engine's.
var directTransport = func() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	return tr
}()

// truncate is an engine's text as errors (logged, and written into the pod's status) show it: at most 200
// bytes, cut on a character's boundary, invalid UTF-8 dropped. Callers quote it.
func truncate(b []byte) string {
	if len(b) > 200 {
		return strings.ToValidUTF8(string(b[:200]), "") + "..."
	}
	return strings.ToValidUTF8(string(b), "")
}
