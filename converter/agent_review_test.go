package converter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

// A label patch whose reply was lost can land after the undo read the pod (still decode, so the undo
// changed nothing) and after the refusal: the pod then shows this agent's flip (converted-from at its
// decode value) under a refusal. It is recorded converted again, so the controller counts it and the end
// of its lease reverts it; it was refused already-converted on every pass and never reverted.
func TestAgentTakesBackItsOwnFlipThatLandedLate(t *testing.T) {
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}), "node-1")
	a, client, clk := agentFixture(t, &fixedGPUs{ok: true}, pod)
	versionedPods(t, client)
	patchPod(t, client, "d1", `{}`) // stamps a resourceVersion
	apply := k8stesting.ObjectReaction(client.Tracker())
	var pending k8stesting.Action
	lost := errors.New("connection reset by peer")
	client.PrependReactor("*", "pods", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if pa, ok := action.(k8stesting.PatchAction); ok && pending == nil && strings.Contains(string(pa.GetPatch()), `"prefill-decode"`) {
			pending = action // the API server has it; its reply is lost
			return true, nil, lost
		}
		if action.GetVerb() != "get" || pending == nil {
			return false, nil, nil
		}
		// The undo's read is answered from before the patch, which lands right after it.
		_, read, err := apply(action)
		if err != nil {
			return true, nil, err
		}
		read = read.DeepCopyObject()
		if _, _, err := apply(pending); err != nil {
			return true, nil, err
		}
		pending = nil
		return true, read, nil
	})
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); !errors.Is(err, lost) {
		t.Fatalf("error %v; want the lost patch reply", err)
	}
	p := get(t, client, "d1")
	if p.Labels["llm-d.ai/role"] != "prefill-decode" || !protocol.IsRefused(p.Annotations[protocol.AnnotationStatus]) {
		t.Fatalf("setup: role %q status %q; want the late flip under the refusal", p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationStatus])
	}
	clk.Set(t0.Add(time.Second))
	if err := a.Reconcile(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if p := get(t, client, "d1"); p.Labels["llm-d.ai/role"] != "prefill-decode" || p.Annotations[protocol.AnnotationStatus] != protocol.StatusConverted {
		t.Fatalf("the next pass: role %q status %q; want it recorded converted, this agent's own", p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationStatus])
	}
	clk.Set(t0.Add(2 * time.Minute)) // the lease has ended
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	p = get(t, client, "d1")
	if _, from := p.Annotations[protocol.AnnotationConvertedFrom]; p.Labels["llm-d.ai/role"] != "decode" || p.Annotations[protocol.AnnotationStatus] != protocol.StatusDecode || from {
		t.Errorf("after the lease: role %q annotations %v; want reverted to decode", p.Labels["llm-d.ai/role"], p.Annotations)
	}
}

// At shutdown a pod showing this agent's flip under a refusal is reverted too; one converted by someone
// else (no converted-from of this actuator's) is left as it is.
func TestAgentRevertAllRevertsItsOwnFlipUnderARefusal(t *testing.T) {
	refused := protocol.Refused(protocol.ReasonActuator, "connection reset by peer")
	late := onNode(decodePod("late", map[string]string{
		protocol.AnnotationStatus:        refused,
		protocol.AnnotationConvertedFrom: "llm-d.ai/role=decode",
	}), "node-1")
	late.Labels["llm-d.ai/role"] = "prefill-decode"
	others := onNode(decodePod("others", map[string]string{protocol.AnnotationStatus: protocol.Refused(protocol.ReasonAlreadyConverted, "")}), "node-1")
	others.Labels["llm-d.ai/role"] = "prefill-decode"
	a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, late, others)
	a.lister = func() []*corev1.Pod { return []*corev1.Pod{late.DeepCopy(), others.DeepCopy()} }
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if err := a.RevertAll(ctx); err != nil {
		t.Fatal(err)
	}
	if p := get(t, client, "late"); p.Labels["llm-d.ai/role"] != "decode" || p.Annotations[protocol.AnnotationStatus] != protocol.StatusDecode {
		t.Errorf("this agent's flip under a refusal: role %q status %q; want reverted to decode", p.Labels["llm-d.ai/role"], p.Annotations[protocol.AnnotationStatus])
	}
	if p := get(t, client, "others"); p.Labels["llm-d.ai/role"] != "prefill-decode" {
		t.Errorf("a pod converted by someone else: role %q; want left prefill-decode", p.Labels["llm-d.ai/role"])
	}
}

// sglangEngine serves /pd_role_switch: prefill answers a switch to prefill, a switch to decode succeeds.
// It returns the actuator's target and the roles asked so far.
func sglangEngine(t *testing.T, prefill http.HandlerFunc) (host string, port int, asked func() []string) {
	t.Helper()
	var mu sync.Mutex
	var roles []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			NewRole string `json:"new_role"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		roles = append(roles, req.NewRole)
		mu.Unlock()
		if req.NewRole == "prefill" {
			prefill(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": req.NewRole})
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(srv.CloseClientConnections) // first: a handler waiting on its request returns

	u, _ := url.Parse(srv.URL)
	h, ps, _ := net.SplitHostPort(u.Host)
	port, _ = strconv.Atoi(ps)
	return h, port, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), roles...) }
}

func sglangFixture(t *testing.T, prefill http.HandlerFunc) (*Agent, *fake.Clientset, *clock, *SGLangActuator, func() []string) {
	t.Helper()
	host, port, asked := sglangEngine(t, prefill)
	pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}), "node-1")
	pod.Status.PodIP = host
	a, client, clk := agentFixture(t, &fixedGPUs{ok: true}, pod)
	act := &SGLangActuator{Port: port, Timeout: time.Minute} // the default 5 s is not what is tested here
	a.o.Actuator = act
	return a, client, clk, act, asked
}

// A switch to prefill that gets no answer in time may still happen in the engine: the pod stays marked
// converted (no undo racing the switch), and the end of its lease sends decode. It was recorded refused,
// and an engine that finished switching was left prefill with nothing to revert it.
func TestAgentKeepsAnSGLangSwitchThatGotNoAnswer(t *testing.T) {
	a, client, clk, act, asked := sglangFixture(t, func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	act.Timeout = 50 * time.Millisecond // the engine never answers; how soon the call gives up does not matter
	err := a.Reconcile(context.Background(), get(t, client, "d1"))
	if !errors.Is(err, ErrNoAnswer) || !strings.Contains(err.Error(), "ns/d1") {
		t.Fatalf("error %v; want ErrNoAnswer naming the pod", err)
	}
	// Whether the engine read the switch before the call gave up depends on the machine's load; what
	// matters is that no undo was sent.
	if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; s != protocol.StatusConverted || slices.Contains(asked(), "decode") {
		t.Fatalf("status %q, roles asked %v; want converted, and no undo", s, asked())
	}
	before := len(asked())
	act.Timeout = time.Minute
	clk.Set(t0.Add(2 * time.Minute)) // the lease has ended
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; s != protocol.StatusDecode || strings.Join(asked()[before:], ",") != "decode" {
		t.Errorf("after the lease: status %q, roles asked %v; want decode sent and recorded", s, asked())
	}
}

// A converted pod that has finished (evicted, its node shut down gracefully) keeps its object and old IP
// until deleted: its lease's end records decode with no switch sent, since no engine of its runs and the
// address may be another's; the switch went to the old IP and, unanswered, was sent again for good.
func TestAgentSendsNoRevertToAFinishedPod(t *testing.T) {
	a, client, clk, _, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	})
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	pod := get(t, client, "d1")
	pod.Status.Phase = corev1.PodFailed
	pod.Status.Reason = "Evicted"
	if _, err := client.CoreV1().Pods("ns").UpdateStatus(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(2 * time.Minute)) // the lease has ended
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; s != protocol.StatusDecode || strings.Join(asked(), ",") != "prefill" {
		t.Errorf("status %q, roles asked %v; want decode recorded and no switch sent to the finished pod", s, asked())
	}
}

// A switch to prefill that got no answer is sent again once per resendAfter until the engine answers:
// the pod was counted as converted while its engine, which never got the switch, only decoded until the
// lease ended. An answer that accepts keeps it converted and ends the re-sends; one that refuses undoes
// and refuses it, as on a first conversion.
func TestAgentResendsAnSGLangSwitchThatGotNoAnswer(t *testing.T) {
	for name, refuse := range map[string]bool{"accepted": false, "refused": true} {
		t.Run(name, func(t *testing.T) {
			a, client, clk, _, asked := sglangFixture(t, loseFirst(func(w http.ResponseWriter, _ *http.Request) {
				if refuse {
					w.WriteHeader(http.StatusServiceUnavailable)
					_ = json.NewEncoder(w).Encode(map[string]any{"success": false, "message": "scheduler is not idle"})
					return
				}
				_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
			}))
			if err := a.Reconcile(context.Background(), get(t, client, "d1")); !errors.Is(err, ErrNoAnswer) {
				t.Fatalf("first pass: error %v; want ErrNoAnswer", err)
			}
			clk.Set(t0.Add(resendAfter / 2))
			if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(strings.Join(asked(), ","), "prefill"); n != 1 {
				t.Fatalf("roles asked %v before resendAfter; want prefill once", asked())
			}
			clk.Set(t0.Add(resendAfter))
			err := a.Reconcile(context.Background(), get(t, client, "d1"))
			s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]
			if refuse {
				if err == nil || errors.Is(err, ErrNoAnswer) || !strings.HasPrefix(s, "refused: "+protocol.ReasonActuator) || strings.Join(asked(), ",") != "prefill,prefill,decode" {
					t.Fatalf("error %v, status %q, roles asked %v; want a refusal recorded after an undo", err, s, asked())
				}
				return
			}
			if err != nil || s != protocol.StatusConverted || strings.Join(asked(), ",") != "prefill,prefill" {
				t.Fatalf("error %v, status %q, roles asked %v; want converted after the switch sent again", err, s, asked())
			}
			clk.Set(t0.Add(3 * resendAfter))
			if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
				t.Fatal(err)
			}
			if strings.Join(asked(), ",") != "prefill,prefill" {
				t.Errorf("roles asked %v after the engine answered; want no more re-sends", asked())
			}
		})
	}
}

// lease renews d1's lease to end a minute after at, as the controller does while it wants the pod.
func lease(t *testing.T, client *fake.Clientset, at time.Time) {
	t.Helper()
	patchPod(t, client, "d1", fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, protocol.AnnotationConvertUntil, protocol.FormatTime(at.Add(time.Minute))))
}

// loseFirst hangs up on the first call (lost: a timeout could fire before the request reached the engine)
// and hands the later ones to then.
func loseFirst(then http.HandlerFunc) http.HandlerFunc {
	var mu sync.Mutex
	calls := 0
	return func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			hangUp(w)
			return
		}
		then(w, r)
	}
}

// hangUp closes the connection before a reply: the call gets no answer however loaded the machine.
func hangUp(w http.ResponseWriter) {
	if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
		conn.Close()
	}
}

// An engine that never answers the switch to prefill gets it maxResends more times, spaced 10, 20 and
// 40 s, and is then undone and refused, so that the controller moves the lease: it renews a converted
// pod's lease, so waiting for the lease to end would count the pod as converted for good.
func TestAgentStopsResendingToAnEngineThatNeverAnswers(t *testing.T) {
	a, client, clk, _, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) { hangUp(w) })
	prefills := func() int { return strings.Count(strings.Join(asked(), ","), "prefill") }
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("first pass: error %v; want ErrNoAnswer", err)
	}
	for i, at := range []time.Duration{10 * time.Second, 30 * time.Second, 70 * time.Second} {
		now := t0.Add(at)
		clk.Set(now.Add(-time.Second))
		lease(t, client, now)
		_ = a.Reconcile(context.Background(), get(t, client, "d1"))
		if prefills() != i+1 {
			t.Fatalf("a second before re-send %d: roles asked %v", i+1, asked())
		}
		clk.Set(now)
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); !errors.Is(err, ErrNoAnswer) {
			t.Fatalf("re-send %d: error %v; want ErrNoAnswer", i+1, err)
		}
		if prefills() != i+2 {
			t.Fatalf("re-send %d: roles asked %v", i+1, asked())
		}
	}
	now := t0.Add(150 * time.Second)
	clk.Set(now)
	lease(t, client, now)
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err == nil || errors.Is(err, ErrNoAnswer) {
		t.Fatalf("after %d re-sends: error %v; want the conversion undone and refused", maxResends, err)
	}
	if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; !strings.HasPrefix(s, "refused: "+protocol.ReasonActuator) || strings.Join(asked(), ",") != "prefill,prefill,prefill,prefill,decode" {
		t.Errorf("status %q, roles asked %v; want refused after an undo", s, asked())
	}
}

// A pass acting on a cached copy whose lease looks ended, while the controller has renewed it, changes
// nothing: the re-sends of a switch that got no answer go on. revertEnded dropped them before reading the
// pod, so the engine was left decoding under a converted status.
func TestAgentKeepsResendingWhenALeaseOnlyLookedEnded(t *testing.T) {
	var mu sync.Mutex
	answer := false
	a, client, clk, _, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		ok := answer
		mu.Unlock()
		if !ok {
			hangUp(w)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	})
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("first pass: error %v; want ErrNoAnswer", err)
	}
	stale := get(t, client, "d1") // its lease ends at t0+1m
	lease(t, client, t0.Add(time.Minute))
	clk.Set(t0.Add(70 * time.Second))
	if err := a.Reconcile(context.Background(), stale); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	answer = true
	mu.Unlock()
	clk.Set(t0.Add(80 * time.Second))
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if strings.Join(asked(), ",") != "prefill,prefill" {
		t.Errorf("roles asked %v; want the switch to prefill sent again", asked())
	}
}

// A revert that got no answer leaves the engine's role unknown under a converted status; if the pod is
// leased again, the switch to prefill is sent again. It was counted as converted while perhaps decoding.
func TestAgentResendsAfterARevertThatGotNoAnswer(t *testing.T) {
	a, client, clk, act, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	})
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	// The revert at the lease's end goes to an engine port that hangs up: it gets no answer.
	hangs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hangUp(w) }))
	t.Cleanup(hangs.Close)
	u, _ := url.Parse(hangs.URL)
	_, ps, _ := net.SplitHostPort(u.Host)
	hung, _ := strconv.Atoi(ps)
	a.o.Actuator = &SGLangActuator{Port: hung, Timeout: time.Minute}
	clk.Set(t0.Add(2 * time.Minute))
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("revert: error %v; want ErrNoAnswer", err)
	}
	a.o.Actuator = act
	lease(t, client, t0.Add(2*time.Minute))
	before := len(asked())
	clk.Set(t0.Add(2*time.Minute + resendAfter))
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(asked()[before:], ","); got != "prefill" || get(t, client, "d1").Annotations[protocol.AnnotationStatus] != protocol.StatusConverted {
		t.Errorf("after a new lease: roles asked %q; want prefill sent again, the pod converted", got)
	}
}

// A pod recreated under the name of one whose switch got no answer (a StatefulSet's) is converted afresh:
// the old pod's re-sends are not its.
func TestAgentForgetsTheReSendsOfAPodOfTheSameName(t *testing.T) {
	a, client, clk, _, asked := sglangFixture(t, loseFirst(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	}))
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("first pass: error %v; want ErrNoAnswer", err)
	}
	old := get(t, client, "d1")
	if err := client.CoreV1().Pods(old.Namespace).Delete(context.Background(), "d1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	again := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}), "node-1")
	again.Status.PodIP = old.Status.PodIP
	if _, err := client.CoreV1().Pods(again.Namespace).Create(context.Background(), again, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(time.Second))
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(resendAfter + time.Second))
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if strings.Join(asked(), ",") != "prefill,prefill" {
		t.Errorf("roles asked %v; want the new pod's one conversion and no re-send", asked())
	}
}

// An engine that answers and refuses the switch is undone (decode is idempotent) and refused.
func TestAgentRefusesAnSGLangSwitchTheEngineRefused(t *testing.T) {
	for name, code := range map[string]int{"success false": http.StatusOK, "HTTP 503": http.StatusServiceUnavailable} {
		t.Run(name, func(t *testing.T) {
			a, client, _, _, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(code)
				_ = json.NewEncoder(w).Encode(map[string]any{"success": false, "message": "scheduler is not idle"})
			})
			err := a.Reconcile(context.Background(), get(t, client, "d1"))
			if err == nil || errors.Is(err, ErrNoAnswer) {
				t.Fatalf("error %v; want a refusal, not ErrNoAnswer", err)
			}
			if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; !strings.HasPrefix(s, "refused: "+protocol.ReasonActuator) || strings.Join(asked(), ",") != "prefill,decode" {
				t.Errorf("status %q, roles asked %v; want refused actuator-failed after an undo", s, asked())
			}
		})
	}
}

// A switch that reached no engine's switch (an engine without the endpoint answers 404 to prefill and
// decode alike; a pod on its node's network is never called) is refused at once, with nothing to undo:
// the undo failed the same way, and the pod stayed marked converted, counted and never prefilling.
func TestAgentRefusesAnSGLangSwitchThatReachedNoSwitch(t *testing.T) {
	for _, hostNetwork := range []bool{false, true} {
		var mu sync.Mutex
		calls := 0
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			mu.Lock()
			calls++
			mu.Unlock()
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"detail":"Not Found"}`))
		}))
		u, _ := url.Parse(srv.URL)
		h, ps, _ := net.SplitHostPort(u.Host)
		port, _ := strconv.Atoi(ps)
		pod := onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}), "node-1")
		pod.Status.PodIP, pod.Spec.HostNetwork = h, hostNetwork
		a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, pod)
		a.o.Actuator = &SGLangActuator{Port: port, Timeout: time.Minute}
		err := a.Reconcile(context.Background(), get(t, client, "d1"))
		if err == nil || !errors.Is(err, ErrUnchanged) {
			t.Errorf("hostNetwork %v: error %v; want a refusal that reached no switch", hostNetwork, err)
		}
		mu.Lock()
		want := map[bool]int{false: 1, true: 0}[hostNetwork]
		if calls != want {
			t.Errorf("hostNetwork %v: %d calls; want %d (the switch, and no undo)", hostNetwork, calls, want)
		}
		mu.Unlock()
		if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; !strings.HasPrefix(s, "refused: "+protocol.ReasonActuator) {
			t.Errorf("hostNetwork %v: status %q; want refused actuator-failed", hostNetwork, s)
		}
		srv.Close()
	}
}

// The controller renews a lease about every 3.3 s, and the checks can take longer (NVML near its 5 s
// limit, the owner's GET under the client's rate limit): a write conditional on the version read before
// the checks then conflicted on every pass, and the pod was never converted nor refused.
func TestAgentDecidesThoughTheLeaseIsRenewedDuringEveryCheck(t *testing.T) {
	for name, gpus := range map[string]*fixedGPUs{
		"checks pass": {ok: true},
		"checks fail": {reason: protocol.ReasonMemoryShort, detail: "GPU-1: 0.5 GiB free"},
	} {
		t.Run(name, func(t *testing.T) {
			var client *fake.Clientset
			renewals := 0
			renewing := checkFunc(func(ctx context.Context, p *corev1.Pod) (bool, string, string) {
				renewals++
				patchPod(t, client, "d1", fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`,
					protocol.AnnotationConvertUntil, protocol.FormatTime(t0.Add(time.Minute+time.Duration(renewals)*time.Second))))
				return gpus.Check(ctx, p)
			})
			var a *Agent
			a, client, _ = agentFixture(t, renewing, onNode(decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Minute))}), "node-1"))
			versionedPods(t, client)
			patchPod(t, client, "d1", `{}`) // stamps a resourceVersion
			for range 3 {
				if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
					t.Fatal(err)
				}
			}
			p := get(t, client, "d1")
			want, role := protocol.StatusConverted, "prefill-decode"
			if !gpus.ok {
				want, role = protocol.Refused(gpus.reason, gpus.detail), "decode"
			}
			if p.Annotations[protocol.AnnotationStatus] != want || p.Labels["llm-d.ai/role"] != role || renewals == 0 {
				t.Errorf("after 3 passes (%d renewals): status %q role %q; want %q and %q", renewals, p.Annotations[protocol.AnnotationStatus], p.Labels["llm-d.ai/role"], want, role)
			}
		})
	}
}

// hungActuator's reverts never answer: each records the time it was given, on the agent's clock, and
// takes all of it.
type hungActuator struct {
	*LabelActuator
	clk  *clock
	mu   sync.Mutex
	gave []time.Duration
}

func (h *hungActuator) Revert(ctx context.Context, _ *corev1.Pod) error {
	dl, ok := ctx.Deadline()
	if !ok {
		return errors.New("no deadline")
	}
	h.mu.Lock()
	h.gave = append(h.gave, dl.Sub(h.clk.Now()))
	h.mu.Unlock()
	h.clk.Set(dl)
	return context.DeadlineExceeded
}

// At shutdown each revert gets an equal share of the time left among the candidates still to go, at most
// a quarter of the shutdown budget: a quarter of the time left each decayed geometrically, and after a
// few engines that did not answer the later pods got under a second.
func TestAgentRevertAllSharesTheTimeLeftEvenly(t *testing.T) {
	for _, c := range []struct {
		pods int
		each time.Duration
	}{{5, shutdownBudget / 5}, {2, shutdownBudget / 4}} {
		t.Run(strconv.Itoa(c.pods), func(t *testing.T) {
			var pods []*corev1.Pod
			for i := range c.pods {
				p := onNode(decodePod(fmt.Sprintf("c%d", i), map[string]string{
					protocol.AnnotationStatus:        protocol.StatusConverted,
					protocol.AnnotationConvertedFrom: "llm-d.ai/role=decode",
				}), "node-1")
				p.Labels["llm-d.ai/role"] = "prefill-decode"
				pods = append(pods, p)
			}
			a, client, clk := agentFixture(t, &fixedGPUs{ok: true}, pods...)
			act := &hungActuator{LabelActuator: LLMD(client), clk: clk}
			a.o.Actuator = act
			a.lister = func() []*corev1.Pod { return pods }
			// The real deadline is an hour away; on the agent's clock the shutdown budget is left.
			end := time.Now().Add(time.Hour)
			clk.Set(end.Add(-shutdownBudget))
			ctx, cancel := context.WithDeadline(context.Background(), end)
			defer cancel()
			if err := a.RevertAll(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("error %v; want the hung reverts' deadline", err)
			}
			if len(act.gave) != c.pods {
				t.Fatalf("%d reverts tried; want %d", len(act.gave), c.pods)
			}
			for i, d := range act.gave {
				if d != c.each {
					t.Errorf("revert %d of %d was given %s; want %s each (%v)", i+1, c.pods, d, c.each, act.gave)
				}
			}
		})
	}
}

// Only an answer refuses a switch (success:false, or a status other than success); without one (a
// transport error, a success status with a reply that cannot be read or does not say success) the switch
// may have happened. Any success status saying success is one (202 as 200).
func TestSGLangActuatorTellsARefusalFromNoAnswer(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "ns"}, Status: corev1.PodStatus{PodIP: "10.0.0.1"}}
	reply := func(code int, body string) roundTripFunc {
		return func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
		}
	}
	for name, c := range map[string]struct {
		rt       roundTripFunc
		noAnswer bool
	}{
		"transport error":     {func(*http.Request) (*http.Response, error) { return nil, errors.New("connection reset by peer") }, true},
		"unreadable 200":      {reply(http.StatusOK, "<html>"), true},
		"success false":       {reply(http.StatusOK, `{"success": false, "message": "not idle"}`), false},
		"unreadable 503":      {reply(http.StatusServiceUnavailable, "<html>"), false},
		"503 success false":   {reply(http.StatusServiceUnavailable, `{"success": false}`), false},
		"200 null":            {reply(http.StatusOK, `null`), true},
		"200 without success": {reply(http.StatusOK, `{"message": "ok"}`), true},
	} {
		err := (&SGLangActuator{HTTP: &http.Client{Transport: c.rt}, Timeout: time.Hour}).Convert(context.Background(), pod)
		if err == nil || errors.Is(err, ErrNoAnswer) != c.noAnswer || !strings.Contains(err.Error(), "ns/d") {
			t.Errorf("%s: error %v; want one naming the pod, ErrNoAnswer %v", name, err, c.noAnswer)
		}
	}
	a := &SGLangActuator{HTTP: &http.Client{Transport: reply(http.StatusAccepted, `{"success": true}`)}, Timeout: time.Hour}
	if err := a.Convert(context.Background(), pod); err != nil {
		t.Errorf("202 with success true: %v; want the switch taken", err)
	}
	// A 4xx that does not say success reached no switch; one that says success false is a refusal in
	// words (SGLang answers "not idle" with 400), to be undone.
	for body, unchanged := range map[string]bool{`{"detail": "Not Found"}`: true, `<html>`: true, `{"success": false, "message": "not idle"}`: false} {
		a := &SGLangActuator{HTTP: &http.Client{Transport: reply(http.StatusBadRequest, body)}, Timeout: time.Hour}
		if err := a.Convert(context.Background(), pod); err == nil || errors.Is(err, ErrUnchanged) != unchanged || errors.Is(err, ErrNoAnswer) {
			t.Errorf("400 with %s: error %v; want a refusal, ErrUnchanged %v", body, err, unchanged)
		}
	}
}

// An agent that starts and finds an SGLang pod recorded converted does not know whether its engine took
// the switch (the agent before it may have stopped before an answer, or with re-sends in its memory): it
// sends the switch to prefill once, which an engine already prefilling accepts and one still decoding
// (the switch lost) takes or refuses; a refusal undoes and refuses the conversion. Such a pod stayed
// counted as converted, decoding only, for as long as the controller renewed its lease.
func TestAgentAsksAnSGLangEngineItsRoleAfterARestart(t *testing.T) {
	for name, refuse := range map[string]bool{"already prefill": false, "switch lost, busy decoding": true} {
		t.Run(name, func(t *testing.T) {
			a, client, clk, _, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
				if refuse {
					w.WriteHeader(http.StatusServiceUnavailable)
					_ = json.NewEncoder(w).Encode(map[string]any{"success": false, "message": "instance is not idle; drain all requests before switching"})
					return
				}
				_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "message": "already in target role", "old_role": "prefill", "new_role": "prefill"})
			})
			patchPod(t, client, "d1", fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, protocol.AnnotationStatus, protocol.StatusConverted))
			err := a.Reconcile(context.Background(), get(t, client, "d1"))
			s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]
			if refuse {
				if err == nil || !strings.HasPrefix(s, "refused: "+protocol.ReasonActuator) || strings.Join(asked(), ",") != "prefill,decode" {
					t.Fatalf("error %v, status %q, roles asked %v; want the conversion undone and refused", err, s, asked())
				}
				return
			}
			if err != nil || s != protocol.StatusConverted || strings.Join(asked(), ",") != "prefill" {
				t.Fatalf("error %v, status %q, roles asked %v; want prefill asked once and the pod kept converted", err, s, asked())
			}
			clk.Set(t0.Add(resendAfter))
			if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
				t.Fatal(err)
			}
			if strings.Join(asked(), ",") != "prefill" {
				t.Errorf("roles asked %v on the next pass; want nothing more once the engine answered", asked())
			}
		})
	}
}

// A pod whose headroom went and whose revert failed is reverted again at the next recheck; it is not
// taken for a pod of unknown role, which would be sent the switch to prefill.
func TestAgentRetriesARevertForLostHeadroomWithoutSwitchingToPrefill(t *testing.T) {
	a, client, clk, asked := unansweredRevertForLostHeadroom(t)
	clk.Set(t0.Add(a.o.Recheck + time.Second))
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if strings.Join(asked(), ",") != "prefill" {
		t.Fatalf("roles asked %v the pass after the failed revert; want nothing more", asked())
	}
	clk.Set(t0.Add(2 * a.o.Recheck))
	lease(t, client, t0.Add(2*a.o.Recheck))
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; strings.Join(asked(), ",") != "prefill,decode" || !strings.HasPrefix(s, "refused: "+protocol.ReasonMemoryShort) {
		t.Errorf("roles asked %v, status %q at the next recheck; want decode sent and the refusal recorded", asked(), s)
	}
}

// A revert for lost headroom that got no answer is sent again at the next recheck even where the headroom
// then reads as back: an engine that took the switch to decode without answering has it back while it
// only decodes, and reading it as kept left the pod counted as converted, renewed, doing no prefill work.
func TestAgentRetriesARevertForLostHeadroomWhateverItReadsThen(t *testing.T) {
	a, client, clk, asked := unansweredRevertForLostHeadroom(t)
	a.o.GPUs = &fixedGPUs{ok: true} // the engine decodes only now: its memory is back
	clk.Set(t0.Add(2 * a.o.Recheck))
	lease(t, client, t0.Add(2*a.o.Recheck))
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; strings.Join(asked(), ",") != "prefill,decode" || !strings.HasPrefix(s, "refused: "+protocol.ReasonMemoryShort) {
		t.Errorf("roles asked %v, status %q at the next recheck; want decode sent again and the first refusal recorded", asked(), s)
	}
}

// A pod deleted after its revert for lost headroom got no answer leaves nothing behind in the agent: its
// record was kept for the agent's life, the leak keepOnly exists to prevent.
func TestAgentForgetsALostRevertOfADeletedPod(t *testing.T) {
	a, _, _, _ := unansweredRevertForLostHeadroom(t)
	if len(a.lost) != 1 {
		t.Fatalf("after the unanswered revert: %d pods recorded, want 1", len(a.lost))
	}
	a.keepOnly(nil) // the pod is gone
	if len(a.lost) != 0 || len(a.checked) != 0 || len(a.unanswered) != 0 {
		t.Errorf("after the pod is gone: lost %v, checked %v, unanswered %v; want nothing kept", a.lost, a.checked, a.unanswered)
	}
}

// unansweredRevertForLostHeadroom converts an SGLang pod, then has its headroom go at the first recheck
// with the revert sent to a closed port (no answer); the engine answers again afterwards.
func unansweredRevertForLostHeadroom(t *testing.T) (*Agent, *fake.Clientset, *clock, func() []string) {
	t.Helper()
	a, client, clk, act, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	})
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	a.o.GPUs = &fixedGPUs{reason: protocol.ReasonMemoryShort, detail: "free 1 GiB"}
	port := act.Port
	act.Port = closedPort(t) // the revert gets no answer
	clk.Set(t0.Add(a.o.Recheck))
	lease(t, client, t0.Add(a.o.Recheck))
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err == nil {
		t.Fatal("a revert to a closed port succeeded")
	}
	act.Port = port
	return a, client, clk, asked
}

// closedPort is a local port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// A cached copy that still shows a conversion this agent has since reverted is not taken for a pod of
// unknown role: the agent wrote that status itself, so nothing is sent. Sending the switch to prefill
// there left the engine prefilling under a refusal, with nothing to revert it.
func TestAgentSendsNothingForAStaleCopyOfItsOwnConversion(t *testing.T) {
	a, client, clk, _, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	})
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	stale := get(t, client, "d1") // converted, leased
	a.o.GPUs = &fixedGPUs{reason: protocol.ReasonMemoryShort, detail: "free 1 GiB"}
	clk.Set(t0.Add(a.o.Recheck))
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if strings.Join(asked(), ",") != "prefill,decode" {
		t.Fatalf("setup: roles asked %v; want the revert for lost headroom", asked())
	}
	clk.Set(t0.Add(a.o.Recheck + time.Second))
	if err := a.Reconcile(context.Background(), stale); err != nil {
		t.Fatal(err)
	}
	if strings.Join(asked(), ",") != "prefill,decode" {
		t.Errorf("roles asked %v after a stale copy of the conversion; want nothing more", asked())
	}
}

// A converted status this agent never wrote is an earlier agent's, whatever time it carries: the switch to
// prefill is sent again. Told apart by the times on the pod, a status written after this agent started
// (by the old agent of a DaemonSet rolled with a surge, or before the node's clock stepped back) was
// taken for this agent's own, and an engine whose switch the earlier agent never saw answered stayed
// counted as converted, decoding only, for as long as its lease was renewed.
func TestAgentTellsAnEarlierAgentsConversionByWhoWroteIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   time.Time
	}{
		{"written after this agent started", t0.Add(20 * time.Second)},
		{"written ahead of this agent's clock", t0.Add(50 * time.Second)},
		{"written before this agent started", t0.Add(-time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, client, clk, _, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
				_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
			})
			patchPod(t, client, "d1", fmt.Sprintf(`{"metadata":{"annotations":{%q:%q,%q:%q}}}`, protocol.AnnotationStatus,
				protocol.StatusConverted, protocol.AnnotationStatusAt, protocol.FormatTime(tc.at)))
			clk.Set(t0.Add(10 * time.Second))
			lease(t, client, t0.Add(10*time.Second))
			if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
				t.Fatal(err)
			}
			if strings.Join(asked(), ",") != "prefill" {
				t.Errorf("roles asked %v for an earlier agent's conversion; want the switch to prefill sent again", asked())
			}
		})
	}
}

// A pod an earlier agent recorded converted whose engine answers neither switch gets the switch to
// prefill maxResends times, then an undo that gets no answer either; it is then checked as any other,
// not taken for a pod of unknown role again, which sent it prefill every 150 s for good.
func TestAgentGivesUpOnAnEngineThatNeverAnswersAfterARestart(t *testing.T) {
	a, client, clk, act, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) { hangUp(w) })
	patchPod(t, client, "d1", fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, protocol.AnnotationStatus, protocol.StatusConverted))
	prefills := func() int { return strings.Count(strings.Join(asked(), ","), "prefill") }
	at := t0
	for i, wait := range []time.Duration{0, 20 * time.Second, 40 * time.Second, 80 * time.Second} {
		at = at.Add(wait)
		clk.Set(at)
		lease(t, client, at)
		port := act.Port
		if i == maxResends {
			act.Port = closedPort(t) // the undo gets no answer either
		}
		_ = a.Reconcile(context.Background(), get(t, client, "d1"))
		act.Port = port // the engine is reachable again, and still answers nothing
		if want := min(i+1, maxResends); prefills() != want {
			t.Fatalf("pass %d: roles asked %v; want prefill %d times", i, asked(), want)
		}
	}
	for _, wait := range []time.Duration{10 * time.Second, 20 * time.Second} {
		clk.Set(at.Add(wait))
		lease(t, client, at.Add(wait))
		_ = a.Reconcile(context.Background(), get(t, client, "d1"))
	}
	if prefills() != maxResends {
		t.Errorf("roles asked %v after the undo got no answer; want no more switches to prefill", asked())
	}
	// The undo is sent again at the next recheck, the lease renewed all along, and once the engine
	// answers it the refusal is recorded, so the controller moves the lease: it stayed converted, decoding
	// only, for as long as the controller renewed its lease.
	before := len(asked())
	clk.Set(at.Add(31 * time.Second))
	lease(t, client, at.Add(31*time.Second))
	_ = a.Reconcile(context.Background(), get(t, client, "d1"))
	if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; !strings.HasPrefix(s, protocol.Refused(protocol.ReasonActuator, "")) || strings.Join(asked()[before:], ",") != "decode" {
		t.Errorf("a recheck after the undo got no answer: status %q, roles asked %v; want decode sent again and the refusal recorded", s, asked()[before:])
	}
}

// An SGLang engine's role lives in its process: a converted pod whose container restarts comes back
// decoding only, so the switch to prefill is sent again at once (and a refusal would undo it). Its status
// said converted and the controller renewed its lease while it did no prefill work.
func TestAgentSendsTheSwitchAgainAfterAContainerRestart(t *testing.T) {
	a, client, clk, _, asked := sglangFixture(t, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	})
	prefills := func() int { return strings.Count(strings.Join(asked(), ","), "prefill") }
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil || prefills() != 1 {
		t.Fatalf("conversion: %v, roles asked %v", err, asked())
	}
	restart := func(n int32) {
		p := get(t, client, "d1")
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "sglang", RestartCount: n}}
		if _, err := client.CoreV1().Pods("ns").UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	at := t0
	pass := func(want int, what string) {
		t.Helper()
		at = at.Add(5 * time.Second)
		clk.Set(at)
		lease(t, client, at)
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
			t.Fatal(err)
		}
		if prefills() != want || get(t, client, "d1").Annotations[protocol.AnnotationStatus] != protocol.StatusConverted {
			t.Fatalf("%s: roles asked %v, status %q; want prefill sent %d times and the pod converted", what, asked(), get(t, client, "d1").Annotations[protocol.AnnotationStatus], want)
		}
	}
	pass(1, "a pass without a restart")
	restart(1)
	pass(2, "after the engine's container restarted")
	pass(2, "a pass after the switch was answered")
}

// A revert that gets no answer is sent again spaced as the switch's re-sends are (10, 20, 40, then every
// 80 s), not on every pass: each call may hold the agent's one loop for the actuator's timeout, and the
// other pods of the node, whose leases end too, waited behind it.
func TestAgentSpacesRevertsThatGetNoAnswer(t *testing.T) {
	a, client, clk, act, _ := sglangFixture(t, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	})
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { calls.Add(1); hangUp(w) }))
	t.Cleanup(dead.Close)
	u, _ := url.Parse(dead.URL)
	_, ps, _ := net.SplitHostPort(u.Host)
	act.Port, _ = strconv.Atoi(ps)
	at := t0.Add(2 * time.Minute) // the lease has ended
	for range 100 {
		clk.Set(at)
		_ = a.Reconcile(context.Background(), get(t, client, "d1"))
		at = at.Add(time.Second)
	}
	// Sent at 0, 10, 30 and 70 s, then every 80 s: 4 in 100 s.
	if n := calls.Load(); n != 4 {
		t.Errorf("%d reverts sent in 100 passes a second apart; want 4 (at 0, 10, 30 and 70 s)", n)
	}
	if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; s != protocol.StatusConverted {
		t.Errorf("status %q; want converted while no revert is answered", s)
	}
}

type slowRevert struct{ Actuator }

func (s slowRevert) Revert(ctx context.Context, pod *corev1.Pod) error {
	time.Sleep(2 * time.Millisecond) // a lower bound on what the revert takes; load only lengthens it
	return s.Actuator.Revert(ctx, pod)
}

type flips struct {
	mu   sync.Mutex
	took []time.Duration
}

func (f *flips) Flipped(_ string, d time.Duration) {
	f.mu.Lock()
	f.took = append(f.took, d)
	f.mu.Unlock()
}
func (f *flips) Refused(string) {}

// A revert at shutdown is timed as any other: it was observed as taking no time, which pulled the flip
// duration's figures down by one zero per converted pod at every agent restart.
func TestAgentTimesRevertsAtShutdown(t *testing.T) {
	conv := onNode(decodePod("c", map[string]string{protocol.AnnotationStatus: protocol.StatusConverted,
		protocol.AnnotationConvertedFrom: "llm-d.ai/role=decode"}), "node-1")
	conv.Labels["llm-d.ai/role"] = "prefill-decode"
	a, client, _ := agentFixture(t, &fixedGPUs{ok: true}, conv)
	a.lister = func() []*corev1.Pod { return []*corev1.Pod{conv.DeepCopy()} }
	obs := &flips{}
	a.o.Observer = obs
	a.o.Actuator = slowRevert{a.o.Actuator}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if err := a.RevertAll(ctx); err != nil {
		t.Fatal(err)
	}
	if p := get(t, client, "c"); p.Labels["llm-d.ai/role"] != "decode" {
		t.Fatalf("role %q after RevertAll; want decode", p.Labels["llm-d.ai/role"])
	}
	if len(obs.took) != 1 || obs.took[0] < 2*time.Millisecond {
		t.Errorf("flips observed %v; want one revert of at least 2ms", obs.took)
	}
}

// Reverts and switches that get no answer keep their own counts: after reverts spaced out by the back-off
// a new lease sends the switch to prefill as a first re-send would (it was undone at once, refused as a
// switch sent four times), and a switch re-sent a moment before its lease ends does not hold the revert.
func TestAgentRevertsAndSwitchesCountApart(t *testing.T) {
	ok := func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	}
	a, client, clk, act, asked := sglangFixture(t, ok)
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	good := act.Port
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hangUp(w) }))
	t.Cleanup(dead.Close)
	u, _ := url.Parse(dead.URL)
	_, ps, _ := net.SplitHostPort(u.Host)
	act.Port, _ = strconv.Atoi(ps)
	at := t0.Add(2 * time.Minute) // the lease has ended: four reverts get no answer
	for range 100 {
		clk.Set(at)
		_ = a.Reconcile(context.Background(), get(t, client, "d1"))
		at = at.Add(time.Second)
	}
	act.Port = good
	before := len(asked())
	for _, wait := range []time.Duration{0, 10 * time.Second} {
		clk.Set(at.Add(wait))
		lease(t, client, at.Add(wait))
		_ = a.Reconcile(context.Background(), get(t, client, "d1"))
	}
	if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; s != protocol.StatusConverted || strings.Join(asked()[before:], ",") != "prefill" {
		t.Errorf("a new lease after unanswered reverts: status %q, roles asked %v; want the switch sent once and the pod converted", s, asked()[before:])
	}

	// A switch that got no answer, re-sent 10 s later, and the lease ending 5 s after that: the revert
	// goes at once.
	b, client2, clk2, _, asked2 := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) { hangUp(w) })
	lease := func(until time.Time) {
		patchPod(t, client2, "d1", fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, protocol.AnnotationConvertUntil, protocol.FormatTime(until)))
	}
	lease(t0.Add(15 * time.Second))
	for _, at := range []time.Duration{0, 10 * time.Second, 16 * time.Second} {
		clk2.Set(t0.Add(at))
		_ = b.Reconcile(context.Background(), get(t, client2, "d1"))
	}
	if got := strings.Join(asked2(), ","); got != "prefill,prefill,decode" {
		t.Errorf("roles asked %v; want the switch, its re-send, and the revert at once when the lease ended", asked2())
	}
}

// A container restart while a revert for lost headroom is pending sends no switch to prefill: the
// restarted engine is back in decode, as the revert wants, and the refusal is recorded at the recheck.
func TestAgentRestartDoesNotOverrideAPendingRevert(t *testing.T) {
	gpus := &fixedGPUs{ok: true}
	a, client, clk, act, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	})
	a.o.GPUs = gpus
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	good := act.Port
	act.Port = closedPort(t)
	gpus.mu.Lock()
	gpus.ok, gpus.reason = false, protocol.ReasonMemoryShort
	gpus.mu.Unlock()
	at := t0.Add(31 * time.Second)
	clk.Set(at)
	lease(t, client, at)
	_ = a.Reconcile(context.Background(), get(t, client, "d1")) // the revert for lost headroom gets no answer
	act.Port = good
	clk.Set(at.Add(time.Second)) // a pass before the restart: the agent sees the pod's count
	_ = a.Reconcile(context.Background(), get(t, client, "d1"))
	p := get(t, client, "d1")
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "sglang", RestartCount: 1}}
	if _, err := client.CoreV1().Pods("ns").UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := len(asked())
	for _, wait := range []time.Duration{2 * time.Second, 31 * time.Second} {
		clk.Set(at.Add(wait))
		lease(t, client, at.Add(wait))
		_ = a.Reconcile(context.Background(), get(t, client, "d1"))
	}
	if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; !strings.HasPrefix(s, protocol.Refused(protocol.ReasonMemoryShort, "")) || strings.Join(asked()[before:], ",") != "decode" {
		t.Errorf("restart with a revert pending: status %q, roles asked %v; want only decode sent and the refusal recorded", s, asked()[before:])
	}
}

// A switch sent again is checked as a first conversion is: an engine back from a restart (an OOM kill is
// the GPU saying it had no room), or one an earlier agent recorded converted, is sent decode and refused
// when the GPU lacks headroom or the pod declares no KV production. Both were sent prefill unchecked.
func TestAgentChecksASwitchSentAgain(t *testing.T) {
	ok := func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	}
	t.Run("a restarted engine on a GPU without headroom", func(t *testing.T) {
		a, client, clk, _, asked := sglangFixture(t, ok)
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil || strings.Join(asked(), ",") != "prefill" {
			t.Fatalf("conversion: %v, roles asked %v", err, asked())
		}
		p := get(t, client, "d1")
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "sglang", RestartCount: 1}}
		if _, err := client.CoreV1().Pods("ns").UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		a.o.GPUs = &fixedGPUs{reason: protocol.ReasonMemoryShort, detail: "free 1 GiB"}
		clk.Set(t0.Add(5 * time.Second))
		lease(t, client, t0.Add(5*time.Second))
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
			t.Fatal(err)
		}
		s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]
		if strings.Join(asked(), ",") != "prefill,decode" || !strings.HasPrefix(s, protocol.Refused(protocol.ReasonMemoryShort, "")) {
			t.Errorf("after the restart: roles asked %v, status %q; want decode sent and the refusal recorded", asked(), s)
		}
	})
	for _, tc := range []struct {
		name   string
		gpus   *fixedGPUs
		patch  string
		reason string
	}{
		{"an earlier agent's conversion on a GPU without headroom", &fixedGPUs{reason: protocol.ReasonMemoryShort, detail: "free 1 GiB"}, "", protocol.ReasonMemoryShort},
		{"an earlier agent's conversion of a pod that produces no KV", &fixedGPUs{ok: true}, fmt.Sprintf(`,%q:null`, protocol.AnnotationKVProducer), protocol.ReasonNotKVProducer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, client, clk, _, asked := sglangFixture(t, ok)
			patchPod(t, client, "d1", fmt.Sprintf(`{"metadata":{"annotations":{%q:%q%s}}}`, protocol.AnnotationStatus, protocol.StatusConverted, tc.patch))
			a.o.GPUs = tc.gpus
			clk.Set(t0.Add(time.Second))
			lease(t, client, t0.Add(time.Second))
			if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
				t.Fatal(err)
			}
			s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]
			if strings.Join(asked(), ",") != "decode" || !strings.HasPrefix(s, protocol.Refused(tc.reason, "")) {
				t.Errorf("roles asked %v, status %q; want decode sent and %s recorded", asked(), s, tc.reason)
			}
		})
	}
}

// convertThenLoseTheAPI converts d1, then makes every GET of a pod fail and ends its lease, and runs three
// passes from the cached copy, each of which must return the read error.
func convertThenLoseTheAPI(t *testing.T, a *Agent, client *fake.Clientset, clk *clock) {
	t.Helper()
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	cached := get(t, client, "d1")
	client.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	clk.Set(t0.Add(2 * time.Minute)) // the lease has ended
	for range 3 {
		if err := a.Reconcile(context.Background(), cached); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("a pass without the API: %v; want the read error", err)
		}
	}
}

// A lease that ends while the API server cannot be read still sends an SGLang engine decode, from the
// cached copy, once: the agent waited for the API, leaving the engine prefilling with its headroom
// unchecked for the whole outage. The status is written when the API answers; a pod leased again
// meanwhile is sent prefill again, checked as a new conversion is, once the minimum flip interval has
// passed since the offline revert.
func TestAgentRevertsAnEndedLeaseWithoutTheAPI(t *testing.T) {
	ok := func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	}
	for _, leasedAgain := range []bool{false, true} {
		a, client, clk, _, asked := sglangFixture(t, ok)
		convertThenLoseTheAPI(t, a, client, clk)
		if got := strings.Join(asked(), ","); got != "prefill,decode" {
			t.Fatalf("leased again %v: roles asked %v without the API; want decode sent once", leasedAgain, got)
		}
		client.ReactionChain = client.ReactionChain[1:] // the API answers again
		if leasedAgain {
			// Leased again at once: the switch waits out the minimum flip interval since the offline revert.
			lease(t, client, t0.Add(2*time.Minute))
			if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil || len(asked()) != 2 {
				t.Fatalf("leased again within the flip interval: %v, roles asked %v; want nothing sent", err, asked())
			}
			clk.Set(t0.Add(2*time.Minute + a.o.MinFlipInterval))
			lease(t, client, t0.Add(2*time.Minute+a.o.MinFlipInterval))
		}
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
			t.Fatal(err)
		}
		want, status := "prefill,decode,decode", protocol.StatusDecode
		if leasedAgain {
			want, status = "prefill,decode,prefill", protocol.StatusConverted
		}
		if got, s := strings.Join(asked(), ","), get(t, client, "d1").Annotations[protocol.AnnotationStatus]; got != want || s != status {
			t.Errorf("leased again %v, the API back: roles asked %v, status %q; want %s and %q", leasedAgain, got, s, want, status)
		}
	}
}

// kubeletRuns answers Runs from a fixed answer.
type kubeletRuns struct {
	runs bool
	err  error
}

func (k kubeletRuns) Runs(context.Context, string, string) (bool, error) { return k.runs, k.err }

// A revert sent from the cached copy while the API server cannot be read, when a lease ends or when the
// agent stops, goes only to a pod the node's kubelet still runs: a pod gone since has no engine to revert,
// and its cached IP may be another pod's (an SGLang prefill server there would be switched to decode). A
// kubelet that cannot be asked leaves the revert to be sent, as before. At shutdown the agent sent
// nothing, leaving the engines prefilling, their headroom unchecked, until the next agent reached the API.
func TestAgentRevertsWithoutTheAPIOnlyAPodTheKubeletRuns(t *testing.T) {
	ok := func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	}
	for _, shutdown := range []bool{false, true} {
		for _, c := range []struct {
			name    string
			kubelet PodLister
			want    string
		}{
			{"the kubelet runs it", kubeletRuns{runs: true}, "prefill,decode"},
			{"the kubelet does not run it", kubeletRuns{}, "prefill"},
			{"the kubelet cannot be asked", kubeletRuns{err: errors.New("connection refused")}, "prefill,decode"},
		} {
			a, client, clk, _, asked := sglangFixture(t, ok)
			a.o.Kubelet = c.kubelet
			if !shutdown {
				convertThenLoseTheAPI(t, a, client, clk)
			} else {
				if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
					t.Fatal(err)
				}
				clk.Set(time.Now()) // the shutdown's deadlines are the agent clock's, checked against the real one
				cached := get(t, client, "d1")
				a.lister = func() []*corev1.Pod { return []*corev1.Pod{cached.DeepCopy()} }
				client.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, errors.New("connection refused")
				})
				ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
				_ = a.RevertAll(ctx) // the read error; what was sent is the test
				cancel()
			}
			if got := strings.Join(asked(), ","); got != c.want {
				t.Errorf("%s (at shutdown %v): roles asked %v without the API; want %s", c.name, shutdown, got, c.want)
			}
		}
	}
}

// A busy GPU does not refuse a switch sent again: an engine an earlier agent converted is busy
// prefilling by design, as a recheck reads it. Refused, an agent restart under load sent every busy
// converted decoder on the node back to decode.
func TestAgentKeepsABusyConversionAfterARestart(t *testing.T) {
	a, client, clk, _, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	})
	patchPod(t, client, "d1", fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, protocol.AnnotationStatus, protocol.StatusConverted))
	a.o.GPUs = &fixedGPUs{reason: protocol.ReasonBusy, detail: "95% utilised"}
	clk.Set(t0.Add(time.Second))
	lease(t, client, t0.Add(time.Second))
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	if got, s := strings.Join(asked(), ","), get(t, client, "d1").Annotations[protocol.AnnotationStatus]; got != "prefill" || s != protocol.StatusConverted {
		t.Errorf("roles asked %v, status %q; want prefill sent and the pod kept converted", got, s)
	}
}

// An agent keeping a pod converted writes conversion-at again once it is protocol.Heartbeat old, and not
// before: the controller renews no lease of a converted pod whose time grows past
// protocol.HeartbeatStale, so a pod whose agent died unreverted is not held converted for good.
func TestAgentWritesAHeartbeat(t *testing.T) {
	a, client, clk, _, _ := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	})
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	at := func() string { return get(t, client, "d1").Annotations[protocol.AnnotationStatusAt] }
	first := at()
	for _, tc := range []struct {
		after time.Duration
		want  string
	}{{protocol.Heartbeat / 2, first}, {protocol.Heartbeat + time.Second, protocol.FormatTime(t0.Add(protocol.Heartbeat + time.Second))}} {
		clk.Set(t0.Add(tc.after))
		lease(t, client, t0.Add(tc.after))
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
			t.Fatal(err)
		}
		if got := at(); got != tc.want || protocol.Silent(get(t, client, "d1"), t0.Add(tc.after)) {
			t.Errorf("%s after the conversion: conversion-at %s, want %s", tc.after, got, tc.want)
		}
	}
}

// The heartbeat lands only on a pod still recorded converted: a cached copy lagging the refusal this
// agent has just written (its time the controller's back-off clock) is not stamped afresh.
func TestAgentHeartbeatSkipsAPodNoLongerConverted(t *testing.T) {
	a, client, clk, _, _ := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	})
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	stale := get(t, client, "d1") // converted
	refusedAt := protocol.FormatTime(t0.Add(time.Second))
	patchPod(t, client, "d1", fmt.Sprintf(`{"metadata":{"annotations":{%q:%q,%q:%q}}}`, protocol.AnnotationStatus, protocol.Refused(protocol.ReasonMemoryShort, ""), protocol.AnnotationStatusAt, refusedAt))
	now := t0.Add(protocol.Heartbeat + 2*time.Second)
	clk.Set(now)
	// The API server answers a failed test with 422 (Invalid), read as nothing to write; the fake
	// clientset with a plain error, which recheck logs. Either way nothing may land.
	_ = a.heartbeat(context.Background(), stale, now)
	if got := get(t, client, "d1").Annotations[protocol.AnnotationStatusAt]; got != refusedAt {
		t.Errorf("conversion-at %s after a heartbeat from a stale copy; want the refusal's %s kept", got, refusedAt)
	}
}

// A revert from the cached copy, while the API cannot be read, that gets no answer is tried again spaced
// as any unanswered revert (10, 20, 40, then every 80 s): sent on every pass, each call held the agent's
// one loop, and every other pod of the node, for its limit for the whole outage.
func TestAgentSpacesOfflineRevertsThatGetNoAnswer(t *testing.T) {
	a, client, clk, act, asked := sglangFixture(t, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	})
	if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
		t.Fatal(err)
	}
	cached := get(t, client, "d1")
	client.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	// The engine no longer answers at the cached address.
	tries := 0
	act.HTTP = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		tries++
		return nil, errors.New("connect: no route to host")
	})}
	start := t0.Add(2 * time.Minute) // the lease has ended
	for _, c := range []struct {
		after time.Duration
		want  int
	}{{0, 1}, {time.Second, 1}, {9 * time.Second, 1}, {10 * time.Second, 2}, {25 * time.Second, 2}, {30 * time.Second, 3}} {
		clk.Set(start.Add(c.after))
		if err := a.Reconcile(context.Background(), cached); err == nil {
			t.Fatal("a pass without the API: no error")
		}
		if tries != c.want {
			t.Fatalf("%s into the outage: %d reverts sent; want %d", c.after, tries, c.want)
		}
	}
	if got := strings.Join(asked(), ","); got != "prefill" {
		t.Errorf("roles the engine was asked: %v", got)
	}
}

// A converted status on a pod that declares no KV producer was written by no agent, each of which checks
// it before converting: the end of its lease sends no decode to its engine (a prefill server recorded
// converted by hand was switched to decode), online or from the cached copy, and records the refusal so
// the controller stops counting it. A pod this agent converted is reverted whatever it declares since.
// Fails on the old code, which sent decode in both the first cases.
func TestAgentSendsNoDecodeToAnEngineNoAgentConverted(t *testing.T) {
	handEdit := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q,%q:null}}}`, protocol.AnnotationStatus, protocol.StatusConverted, protocol.AnnotationKVProducer)
	t.Run("online", func(t *testing.T) {
		a, client, clk, _, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
			_ = json.NewEncoder(w).Encode(map[string]any{"success": true})
		})
		patchPod(t, client, "d1", handEdit)
		clk.Set(t0.Add(2 * time.Minute)) // no lease
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
			t.Fatal(err)
		}
		if s := get(t, client, "d1").Annotations[protocol.AnnotationStatus]; len(asked()) != 0 || !strings.HasPrefix(s, protocol.Refused(protocol.ReasonNotKVProducer, "")) {
			t.Errorf("roles asked %v, status %q; want none asked and the refusal recorded", asked(), s)
		}
	})
	t.Run("from the cached copy", func(t *testing.T) {
		a, client, clk, _, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
			_ = json.NewEncoder(w).Encode(map[string]any{"success": true})
		})
		patchPod(t, client, "d1", handEdit)
		cached := get(t, client, "d1")
		client.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("connection refused")
		})
		clk.Set(t0.Add(2 * time.Minute))
		if err := a.Reconcile(context.Background(), cached); err == nil {
			t.Fatal("a pass without the API: no error")
		}
		if len(asked()) != 0 {
			t.Errorf("roles asked %v from the cached copy; want none", asked())
		}
	})
	t.Run("converted by this agent", func(t *testing.T) {
		a, client, clk, _, asked := sglangFixture(t, func(w http.ResponseWriter, _ *http.Request) {
			_ = json.NewEncoder(w).Encode(map[string]any{"success": true})
		})
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
			t.Fatal(err)
		}
		patchPod(t, client, "d1", fmt.Sprintf(`{"metadata":{"annotations":{%q:null}}}`, protocol.AnnotationKVProducer))
		clk.Set(t0.Add(2 * time.Minute))
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(asked(), ","); got != "prefill,decode" {
			t.Errorf("roles asked %v; want prefill, then decode at the lease's end", got)
		}
		// Reverted and recorded decode by this agent, then recorded converted by hand: not this agent's.
		patchPod(t, client, "d1", handEdit)
		if err := a.Reconcile(context.Background(), get(t, client, "d1")); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(asked(), ","); got != "prefill,decode" {
			t.Errorf("roles asked %v after a hand edit of a pod this agent reverted; want no decode sent again", got)
		}
	})
}
