package policy

import (
	"fmt"
	"math"
	"slices"
	"time"

	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/velocity/config"
)

// Decision is the policy's output for one group (a prefill and a decode pool, either may be absent).
type Decision struct {
	Time  time.Time
	Group string
	// Desired replicas per pool name; a pool whose status is unknown is absent (never 0).
	Desired map[string]int
	// Conversions is how many decoders should take prefill work now (0 when signals are lost).
	Conversions int
	// Reasons explains the decision in words, for logs and inspect.
	Reasons []string
}

type rec struct {
	t time.Time
	n int
}

// conversion is a decode pool's conversions wanted and the round that set them.
type conversion struct {
	round uint64
	n     int
}

// sizing is a pool's own count at a decision (before the P:D band), with its per-pod velocity.
type sizing struct {
	t      time.Time
	n      int
	perPod float64
}

// Controller holds the state that makes decisions stable: recent recommendations (scale-down
// stabilisation), emergency cooldowns, conversion hysteresis and calibrated capacities.
type Controller struct {
	recs       map[string][]rec
	emergency  map[string]time.Time
	calibrated map[string]float64
	saturated  map[string]int
	conv       map[string]conversion // each decode pool's conversions wanted, and the round that set them
	keepingUp  map[string]time.Time
	level      map[string]level
	breaching  map[string]int
	surge      map[string]surge
	history    map[string][]sample
	startHold  map[string]rec
	lateStep   map[string]rec
	converted  map[string]time.Time
	sized      map[string]sizing      // each pool's own count at its last known decision (Controller.lastSized)
	role       map[string]config.Role // the side each pool was last sized on: prefill (or both) or decode
	seen       map[string]time.Time   // when each pool was last decided
	latest     time.Time              // the latest decision of any group
	before     time.Time              // the latest decision time before latest: the previous round's
	pruned     time.Time
	round      uint64    // counts decision rounds: a new one starts with each new decision time
	roundAt    time.Time // the current round's decision time
	scratch    []int
	sorted     []float64 // scratch space for median, kept between decisions so a breach sorts without allocating
	// LatencySpan is how far back the pods' latency histograms reach: two scrape.latencyWindow (0: 20 s).
	LatencySpan time.Duration
	// Interval is scrape.interval, how often decisions come (0: 1 s): confirmations and calibration are
	// set in seconds of scrapes, so a faster scrape gives a faster signal and the same policy.
	Interval time.Duration
}

// level is a pool's sizing rate smoothed over a cold start, as of t.
type level struct {
	t time.Time
	v float64
}

// NewController returns a controller with no history.
func NewController() *Controller {
	return &Controller{
		recs: map[string][]rec{}, emergency: map[string]time.Time{}, calibrated: map[string]float64{},
		saturated: map[string]int{}, conv: map[string]conversion{}, keepingUp: map[string]time.Time{},
		level: map[string]level{}, breaching: map[string]int{}, surge: map[string]surge{}, history: map[string][]sample{}, startHold: map[string]rec{}, lateStep: map[string]rec{}, converted: map[string]time.Time{},
		sized: map[string]sizing{}, role: map[string]config.Role{}, seen: map[string]time.Time{},
	}
}

// Calibrated returns a pool's calibrated per-pod velocity, or 0 when the profile is in use.
func (c *Controller) Calibrated(pool string) float64 { return c.calibrated[pool] }

// CalibratedFor is Calibrated for the pool and policy as the config in force has them: 0 when it was last
// sized on the other side (a reload moved it between prefill and decode), since the status that round is
// built before Decide forgets it, and the other side's velocity halved or doubled that round's replicas;
// 0 too when calibration is off, so that a reload turning it off sizes on the profile from its first round.
func (c *Controller) CalibratedFor(p *config.Pool, pol config.Policy) float64 {
	if was, ok := c.role[p.Name]; ok && was != side(p) || !pol.Calibrates() {
		return 0
	}
	return c.calibrated[p.Name]
}

// side is the side of the group a pool is sized on: decode, or prefill (a both-roles pool too).
func side(p *config.Pool) config.Role {
	if p.Role == config.RoleDecode {
		return config.RoleDecode
	}
	return config.RolePrefill
}

// emergencyCooldown spaces latency emergency steps so each can take effect before the next; a step
// cannot take effect before its pods are Ready, so the spacing is at least policy.coldStart.
const emergencyCooldown = 15 * time.Second

// Decide sizes a group's pools together. prefill/decode and their statuses may be nil when the group
// lacks that pool or its status is unknown. Every group of one round is decided with the round's time.
func (c *Controller) Decide(now time.Time, pol config.Policy, group string,
	prefill *config.Pool, ps *PoolStatus, decode *config.Pool, ds *PoolStatus) Decision {
	d := Decision{Time: now, Group: group, Desired: map[string]int{}}
	// Evidence counted in decisions in a row: a round a pool's status is unknown breaks the row.
	for _, pl := range []struct {
		p  *config.Pool
		st *PoolStatus
	}{{prefill, ps}, {decode, ds}} {
		if pl.p != nil && pl.st == nil {
			c.breaching[pl.p.Name] = 0
			c.saturated[pl.p.Name] = 0
		}
	}
	c.noteSeen(now, pol, prefill, decode)
	c.noteRole(prefill, config.RolePrefill)
	c.noteRole(decode, config.RoleDecode)
	var p, dn int
	if prefill != nil && ps != nil {
		c.calibrate(pol, prefill, ps)
		rate, basis := c.sizingRate(now, pol, prefill.Name, ps)
		lambda := rate + ps.QueuedTokens/pol.DrainSeconds
		p = ceilDiv(lambda, ps.PerPod*pol.TargetUtilisation)
		d.Reasons = append(d.Reasons, fmt.Sprintf("%s: %s λ=%.0f tok/s (+%.0f queued) / (V=%.0f × %.2f) → %d",
			prefill.Name, basis, rate, ps.QueuedTokens, ps.PerPod, pol.TargetUtilisation, p))
		if pol.BurstAttainment > 0 {
			window := burstColdStarts * pol.ColdStart.Duration
			r := ps.RequestArrival
			if ps.NoRequestArrival {
				r = math.NaN() // unknown this round, not none: the replay estimates it (burst.go)
			}
			h := c.record(now, prefill.Name, ps.Arrival, r, window)
			// The replay plans pods at the target utilisation, as the sizing does, so the one knob that trades
			// GPUs for headroom moves both (at full V the knob did not change prefill on the code trace).
			if n := burstPods(h, ps.QueueBudget, 1-pol.BurstAttainment, ps.PerPod*pol.TargetUtilisation, ps.PerPod*ps.QueueBudget, p); n > p {
				p = n
				d.Reasons = append(d.Reasons, fmt.Sprintf("%s: the last %s of arrivals need %d pods to keep %.0f%% within the TTFT queueing budget (%.2fs)",
					prefill.Name, window, p, 100*pol.BurstAttainment, ps.QueueBudget))
			}
		}
		p = c.safetyNet(now, pol, prefill, ps, p, &d)
		c.sized[prefill.Name] = sizing{now, p, ps.PerPod}
	}
	if decode != nil && ds != nil {
		// A converted decoder serves less decode by design: calibrating then read its prefill chunks as lost
		// decode capacity, which shrank the spare decoders and released the conversion within seconds.
		// Turned off, calibration is dropped whatever the conversions. The served rate is the latency
		// window's, so it holds the converted decoders' slower decoding until the window no longer reaches
		// back to them.
		if c.converting(decode.Name) == 0 && !c.convertedWithin(now, decode.Name) || !pol.Calibrates() {
			c.calibrate(pol, decode, ds)
		} else {
			c.saturated[decode.Name] = 0 // a round not read breaks the run of saturated decisions
		}
		rate, basis := c.sizingRate(now, pol, decode.Name, ds)
		dn = ceilDiv(rate, ds.PerPod*pol.DecodeTargetUtilisation)
		d.Reasons = append(d.Reasons, fmt.Sprintf("%s: %s λ=%.0f tok/s / (V=%.0f × %.2f) → %d",
			decode.Name, basis, rate, ds.PerPod, pol.DecodeTargetUtilisation, dn))
		if n := kvPods(ds, pol.DecodeTargetUtilisation); n > dn {
			d.Reasons = append(d.Reasons, fmt.Sprintf("%s: KV cache %.0f%% full on %d decoders; at %.2f it needs %d",
				decode.Name, 100*ds.KVUsage, ds.Pods, pol.DecodeTargetUtilisation, n))
			dn = n
		}
		if n, why := c.lateFirstTokens(now, decode, ds); n > dn {
			d.Reasons = append(d.Reasons, why)
			dn = n
		}
		dn = c.safetyNet(now, pol, decode, ds, dn, &d)
		if pv, ago, ok := c.lastSized(now, pol, prefill, ps, p); ok {
			if n, vn := ingressPods(pv.n, pv.perPod, prefill, decode); n > dn {
				d.Reasons = append(d.Reasons, fmt.Sprintf("%s: %d prefillers%s at V=%.0f send KV faster than %d decoder links take it (V_N=%.0f) → %d",
					decode.Name, pv.n, ago, pv.perPod, dn, vn, n))
				dn = n
			}
		}
		c.sized[decode.Name] = sizing{now, dn, ds.PerPod}
	}
	// HeteroScale coordination: keep the P:D replica ratio inside its band by raising the short side. The
	// ratio is of the counts the pools will run, at least their minReplicas: an idle decode pool sized to
	// 0 skipped the band (a burst's 8 prefillers beside 1 decoder), and a decode floor of 4 went unseen.
	// A pool unknown this round stands in with its last known count, so that the other's answer keeps the
	// band rather than falling to its own sizing while one side cannot be read; only the known side moves.
	if band := ratioBand(prefill, decode); band != nil && prefill != nil && decode != nil && (ps != nil || ds != nil) {
		pv, pAgo, pOK := c.lastSized(now, pol, prefill, ps, p)
		dv, dAgo, dOK := c.lastSized(now, pol, decode, ds, dn)
		if pOK && dOK {
			pe, de := max(pv.n, prefill.MinReplicas), max(dv.n, decode.MinReplicas) // minReplicas >= 1
			if r := float64(pe) / float64(de); r < band.Min && ps != nil {
				p = int(math.Ceil(band.Min * float64(de)))
				d.Reasons = append(d.Reasons, fmt.Sprintf("ratio %.2f below %.2f (%d decoders%s): prefill → %d", r, band.Min, de, dAgo, p))
			} else if r > band.Max && ds != nil {
				dn = int(math.Ceil(float64(pe) / band.Max))
				d.Reasons = append(d.Reasons, fmt.Sprintf("ratio %.2f above %.2f (%d prefillers%s): decode → %d", r, band.Max, pe, pAgo, dn))
			}
		}
	}
	if ps != nil {
		d.Desired[prefill.Name] = c.stabilise(now, prefill, pol, p, ps.running(), &d)
	}
	if ds != nil {
		d.Desired[decode.Name] = c.stabilise(now, decode, pol, dn, ds.running(), &d)
	}
	d.Conversions = c.conversions(now, pol, prefill, ps, decode, ds, &d)
	return d
}

// pruneEvery is how often the controller looks for pools no longer decided.
const pruneEvery = time.Minute

// noteSeen records that a group's pools were decided now and, once a pruneEvery, forgets the pools not
// decided for longer than anything the controller remembers (the scale-down window, burst sizing's cold
// starts): a namespace deleted, or a pool removed from the config, must not hold memory for good. All
// the controller keeps is per pool, so a pool moved to another group by a reload is decided there and
// keeps it. Ages count from the round before this one (the latest decision time before now), so a round
// that comes late (a stalled process) finds the pools it has not decided yet as fresh as the last round
// left them. A pool that comes back starts as on a restarted replica.
func (c *Controller) noteSeen(now time.Time, pol config.Policy, prefill, decode *config.Pool) {
	if now.After(c.latest) {
		c.before, c.latest = c.latest, now
	}
	if !now.Equal(c.roundAt) {
		c.round, c.roundAt = c.round+1, now
	}
	last := c.before
	for _, p := range []*config.Pool{prefill, decode} {
		if p != nil {
			c.seen[p.Name] = now
		}
	}
	if last.Sub(c.pruned) < pruneEvery && !last.Before(c.pruned) {
		return
	}
	c.pruned = last
	keep := memory(pol) + pruneEvery
	for k, t := range c.seen {
		if last.Sub(t) <= keep {
			continue
		}
		delete(c.seen, k)
		c.forgetPool(k)
		delete(c.role, k)
	}
}

// memory is the longest the policy's past can hold an answer up: the scale-down window, or burst sizing's
// replay of the last cold starts, which also outlasts the sizing rate's smoothing (time constant a cold
// start) but for e^-5 of a step.
func memory(pol config.Policy) time.Duration {
	return max(pol.ScaleDownWindow.Duration, burstColdStarts*pol.ColdStart.Duration)
}

// forgetPool drops what the controller remembers of a pool's sizing.
func (c *Controller) forgetPool(p string) {
	delete(c.startHold, p)
	delete(c.lateStep, p)
	delete(c.recs, p)
	delete(c.emergency, p)
	delete(c.calibrated, p)
	delete(c.saturated, p)
	delete(c.level, p)
	delete(c.breaching, p)
	delete(c.surge, p)
	delete(c.history, p)
	delete(c.sized, p)
	delete(c.conv, p)
	delete(c.keepingUp, p)
	delete(c.converted, p)
}

// noteRole forgets a pool's sizing state when a reload moved it to the other side: its smoothed rate,
// recommendations and burst history are in the other side's tokens and replicas (a decode pool sized
// from prefill tokens per second, held up by the prefill pool's window).
func (c *Controller) noteRole(p *config.Pool, side config.Role) {
	if p == nil {
		return
	}
	if was, ok := c.role[p.Name]; ok && was != side {
		klog.InfoS("Pool moved between prefill and decode sizing; its sizing history is dropped", "pool", p.Name, "was", was, "now", side)
		c.forgetPool(p.Name)
	}
	c.role[p.Name] = side
}

// ingressPods is how many decoders can take, on their KV links, all the KV that p prefillers at their
// velocity perPod send; 0 when neither profile gives a link speed. Decode token velocity alone sized
// short-output traffic at one decoder, whose link then queued every burst's transfers into TTFT misses
// that more prefillers could not fix (docs/evaluation.md measures it).
func ingressPods(p int, perPod float64, prefill, decode *config.Pool) (int, float64) {
	vn := linkSpeed(prefill, decode)
	if p <= 0 || !(perPod > 0) || !(vn > 0) {
		return 0, 0
	}
	return ceilDiv(float64(p)*perPod, vn), vn
}

// lastSized is pool's own count this round (n, when st is known) or, while it is unknown, at its last
// known decision within the scale-down window, with words saying how old it is ("" this round); at most
// its maxReplicas, the most it will run. A pool unknown for longer speaks no more for the other's answer:
// its pods may be gone.
func (c *Controller) lastSized(now time.Time, pol config.Policy, pool *config.Pool, st *PoolStatus, n int) (sizing, string, bool) {
	if pool == nil {
		return sizing{}, "", false
	}
	if st != nil {
		return sizing{now, min(n, pool.MaxReplicas), st.PerPod}, "", true
	}
	s, ok := c.sized[pool.Name]
	if age := now.Sub(s.t); !ok || age < 0 || age > pol.ScaleDownWindow.Duration {
		return sizing{}, "", false
	}
	s.n = min(s.n, pool.MaxReplicas) // a reload may have lowered it since
	return s, fmt.Sprintf(", unknown now, as sized %s ago", now.Sub(s.t).Round(time.Second)), true
}

// kvPods is how many decoders hold the pool's KV cache at the decode utilisation target: a decoder's
// batch is bound by its KV memory as well as its token rate, and long contexts fill the memory first
// (docs/evaluation.md: on the A100 conversation trace 3 decoders reach no request's SLO whatever their
// token rate). 0 when no decoder reports its KV usage.
func kvPods(ds *PoolStatus, u float64) int {
	if ds.KVUsage < 0 || !(u > 0) {
		return 0
	}
	return ceilDiv(float64(ds.Pods)*ds.KVUsage, u)
}

// missShare is the share of recent requests late past a latency SLO that the safety net and the decoder
// step for late first tokens answer to (HeteroScale's 5%).
const missShare = 0.05

// hpaTolerance is the HPA's default tolerance: a desired count within 10% of the current one changes
// nothing, so a step meant to add capacity must clear it.
const hpaTolerance = 0.1

// WithinTolerance reports whether an HPA leaves its replicas as they are at usage over target ratio,
// by the comparison of Kubernetes 1.33 and later (pkg/controller/podautoscaler, Tolerances.isWithin:
// 1−tol ≤ ratio ≤ 1+tol in float64). At 10% it holds 11 desired over 10 current, since 11/10 and 1+0.1
// round to the same float64; earlier versions compared |1−ratio| > tol and acted on it. The simulator's
// HPA and the policy's steps both use it, so neither counts on a step a current cluster ignores.
func WithinTolerance(ratio, tol float64) bool {
	return 1-tol <= ratio && ratio <= 1+tol
}

// stepAbove is the least replica count above n that an HPA with the default tolerance acts on: n+1 up
// to 9 pods, 12 for 10 (11/10 is held), 13 for 11, 23 for 20.
func stepAbove(n int) int {
	if n <= 0 {
		return 1
	}
	m := n + 1
	for WithinTolerance(float64(m)/float64(n), hpaTolerance) {
		m++
	}
	return m
}

// lateStepHold is how long a decoder step for late first tokens is asked for before the next may be
// taken. The waits come in spikes of seconds; in the simulator, on the rule's first form, 30 s and a cold
// start (60 s) measured within 0.2% of each other over the held-out slices (docs/evaluation.md).
const lateStepHold = 30 * time.Second

// defaultLatencySpan is how far back the pods' latency histograms reach when LatencySpan is unset: two of
// the default scrape.latencyWindow.
const defaultLatencySpan = 20 * time.Second

// convertedWithin reports whether the decode pool's decoders were converted within the pods' latency span:
// their histograms and served rates still hold the prefill work they did.
func (c *Controller) convertedWithin(now time.Time, pool string) bool {
	span := c.LatencySpan
	if span <= 0 {
		span = defaultLatencySpan
	}
	t, ok := c.converted[pool]
	return ok && now.Sub(t) < span && !now.Before(t)
}

// lateFirstTokens asks for a decoder step when at least missShare of the decode pool's recent first
// tokens were late past half its TTFT SLO on the decoders themselves (their KV pull, their wait for a
// batch slot or KV room, their first step) and requests wait on a decoder now, and holds the step for
// lateStepHold; it returns the count and the reason (0 and "": no step). Token-rate sizing does not see
// a decoder whose batch slots are full: its rate is at V_D, which the sizing reads as enough, while first
// tokens queue for slots. Nothing while decoders are converted, nor until the histograms no longer reach
// back to a conversion: their TTFT then holds prefills that more decoders would not speed up.
func (c *Controller) lateFirstTokens(now time.Time, p *config.Pool, ds *PoolStatus) (int, string) {
	if c.converting(p.Name) > 0 {
		c.converted[p.Name] = now
		delete(c.lateStep, p.Name)
		return 0, ""
	}
	if c.convertedWithin(now, p.Name) {
		return 0, ""
	}
	if h, ok := c.lateStep[p.Name]; ok && now.Sub(h.t) < lateStepHold && !now.Before(h.t) {
		return h.n, fmt.Sprintf("%s: the step for late first tokens holds %d until %s", p.Name, h.n, h.t.Add(lateStepHold).Format(time.TimeOnly))
	}
	if !(ds.FirstTokenLate >= missShare) || ds.Waiting < 1 {
		return 0, ""
	}
	n := stepAbove(ds.Pods)
	c.lateStep[p.Name] = rec{now, n}
	return n, fmt.Sprintf("%s: %.0f%% of recent first tokens waited over %s on the decoders and %.0f requests wait now: a decoder step → %d",
		p.Name, 100*ds.FirstTokenLate, p.SLO.TTFT.Duration/2, ds.Waiting, n)
}

// linkSpeed is a decoder's KV link speed V_N: the decode profile's, else the prefill profile's (one
// fabric carries both ends, and TokenScale's min(V_P, V_N) puts it on the prefill profile).
func linkSpeed(prefill, decode *config.Pool) float64 {
	if decode.Profile.KVTransferTPS > 0 {
		return decode.Profile.KVTransferTPS
	}
	if prefill != nil {
		return prefill.Profile.KVTransferTPS
	}
	return 0
}

// breachEvidence is how much of the scrape timeline must predict an SLO breach, on enough decisions in a
// row to cover it, before replicas are sized on the fast rate (three decisions at the default 1 s interval): one or
// two seconds of predicted breach are mostly noise peaks that end long before a pod ordered for them is
// Ready (docs/evaluation.md measures what chasing them cost).
const breachEvidence = 3 * time.Second

// interval is the decision interval, scrape.interval (1 s when unset).
func (c *Controller) interval() time.Duration {
	if c.Interval > 0 {
		return c.Interval
	}
	return time.Second
}

// decisions is how many decisions in a row cover d of scrapes, each speaking for the interval before
// it: ⌈d/interval⌉, but at least minEvidenceDecisions, since one scrape's reading is a sample, not
// evidence, however long the interval.
func (c *Controller) decisions(d time.Duration) int {
	iv := c.interval()
	return max(minEvidenceDecisions, int((d+iv-1)/iv))
}

// minEvidenceDecisions is the fewest decisions in a row that confirm a breach or a saturation.
const minEvidenceDecisions = 2

// streak counts the decisions in a row on which cond held for key (0 once it fails) and returns the count.
func streak(m map[string]int, key string, cond bool) int {
	if !cond {
		m[key] = 0
		return 0
	}
	m[key]++
	return m[key]
}

// sizingRate is the λ replicas are sized on: the window average smoothed over one cold start
// (policy.coldStart) unless backpressure has predicted an SLO breach within the horizon on enough
// decisions in a row to cover breachEvidence, when the median fast rate of the breach's decisions (the
// last cold start of them) leads if it is the higher. A rise shorter than a cold start is over before a
// pod ordered for it is Ready: conversions and the queue absorb it, and sizing on the unsmoothed window
// average held pods for every such rise. The median, not the last fast rate, because a few long prompts
// arriving together read as a second or two of a rate many times the pool's, and the last such second
// decided the pods that the scale-down window then held (docs/metrics.md measures a case); a rise that
// lasts is most of the breach's decisions.
func (c *Controller) sizingRate(now time.Time, pol config.Policy, pool string, st *PoolStatus) (float64, string) {
	smoothed := c.smooth(now, pol.ColdStart.Duration, pool, st.Sustained)
	s, ok := c.surge[pool]
	if ok && (now.Before(s.t) || now.Sub(s.t) > unknownGap*c.interval()) {
		// A stall, a pause in the pool's decisions or time going backwards: the breach's rates are not
		// this moment's, so a breach now is a new one.
		c.breaching[pool] = 0
	}
	n := streak(c.breaching, pool, st.Backpressure >= 1)
	if n == 0 {
		delete(c.surge, pool)
		return smoothed, "sustained"
	}
	if n == 1 {
		s.h = s.h[:0] // a new breach
	}
	fast := st.Arrival
	if !(fast >= 0) {
		fast = 0 // NaN would leave the median undefined; Aggregate gives none, but the state outlives one status
	}
	s.h = append(s.h, math.Min(fast, math.MaxFloat64))
	if keep := c.surgeSamples(pol); len(s.h) > keep {
		s.h = s.h[len(s.h)-keep:]
	}
	s.t = now
	c.surge[pool] = s
	if n >= c.decisions(breachEvidence) {
		if m := c.median(s.h); m > max(smoothed, st.Sustained) {
			return m, "fast"
		}
	}
	return smoothed, "sustained"
}

// surge is the fast λ of each decision of a pool's current breach (the last surgeSamples of them) and
// the time of the latest.
type surge struct {
	t time.Time
	h []float64
}

// maxSurge bounds the breach's rates kept per pool: sorted on each decision of a breach, a cold start of
// 1 h at 100 ms would be 36,000; 1,000 is over 16 min at 1 s, longer than any rise the median waits for.
const maxSurge = 1000

// surgeSamples is how many of a breach's fast rates sizingRate keeps: a cold start of decisions (a rise
// within the breach shows in the median within half of one), at least breachEvidence's, at most maxSurge.
func (c *Controller) surgeSamples(pol config.Policy) int {
	return min(max(int(pol.ColdStart.Duration/c.interval()), c.decisions(breachEvidence)), maxSurge)
}

// median is the median of h (NaN-free, non-empty), sorted in the controller's scratch space.
func (c *Controller) median(h []float64) float64 {
	s := append(c.sorted[:0], h...)
	slices.Sort(s)
	c.sorted = s
	if n := len(s); n%2 == 0 {
		return s[n/2-1]/2 + s[n/2]/2 // halves first: the sum of two rates near the float limit overflows
	}
	return s[len(s)/2]
}

// smooth folds x into the pool's level with time constant tau (exponential smoothing over irregular
// steps); a pool seen for the first time, or after a pause of many tau, starts at x.
func (c *Controller) smooth(now time.Time, tau time.Duration, pool string, x float64) float64 {
	l, ok := c.level[pool]
	dt := now.Sub(l.t)
	if !ok || tau <= 0 || dt < 0 {
		c.level[pool] = level{now, x}
		return x
	}
	v := l.v + (x-l.v)*(1-math.Exp(-dt.Seconds()/tau.Seconds()))
	c.level[pool] = level{now, v}
	return v
}

// safetyNet adds a fixed emergency step when recent latency breaks the SLO (HeteroScale's negative
// feedback): +10% of current replicas when missShare (5%) or more of requests miss, +20% from 20%.
func (c *Controller) safetyNet(now time.Time, pol config.Policy, p *config.Pool, st *PoolStatus, n int, d *Decision) int {
	pool := p.Name
	if !(st.SLOMissFraction >= missShare) {
		return n
	}
	if p.Role != config.RoleDecode && st.QueuedTokens <= 0 {
		// TTFT misses with nothing queued come from prompts whose own prefill is near the SLO: more
		// prefillers would not shorten them.
		return n
	}
	step := 0.10
	if st.SLOMissFraction >= 0.20 {
		step = 0.20
	}
	// At least a count the HPA acts on: +10% of 10, 20, 30 ... pods is within its tolerance, and the
	// cooldown below would then hold a step that never happened.
	target := max(int(math.Ceil(float64(st.Pods)*(1+step))), stepAbove(st.Pods))
	if last, ok := c.emergency[pool]; ok && now.Sub(last) < max(emergencyCooldown, pol.ColdStart.Duration) {
		return max(n, st.Pods) // hold while the previous step takes effect
	}
	if float64(st.Pods) >= float64(n)*(1+step) {
		// The pool already holds a step more than the sizing so far asks: the misses come from a transient
		// (a burst, a cold start) that pods Ready a cold start later would not fix, and stepping from an
		// inflated count compounded into many times the load's need in the simulator.
		return n
	}
	if target > n {
		c.emergency[pool] = now
		d.Reasons = append(d.Reasons, fmt.Sprintf("%s: %.0f%% of requests miss the latency SLO: emergency step +%.0f%% → %d",
			pool, st.SLOMissFraction*100, step*100, target))
		return target
	}
	return n
}

// stabilise clamps to min/max and scales down only to the policy.scaleDownQuantile of the window's
// recommendations (1: the highest).
//
// A quantile just below the highest lets a recommendation spike shorter than a few percent of the window
// go once it is over, where the highest held pods ordered for it through the whole window; on the
// simulator's Mooncake and multi-day ServeGen traces those spikes were most of what tokenscale paid over
// the cheapest other policy (docs/evaluation.md).
//
// A controller with no history of the pool (a replica just started, or restarted) does not answer below
// the pods running at its first decision until the policy's memory has passed: its peers' windows, burst
// histories and smoothed rates live in their memory only, and the running count is the one piece of that
// past every replica can see, as it is what earlier decisions scaled to.
func (c *Controller) stabilise(now time.Time, p *config.Pool, pol config.Policy, n, running int, d *Decision) int {
	n = min(max(n, p.MinReplicas), p.MaxReplicas)
	rs, seen := c.recs[p.Name]
	if !seen {
		c.startHold[p.Name] = rec{now, min(max(running, p.MinReplicas), p.MaxReplicas)}
	}
	rs = append(rs, rec{now, n})
	cut := 0
	for cut < len(rs) && now.Sub(rs[cut].t) > pol.ScaleDownWindow.Duration {
		cut++
	}
	rs = rs[cut:]
	c.recs[p.Name] = rs
	best := max(n, c.quantile(rs, pol.ScaleDownQuantile))
	if h, ok := c.startHold[p.Name]; ok {
		if now.Sub(h.t) <= memory(pol) {
			if h.n > best {
				d.Reasons = append(d.Reasons, fmt.Sprintf("%s: no history before %s: the %d pods running then are held until %s has passed",
					p.Name, h.t.Format(time.TimeOnly), h.n, memory(pol)))
			}
			best = max(best, h.n)
		} else {
			delete(c.startHold, p.Name)
		}
	}
	// Clamped again: recommendations kept from before a reload that lowered maxReplicas (or raised
	// minReplicas) would otherwise hold the old bounds for the whole window.
	return min(max(best, p.MinReplicas), p.MaxReplicas)
}

// quantile is the nearest-rank q-quantile of the recommendations (q ≥ 1: the highest), sorting a copy
// only when the highest value is held by too few of them to be the answer (a pool at a plateau is not).
func (c *Controller) quantile(rs []rec, q float64) int {
	if len(rs) == 0 {
		return 0
	}
	k := min(max(int(math.Ceil(q*float64(len(rs))-1e-9)), 1), len(rs)) // rank from the bottom, 1-based
	top, atTop := math.MinInt, 0
	for _, r := range rs {
		switch {
		case r.n > top:
			top, atTop = r.n, 1
		case r.n == top:
			atTop++
		}
	}
	if atTop > len(rs)-k {
		return top
	}
	buf := c.scratch[:0]
	for _, r := range rs {
		buf = append(buf, r.n)
	}
	slices.Sort(buf)
	c.scratch = buf
	return buf[k-1]
}

// conversions decides how many decoders take prefill work: only while prefill capacity is short and
// the SLO would break before a new prefiller is Ready (cold start), only from decoders the decode pool
// can spare, never above maxConvertFraction of the decode pool (but at least one while it is above 0:
// ConversionLimit); released after prefill keeps up for ReleaseHold; zero at once when either pool's
// signal is unknown (fail safe).
func (c *Controller) conversions(now time.Time, pol config.Policy, prefill *config.Pool, ps *PoolStatus,
	decode *config.Pool, ds *PoolStatus, d *Decision) int {
	if decode == nil {
		return 0
	}
	// Kept per decode pool, whose decoders they are: a reload renaming the group keeps them and their hold.
	pool := decode.Name
	if ps == nil || ds == nil || prefill == nil {
		if c.converting(pool) > 0 {
			d.Reasons = append(d.Reasons, "signal lost: conversions released")
		}
		c.conv[pool] = conversion{c.round, 0}
		return 0
	}
	need := ps.Arrival + ps.QueuedTokens/pol.DrainSeconds
	short := need - ps.Capacity
	perConverted := pol.ConvertedPrefill * prefill.Profile.PrefillTPS
	want := 0
	if short > 0 && ps.SecondsToBreach < pol.ColdStart.Seconds() {
		want = ceilDiv(short, perConverted)
	}
	// A converted decoder keeps decoding between its capped prefill chunks, losing about the prefill
	// share c of its decode capacity: k conversions fit while N_D − k·c still covers decode demand.
	headroom := float64(ds.Pods) - ds.Arrival/(ds.PerPod*pol.DecodeTargetUtilisation)
	spare := 0
	if headroom > 0 {
		spare = min(ds.Pods, int(math.Floor(headroom/pol.ConvertedPrefill+1e-9)))
		// Some decoding always stays: at c = 1 (an engine that switches role, SGLang's, decodes nothing
		// while converted) an idle pool's every decoder was spare, and converting them all left the
		// prefilled requests no decoder until the release.
		if float64(spare)*pol.ConvertedPrefill >= float64(ds.Pods)-1e-9 {
			spare = int(math.Ceil(float64(ds.Pods)/pol.ConvertedPrefill-1e-9)) - 1
		}
	}
	limit := ConversionLimit(pol.ConvertFraction(), ds.Pods)
	want = max(0, min(want, spare, limit))
	prev := c.converting(pool)
	if want < prev {
		// Hysteresis: hold until prefill has kept up for ReleaseHold.
		if short > 0 {
			delete(c.keepingUp, pool)
			want = min(prev, max(0, min(spare, limit)))
		} else {
			since, ok := c.keepingUp[pool]
			if !ok {
				c.keepingUp[pool] = now
				since = now
			}
			if now.Sub(since) < pol.ReleaseHold.Duration {
				want = min(prev, max(0, min(spare, limit)))
			}
		}
	} else {
		delete(c.keepingUp, pool)
	}
	if want != prev {
		d.Reasons = append(d.Reasons, fmt.Sprintf("conversions %d → %d (prefill short by %.0f tok/s, breach in %.1fs, spare decoders %d, limit %d)",
			prev, want, math.Max(0, short), ps.SecondsToBreach, spare, limit))
	}
	c.conv[pool] = conversion{c.round, want}
	return want
}

// converting is the decode pool's conversions wanted as of the last round, 0 if that round did not decide
// it: answered as unknown meanwhile, the converter released them, and a count and hold kept from before
// would convert them again and skip the hold. Rounds are counted, not timed, so a clock stepping back
// does not age them.
func (c *Controller) converting(pool string) int {
	r, ok := c.conv[pool]
	if !ok || r.round+1 < c.round {
		delete(c.keepingUp, pool)
		return 0
	}
	return r.n
}

// calibrationEvidence is how long a pool must look saturated, on enough decisions in a row to cover it, before its
// served velocity is taken as its capacity; calibrationStep is how far V moves towards an observation per
// second of scrapes (three decisions and 0.3 a decision at the default 1 s interval).
const (
	calibrationEvidence = 3 * time.Second
	calibrationStep     = 0.3
	maxCalibrationStep  = 0.5
)

// calibrate refines a pool's per-pod velocity online. A pool whose arrival exceeds what it serves by 5%
// for calibrationEvidence, with work waiting on it (queued), is saturated: its served velocity per
// pod is its real capacity. A pool serving more than 5% above the V in use has at least that capacity.
// Served is the latency window's: engines count a prompt's tokens when its prefill completes, and one
// scrape's lumps of whole prompts ratcheted V above what a pod can serve.
// Updates are bounded to [0.5, 2]× the profile; a move of more than 5% is logged.
func (c *Controller) calibrate(pol config.Policy, p *config.Pool, st *PoolStatus) {
	if !pol.Calibrates() {
		// Off (policy.calibrate: false, perhaps by a reload): forgotten, so that turning it on again starts
		// from the profile.
		delete(c.calibrated, p.Name)
		delete(c.saturated, p.Name)
		return
	}
	profile := perPod(p, 0)
	cur := perPod(p, c.calibrated[p.Name]) // within [0.5, 2]× the profile in force

	if st.Known < st.Pods || st.Pods == 0 {
		// Not read this round: the saturated decisions must come in a row, and one before a gap of unknown
		// pods is not the same run as one after it.
		c.saturated[p.Name] = 0
		return
	}
	observed := st.SustainedServed / float64(st.Pods)
	saturated := streak(c.saturated, p.Name, st.Arrival > st.Served*1.05 && queued(p, st, observed, cur)) >= c.decisions(calibrationEvidence)
	if !saturated && !(observed > cur*1.05) {
		return
	}
	// calibrationStep towards the observation per second of scrapes, whatever the interval, but never more
	// than half-way to one observation (at long intervals a decision would otherwise take it whole).
	w := calibrationStep
	if iv := c.interval(); iv != time.Second {
		w = min(1-math.Pow(1-calibrationStep, iv.Seconds()), maxCalibrationStep)
	}
	next := (1-w)*cur + w*observed
	next = math.Min(math.Max(next, 0.5*profile), 2*profile)
	if math.Abs(next-cur) > 0.05*cur {
		klog.InfoS("Calibrated pool capacity", "pool", p.Name, "from", int(cur), "to", int(next),
			"observedPerPod", int(observed), "saturated", saturated)
	}
	c.calibrated[p.Name] = next
}

// queued reports whether work waits on the pool as a saturated pool's does: prompt tokens queued on a
// prefill pool; on a decode pool, requests waiting while its pods serve at least half the V in use. A
// decoder's demand outruns what it serves whenever new requests join its batch, and its waiting count
// holds the KV pulls in flight, so neither says anything of its capacity: three decoders at 2% KV, each
// serving under a tenth of its V_D beside one pull, were read as saturated, and V_D fell to half the
// profile (the Mooncake trace; docs/evaluation.md). A decoder serving under half its V has free batch
// slots, or a full KV cache, which kvPods sizes.
func queued(p *config.Pool, st *PoolStatus, observed, cur float64) bool {
	if p.Role != config.RoleDecode {
		return st.QueuedTokens > 0
	}
	return st.Waiting >= 1 && observed >= 0.5*cur
}

// ConversionLimit is how many of n decoders may be converted at once: floor(fraction·n), but at least
// one when conversions are enabled, since a converted decoder keeps decoding and small pools (one or two
// decoders, common for short-output traffic) would otherwise never absorb a burst.
func ConversionLimit(fraction float64, n int) int {
	if !(fraction > 0) || n <= 0 {
		return 0
	}
	return max(1, int(math.Floor(fraction*float64(n)+1e-9)))
}

func ratioBand(a, b *config.Pool) *config.Ratio {
	if a != nil && a.Ratio != nil {
		return a.Ratio
	}
	if b != nil {
		return b.Ratio
	}
	return nil
}

func ceilDiv(a, b float64) int {
	if b <= 0 || a <= 0 || math.IsNaN(a) {
		return 0
	}
	v := math.Ceil(a/b - 1e-9)
	if v > 1e6 {
		return 1e6
	}
	return int(v)
}
