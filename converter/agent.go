package converter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/velocity/engine"
)

var metav1PatchOptions = metav1.PatchOptions{FieldManager: "tokenscale-converter"}

// Checker verifies a pod's GPU headroom (Headroom is the real one).
type Checker interface {
	Check(ctx context.Context, pod *corev1.Pod) (ok bool, reason, detail string)
}

// Observer sees the agent's outcomes (its /metrics).
type Observer interface {
	Flipped(action string, took time.Duration) // action: convert or revert
	Refused(reason string)
}

type nopObserver struct{}

func (nopObserver) Flipped(string, time.Duration) {}
func (nopObserver) Refused(string)                {}

// AgentOptions configure a node agent.
type AgentOptions struct {
	NodeName string
	// Selector picks the decode pods the agent may flip (a label selector, e.g. "llm-d.ai/role in
	// (decode,prefill-decode)"); empty means every pod that ever holds a lease.
	Selector        string
	Actuator        Actuator
	GPUs            Checker
	MinFlipInterval time.Duration // between two flips of one pod (default 30s); reverting is never delayed
	Resync          time.Duration // how often leases are re-checked for expiry (default 1s)
	// MaxLease: a lease ending further ahead than this is invalid and ignored (default
	// protocol.DefaultMaxLease).
	MaxLease time.Duration
	// Recheck is how often the headroom of a pod kept converted is checked again (default 30s); when
	// it is gone (memory short, unhealthy GPU, NVML failing) the pod is reverted. Utilisation is not
	// re-checked: a converted pod is busy with the prefill work it was converted for.
	Recheck  time.Duration
	Observer Observer
	Now      func() time.Time
	// Kubelet, when set, says which pods the node's kubelet runs now: a revert sent from the cached copy
	// while the API server cannot be read goes only to a pod still there (nil: sent regardless).
	Kubelet PodLister
}

// PodLister says whether the node's kubelet runs a pod now (the PodResources API).
type PodLister interface {
	Runs(ctx context.Context, namespace, name string) (bool, error)
}

// Agent is the per-node converter.
type Agent struct {
	o      AgentOptions
	client kubernetes.Interface
	lister func() []*corev1.Pod

	mu sync.Mutex
	// checked is when each pod kept converted last had its headroom verified.
	checked map[types.NamespacedName]time.Time
	// unanswered holds the pods marked converted whose engine's role is unknown: a switch to prefill, or a
	// revert to decode, got no answer (ErrNoAnswer). While such a pod is leased the switch to prefill is
	// sent again, since nothing else says the engine took the prefill work it is counted for.
	unanswered map[types.NamespacedName]unanswered
	// lost holds the pods whose revert for lost headroom failed, with the refusal to record: the next
	// recheck reverts them whatever the headroom reads then, as an engine that switched to decode without
	// answering has its headroom back while it only decodes.
	lost map[types.NamespacedName]refusal
	// restarts is each converted pod's container restart count when the agent last saw it: an SGLang
	// engine's role lives in its process, so a container that restarted decodes only, whatever the status.
	restarts map[types.NamespacedName]int32
	// withheld holds the pods whose revert from the cached copy was not sent because the kubelet no longer
	// runs them, so that an outage's every pass does not log it again.
	withheld map[types.NamespacedName]bool
	// offline holds the pods reverted from the cached copy while the API server could not be read, whose
	// status is not written yet, and when: the revert is not sent again until the API answers, and a pod
	// leased again gets the switch to prefill no sooner than the minimum flip interval after it.
	offline map[types.NamespacedName]time.Time
	// wrote holds the pods this agent has written a status on, by UID: a converted status on any other was
	// written by an earlier agent (or by hand), whose answers, and re-sends, this one does not know. The
	// times on the pod cannot say it: a node's clock can step back, and a DaemonSet rolled with a surge
	// runs the old agent beside the new one.
	wrote map[types.NamespacedName]statusWrite
}

// statusWrite is the pod a status was written on, and whether that status was converted.
type statusWrite struct {
	uid       types.UID
	converted bool
}

// refusal is why a pod's headroom went, or its conversion failed (undo), as recorded in its status.
type refusal struct {
	reason, detail string
	undo           bool
}

// unanswered is when a pod's switch was last sent without an answer, and how many re-sends went since.
type unanswered struct {
	at   time.Time
	sent int
	// revert: what got no answer was a revert to decode (its retries are spaced as re-sends are), not a
	// switch to prefill; a new lease's re-sends of the switch count afresh.
	revert bool
}

// NewAgent returns an agent for o.NodeName.
func NewAgent(client kubernetes.Interface, o AgentOptions) *Agent {
	if o.MinFlipInterval == 0 {
		o.MinFlipInterval = 30 * time.Second
	}
	if o.Resync == 0 {
		o.Resync = time.Second
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxLease == 0 {
		o.MaxLease = protocol.DefaultMaxLease
	}
	if o.Recheck == 0 {
		o.Recheck = 30 * time.Second
	}
	return &Agent{o: o, client: client, checked: map[types.NamespacedName]time.Time{}, unanswered: map[types.NamespacedName]unanswered{},
		lost: map[types.NamespacedName]refusal{}, restarts: map[types.NamespacedName]int32{}, offline: map[types.NamespacedName]time.Time{}, withheld: map[types.NamespacedName]bool{}, wrote: map[types.NamespacedName]statusWrite{}}
}

// Reconcile brings one pod to the state its lease asks for and records the outcome on the pod. It is
// idempotent: a pod already in the wanted state with the right status is left alone.
func (a *Agent) Reconcile(ctx context.Context, pod *corev1.Pod) error {
	if pod.Spec.NodeName != a.o.NodeName || pod.DeletionTimestamp != nil {
		return nil
	}
	now := a.o.Now()
	want, ours := a.judge(pod, now)
	if !want && protocol.Leased(pod, now) {
		klog.V(1).InfoS("Ignoring a lease that ends too far ahead", "pod", klog.KObj(pod), "until", pod.Annotations[protocol.AnnotationConvertUntil], "maxLease", a.o.MaxLease)
	}
	switch {
	case !want && ours:
		return a.revertEnded(ctx, pod, now)
	case !want:
		return nil
	case ours && a.o.Actuator.Converted(pod):
		if pod.Annotations[protocol.AnnotationStatus] == protocol.StatusConverted {
			return a.recheck(ctx, pod, now)
		}
		// Its flip is recorded under another status (see owns): recorded converted below, on a fresh read.
	case a.refusedRecently(pod, now):
		return nil // the controller moves the lease elsewhere; do not re-check NVML on every event
	}
	// Every path below may write, and a pass over the informer's list can hold a copy older than this
	// agent's own last writes (a pod converted a moment ago still showing decode): the pod is read fresh and
	// judged again, so that a refusal or a conversion never lands on a state the agent did not see.
	fresh, err := a.readHere(ctx, pod, "before converting it")
	if fresh == nil {
		return err
	}
	pod = fresh
	want, ours = a.judge(pod, now)
	switch {
	case !want && ours:
		return a.revert(ctx, pod)
	case !want:
		return nil
	case ours && a.o.Actuator.Converted(pod):
		if pod.Annotations[protocol.AnnotationStatus] != protocol.StatusConverted {
			return a.adopt(ctx, pod)
		}
		return a.recheck(ctx, pod, now)
	case !ours && a.labelSaysConverted(pod):
		// Its owner deployed it converted, or someone else flipped it: taken over, it would be reverted to
		// decode when its lease ends. The refusal moves the lease to a pod that can convert.
		return a.refuse(ctx, pod, pod.ResourceVersion, protocol.ReasonAlreadyConverted,
			"its role is already the converted one without this agent's status; it is left as it is")
	case a.refusedRecently(pod, now):
		return nil
	}
	return a.convert(ctx, pod, now)
}

// judge says whether the pod's lease asks for a conversion and whether the pod is this agent's own (see
// owns).
func (a *Agent) judge(pod *corev1.Pod, now time.Time) (want, ours bool) {
	return protocol.LeasedWithin(pod, now, a.o.MaxLease), a.owns(pod)
}

// owns reports whether an agent converted the pod: its status says converted (written before the flip, so
// that a crash mid-flip is undone on restart), or a label actuator's converted-from shows its own flip
// under another status (a flip patch that landed after its error was handled, or two agents overlapping).
func (a *Agent) owns(pod *corev1.Pod) bool {
	if pod.Annotations[protocol.AnnotationStatus] == protocol.StatusConverted {
		return true
	}
	r, ok := a.o.Actuator.(relabeler)
	return ok && r.FlippedByAgent(pod)
}

// adopt records "converted" on a pod, read fresh, that shows this agent's flip under another status, so
// that the controller counts it and the end of its lease reverts it.
func (a *Agent) adopt(ctx context.Context, pod *corev1.Pod) error {
	if err := a.setStatus(ctx, pod, pod.ResourceVersion, protocol.StatusConverted, false); err != nil {
		if changedMeanwhile(pod, err) {
			return nil
		}
		return err
	}
	klog.InfoS("Found this agent's flip under another status; recorded it as converted", "pod", klog.KObj(pod),
		"status", engine.PrintableWithin(pod.Annotations[protocol.AnnotationStatus], maxAnnotationShown))
	return nil
}

// refusedRecently reports a refusal younger than the minimum flip interval: the controller moves such a
// pod's lease, and checking again sooner would only refuse again.
func (a *Agent) refusedRecently(pod *corev1.Pod, now time.Time) bool {
	if !protocol.IsRefused(pod.Annotations[protocol.AnnotationStatus]) {
		return false
	}
	at, ok := protocol.StatusAt(pod)
	return ok && protocol.Within(at, now, a.o.MinFlipInterval)
}

// engineOnly reports whether the actuator switches the engine itself (SGLang) rather than a label on the
// pod: its revert needs only the engine, and the pod object does not show the role.
func (a *Agent) engineOnly() bool {
	_, label := a.o.Actuator.(relabeler)
	return !label
}

// neverDecoded reports whether a revert would send decode to an engine no agent converted: the SGLang
// switch goes to whatever engine the pod runs, and every conversion checks the pod declares a KV producer
// first, so a converted status on a pod that declares none (a hand edit, a copied manifest) is not a
// decoder's, and decode would turn its engine, a prefill server say, into one. A pod whose converted status
// this agent wrote last is reverted whatever it declares now. A label actuator's revert only relabels the
// pod.
func (a *Agent) neverDecoded(pod *corev1.Pod) bool {
	if !a.engineOnly() || pod.Annotations[protocol.AnnotationKVProducer] == "true" {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	w, ok := a.wrote[podKey(pod)]
	return !ok || w.uid != pod.UID || !w.converted
}

// labelSaysConverted reports whether a label actuator's label shows the pod converted; the SGLang
// actuator's state is only the agent's status, so it never does.
func (a *Agent) labelSaysConverted(pod *corev1.Pod) bool {
	return !a.engineOnly() && a.o.Actuator.Converted(pod)
}

// readHere reads pod fresh from the API server. It returns nil, and no error, when the pod is gone, is
// being deleted or is no longer on this agent's node: there is nothing left to do to it here.
func (a *Agent) readHere(ctx context.Context, pod *corev1.Pod, doing string) (*corev1.Pod, error) {
	fresh, err := a.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", podRef(pod), doing, err)
	}
	if fresh.Spec.NodeName != a.o.NodeName || fresh.DeletionTimestamp != nil {
		return nil, nil
	}
	return fresh, nil
}

// revertEnded reverts a pod this agent converted whose lease is gone. It reads the pod fresh: the informer
// may hold the status write of a conversion without its flip (two watch events), and an actuator that
// skips a revert it thinks done would leave the flip in place with nobody owning it once the status says
// decode.
func (a *Agent) revertEnded(ctx context.Context, pod *corev1.Pod, now time.Time) error {
	fresh, err := a.readHere(ctx, pod, "before reverting its conversion")
	if fresh == nil {
		if err == nil {
			a.forget(pod) // gone, being deleted or moved
			return nil
		}
		return a.revertOffline(ctx, pod, err)
	}
	if want, ours := a.judge(fresh, now); want || !ours {
		return nil // changed since the cached copy (leased again, say): its own event reconciles it
	}
	a.mu.Lock()
	u, waiting := a.unanswered[podKey(fresh)]
	a.mu.Unlock()
	if waiting && u.revertSpaced(now) {
		return nil
	}
	return a.revert(ctx, fresh)
}

// revertSpaced reports whether a revert that got no answer waits at now: it is sent again as a switch is,
// after 10, 20, 40, then every 80 s, since each may hold the agent's loop for the actuator's timeout, and
// every other pod of the node waits on it.
func (u unanswered) revertSpaced(now time.Time) bool {
	return u.revert && now.Sub(u.at) < resendAfter<<min(u.sent, maxResends) && !now.Before(u.at)
}

// revertOffline reverts, from the cached copy, a pod whose lease ended while the API server cannot be
// read (a partition, GETs failing), when the actuator needs only the engine (SGLang): the lease's end asks
// for decode, and waiting for the API left the engine prefilling, its headroom unchecked, for the whole
// outage. The status is written once the API answers (the next pass reverts the pod read fresh, which the
// engine answers as already done). A label actuator's revert is an API write, so it waits for the API.
func (a *Agent) revertOffline(ctx context.Context, pod *corev1.Pod, readErr error) error {
	if !a.engineOnly() || finished(pod) || a.neverDecoded(pod) {
		return readErr
	}
	key := podKey(pod)
	now := a.o.Now()
	a.mu.Lock()
	_, done := a.offline[key]
	u, waiting := a.unanswered[key]
	a.mu.Unlock()
	if done || waiting && u.revertSpaced(now) {
		return readErr
	}
	// Its own budget: a GET black-holed by a partition spent the pass's until its deadline.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoBudget)
	defer cancel()
	if !a.kubeletMayRun(rctx, pod, readErr) {
		return readErr
	}
	if err := a.o.Actuator.Revert(rctx, pod); err != nil {
		// Tried again spaced as any revert that got no answer: an engine that hangs, or a cached pod's IP
		// that no longer answers, held the agent's loop for the call's limit on every pass of the outage.
		next := unanswered{at: now, revert: true}
		if waiting && u.revert {
			next.sent = min(u.sent+1, maxResends)
		}
		a.mu.Lock()
		a.unanswered[key] = next
		a.mu.Unlock()
		return fmt.Errorf("%w; reverting it from the cached copy: %w", readErr, err)
	}
	a.mu.Lock()
	a.offline[key] = a.o.Now()
	a.mu.Unlock()
	klog.InfoS("Lease ended while the API server cannot be read; converted decoder sent back to decode from the cached copy, its status to be written when the API answers", "pod", klog.KObj(pod), "err", readErr)
	return readErr
}

// kubeletMayRun reports whether a revert may be sent to pod's cached copy: false only when the node's
// kubelet answers that it no longer runs the pod, which then has no engine to revert while its IP may be
// another pod's by now. A kubelet that cannot be asked leaves the revert to be sent. Asked again on each
// pass (a restarted kubelet lists its pods again once it reaches the API); a pod withheld is logged once.
func (a *Agent) kubeletMayRun(ctx context.Context, pod *corev1.Pod, readErr error) bool {
	if a.o.Kubelet == nil {
		return true
	}
	key := podKey(pod)
	runs, err := a.o.Kubelet.Runs(ctx, pod.Namespace, pod.Name)
	if err == nil && !runs {
		a.mu.Lock()
		logged := a.withheld[key]
		a.withheld[key] = true
		a.mu.Unlock()
		if !logged {
			klog.InfoS("The API server cannot be read, and the kubelet no longer runs the pod: no revert sent to its cached address", "pod", klog.KObj(pod), "err", readErr)
		}
		return false
	}
	if err != nil {
		klog.V(2).InfoS("Cannot ask the kubelet whether it still runs a pod; reverting it from the cached copy", "pod", klog.KObj(pod), "err", err)
	} else {
		a.mu.Lock()
		delete(a.withheld, key)
		a.mu.Unlock()
	}
	return true
}

// revert flips a pod this agent converted, read fresh, back to decode and records it.
func (a *Agent) revert(ctx context.Context, pod *corev1.Pod) error {
	a.mu.Lock()
	prev, had := a.unanswered[podKey(pod)]
	a.mu.Unlock()
	a.forget(pod)
	if a.engineOnly() && finished(pod) {
		// No engine runs in it to switch back, and its IP may be another pod's by now: the status alone is
		// put back, which frees its slot. Sent to the old IP, the switch reached whichever engine had the
		// address, and without an answer it was sent again for as long as the pod object stayed.
		klog.InfoS("Pod has finished: no engine to switch back, recorded decode", "pod", klog.KObj(pod), "phase", pod.Status.Phase)
		return a.setStatus(ctx, pod, "", protocol.StatusDecode, true)
	}
	if a.neverDecoded(pod) {
		klog.InfoS("Pod is recorded converted but declares no KV producer: no agent converted it, so no switch to decode is sent to its engine", "pod", klog.KObj(pod))
		return a.refuse(ctx, pod, pod.ResourceVersion, protocol.ReasonNotKVProducer,
			"recorded converted without "+protocol.AnnotationKVProducer+"=true, which every conversion checks first; no switch to decode was sent to its engine")
	}
	start := time.Now()
	if err := a.o.Actuator.Revert(ctx, pod); err != nil {
		if errors.Is(err, ErrNoAnswer) {
			// The engine's role is unknown and the pod stays marked converted: the revert is tried again while
			// it is not leased, spaced as re-sends are, and a new lease sends the switch to prefill again.
			u := unanswered{at: a.o.Now(), revert: true}
			if had && prev.revert {
				u.sent = min(prev.sent+1, maxResends)
			}
			a.mu.Lock()
			a.unanswered[podKey(pod)] = u
			a.mu.Unlock()
		}
		return fmt.Errorf("reverting %s: %w", podRef(pod), err)
	}
	a.o.Observer.Flipped("revert", time.Since(start))
	klog.InfoS("Converted decoder back to decode only", "pod", klog.KObj(pod))
	return a.setStatus(ctx, pod, "", protocol.StatusDecode, true)
}

// convert verifies a leased pod, read fresh, and flips it. A pod of ours whose flip is missing (a crash
// mid-flip, a revert whose refusal was never recorded, a hand edit) comes here too: it is converted again
// only as a fresh conversion would be, after the minimum flip interval and with the headroom.
func (a *Agent) convert(ctx context.Context, pod *corev1.Pod, now time.Time) error {
	ok, reason, detail := a.verify(ctx, pod, now)
	// The checks can take seconds (the owner's GET, PodResources and NVML up to 5 s each), longer than the
	// controller takes to renew the lease, so a write conditional on the first read could conflict on every
	// pass: the pod is read again, and written on that read's version if only its lease changed.
	again, err := a.readHere(ctx, pod, "after checking it")
	if again == nil {
		return err
	}
	// A lease that ended meanwhile gets no flip, which the next pass would only revert; any other change is
	// judged on the next pass.
	if !protocol.LeasedWithin(again, a.o.Now(), a.o.MaxLease) || !sameButLease(pod, again) {
		return nil
	}
	pod = again
	if !ok {
		a.forget(pod)
		return a.refuse(ctx, pod, pod.ResourceVersion, reason, detail)
	}
	// A fresh conversion: an entry left by a pod of the same name (a StatefulSet's, recreated) is not its.
	a.forget(pod)
	start := time.Now()
	if err := a.setStatus(ctx, pod, pod.ResourceVersion, protocol.StatusConverted, true); err != nil {
		if changedMeanwhile(pod, err) {
			return nil
		}
		return err
	}
	if err := a.o.Actuator.Convert(ctx, pod); err != nil {
		if errors.Is(err, ErrNoAnswer) {
			// The engine may still switch after the call gave up, and an undo could race it and lose: the pod
			// stays marked converted, the switch is sent again (idempotent) until the engine answers, and the
			// lease-end revert (idempotent too) puts it back to decode.
			a.markUnanswered(pod, now)
			return fmt.Errorf("converting %s: %w (it stays marked converted, the switch is sent again, and it is reverted when its lease ends)", podRef(pod), err)
		}
		return a.undo(ctx, pod, err)
	}
	a.o.Observer.Flipped("convert", time.Since(start))
	a.mu.Lock()
	a.checked[podKey(pod)] = now
	a.restarts[podKey(pod)] = restartCount(pod)
	a.mu.Unlock()
	klog.InfoS("Converted decoder to take prefill work", "pod", klog.KObj(pod), "actuator", a.o.Actuator.Name())
	return nil
}

// undo puts back a conversion the actuator failed with err (not ErrNoAnswer) and records the refusal.
// A conversion may have half landed (a label patch whose reply was lost). Only once it is undone is the
// refusal recorded: the status stays "converted" until then, so this agent keeps the pod as its own and
// reverts it when the lease ends, and the controller keeps counting it. The undo reads the pod afresh: the
// copy in hand predates the flip, and an actuator that sees its pod already at decode would change nothing.
func (a *Agent) undo(ctx context.Context, pod *corev1.Pod, err error) error {
	a.forget(pod)
	// Its own budget: the flip may have failed on the reconcile's spent one, and the undo is what puts
	// the pod back to a state the controller counts right.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoBudget)
	defer cancel()
	var rerr error
	if !errors.Is(err, ErrUnchanged) { // an engine that did not switch is still decoding: nothing to undo
		fresh, gerr := a.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		rerr = gerr
		if gerr == nil {
			rerr = a.o.Actuator.Revert(ctx, fresh)
		}
	}
	if rerr != nil {
		// Kept as a pod of known state, checked from now on: taken for one of unknown role, it would be
		// sent the switch to prefill again, and an engine that never answers would get it for good. The
		// undo is sent again at each recheck (lost), and the refusal recorded once it is answered: the
		// controller renews a converted pod's lease, so waiting for the lease to end kept it counted as
		// converted, decoding only, for as long as conversions were wanted.
		a.mu.Lock()
		a.checked[podKey(pod)] = a.o.Now()
		a.lost[podKey(pod)] = refusal{protocol.ReasonActuator, err.Error(), true}
		a.mu.Unlock()
		return fmt.Errorf("converting %s: %w; undoing it: %w (it stays marked converted; the undo is sent again at each recheck, and it is reverted when its lease ends)", podRef(pod), err, rerr)
	}
	// Unconditional: the undo itself changed the pod, and until this lands the status says converted
	// over a decode pod, which the controller counts as converted.
	if ferr := a.refuse(ctx, pod, "", protocol.ReasonActuator, err.Error()); ferr != nil {
		return fmt.Errorf("converting %s: %w; recording the refusal: %w", podRef(pod), err, ferr)
	}
	return fmt.Errorf("converting %s: %w", podRef(pod), err)
}

// resendAfter spaces the re-sends of a switch that got no answer, doubling after each (10, 20, 40 s):
// each may block the agent's loop for the actuator's timeout (5 s for SGLang), and the other pods of the
// node wait on it. After maxResends the conversion is undone as a refused one is, so that a pod whose
// engine never answers is not counted as converted for as long as the controller renews its lease.
const (
	resendAfter = 10 * time.Second
	maxResends  = 3
)

// markUnanswered records that a switch of pod got no answer now.
func (a *Agent) markUnanswered(pod *corev1.Pod, now time.Time) {
	a.mu.Lock()
	a.unanswered[podKey(pod)] = unanswered{at: now}
	a.mu.Unlock()
}

// noteUnknownRole marks for a re-send, due at once, a converted pod whose containers restarted since the
// agent last saw it (an SGLang engine starts in the decode role), and a pod recorded converted by an earlier agent (no
// status written by this one) that this agent has not checked yet, when the actuator's record
// is the agent's status alone (SGLang): that agent may have stopped before the engine answered its switch,
// or after a switch that got no answer, whose re-sends lived in its memory. A status this agent wrote is
// never taken for one: a cached copy still showing a conversion this agent has since reverted or undone
// would otherwise send the engine to prefill with nothing left to revert it. An engine already in the prefill role accepts the switch
// ("already in target role"), one that never got it takes it or refuses it, and a refusal undoes the
// conversion so that the controller moves the lease. Without it such a pod stayed counted as converted,
// decoding only, until its lease ended, which the controller renews.
func (a *Agent) noteUnknownRole(pod *corev1.Pod) {
	if !a.engineOnly() {
		return // the label is the role, and the pod object shows it
	}
	key := podKey(pod)
	n := restartCount(pod)
	a.mu.Lock()
	prev, known := a.restarts[key]
	a.restarts[key] = n
	_, reverting := a.lost[key] // a revert is pending: the restarted engine is back in decode, as it wants
	if known && n > prev && !reverting {
		// A container restarted since the agent last saw the pod converted: its engine came back in the
		// decode role it starts in, so the switch is sent again, due now (a refusal undoes the conversion).
		if _, pending := a.unanswered[key]; !pending {
			a.unanswered[key] = unanswered{}
		}
		a.mu.Unlock()
		klog.InfoS("A converted decoder's container restarted; sending the switch to prefill again", "pod", klog.KObj(pod), "restarts", n)
		return
	}
	defer a.mu.Unlock()
	if w, ok := a.wrote[key]; ok && w.uid == pod.UID {
		return
	}
	_, seen := a.checked[key]
	_, pending := a.unanswered[key]
	if !seen && !pending {
		a.unanswered[key] = unanswered{} // sent at the zero time: due now
	}
}

// resend sends again the switch to prefill of a leased pod whose engine's role is unknown, when due; it
// reports whether the pod had such a switch. An answer ends it: a success keeps the pod converted, a
// refusal (the engine took no prefill work) undoes and refuses it as a first conversion's would. SGLang
// handles role switches in the order they come, so an undo cannot be overtaken by the switch that got
// no answer. Without it a pod whose switch was lost stayed counted as converted, decoding only, until its
// lease ended.
func (a *Agent) resend(ctx context.Context, pod *corev1.Pod, now time.Time) (bool, error) {
	key := podKey(pod)
	a.mu.Lock()
	u, ok := a.unanswered[key]
	if ok && u.revert {
		// Leased again after reverts that got no answer: the switch's re-sends count from the last revert.
		u = unanswered{at: u.at}
	}
	due := ok && (now.Sub(u.at) >= resendAfter<<u.sent || now.Before(u.at))
	if due {
		u.at, u.sent = now, u.sent+1
		a.unanswered[key] = u
	}
	a.mu.Unlock()
	if !due {
		return ok, nil
	}
	if u.sent > maxResends {
		return true, a.undo(ctx, pod, fmt.Errorf("pod %s: no answer to the switch to prefill, sent %d times", podRef(pod), maxResends+1))
	}
	// Each send is a conversion, checked as the first was: the engine came back from a restart (an OOM kill
	// says the GPU had no room), an earlier agent's switch is completed, or a pod is leased again after a
	// revert that got no answer. Sent unchecked, any of them put an engine in prefill beside a GPU without
	// headroom, or a pod that does not produce KV. Refused, the engine is sent decode, the safe role for
	// one whose role is unknown, and the refusal recorded as a recheck's is.
	if ok, reason, detail := a.resendable(ctx, pod); !ok {
		return true, a.revertLost(ctx, pod, now, refusal{reason: reason, detail: detail})
	}
	start := time.Now()
	err := a.o.Actuator.Convert(ctx, pod)
	if errors.Is(err, ErrNoAnswer) {
		return true, fmt.Errorf("re-sending the conversion of %s: %w (sent again in %s)", podRef(pod), err, resendAfter<<u.sent)
	}
	a.mu.Lock()
	delete(a.unanswered, key)
	a.mu.Unlock()
	if err != nil {
		return true, a.undo(ctx, pod, err)
	}
	a.o.Observer.Flipped("convert", time.Since(start))
	a.mu.Lock()
	a.checked[key] = now
	a.mu.Unlock()
	klog.InfoS("Converted decoder to take prefill work; the engine answered the switch sent again", "pod", klog.KObj(pod), "actuator", a.o.Actuator.Name())
	return true, nil
}

// resendable runs the checks of a conversion that hold for a switch sent again: the flip interval and
// the owner's selector were checked when it was first sent (and a label actuator sends none again).
func (a *Agent) resendable(ctx context.Context, pod *corev1.Pod) (ok bool, reason, detail string) {
	if ok, reason, detail := producesKV(pod); !ok {
		return false, reason, detail
	}
	ok, reason, detail = a.o.GPUs.Check(ctx, pod)
	if reason == protocol.ReasonBusy {
		// As at a recheck: an engine the switch may already have reached is busy prefilling by design, and
		// refusing it for that sent every busy converted decoder on a node back to decode after an agent
		// restart under load.
		return true, "", ""
	}
	return ok, reason, detail
}

// producesKV checks that the pod declares itself a KV producer, without which none is converted.
func producesKV(pod *corev1.Pod) (ok bool, reason, detail string) {
	if pod.Annotations[protocol.AnnotationKVProducer] != "true" {
		return false, protocol.ReasonNotKVProducer, "the pod does not declare " + protocol.AnnotationKVProducer + "=true"
	}
	return true, "", ""
}

// sameButLease reports whether b shows the pod as a did to a conversion's checks: on the same node, not
// being deleted, with the same labels and protocol annotations but the lease, which the controller renews
// about every third of its length.
func sameButLease(a, b *corev1.Pod) bool {
	if b.Spec.NodeName != a.Spec.NodeName || b.DeletionTimestamp != nil || !maps.Equal(a.Labels, b.Labels) {
		return false
	}
	for _, k := range []string{protocol.AnnotationStatus, protocol.AnnotationStatusAt, protocol.AnnotationFlippedAt,
		protocol.AnnotationConvertedFrom, protocol.AnnotationKVProducer} {
		va, oka := a.Annotations[k]
		vb, okb := b.Annotations[k]
		if va != vb || oka != okb {
			return false
		}
	}
	return true
}

// verify runs a conversion's checks; when one fails, reason (a protocol.Reason* constant) and detail say
// why.
func (a *Agent) verify(ctx context.Context, pod *corev1.Pod, now time.Time) (ok bool, reason, detail string) {
	if ok, reason, detail := producesKV(pod); !ok {
		return false, reason, detail
	}
	if at, ok := protocol.FlippedAt(pod); ok && protocol.Within(at, now, a.o.MinFlipInterval) {
		return false, protocol.ReasonTooSoon, fmt.Sprintf("last flip %s ago, minimum %s", now.Sub(at).Round(time.Second), a.o.MinFlipInterval)
	}
	if ok, detail := a.ownerKeeps(ctx, pod); !ok {
		return false, protocol.ReasonOwnerSelector, detail
	}
	return a.o.GPUs.Check(ctx, pod)
}

// recheck verifies the headroom of a pod kept converted once per Recheck, and reverts it (recording the
// refusal, so the controller moves the lease) when the headroom is gone. A pod first seen converted (after
// an agent restart) starts its interval then, or once its engine answers the switch sent again
// (noteUnknownRole).
func (a *Agent) recheck(ctx context.Context, pod *corev1.Pod, now time.Time) error {
	// The heartbeat first, whatever this pass then waits on (an engine's answer, a flip interval, a
	// revert to retry): each is a live agent's, and a pod whose heartbeat lapsed loses its lease.
	if err := a.heartbeat(ctx, pod, now); err != nil {
		klog.V(2).InfoS("Writing a converted pod's heartbeat failed; tried again next pass", "pod", klog.KObj(pod), "err", err)
	}
	a.mu.Lock()
	if key := podKey(pod); !a.offline[key].IsZero() {
		// Reverted from the cached copy while the API could not be read, and leased again since: its engine
		// decodes, so the switch to prefill is sent again, checked as a new conversion is (resend), once the
		// minimum flip interval has passed since that revert, which no flipped-at records.
		if protocol.Within(a.offline[key], now, a.o.MinFlipInterval) {
			a.mu.Unlock()
			return nil
		}
		delete(a.offline, key)
		if _, pending := a.unanswered[key]; !pending {
			a.unanswered[key] = unanswered{}
		}
	}
	a.mu.Unlock()
	a.noteUnknownRole(pod)
	if had, err := a.resend(ctx, pod, now); had {
		return err
	}
	a.mu.Lock()
	last, seen := a.checked[podKey(pod)]
	due := seen && now.Sub(last) >= a.o.Recheck
	if !seen || due {
		a.checked[podKey(pod)] = now
	}
	a.mu.Unlock()
	if !due {
		return nil
	}
	a.mu.Lock()
	r, pending := a.lost[podKey(pod)]
	a.mu.Unlock()
	if !pending {
		var ok bool
		ok, r.reason, r.detail = a.o.GPUs.Check(ctx, pod)
		if ok || r.reason == protocol.ReasonBusy {
			return nil
		}
	}
	return a.revertLost(ctx, pod, now, r)
}

// heartbeat writes conversion-at again on a pod this agent keeps converted once it is protocol.Heartbeat
// old: the controller renews no lease of a converted pod whose time grows past protocol.HeartbeatStale,
// as its agent may be gone.
func (a *Agent) heartbeat(ctx context.Context, pod *corev1.Pod, now time.Time) error {
	if at, ok := protocol.StatusAt(pod); ok && protocol.Within(at, now, protocol.Heartbeat) {
		return nil
	}
	// Only on a pod still recorded converted: the cached copy can lag a refusal or revert this agent has
	// just written, whose time is the controller's back-off clock.
	patch, err := json.Marshal([]map[string]string{
		{"op": "test", "path": "/metadata/annotations/" + jsonPointer(protocol.AnnotationStatus), "value": protocol.StatusConverted},
		{"op": "add", "path": "/metadata/annotations/" + jsonPointer(protocol.AnnotationStatusAt), "value": protocol.FormatTime(now)},
	})
	if err != nil {
		return err
	}
	_, err = a.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.JSONPatchType, patch, metav1PatchOptions)
	if apierrors.IsInvalid(err) || apierrors.IsNotFound(err) {
		return nil // no longer converted (the test failed), or gone: nothing to say it holds
	}
	if err != nil {
		return fmt.Errorf("writing the heartbeat of %s: %w", podRef(pod), err)
	}
	return nil
}

// jsonPointer escapes a key for a JSON patch path (RFC 6901): "~" as "~0", "/" as "~1".
func jsonPointer(k string) string { return pointerEscaper.Replace(k) }

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// revertLost reverts a converted pod whose headroom is gone (r says why), and records the refusal so the
// controller moves the lease; a revert that fails is tried again at the next recheck, whatever the
// headroom then.
func (a *Agent) revertLost(ctx context.Context, pod *corev1.Pod, now time.Time, r refusal) error {
	reason, detail := r.reason, r.detail
	a.forget(pod)
	start := time.Now()
	if err := a.o.Actuator.Revert(ctx, pod); err != nil {
		// Tried again at the next recheck, whatever the headroom then (lost): a pod seen for the first time
		// would get the switch to prefill sent again (noteUnknownRole), the wrong way for a pod whose
		// headroom went.
		a.mu.Lock()
		a.checked[podKey(pod)] = now
		a.lost[podKey(pod)] = refusal{reason, detail, r.undo}
		a.mu.Unlock()
		return fmt.Errorf("reverting %s after its headroom went (%s): %w", podRef(pod), reason, err)
	}
	a.o.Observer.Flipped("revert", time.Since(start))
	a.o.Observer.Refused(reason)
	if r.undo {
		klog.InfoS("The undo of a failed conversion was answered; converted decoder back to decode only", "pod", klog.KObj(pod), "reason", reason, "detail", detail)
	} else {
		klog.InfoS("Headroom gone; converted decoder back to decode only", "pod", klog.KObj(pod), "reason", reason, "detail", detail)
	}
	return a.setStatus(ctx, pod, "", protocol.Refused(reason, detail), true)
}

// restartCount is how many times the pod's containers have restarted, all together.
func restartCount(p *corev1.Pod) int32 {
	var n int32
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

func podKey(p *corev1.Pod) types.NamespacedName {
	return types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
}

func (a *Agent) forget(pod *corev1.Pod) {
	a.mu.Lock()
	delete(a.checked, podKey(pod))
	delete(a.unanswered, podKey(pod))
	delete(a.lost, podKey(pod))
	delete(a.restarts, podKey(pod))
	delete(a.offline, podKey(pod))
	delete(a.withheld, podKey(pod))
	a.mu.Unlock()
}

// ownerKeeps checks, for an actuator that flips a label, that the pod's owner still selects it converted.
func (a *Agent) ownerKeeps(ctx context.Context, pod *corev1.Pod) (bool, string) {
	r, ok := a.o.Actuator.(relabeler)
	if !ok {
		return true, ""
	}
	return ownerKeeps(ctx, a.client, pod, r.ConvertedLabels(pod))
}

// refuse records a refusal; rv, when set, is the resourceVersion of the copy it was decided on (see
// setStatus). A refusal that lost to a newer write is not one: the next pass decides again.
func (a *Agent) refuse(ctx context.Context, pod *corev1.Pod, rv, reason, detail string) error {
	if err := a.setStatus(ctx, pod, rv, protocol.Refused(reason, detail), false); err != nil {
		if changedMeanwhile(pod, err) {
			return nil
		}
		return err
	}
	a.o.Observer.Refused(reason)
	klog.InfoS("Refused a conversion", "pod", klog.KObj(pod), "reason", reason, "detail", detail)
	return nil
}

// changedMeanwhile reports (and logs) a conditional write that failed because the pod changed after the
// agent read it; it is no error, since the next pass judges the pod as it is then.
func changedMeanwhile(pod *corev1.Pod, err error) bool {
	if !apierrors.IsConflict(err) {
		return false
	}
	klog.V(1).InfoS("Pod changed while it was checked; judging it again on the next pass", "pod", klog.KObj(pod), "err", err)
	return true
}

// setStatus records status on the pod. A non-empty rv is sent as the patch's resourceVersion, so the API
// server refuses the write with a Conflict if the pod changed since the copy the decision was taken on.
func (a *Agent) setStatus(ctx context.Context, pod *corev1.Pod, rv, status string, flipped bool) error {
	now := protocol.FormatTime(a.o.Now())
	ann := map[string]string{protocol.AnnotationStatus: status, protocol.AnnotationStatusAt: now}
	// A repeated refusal is still written: its new time is the controller's back-off clock (Reconcile
	// re-checks a refused pod at most once per minimum flip interval, so this cannot loop).
	if pod.Annotations[protocol.AnnotationStatus] == status && !flipped && !protocol.IsRefused(status) {
		return nil
	}
	if flipped {
		ann[protocol.AnnotationFlippedAt] = now
	}
	meta := map[string]any{"annotations": ann}
	if rv != "" {
		meta["resourceVersion"] = rv
	}
	if pod.UID != "" {
		// A precondition, as the controller's lease writes carry: a pod recreated under this name since the
		// copy was read is another, and a revert's "decode" or a refusal would keep it from converting.
		meta["uid"] = pod.UID
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	// Marked before the write, which may land although its answer is lost: a cached copy showing the
	// status this agent replaced is then never read as an earlier agent's.
	a.mu.Lock()
	a.wrote[podKey(pod)] = statusWrite{pod.UID, status == protocol.StatusConverted}
	a.mu.Unlock()
	if _, err := a.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1PatchOptions); err != nil {
		return fmt.Errorf("recording %q on %s: %w", status, podRef(pod), err)
	}
	return nil
}

// shutdownBudget is how long a stopping agent spends converting its pods back (inside the pod's 30 s
// termination grace period).
const shutdownBudget = 20 * time.Second

// RevertAll converts every converted pod of the node back; the agent runs it before anything else when
// it stops or loses its signal. Only the pods the cache shows as possibly converted are read: the node's
// other pods (DaemonSets among them) would spend the budget at the client's rate limit. Each revert gets an
// equal share of the time left among the candidates still to go (at most a quarter of shutdownBudget), so
// engines that do not answer cannot starve the pods after them.
func (a *Agent) RevertAll(ctx context.Context) error {
	var candidates []*corev1.Pod
	for _, cached := range a.pods() {
		if a.mayBeConverted(cached) {
			candidates = append(candidates, cached)
		}
	}
	var first error
	for i, cached := range candidates {
		if err := a.revertAtShutdown(ctx, cached, len(candidates)-i); err != nil {
			klog.ErrorS(err, "Reverting a converted decoder at shutdown", "pod", klog.KObj(cached))
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// mayBeConverted picks RevertAll's candidates from a cached copy, which may lag this agent's last writes:
// a pod this agent converts is leased first, then says converted, then (label actuators) shows the label,
// and the cache may have seen any one of the three.
func (a *Agent) mayBeConverted(p *corev1.Pod) bool {
	_, leased := p.Annotations[protocol.AnnotationConvertUntil]
	return leased || p.Annotations[protocol.AnnotationStatus] == protocol.StatusConverted || a.labelSaysConverted(p)
}

// revertAtShutdown reverts one candidate of RevertAll within its share of ctx's time left, among the
// remaining candidates (this one included).
func (a *Agent) revertAtShutdown(ctx context.Context, cached *corev1.Pod, remaining int) error {
	now := a.o.Now()
	per := shutdownBudget / 4
	if dl, ok := ctx.Deadline(); ok {
		per = min(dl.Sub(now)/time.Duration(remaining), per)
	}
	ctx, cancel := context.WithDeadline(ctx, now.Add(per))
	defer cancel()
	// The informer cache may not have seen this agent's last patches yet (a flip written just before
	// shutdown), and the actuator skips a pod it thinks is already reverted: read the pod fresh, within half
	// the pod's share, so that a GET black-holed by a partition leaves the revert from the cached copy time.
	getCtx, getCancel := context.WithDeadline(ctx, now.Add(per/2))
	p, err := a.client.CoreV1().Pods(cached.Namespace).Get(getCtx, cached.Name, metav1.GetOptions{})
	getCancel()
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		err = fmt.Errorf("reading %s before reverting it: %w", podRef(cached), err)
		// As on a lease that ends during an outage: an actuator that needs only the engine sends decode from
		// the cached copy, or the engine would prefill on, its headroom unchecked, until the next agent
		// reaches the API. The status stays converted; the next agent reverts the pod once its lease ends.
		if !a.engineOnly() || finished(cached) || !a.owns(cached) || !a.kubeletMayRun(ctx, cached, err) {
			return err
		}
		if rerr := a.o.Actuator.Revert(ctx, cached); rerr != nil {
			return fmt.Errorf("%w; reverting it at shutdown from the cached copy: %w", err, rerr)
		}
		klog.InfoS("Converted decoder sent back to decode at shutdown from the cached copy; its status is written by the next agent", "pod", klog.KObj(cached), "err", err)
		return nil
	}
	if !a.owns(p) {
		return nil
	}
	start := time.Now()
	if err := a.o.Actuator.Revert(ctx, p); err != nil {
		return fmt.Errorf("reverting %s at shutdown: %w", podRef(p), err)
	}
	a.o.Observer.Flipped("revert", time.Since(start))
	return a.setStatus(ctx, p, "", protocol.StatusDecode, true)
}

func (a *Agent) pods() []*corev1.Pod {
	if a.lister == nil {
		return nil
	}
	return a.lister()
}

// Run watches the node's pods, reconciles each on every change and every Resync (leases expire without
// an event), and on return converts every pod back (with a fresh context of shutdownBudget, as ctx is
// done).
func (a *Agent) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(a.client, 0, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.o.NodeName).String()
		lo.LabelSelector = a.o.Selector
	}))
	inf := factory.Core().V1().Pods().Informer()
	work := make(chan string, 4096)
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			select {
			case work <- key:
			default: // the periodic pass catches up
			}
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }}); err != nil {
		return err
	}
	a.lister = func() []*corev1.Pod {
		var out []*corev1.Pod
		for _, o := range inf.GetStore().List() {
			if p, ok := o.(*corev1.Pod); ok {
				out = append(out, p)
			}
		}
		return out
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return ctx.Err()
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), shutdownBudget)
		defer cancel()
		if err := a.RevertAll(rctx); err != nil {
			klog.ErrorS(err, "Not every converted decoder could be reverted at shutdown")
		}
	}()
	tick := time.NewTicker(a.o.Resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case key := <-work:
			if o, ok, err := inf.GetStore().GetByKey(key); err == nil && ok {
				a.reconcileLogged(ctx, o.(*corev1.Pod))
			}
		case <-tick.C:
			a.pass(ctx)
		}
	}
}

// pass reconciles every pod of the node the agent watches, then forgets what it remembers of pods no
// longer among them.
func (a *Agent) pass(ctx context.Context) {
	pods := a.pods()
	for _, p := range pods {
		a.reconcileLogged(ctx, p)
	}
	a.keepOnly(pods)
}

// reconcileBudget bounds one pod's reconcile: the agent handles its pods one at a time, so a call that
// hangs (an overloaded API server, a half-dead connection, an engine that does not answer) stalled every
// other pod of the node, reverts at a lease's end included, until the server's own 60 s request timeout.
// It is above the sum of a conversion's own step limits (the owner's GET, PodResources, NVML and the
// actuator, up to 5 s each, and its writes), so that a slow node's conversion is not cut off between its
// status write and its flip (10 s did).
var reconcileBudget = 30 * time.Second

// undoBudget bounds the undo of a failed flip: a read, the actuator's revert and a status write.
const undoBudget = 10 * time.Second

func (a *Agent) reconcileLogged(ctx context.Context, p *corev1.Pod) {
	ctx, cancel := context.WithTimeout(ctx, reconcileBudget)
	defer cancel()
	if err := a.Reconcile(ctx, p); err != nil {
		klog.ErrorS(err, "Converter reconcile failed; retrying on the next pass", "pod", klog.KObj(p))
	}
}

// keepOnly drops the per-pod records (recheck times, unanswered switches, pending reverts, restart
// counts) of pods not in pods: a pod deleted while converted, or one moved out of --selector, is never
// reconciled again, and a Deployment's pods get new names, so their entries stayed for the agent's life.
func (a *Agent) keepOnly(pods []*corev1.Pod) {
	live := make(map[types.NamespacedName]bool, len(pods))
	for _, p := range pods {
		live[podKey(p)] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	keepLive(a.checked, live)
	keepLive(a.unanswered, live)
	keepLive(a.lost, live)
	keepLive(a.restarts, live)
	keepLive(a.offline, live)
	keepLive(a.withheld, live)
	keepLive(a.wrote, live)
}

// keepLive deletes m's entries for pods not in live.
func keepLive[V any](m map[types.NamespacedName]V, live map[types.NamespacedName]bool) {
	maps.DeleteFunc(m, func(k types.NamespacedName, _ V) bool { return !live[k] })
}

// finished reports whether a pod's containers have all ended for good (evicted, a graceful node shutdown,
// run to completion): its object stays, with its old IP, until it is deleted.
func finished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded
}
