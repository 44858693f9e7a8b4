package converter

import (
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/internal/kubepods"
	"github.com/tokenscale/tokenscale/velocity/policy"
)

// PlanOptions bound the controller's choice.
type PlanOptions struct {
	// MaxFraction of a pool's decoders that may be converted at once (policy.maxConvertFraction).
	MaxFraction float64
	// RefusalBackoff: a pod that refused is not asked again for this long, so another pod is tried.
	RefusalBackoff time.Duration
	// MinFlipInterval is the agents' minimum time between two flips of a pod: a pod that flipped more
	// recently is not leased (its agent would refuse it as too soon), and a too-soon refusal is retried
	// once the interval has passed rather than after RefusalBackoff.
	MinFlipInterval time.Duration
	// Skip, when set, keeps pods out of this round's choice as a standing refusal does (the controller's
	// pods whose lease no agent answered): not leased, a lease they show released, still counted in the
	// pool.
	Skip func(*corev1.Pod) bool
}

// Plan is the controller's decision for one decode pool: the pods that hold a lease after this round.
type Plan struct {
	Lease   []*corev1.Pod // lease (or renew)
	Release []*corev1.Pod // remove the lease
}

// Choose picks which of a decode pool's Ready pods hold conversion leases. A pod occupies a slot while
// it is leased or still converted (an agent reverts it only after its lease is gone), and at most
// min(wanted, MaxFraction of the pool) slots are ever occupied: occupied pods keep their lease first (no
// churn; a converted pod costs nothing to keep), the rest are released, and only free slots go to new
// KV-producing pods that have not refused recently, least recently flipped first. leased(p) reports the
// caller's view of p's lease (the controller adds the leases it wrote that its informer has not seen).
func Choose(pods []*corev1.Pod, wanted int, now time.Time, o PlanOptions, leased func(*corev1.Pod) bool) Plan {
	// The limit is a share of the pool's running decoders, as the policy's is of its Ready ones: a leased
	// or converted pod that is starting or being deleted is in pods too, and would raise it without
	// serving. A Ready blip of a running pod does not lower it, which would release another pod's lease.
	running := 0
	for _, p := range pods {
		if alive(p) {
			running++
		}
	}
	limit := policy.ConversionLimit(o.MaxFraction, running)
	wanted = max(0, min(wanted, limit))
	if leased == nil {
		leased = func(p *corev1.Pod) bool { return protocol.Leased(p, now) }
	}
	var plan Plan
	var occupied, fresh []*corev1.Pod
	for _, p := range pods {
		// A refusal older than its retry time is stale: a lease granted since then waits for the agent's
		// fresh answer instead of being released at once (releasing it was the churn of repeated bursts).
		skip := o.Skip != nil && o.Skip(p)
		live := leased(p) && !refusedNow(p, now, o) && !skip
		_, annotated := p.Annotations[protocol.AnnotationConvertUntil]
		switch {
		case live || p.Annotations[protocol.AnnotationStatus] == protocol.StatusConverted:
			occupied = append(occupied, p)
			continue
		case annotated:
			plan.Release = append(plan.Release, p) // an expired or refused lease is cleaned up
		}
		if eligible(p, now, o) && !annotated && !skip && kubepods.Ready(p) {
			fresh = append(fresh, p)
		}
	}
	// Converted pods first (they hold a slot until reverted, and keeping them costs no flip), then leased
	// ones, then by name, so that the same pods keep their slots round after round.
	rank := func(p *corev1.Pod) int {
		switch {
		case protocol.Silent(p, now):
			return 3 // its slot is held, its lease not renewed: it must not take a live pod's renewal
		case p.Annotations[protocol.AnnotationStatus] == protocol.StatusConverted && leased(p):
			return 0
		case p.Annotations[protocol.AnnotationStatus] == protocol.StatusConverted:
			return 1
		default:
			return 2
		}
	}
	sort.SliceStable(occupied, func(i, j int) bool {
		if ri, rj := rank(occupied[i]), rank(occupied[j]); ri != rj {
			return ri < rj
		}
		// A pod being deleted drains anyway: it is the one past the limit, not a running one.
		if ai, aj := alive(occupied[i]), alive(occupied[j]); ai != aj {
			return ai
		}
		return occupied[i].Name < occupied[j].Name
	})
	used := 0
	for _, p := range occupied {
		_, annotated := p.Annotations[protocol.AnnotationConvertUntil]
		// A pod being deleted (or no longer running) is not renewed: its agent skips it, so the slot would
		// wait on an answer that never comes. A running pod that fails a readiness probe keeps its lease, as
		// releasing it reverted a converted pod mid-burst for a blip. Still converted, it keeps its slot below.
		// Nor is a converted pod whose agent has gone silent (protocol.Silent): it keeps its slot, as a
		// converted pod does, but no lease is renewed on no sign that an agent still checks it.
		if used < wanted && alive(p) && !protocol.Silent(p, now) {
			plan.Lease = append(plan.Lease, p)
		} else if annotated || leased(p) {
			plan.Release = append(plan.Release, p)
		}
		used++ // a released pod that is still converted keeps its slot until its agent reverts it
	}
	// Pods that never refused first (a pod that refused before is likely to again: its node's NVML or
	// memory has not changed), then the least recently flipped.
	sort.SliceStable(fresh, func(i, j int) bool {
		ri, rj := protocol.IsRefused(fresh[i].Annotations[protocol.AnnotationStatus]), protocol.IsRefused(fresh[j].Annotations[protocol.AnnotationStatus])
		if ri != rj {
			return rj
		}
		ti, _ := protocol.FlippedAt(fresh[i])
		tj, _ := protocol.FlippedAt(fresh[j])
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return fresh[i].Name < fresh[j].Name
	})
	for _, p := range fresh {
		if used >= wanted {
			break
		}
		plan.Lease = append(plan.Lease, p)
		used++
	}
	return plan
}

// alive reports whether a pod is running and not being deleted: its agent acts on it.
func alive(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning
}

func contains(s []*corev1.Pod, p *corev1.Pod) bool {
	for _, q := range s {
		if q == p {
			return true
		}
	}
	return false
}

// eligible: declared KV-producing, not refused within its retry time, and not flipped within the minimum
// flip interval (its agent would refuse it as too soon).
func eligible(p *corev1.Pod, now time.Time, o PlanOptions) bool {
	if p.Annotations[protocol.AnnotationKVProducer] != "true" {
		return false
	}
	if refusedNow(p, now, o) {
		return false
	}
	if t, ok := protocol.FlippedAt(p); ok && protocol.Within(t, now, o.MinFlipInterval) {
		return false
	}
	return true
}

// refusedNow reports whether p's refusal still stands at now: a too-soon refusal until the agent would
// check again (the minimum flip interval after it), any other for the refusal backoff (at least that long
// too, as the agent does not re-check a refusal sooner).
func refusedNow(p *corev1.Pod, now time.Time, o PlanOptions) bool {
	st := p.Annotations[protocol.AnnotationStatus]
	if !protocol.IsRefused(st) {
		return false
	}
	at, ok := protocol.StatusAt(p)
	if !ok {
		return false // our agents always write the time; a refusal without one is asked again
	}
	hold := max(o.RefusalBackoff, o.MinFlipInterval)
	if protocol.RefusalReason(st) == protocol.ReasonTooSoon {
		hold = o.MinFlipInterval
	}
	// A refusal stamped ahead within the clock skew allowed (a node's clock fast) stands: its agent, asked
	// again, refuses again. One further ahead is a wrong clock or a hand edit: read as standing it held the
	// pod out of conversions for good, as no agent is asked to rewrite it.
	return protocol.Within(at, now, hold)
}
