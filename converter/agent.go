package converter

import (
	"context"
	"encoding/json"
	"fmt"
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
}

// Agent is the per-node converter.
type Agent struct {
	o      AgentOptions
	client kubernetes.Interface
	lister func() []*corev1.Pod

	mu sync.Mutex
	// checked is when each pod kept converted last had its headroom verified.
	checked map[types.NamespacedName]time.Time
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
	return &Agent{o: o, client: client, checked: map[types.NamespacedName]time.Time{}}
}

// Reconcile brings one pod to the state its lease asks for and records the outcome on the pod. It is
// idempotent: a pod already in the wanted state with the right status is left alone.
func (a *Agent) Reconcile(ctx context.Context, pod *corev1.Pod) error {
	if pod.Spec.NodeName != a.o.NodeName || pod.DeletionTimestamp != nil {
		return nil
	}
	now := a.o.Now()
	// The agent manages only pods it converted (status "converted", written before the flip so that a
	// crash mid-flip is undone on restart); a pod a user deployed as prefill-decode is never touched.
	want, ours := protocol.LeasedWithin(pod, now, a.o.MaxLease), pod.Annotations[protocol.AnnotationStatus] == protocol.StatusConverted
	if !want && protocol.Leased(pod, now) {
		klog.V(1).InfoS("Ignoring a lease that ends too far ahead", "pod", klog.KObj(pod), "until", pod.Annotations[protocol.AnnotationConvertUntil], "maxLease", a.o.MaxLease)
	}
	switch {
	case !want && ours:
		a.forget(pod)
		// Read fresh: the informer may hold the status write of a conversion without its flip (two watch
		// events), and an actuator that skips a revert it thinks done would leave the flip in place with
		// nobody owning it once the status says decode.
		fresh, err := a.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil // deleted: nothing to revert
		}
		if err != nil {
			return fmt.Errorf("reading %s before reverting its conversion: %w", podRef(pod), err)
		}
		if fresh.Spec.NodeName != a.o.NodeName || fresh.DeletionTimestamp != nil ||
			fresh.Annotations[protocol.AnnotationStatus] != protocol.StatusConverted || protocol.LeasedWithin(fresh, now, a.o.MaxLease) {
			return nil // changed since the cached copy (leased again, say): its own event reconciles it
		}
		pod = fresh
		start := time.Now()
		if err := a.o.Actuator.Revert(ctx, pod); err != nil {
			return fmt.Errorf("reverting %s: %w", podRef(pod), err)
		}
		a.o.Observer.Flipped("revert", time.Since(start))
		klog.InfoS("Converted decoder back to decode only", "pod", klog.KObj(pod))
		return a.setStatus(ctx, pod, protocol.StatusDecode, true)
	case !want:
		return nil
	case ours && a.o.Actuator.Converted(pod):
		return a.recheck(ctx, pod, now)
	case ours:
		// Converted by us but the actuator's state says otherwise (a crash mid-flip, a revert whose refusal
		// was never recorded, or a hand edit): re-applied only if the GPUs still have the headroom, as a
		// fresh conversion would be; otherwise the refusal is recorded and the pod stays decode only. The
		// informer may hold the status write of a conversion without its flip (two watch events): the pod
		// is read fresh first, so a pod that is converted is rechecked, not refused while converted.
		fresh, err := a.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading %s before re-applying its conversion: %w", podRef(pod), err)
		}
		pod = fresh
		if a.o.Actuator.Converted(pod) {
			return a.recheck(ctx, pod, now)
		}
		if ok, detail := a.ownerKeeps(ctx, pod); !ok {
			a.forget(pod)
			return a.refuse(ctx, pod, protocol.ReasonOwnerSelector, detail)
		}
		if ok, reason, detail := a.o.GPUs.Check(ctx, pod); !ok {
			a.forget(pod)
			return a.refuse(ctx, pod, reason, detail)
		}
		if err := a.o.Actuator.Convert(ctx, pod); err != nil {
			return fmt.Errorf("re-applying the conversion of %s: %w", podRef(pod), err)
		}
		a.mu.Lock()
		a.checked[podKey(pod)] = now
		a.mu.Unlock()
		return nil
	}
	// Wanted and not converted: verify, then flip.
	if protocol.IsRefused(pod.Annotations[protocol.AnnotationStatus]) {
		if at, ok := protocol.StatusAt(pod); ok && now.Sub(at) < a.o.MinFlipInterval {
			return nil // the controller moves the lease elsewhere; do not re-check NVML on every event
		}
	}
	if pod.Annotations[protocol.AnnotationKVProducer] != "true" {
		return a.refuse(ctx, pod, protocol.ReasonNotKVProducer, "the pod does not declare "+protocol.AnnotationKVProducer+"=true")
	}
	if at, ok := protocol.FlippedAt(pod); ok && now.Sub(at) < a.o.MinFlipInterval {
		return a.refuse(ctx, pod, protocol.ReasonTooSoon, fmt.Sprintf("last flip %s ago, minimum %s", now.Sub(at).Round(time.Second), a.o.MinFlipInterval))
	}
	if ok, detail := a.ownerKeeps(ctx, pod); !ok {
		return a.refuse(ctx, pod, protocol.ReasonOwnerSelector, detail)
	}
	if ok, reason, detail := a.o.GPUs.Check(ctx, pod); !ok {
		return a.refuse(ctx, pod, reason, detail)
	}
	start := time.Now()
	if err := a.setStatus(ctx, pod, protocol.StatusConverted, true); err != nil {
		return err
	}
	if err := a.o.Actuator.Convert(ctx, pod); err != nil {
		// A conversion may have half landed (a label patch whose reply was lost). Only once it is undone is
		// the refusal recorded: the status stays "converted" until then, so this agent keeps the pod as its
		// own and reverts it when the lease ends, and the controller keeps counting it.
		// The undo reads the pod afresh: the copy in hand predates the flip, and an actuator that sees its
		// pod already at decode would change nothing.
		fresh, gerr := a.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		rerr := gerr
		if gerr == nil {
			rerr = a.o.Actuator.Revert(ctx, fresh)
		}
		if rerr != nil {
			return fmt.Errorf("converting %s: %w; undoing it: %w (it stays marked converted and is reverted when its lease ends)", podRef(pod), err, rerr)
		}
		_ = a.refuse(ctx, pod, protocol.ReasonActuator, err.Error())
		return fmt.Errorf("converting %s: %w", podRef(pod), err)
	}
	a.o.Observer.Flipped("convert", time.Since(start))
	a.mu.Lock()
	a.checked[podKey(pod)] = now
	a.mu.Unlock()
	klog.InfoS("Converted decoder to take prefill work", "pod", klog.KObj(pod), "actuator", a.o.Actuator.Name())
	return nil
}

// recheck verifies the headroom of a pod kept converted once per Recheck, and reverts it (recording the
// refusal, so the controller moves the lease) when the headroom is gone. A pod first seen converted (after
// an agent restart) starts its interval then.
func (a *Agent) recheck(ctx context.Context, pod *corev1.Pod, now time.Time) error {
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
	ok, reason, detail := a.o.GPUs.Check(ctx, pod)
	if ok || reason == protocol.ReasonBusy {
		return nil
	}
	a.forget(pod)
	start := time.Now()
	if err := a.o.Actuator.Revert(ctx, pod); err != nil {
		return fmt.Errorf("reverting %s after its headroom went (%s): %w", podRef(pod), reason, err)
	}
	a.o.Observer.Flipped("revert", time.Since(start))
	a.o.Observer.Refused(reason)
	klog.InfoS("Headroom gone; converted decoder back to decode only", "pod", klog.KObj(pod), "reason", reason, "detail", detail)
	return a.setStatus(ctx, pod, protocol.Refused(reason, detail), true)
}

func podKey(p *corev1.Pod) types.NamespacedName {
	return types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
}

func (a *Agent) forget(pod *corev1.Pod) {
	a.mu.Lock()
	delete(a.checked, podKey(pod))
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

func (a *Agent) refuse(ctx context.Context, pod *corev1.Pod, reason, detail string) error {
	a.o.Observer.Refused(reason)
	klog.InfoS("Refused a conversion", "pod", klog.KObj(pod), "reason", reason, "detail", detail)
	return a.setStatus(ctx, pod, protocol.Refused(reason, detail), false)
}

func (a *Agent) setStatus(ctx context.Context, pod *corev1.Pod, status string, flipped bool) error {
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
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return err
	}
	if _, err := a.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1PatchOptions); err != nil {
		return fmt.Errorf("recording %q on %s: %w", status, podRef(pod), err)
	}
	return nil
}

// RevertAll converts every converted pod of the node back; the agent runs it before anything else when
// it stops or loses its signal.
func (a *Agent) RevertAll(ctx context.Context) error {
	var first error
	for _, cached := range a.pods() {
		// The informer cache may not have seen this agent's last patches yet (a flip written just before
		// shutdown), and the actuator skips a pod it thinks is already reverted: read the pod fresh.
		p, err := a.client.CoreV1().Pods(cached.Namespace).Get(ctx, cached.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			if first == nil {
				first = fmt.Errorf("reading pod %s/%s before reverting it: %w", cached.Namespace, cached.Name, err)
			}
			continue
		}
		if p.Annotations[protocol.AnnotationStatus] != protocol.StatusConverted {
			continue
		}
		if err := a.o.Actuator.Revert(ctx, p); err != nil {
			klog.ErrorS(err, "Reverting a converted decoder at shutdown", "pod", klog.KObj(p))
			if first == nil {
				first = err
			}
			continue
		}
		a.o.Observer.Flipped("revert", 0)
		if err := a.setStatus(ctx, p, protocol.StatusDecode, true); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (a *Agent) pods() []*corev1.Pod {
	if a.lister == nil {
		return nil
	}
	return a.lister()
}

// Run watches the node's pods, reconciles each on every change and every Resync (leases expire without
// an event), and on return converts every pod back (with a fresh 20 s context, as ctx is done).
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
		rctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := a.RevertAll(rctx); err != nil {
			klog.ErrorS(err, "Not every converted decoder could be reverted at shutdown")
		}
	}()
	tick := time.NewTicker(a.o.Resync)
	defer tick.Stop()
	reconcile := func(p *corev1.Pod) {
		if err := a.Reconcile(ctx, p); err != nil {
			klog.ErrorS(err, "Converter reconcile failed; retrying on the next pass", "pod", klog.KObj(p))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case key := <-work:
			if o, ok, err := inf.GetStore().GetByKey(key); err == nil && ok {
				reconcile(o.(*corev1.Pod))
			}
		case <-tick.C:
			for _, p := range a.pods() {
				reconcile(p)
			}
		}
	}
}
