package adapter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	apierr "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// Source is what the provider reads: the service's latest snapshot. Every answer reads one snapshot,
// so pod and pool values in it come from the same round.
type Source interface {
	Snapshot() *service.Snapshot
}

var (
	podsGR = schema.GroupResource{Resource: "pods"}
	// workloadGRs maps a pool's workload kind to its resource.
	workloadGRs = map[string]schema.GroupResource{
		"Deployment":      {Group: "apps", Resource: "deployments"},
		"StatefulSet":     {Group: "apps", Resource: "statefulsets"},
		"LeaderWorkerSet": {Group: "leaderworkerset.x-k8s.io", Resource: "leaderworkersets"},
	}
)

// RequestObserver records how long a metrics request took and how it ended.
type RequestObserver interface {
	ObserveRequest(api, target string, d time.Duration, err error)
}

// Provider implements provider.CustomMetricsProvider.
type Provider struct {
	src Source
	// maxAge: a snapshot older than this is not served (0: no limit).
	maxAge time.Duration
	// window is the WindowSeconds of a pod's values (RatesOver); 0 reads as 1.
	window int64
	// lws says whether the LeaderWorkerSet CRD exists; its metrics are listed only then.
	lws func() bool
	obs RequestObserver
}

// Observe makes the provider report every request's latency and outcome to o.
func (p *Provider) Observe(o RequestObserver) { p.obs = o }

// RefuseOlderThan makes every read of a snapshot older than d a 503: values from a stalled scrape loop
// are old, not known, even while the readiness check has not yet taken the adapter out of service.
func (p *Provider) RefuseOlderThan(d time.Duration) { p.maxAge = d }

// RatesOver sets the window a pod's values are reported over (WindowSeconds): its rates are taken
// between its last two scrapes, so the scrape interval, in whole seconds rounded up (the API's unit); 1 s
// until set.
func (p *Provider) RatesOver(interval time.Duration) {
	p.window = max(1, int64((interval+time.Second-1)/time.Second))
}

// rateWindow is the WindowSeconds of a pod's values.
func (p *Provider) rateWindow() int64 { return max(1, p.window) }

// snapshot is the newest snapshot, or the 503 saying why none may be served: none yet, or one older
// than maxAge (0: no limit).
func snapshot(src Source, maxAge time.Duration) (*service.Snapshot, error) {
	s := src.Snapshot()
	if s == nil {
		return nil, unavailable("no velocity data yet: the first scrape round has not finished")
	}
	if maxAge > 0 {
		if err := service.Fresh(s, time.Now(), maxAge); err != nil {
			return nil, unavailable(err.Error())
		}
	}
	return s, nil
}

func observe(o RequestObserver, api, target string, start time.Time, err *error) {
	*err = bound(*err)
	if o != nil {
		o.ObserveRequest(api, target, time.Since(start), *err)
	}
}

// maxMessage bounds an error's message, and maxDetail each name in its details.
const (
	maxMessage = 1000
	maxDetail  = 256
)

// bound makes an error safe to print and short, whatever the request's names held: control bytes written
// as \xNN and other characters that are not printable as \uNNNN or \UNNNNNNNN (kubectl get --raw prints
// the message to a terminal, and a namespace or metric name in the path can carry escape sequences or a
// bidirectional override) and the message cut to maxMessage bytes, the names in its details to
// maxDetail. Each error site clips what it writes; quoting then made a byte four, and some sites wrote a
// name twice, so a message reached 1.7 KB.
func bound(err error) error {
	var se *apierr.StatusError
	if !errors.As(err, &se) {
		if err == nil {
			return nil
		}
		return errors.New(engine.PrintableWithin(err.Error(), maxMessage))
	}
	st := se.ErrStatus
	st.Message = engine.PrintableWithin(st.Message, maxMessage)
	if st.Details != nil {
		d := *st.Details
		d.Name, d.Group, d.Kind = engine.PrintableWithin(d.Name, maxDetail), engine.PrintableWithin(d.Group, maxDetail), engine.PrintableWithin(d.Kind, maxDetail)
		d.Causes = nil
		st.Details = &d
	}
	return &apierr.StatusError{ErrStatus: st}
}

var (
	_ provider.CustomMetricsProvider = (*Provider)(nil)
	_ Source                         = (*service.Service)(nil)
)

// NewProvider returns a provider over src. lws may be nil (LeaderWorkerSet not served).
func NewProvider(src Source, lws func() bool) *Provider {
	if lws == nil {
		lws = func() bool { return false }
	}
	return &Provider{src: src, lws: lws}
}

// ListAllMetrics lists every metric the adapter can serve; it is never empty.
func (p *Provider) ListAllMetrics() []provider.CustomMetricInfo {
	var out []provider.CustomMetricInfo
	for _, m := range sortedKeys(podMetrics) {
		out = append(out, provider.CustomMetricInfo{GroupResource: podsGR, Namespaced: true, Metric: m})
	}
	for _, kind := range []string{"Deployment", "StatefulSet", "LeaderWorkerSet"} {
		if kind == "LeaderWorkerSet" && !p.lws() {
			continue
		}
		for _, m := range sortedKeys(poolMetrics) {
			out = append(out, provider.CustomMetricInfo{GroupResource: workloadGRs[kind], Namespaced: true, Metric: m})
		}
	}
	return out
}

// GetMetricByName returns one pod's or one workload's metric.
func (p *Provider) GetMetricByName(_ context.Context, name types.NamespacedName, info provider.CustomMetricInfo, metricSelector labels.Selector) (_ *custom_metrics.MetricValue, err error) {
	target := "object"
	if info.GroupResource == podsGR {
		target = "pods"
	}
	defer observe(p.obs, "custom", target, time.Now(), &err)
	if err := p.served(info); err != nil {
		return nil, err
	}
	if err := noMetricSelector(info, metricSelector); err != nil {
		return nil, err
	}
	if name.Namespace == "" {
		return nil, rootScoped(info)
	}
	if info.GroupResource == podsGR {
		get := podMetrics[info.Metric]
		key := store.PodKey{Namespace: name.Namespace, Name: name.Name}
		snap, err := snapshot(p.src, p.maxAge)
		if err != nil {
			return nil, err
		}
		v, err := snap.Pod(key)
		if _, member := snap.PodPool[key]; !member && errors.Is(err, store.ErrNotFound) {
			if pk, ok := snap.Starting[key]; ok {
				// As a selector query over it answers: the pod is there, its numbers are not yet.
				return nil, unavailable(fmt.Sprintf("%s for pod %s is unknown: it is a pod of pool %s that is not Ready", info.Metric, key, pk))
			}
			return nil, apierr.NewNotFound(podsGR, fmt.Sprintf("%s (not a Ready pod of any tokenscale pool; pools here: %s)", clip(key.String()), snap.PoolsIn(key.Namespace)))
		}
		if err := podNotCarried(snap, info.Metric, []store.PodKey{key}); err != nil {
			return nil, err
		}
		if err != nil {
			return nil, unavailable(fmt.Sprintf("%s for pod %s is unknown: %v", info.Metric, key, err))
		}
		q, err := quantity(get(v))
		if err != nil {
			return nil, unavailable(fmt.Sprintf("%s for pod %s: %v", info.Metric, key, err))
		}
		window := p.rateWindow()
		mv := podMetricValue(key, info.Metric, q, v.Time, &window)
		return &mv, nil
	}
	get, kind := poolMetrics[info.Metric], kindFor(info.GroupResource)
	snap, err := snapshot(p.src, p.maxAge)
	if err != nil {
		return nil, err
	}
	pool := poolFor(snap, name.Namespace, kind, name.Name)
	if pool == nil {
		ns := clip(name.Namespace)
		if pl := snap.WorkloadPool(name.Namespace, kind, name.Name); pl != nil {
			if err := service.NotCarried(service.PoolKey{Namespace: name.Namespace, Name: pl.Name}, pl, get); err != nil {
				return nil, apierr.NewBadRequest(fmt.Sprintf("%s: %v", info.Metric, err)) // as with Ready pods
			}
			// The config maps this workload, but its pool has no Ready pods here (scaled to zero, or every
			// pod starting or failing): the value is unknown, not the workload.
			pods := ""
			if n := snap.Matching[service.PoolKey{Namespace: name.Namespace, Name: pl.Name}]; n > 0 {
				pods = fmt.Sprintf(" (%d pods, none Ready)", n)
			}
			return nil, unavailable(fmt.Sprintf("%s: pool %s (%s %s/%s) has no Ready pods in namespace %s%s", info.Metric, pl.Name, kind, ns, name.Name, ns, pods))
		}
		return nil, apierr.NewNotFound(info.GroupResource, fmt.Sprintf("%s (no tokenscale pool maps to %s %s/%s; pools here: %s)",
			clip(name.Name), kind, ns, clip(name.Name), snap.PoolsIn(name.Namespace)))
	}
	v, err := pool.Value(get)
	if errors.Is(err, service.ErrNotCarried) {
		return nil, apierr.NewBadRequest(fmt.Sprintf("%s: %v", info.Metric, err))
	}
	if err != nil {
		return nil, unavailable(fmt.Sprintf("%s: %v", info.Metric, err))
	}
	q, err := quantity(v)
	if err != nil {
		return nil, unavailable(fmt.Sprintf("%s of pool %s: %v", info.Metric, pool.Key, err))
	}
	return &custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{Kind: kind, Namespace: name.Namespace, Name: name.Name,
			APIVersion: info.GroupResource.WithVersion("v1").GroupVersion().String()},
		Metric:    custom_metrics.MetricIdentifier{Name: info.Metric},
		Timestamp: metav1.NewTime(snap.Time),
		Value:     q,
	}, nil
}

// served is the 404 for a metric tokenscale does not serve on the request's resource: a name it serves
// on no resource, a pods metric asked of a workload (or the reverse), or a workload metric on a resource
// it does not serve (deployments without .apps, a custom scale target), which says so rather than that
// the metric is unknown. Checked before anything about the request's shape (its namespace, a selector),
// whose 400s would otherwise give advice for a metric that does not exist there.
func (p *Provider) served(info provider.CustomMetricInfo) error {
	if info.GroupResource == podsGR {
		if _, ok := podMetrics[info.Metric]; !ok {
			return p.unknownMetric(info)
		}
		return nil
	}
	if _, ok := poolMetrics[info.Metric]; !ok {
		return p.unknownMetric(info)
	}
	// LeaderWorkerSet only while its CRD exists, as discovery and this 404 list it: answered without it, a
	// request got a value for a resource the 404 said was not served.
	if k := kindFor(info.GroupResource); k == "" || k == "LeaderWorkerSet" && !p.lws() {
		gr := clipGR(info.GroupResource)
		return apierr.NewNotFound(gr, fmt.Sprintf("%s: tokenscale serves workload metrics on %s, not on %s (write the resource with its group, e.g. deployments.apps)",
			info.Metric, strings.Join(p.workloadResources(), ", "), gr))
	}
	return nil
}

// rootScoped is the 400 for a path without a namespace (/apis/custom.metrics.k8s.io/v1beta2/pods/*/...):
// no pool lives outside a namespace, and a 503 or 404 for it read as a value coming back later or absent.
func rootScoped(info provider.CustomMetricInfo) error {
	return apierr.NewBadRequest(fmt.Sprintf("%s is served per namespace: ask under /namespaces/<namespace>/%s/", clip(info.Metric), info.GroupResource))
}

// noMetricSelector refuses a metric selector (an HPA metric's `selector`): tokenscale's custom metrics
// carry no labels, so a selector could match nothing, and answering the unfiltered value would let a
// selection copied from the external metrics pass unnoticed.
func noMetricSelector(info provider.CustomMetricInfo, sel labels.Selector) error {
	if sel == nil || sel.Empty() {
		return nil
	}
	return apierr.NewBadRequest(fmt.Sprintf("%s carries no labels, so metric selector %s matches nothing here: remove the metric's selector "+
		"(pick the pod or workload instead; pools are selected by label on the external metrics)", clip(info.Metric), quote(sel.String())))
}

// GetMetricBySelector returns a pods metric for every tracked pod matching selector in namespace.
// Pods whose value is unknown are left out; when none is known the request fails with the reason.
func (p *Provider) GetMetricBySelector(_ context.Context, namespace string, selector labels.Selector, info provider.CustomMetricInfo, metricSelector labels.Selector) (_ *custom_metrics.MetricValueList, err error) {
	defer observe(p.obs, "custom", "pods", time.Now(), &err)
	if err := p.served(info); err != nil {
		return nil, err
	}
	if err := noMetricSelector(info, metricSelector); err != nil {
		return nil, err
	}
	if info.GroupResource != podsGR {
		return nil, apierr.NewBadRequest(fmt.Sprintf("%s is served per workload object, not by selector: ask for a named %s", clip(info.Metric), clipGR(info.GroupResource)))
	}
	if namespace == "" {
		return nil, rootScoped(info)
	}
	get := podMetrics[info.Metric]
	if err := boundedSelector(selector); err != nil {
		return nil, err
	}
	snap, err := snapshot(p.src, p.maxAge)
	if err != nil {
		return nil, err
	}
	list := &custom_metrics.MetricValueList{}
	var firstErr error
	var keys []store.PodKey
	for key, ls := range snap.PodLabels {
		if key.Namespace == namespace && selector.Matches(labels.Set(ls)) {
			keys = append(keys, key)
		}
	}
	slices.SortFunc(keys, func(a, b store.PodKey) int { return strings.Compare(a.Name, b.Name) })
	if err := podNotCarried(snap, info.Metric, keys); err != nil {
		return nil, err
	}
	// One allocation for the answer: a selector over a large pool is the HPA's common call.
	list.Items = make([]custom_metrics.MetricValue, 0, len(keys))
	window := p.rateWindow()
	snap.EachPod(keys, func(v *store.Velocity, err error) {
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		q, err := quantity(get(*v))
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", v.Pod, err)
			}
			return
		}
		list.Items = append(list.Items, podMetricValue(v.Pod, info.Metric, q, v.Time, &window))
	})
	if len(list.Items) == 0 {
		if len(keys) == 0 {
			if pools := startingPools(snap, namespace, selector); pools != "" {
				return nil, unavailable(fmt.Sprintf("%s: no Ready pod in namespace %s matches %s, and pool %s has pods here that are not Ready: their values are unknown, not absent", info.Metric, quote(namespace), quote(selector.String()), pools))
			}
			return nil, apierr.NewNotFound(podsGR, fmt.Sprintf("%s: no tracked pod in namespace %s matches %s (tokenscale tracks Ready pods of its configured pools)", info.Metric, quote(namespace), quote(selector.String())))
		}
		return nil, unavailable(fmt.Sprintf("%s is unknown for all %d matching pods: %v", info.Metric, len(keys), firstErr))
	}
	return list, nil
}

// startingPools names the configured pools with pods in namespace but none Ready that the request's
// selector selects (see selects), as "a (3 pods), b (1 pods)"; "" when none.
func startingPools(snap *service.Snapshot, namespace string, sel labels.Selector) string {
	var out []string
	for i := range snap.ConfigPools {
		pl := &snap.ConfigPools[i]
		if !config.RunsIn(snap.ConfigPools, pl, namespace) {
			continue
		}
		k := service.PoolKey{Namespace: namespace, Name: pl.Name}
		// A pool with a fixed namespace has an instance with or without pods: Ready pods are what count.
		if v := snap.Pools[k]; v != nil && len(v.Pods) > 0 || snap.Matching[k] == 0 || !selects(sel, pl.Selector) {
			continue
		}
		out = append(out, fmt.Sprintf("%s (%d pods)", pl.Name, snap.Matching[k]))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// selects reports whether a request's selector picks a pool's pods as far as the pool's selector tells
// their labels: at least one requirement that selects on a key the pool fixes (an HPA's selector is its
// workload's, such as app=x,llm-d.ai/role=prefill, which holds the pool's label beside its own), and none
// that a key the pool fixes fails. Requirements on other keys cannot be told either way, and one that
// excludes (app!=x, !foo) does not pick a pool. A selector without requirements picks every pod in the
// namespace, so every pool.
func selects(sel labels.Selector, pool map[string]string) bool {
	if sel.Empty() {
		return true
	}
	reqs, _ := sel.Requirements()
	hit := false
	for _, r := range reqs {
		v, fixed := pool[r.Key()]
		if !fixed {
			continue
		}
		if !r.Matches(labels.Set{r.Key(): v}) {
			return false
		}
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In, selection.Exists:
			hit = true
		}
	}
	return hit
}

// clip shortens text from a request for an error message.
func clip(s string) string {
	if len(s) > 200 {
		return strings.ToValidUTF8(s[:200], "") + "..."
	}
	return s
}

// quote is text from a request quoted (%q) for an error message, clipped before and after quoting, as
// quoting may write a byte as four.
func quote(s string) string { return clip(strconv.Quote(clip(s))) }

// clipGR shortens a resource from a request for an error message, to about as much as clip keeps.
func clipGR(gr schema.GroupResource) schema.GroupResource {
	if len(gr.Group)+len(gr.Resource) <= 200 {
		return gr
	}
	half := func(s string) string {
		if len(s) > 100 {
			return strings.ToValidUTF8(s[:100], "") + "..."
		}
		return s
	}
	return schema.GroupResource{Group: half(gr.Group), Resource: half(gr.Resource)}
}

// workloadResources lists the workload resources served, as they are written in a request's path.
func (p *Provider) workloadResources() []string {
	var out []string
	for _, kind := range []string{"Deployment", "StatefulSet", "LeaderWorkerSet"} {
		if kind == "LeaderWorkerSet" && !p.lws() {
			continue
		}
		out = append(out, workloadGRs[kind].String())
	}
	return out
}

// podMetricValue is one pod's value; window is the values' window in seconds, shared by the items of
// one answer.
func podMetricValue(key store.PodKey, metric string, v resource.Quantity, t time.Time, window *int64) custom_metrics.MetricValue {
	return custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: key.Namespace, Name: key.Name},
		Metric:          custom_metrics.MetricIdentifier{Name: metric},
		Timestamp:       metav1.NewTime(t),
		WindowSeconds:   window,
		Value:           v,
	}
}

// unknownMetric is the 404 listing what is served: each metric name once, as a list of every resource's
// metrics by name grew past 1 KiB.
func (p *Provider) unknownMetric(info provider.CustomMetricInfo) error {
	return apierr.NewNotFound(clipGR(info.GroupResource), fmt.Sprintf("metric %s (tokenscale serves %s on pods, and %s on %s)",
		clip(info.Metric), strings.Join(sortedKeys(podMetrics), ", "), strings.Join(sortedKeys(poolMetrics), ", "), strings.Join(p.workloadResources(), ", ")))
}

// unavailable is a 503: the metric exists but its value is unknown now (stale, warming up, broken pods).
func unavailable(msg string) error {
	return &apierr.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusServiceUnavailable, Reason: metav1.StatusReasonServiceUnavailable, Message: msg,
	}}
}

// ErrOutOfRange is a value that cannot be served as a Kubernetes quantity.
var ErrOutOfRange = errors.New("value out of the range served")

// quantity converts a value to a milli-quantity, or says why it cannot: a negative, non-finite or huge
// value would wrap in the int64 conversion and reach the HPA as a wrong number.
func quantity(v float64) (resource.Quantity, error) {
	if !(v >= 0 && v <= service.MaxValue) {
		return resource.Quantity{}, fmt.Errorf("%w: %g is not within 0..%g", ErrOutOfRange, v, float64(service.MaxValue))
	}
	return *resource.NewMilliQuantity(int64(math.Round(v*1000)), resource.DecimalSI), nil
}

func kindFor(gr schema.GroupResource) string {
	for k, g := range workloadGRs {
		if g == gr {
			return k
		}
	}
	return ""
}

func poolFor(snap *service.Snapshot, namespace, kind, name string) *service.PoolView {
	for k, v := range snap.Pools {
		if k.Namespace == namespace && v.Config.Workload.Kind == kind && v.Config.Workload.Name == name {
			return v
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// podNotCarried is a 400 when metric is a number the pool of one of the pods lacks, as the pool's own is
// refused (service.NotCarried): a decode pod's queued tokens count requests waiting for a decode slot,
// at a mean prompt length the pod never reports (the configured default), so read as prefill work they
// scaled on a guess.
func podNotCarried(snap *service.Snapshot, metric string, keys []store.PodKey) error {
	if metric != QueuedTokens {
		return nil
	}
	for _, key := range keys {
		pk, ok := snap.PodPool[key]
		if !ok {
			continue
		}
		var cfg *config.Pool
		if pv := snap.Pools[pk]; pv != nil {
			cfg = pv.Config
		}
		if err := service.NotCarried(pk, cfg, service.Queued); err != nil {
			return apierr.NewBadRequest(fmt.Sprintf("%s of pod %s: %v", metric, key, err))
		}
	}
	return nil
}
