package converter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/velocity/engine"
)

// Pool is one decode pool as the controller sees it: its Ready pods and the conversions wanted, or
// Known false when the policy's number is unknown (then no pod keeps a lease: fail safe).
type Pool struct {
	Name   string
	Pods   []*corev1.Pod
	Wanted int
	Known  bool
}

// ControllerOptions configure the central controller.
type ControllerOptions struct {
	// Lease is how long a lease lasts without renewal (default 10s): the longest a pod stays converted
	// after the controller is lost.
	Lease time.Duration
	// MaxLease bounds a lease's end (default protocol.DefaultMaxLease): no lease is written further ahead,
	// and one found further ahead (a bad clock, a hand edit) is released, as agents ignore it.
	MaxLease time.Duration
	// WriteTimeout bounds one lease write (default a quarter of Lease): client-go sets no deadline, and a
	// write the API server takes and never answers held every lease after it in the round.
	WriteTimeout time.Duration
	Plan         PlanOptions
	Now          func() time.Time
}

// grant is when a lease was first granted, and to which pod.
type grant struct {
	at  time.Time
	uid types.UID
}

// written is a lease this controller wrote: until when, and to which pod (a pod of the same name
// recreated is another, and holds no lease of the one it replaced).
type written struct {
	until time.Time
	uid   types.UID
}

// holds reports whether the lease w was written to pod p and lasts past now.
func (w written) holds(p *corev1.Pod, now time.Time) bool {
	return now.Before(w.until) && (w.uid == "" || w.uid == p.UID)
}

// Controller writes conversion leases; it is the only writer of protocol.AnnotationConvertUntil.
type Controller struct {
	client kubernetes.Interface
	o      ControllerOptions

	mu sync.Mutex
	// granted remembers the leases this controller wrote, until when and to which pod, so a lagging
	// informer view cannot make it grant a slot twice.
	granted map[types.NamespacedName]written
	// since is when each held lease was first granted, to which pod (a pod of the same name recreated is
	// another), and silent the leases reported unanswered.
	since  map[types.NamespacedName]grant
	silent map[types.NamespacedName]bool
	// unanswered is when each pod whose lease no agent answered was released, and which pod it was: it is
	// not leased again for RefusalBackoff, so that its slot goes to a pod an agent serves; a pod recreated
	// under its name is another, with an agent of its own to answer.
	unanswered map[types.NamespacedName]grant
	// noProducer holds the pools reported wanting conversions with no pod declared KV-producing.
	noProducer map[string]bool
	// quiet holds the converted pods last seen without their agent's heartbeat (protocol.Silent), each
	// logged once when it goes quiet.
	quiet map[types.NamespacedName]bool
	// stepped says a round has run: a controller's first round (a new leader's) grants no fresh lease,
	// as a grant of the leader before it may still be in flight and land after this one's view of the pods.
	stepped bool
}

// NewController returns a controller.
func NewController(client kubernetes.Interface, o ControllerOptions) *Controller {
	if o.Lease == 0 {
		o.Lease = 10 * time.Second
	}
	if o.MaxLease == 0 {
		o.MaxLease = protocol.DefaultMaxLease
	}
	o.Lease = min(o.Lease, o.MaxLease)
	if o.WriteTimeout == 0 {
		o.WriteTimeout = o.Lease / 4
	}
	if o.Plan.RefusalBackoff == 0 {
		o.Plan.RefusalBackoff = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Controller{client: client, o: o, granted: map[types.NamespacedName]written{},
		since: map[types.NamespacedName]grant{}, silent: map[types.NamespacedName]bool{}, unanswered: map[types.NamespacedName]grant{},
		noProducer: map[string]bool{}}
}

// Step applies one round of decisions: for every pool, releases first and then grants or renews, so that
// the leases in the API never exceed the number wanted, even between two writes.
func (c *Controller) Step(ctx context.Context, pools []Pool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A round ends within one lease, each write within WriteTimeout: writes the API server never answered
	// (client-go sets no deadline of its own) held this loop and every later round with it. The next
	// round retries what this one did not write.
	ctx, cancel := context.WithTimeout(ctx, c.o.Lease)
	defer cancel()
	now := c.o.Now()
	leased := func(p *corev1.Pod) bool {
		if protocol.LeasedWithin(p, now, c.o.MaxLease) {
			return true
		}
		w, ok := c.granted[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}]
		return ok && w.holds(p, now)
	}
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	quiet := map[types.NamespacedName]bool{}
	for _, pool := range pools {
		wanted := pool.Wanted
		if !pool.Known {
			wanted = 0
		}
		c.reportNoProducer(pool, wanted)
		opts := c.o.Plan
		opts.Skip = func(p *corev1.Pod) bool { return c.leftOut(p, now) }
		plan := Choose(pool.Pods, wanted, now, opts, leased)
		c.reportQuiet(pool.Pods, now, quiet)
		if !c.stepped {
			plan.Lease = slices.DeleteFunc(plan.Lease, func(p *corev1.Pod) bool {
				return !leased(p) && p.Annotations[protocol.AnnotationStatus] != protocol.StatusConverted
			})
		}
		for _, p := range plan.Release {
			keep(c.release(ctx, p))
		}
		for _, p := range plan.Lease {
			if c.reportSilence(p, now) {
				// The slot goes to another pod from the next round; this one waits out the refusal backoff.
				keep(c.release(ctx, p))
				c.unanswered[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = grant{uid: p.UID, at: now}
				continue
			}
			// A lease with more than two thirds of its length left is not written again: renewing every
			// round cost a pod update a second per converted pod, through the client's rate limit, and at a
			// few dozen conversions the last renewals of a round landed after their leases ran out.
			// Measured now, not at the round's start: the writes before it may have taken seconds.
			if w, ok := c.granted[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}]; ok && w.holds(p, now) &&
				w.until.Sub(c.o.Now()) > c.o.Lease*2/3 && protocol.LeasedWithin(p, now, c.o.MaxLease) {
				continue
			}
			// From the write, not the round's start: a round of many writes takes time.
			keep(c.lease(ctx, p, c.o.Now().Add(c.o.Lease)))
		}
		if len(plan.Lease) > 0 || len(plan.Release) > 0 {
			klog.V(2).InfoS("Conversion leases", "pool", pool.Name, "wanted", pool.Wanted, "known", pool.Known, "leased", len(plan.Lease), "released", len(plan.Release))
		}
	}
	for _, pool := range pools {
		// A round that decided something: one with no known pool (no snapshot yet) does not use up the
		// first round's guard.
		c.stepped = c.stepped || pool.Known
	}
	c.quiet = quiet
	for key, u := range c.unanswered {
		if now.Sub(u.at) >= c.o.Plan.RefusalBackoff {
			delete(c.unanswered, key)
		}
	}
	// Leases of pods that went away (deleted, never released) are forgotten once long over.
	for key, w := range c.granted {
		if now.Sub(w.until) > c.o.MaxLease {
			delete(c.granted, key)
			delete(c.since, key)
			delete(c.silent, key)
		}
	}
	return first
}

func (c *Controller) lease(ctx context.Context, p *corev1.Pod, until time.Time) error {
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	if err := c.annotate(ctx, p, protocol.FormatTime(until)); err != nil {
		if !answered(err) {
			// The server may still apply a write it did not answer: the slot counts as granted, or the next
			// round could grant it to another pod as well.
			c.granted[key] = written{until, p.UID}
		}
		return err
	}
	if g, held := c.since[key]; !held || g.uid != p.UID {
		c.since[key] = grant{at: c.o.Now(), uid: p.UID}
	}
	c.granted[key] = written{until, p.UID}
	return nil
}

func (c *Controller) release(ctx context.Context, p *corev1.Pod) error {
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	delete(c.granted, key)
	delete(c.since, key)
	delete(c.silent, key)
	return c.annotate(ctx, p, nil)
}

// unansweredLeases is how many lease lengths a lease may go without the pod's agent writing a status
// before the controller says so, and minUnanswered the least time: an agent answers within a round or two,
// but its checks (the owner's GET, PodResources, NVML) may take 5 s each, and NVML's first open longer.
const (
	unansweredLeases = 3
	minUnanswered    = 30 * time.Second
)

// reportSilence logs, once, a lease the pod's agent has not answered (no status written since it was
// granted), and reports it: the conversion never happens, and the lease held the slot for as long as the
// policy wanted conversions, while nothing said why.
func (c *Controller) reportSilence(p *corev1.Pod, now time.Time) bool {
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	first, held := c.since[key]
	if !held || first.uid != p.UID || now.Sub(first.at) < max(unansweredLeases*c.o.Lease, minUnanswered) {
		return false
	}
	// Converted is an answer whatever its time: a new leader (or a lease given back before the agent
	// reverted) sees conversions the agent made under an earlier lease.
	if p.Annotations[protocol.AnnotationStatus] == protocol.StatusConverted {
		return false
	}
	// A status written since the lease was granted is an answer; one stamped further ahead of now than
	// clocks differ was written by no agent of this lease, and taken for one it hid the silence for good.
	if at, ok := protocol.StatusAt(p); ok && !at.Before(first.at) && at.Sub(now) <= protocol.MaxClockSkew {
		return false
	}
	if !c.silent[key] {
		c.silent[key] = true
		klog.InfoS("No agent has answered a conversion lease; it is released and the pod left out for the refusal backoff: is a tokenscale agent running on the pod's node (its nodeSelector), does its --selector match the pod, and is its --max-lease at least the controller's --lease?",
			"pod", klog.KObj(p), "node", p.Spec.NodeName, "leasedFor", now.Sub(first.at).Round(time.Second), "backoff", c.o.Plan.RefusalBackoff)
	}
	return true
}

// maxAnnotationShown bounds an annotation's value a log line repeats: anyone who can patch a pod writes
// it (up to 256 KiB), and klog writes a value holding a newline as it is, so it is shown printable.
const maxAnnotationShown = 128

// reportQuiet logs, once, each converted pod whose agent has gone quiet (no heartbeat within
// protocol.HeartbeatStale): its lease is no longer renewed, and it stays converted, its headroom
// unchecked, until an agent reverts it. quiet collects this round's.
func (c *Controller) reportQuiet(pods []*corev1.Pod, now time.Time, quiet map[types.NamespacedName]bool) {
	for _, p := range pods {
		if !protocol.Silent(p, now) {
			continue
		}
		key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
		quiet[key] = true
		if !c.quiet[key] {
			klog.InfoS("A converted pod's agent has written no heartbeat: its lease is no longer renewed, and it stays converted until an agent reverts it (is the agent on its node running?)",
				"pod", klog.KObj(p), "node", p.Spec.NodeName, "statusAt", engine.PrintableWithin(p.Annotations[protocol.AnnotationStatusAt], maxAnnotationShown), "stale", protocol.HeartbeatStale)
		}
	}
}

// reportNoProducer logs, once until it changes, a pool whose conversions are wanted while none of its
// pods is declared KV-producing: no pod is ever leased then, and no agent is asked, so no refusal would
// say why. It reports whether it logged.
func (c *Controller) reportNoProducer(pool Pool, wanted int) bool {
	none := wanted > 0 && len(pool.Pods) > 0 && !slices.ContainsFunc(pool.Pods, func(p *corev1.Pod) bool {
		return p.Annotations[protocol.AnnotationKVProducer] == "true"
	})
	if !none {
		delete(c.noProducer, pool.Name)
		return false
	}
	if c.noProducer[pool.Name] {
		return false
	}
	c.noProducer[pool.Name] = true
	klog.InfoS("Conversions are wanted but no pod of the decode pool is declared KV-producing, so none is leased: annotate the decode pod template "+
		protocol.AnnotationKVProducer+`: "true" where its engine can produce KV for other decoders (docs/converter.md)`,
		"pool", pool.Name, "wanted", wanted, "pods", len(pool.Pods))
	return true
}

// leftOut reports a pod whose lease no agent answered, within the refusal backoff since it was released;
// a converted one is not, as it holds its slot.
func (c *Controller) leftOut(p *corev1.Pod, now time.Time) bool {
	u, ok := c.unanswered[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}]
	return ok && u.uid == p.UID && now.Sub(u.at) < c.o.Plan.RefusalBackoff && p.Annotations[protocol.AnnotationStatus] != protocol.StatusConverted
}

// answered says whether err is the API server's refusal of a write, which it did not apply; a timeout or
// a lost connection leaves the write's outcome unknown.
func answered(err error) bool {
	var status apierrors.APIStatus
	return errors.As(err, &status) && !apierrors.IsTimeout(err) && !apierrors.IsServerTimeout(err)
}

// annotate sets (string) or removes (nil) the lease annotation.
func (c *Controller) annotate(ctx context.Context, p *corev1.Pod, v any) error {
	meta := map[string]any{"annotations": map[string]any{protocol.AnnotationConvertUntil: v}}
	if p.UID != "" {
		// A precondition: the API server refuses the patch if a pod of the same name replaced this one.
		meta["uid"] = p.UID
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.o.WriteTimeout)
	defer cancel()
	if _, err := c.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType, patch, metav1PatchOptions); err != nil {
		return fmt.Errorf("conversion lease on %s: %w", podRef(p), err)
	}
	return nil
}
