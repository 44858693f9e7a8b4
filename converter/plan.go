package converter

import (
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/velocity/policy"
)

// PlanOptions bound the controller's choice.
type PlanOptions struct {
	// MaxFraction of a pool's decoders that may be converted at once (policy.maxConvertFraction).
	MaxFraction float64
	// RefusalBackoff: a pod that refused is not asked again for this long, so another pod is tried.
	RefusalBackoff time.Duration
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
	limit := policy.ConversionLimit(o.MaxFraction, len(pods))
	wanted = max(0, min(wanted, limit))
	if leased == nil {
		leased = func(p *corev1.Pod) bool { return protocol.Leased(p, now) }
	}
	var plan Plan
	var occupied, fresh []*corev1.Pod
	for _, p := range pods {
		live := leased(p) && !protocol.IsRefused(p.Annotations[protocol.AnnotationStatus])
		_, annotated := p.Annotations[protocol.AnnotationConvertUntil]
		switch {
		case live || p.Annotations[protocol.AnnotationStatus] == protocol.StatusConverted:
			occupied = append(occupied, p)
			continue
		case annotated:
			plan.Release = append(plan.Release, p) // an expired or refused lease is cleaned up
		}
		if eligible(p, now, o.RefusalBackoff) && !annotated {
			fresh = append(fresh, p)
		}
	}
	// Converted pods first (they hold a slot until reverted, and keeping them costs no flip), then leased
	// ones, then by name, so that the same pods keep their slots round after round.
	rank := func(p *corev1.Pod) int {
		switch {
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
		return occupied[i].Name < occupied[j].Name
	})
	used := 0
	for _, p := range occupied {
		_, annotated := p.Annotations[protocol.AnnotationConvertUntil]
		if used < wanted {
			plan.Lease = append(plan.Lease, p)
		} else if annotated || leased(p) {
			plan.Release = append(plan.Release, p)
		}
		used++ // a released pod that is still converted keeps its slot until its agent reverts it
	}
	sort.SliceStable(fresh, func(i, j int) bool {
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

func contains(s []*corev1.Pod, p *corev1.Pod) bool {
	for _, q := range s {
		if q == p {
			return true
		}
	}
	return false
}

// eligible: declared KV-producing, and not refused within the backoff.
func eligible(p *corev1.Pod, now time.Time, backoff time.Duration) bool {
	if p.Annotations[protocol.AnnotationKVProducer] != "true" {
		return false
	}
	if protocol.IsRefused(p.Annotations[protocol.AnnotationStatus]) {
		if t, ok := protocol.StatusAt(p); ok && now.Sub(t) < backoff {
			return false
		}
	}
	return true
}
