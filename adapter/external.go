package adapter

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	apierr "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/metrics/pkg/apis/external_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// Labels every external metric value carries, and which a metric selector may match.
const (
	LabelPool     = "pool"
	LabelRole     = "role"
	LabelWorkload = "workload"
)

var externalGR = schema.GroupResource{Group: "external.metrics.k8s.io"}

// External serves the pool metrics through external.metrics.k8s.io, for clusters where no other adapter
// (KEDA's, usually) owns that group. It is only installed with --external-metrics.
type External struct {
	src    Source
	maxAge time.Duration
	obs    RequestObserver
}

// Observe makes the provider report every request's latency and outcome to o.
func (e *External) Observe(o RequestObserver) { e.obs = o }

// RefuseOlderThan makes every read of a snapshot older than d a 503, as Provider.RefuseOlderThan.
func (e *External) RefuseOlderThan(d time.Duration) { e.maxAge = d }

var _ provider.ExternalMetricsProvider = (*External)(nil)

// NewExternal returns the external metrics provider over src.
func NewExternal(src Source) *External { return &External{src: src} }

// ListAllExternalMetrics lists the pool metrics; it is never empty.
func (e *External) ListAllExternalMetrics() []provider.ExternalMetricInfo {
	out := make([]provider.ExternalMetricInfo, 0, len(poolMetrics))
	for _, m := range sortedKeys(poolMetrics) {
		out = append(out, provider.ExternalMetricInfo{Metric: m})
	}
	return out
}

// GetExternalMetric returns one value per pool in namespace whose labels (pool, role, workload) match
// metricSelector. A pool whose value is unknown, or one the selector names on the pool label with no Ready
// pods here, fails the whole request: an HPA summing an external metric over several pools must not see a
// partial sum. A pool name the selector names that no configured pool has here is a 404 naming it.
func (e *External) GetExternalMetric(_ context.Context, namespace string, sel labels.Selector, info provider.ExternalMetricInfo) (_ *external_metrics.ExternalMetricValueList, err error) {
	defer observe(e.obs, "external", "object", time.Now(), &err)
	get, ok := poolMetrics[info.Metric]
	if !ok {
		return nil, apierr.NewNotFound(externalGR, fmt.Sprintf("metric %s (tokenscale serves: %s)", clip(info.Metric), strings.Join(sortedKeys(poolMetrics), ", ")))
	}
	if err := boundedSelector(sel); err != nil {
		return nil, err
	}
	snap, err := snapshot(e.src, e.maxAge)
	if err != nil {
		return nil, err
	}
	// A named pool, workload or role that no config has here is a typo, not a pool at zero: answering for
	// the other named values alone would hand the HPA a partial sum with no error anywhere.
	named := namedPools(snap, namespace, sel)
	if unknown := unconfigured(snap, namespace, sel); unknown != "" {
		return nil, apierr.NewNotFound(externalGR, fmt.Sprintf("%s: %s names %s, which no tokenscale pool config has in namespace %s (pools here: %s)",
			info.Metric, quote(sel.String()), unknown, quote(namespace), snap.PoolsIn(namespace)))
	}
	list := &external_metrics.ExternalMetricValueList{}
	// In name order, so that of two pools with unknown values the same one is named every time.
	keys := make([]service.PoolKey, 0, len(snap.Pools))
	for k := range snap.Pools {
		if k.Namespace == namespace {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	for _, k := range keys {
		pool := snap.Pools[k]
		ls := map[string]string{LabelPool: pool.Key.Name, LabelRole: string(pool.Config.Role), LabelWorkload: pool.Config.Workload.Name}
		if !sel.Matches(labels.Set(ls)) {
			continue
		}
		if err := service.NotCarried(pool.Key, pool.Config, get); err != nil {
			// A number the pool's role lacks has no item, as it has no series on /metrics; a selector that
			// names the pool asks for it, which is a mistake to say.
			if named[pool.Key.Name] {
				return nil, apierr.NewBadRequest(fmt.Sprintf("%s: %v", info.Metric, err))
			}
			continue
		}
		v, err := pool.Value(get)
		if err != nil {
			return nil, unavailable(fmt.Sprintf("%s: %v", info.Metric, err))
		}
		q, err := quantity(v)
		if err != nil {
			return nil, unavailable(fmt.Sprintf("%s of pool %s: %v", info.Metric, pool.Key, err))
		}
		list.Items = append(list.Items, external_metrics.ExternalMetricValue{
			MetricName: info.Metric, MetricLabels: ls, Timestamp: metav1.NewTime(snap.Time), Value: q,
		})
	}
	// A configured pool the selection matches but with no Ready pods here is unknown, not absent (as the
	// custom metrics API answers a configured workload without pods): when the selector names it, or when
	// it has pods here that are not Ready (a rolling restart), even beside pools that answered, as their
	// sum alone would be partial; otherwise only when none answered, as a pool without a namespace scaled
	// to zero here cannot be told from one that never runs here.
	var idle []string
	for i := range snap.ConfigPools {
		p := &snap.ConfigPools[i]
		if !config.RunsIn(snap.ConfigPools, p, namespace) {
			continue
		}
		if _, ok := snap.Pools[service.PoolKey{Namespace: namespace, Name: p.Name}]; ok {
			continue
		}
		if err := service.NotCarried(service.PoolKey{Namespace: namespace, Name: p.Name}, p, get); err != nil {
			// As for a pool with Ready pods: named, it is the same 400 whether or not it runs now.
			if named[p.Name] {
				return nil, apierr.NewBadRequest(fmt.Sprintf("%s: %v", info.Metric, err))
			}
			continue
		}
		if (len(list.Items) == 0 || named[p.Name] || snap.Matching[service.PoolKey{Namespace: namespace, Name: p.Name}] > 0) && sel.Matches(labels.Set{LabelPool: p.Name, LabelRole: string(p.Role), LabelWorkload: p.Workload.Name}) {
			if n := snap.Matching[service.PoolKey{Namespace: namespace, Name: p.Name}]; n > 0 {
				idle = append(idle, fmt.Sprintf("%s (%d pods, none Ready)", p.Name, n))
			} else {
				idle = append(idle, p.Name)
			}
		}
	}
	if len(idle) > 0 {
		return nil, unavailable(fmt.Sprintf("%s: pool %s matches %s but has no Ready pods in namespace %s: its value is unknown, not 0",
			info.Metric, strings.Join(idle, ", "), quote(sel.String()), quote(namespace)))
	}
	if len(list.Items) == 0 {
		return nil, apierr.NewNotFound(externalGR, fmt.Sprintf("%s: no tokenscale pool in namespace %s matches %s (pools here: %s; select with labels %s, %s, %s)",
			info.Metric, quote(namespace), quote(sel.String()), snap.PoolsIn(namespace), LabelPool, LabelRole, LabelWorkload))
	}
	sort.Slice(list.Items, func(i, j int) bool {
		return list.Items[i].MetricLabels[LabelPool] < list.Items[j].MetricLabels[LabelPool]
	})
	return list, nil
}

// Bounds on a selector from a request: an HPA's or KEDA's names a pool or two; one of 100,000
// requirements took seconds of CPU against every tracked pod, and its echo in an error was longer than it.
const (
	maxSelectorRequirements = 64
	maxSelectorValues       = 256
)

// boundedSelector refuses a selector past the bounds, with a 400 that says by how much.
func boundedSelector(sel labels.Selector) error {
	if sel == nil {
		return nil
	}
	reqs, _ := sel.Requirements()
	values := 0
	for _, r := range reqs {
		values += r.Values().Len()
	}
	if len(reqs) > maxSelectorRequirements || values > maxSelectorValues {
		return apierr.NewBadRequest(fmt.Sprintf("label selector with %d requirements and %d values: at most %d and %d are served",
			len(reqs), values, maxSelectorRequirements, maxSelectorValues))
	}
	return nil
}

// clipList joins names for an error: at most ten, no more than fit in about 200 bytes, then how many
// more there are.
func clipList(names []string) string {
	n, size := 0, 0
	for n < len(names) && n < 10 && (n == 0 || size+len(names[n]) <= 200) {
		size += len(names[n]) + len(", ")
		n++
	}
	if n < len(names) {
		return strings.Join(names[:n], ", ") + fmt.Sprintf(" and %d more", len(names)-n)
	}
	return strings.Join(names, ", ")
}

// namedValues are the values the selector lists (=, ==, in) on each label: what its sum is meant to cover.
func namedValues(sel labels.Selector) map[string][]string {
	reqs, _ := sel.Requirements()
	out := map[string][]string{}
	for _, r := range reqs {
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
			for v := range r.Values() {
				if !slices.Contains(out[r.Key()], v) {
					out[r.Key()] = append(out[r.Key()], v)
				}
			}
		}
	}
	return out
}

// unconfigured names the values the selector lists on the pool, workload and role labels that no pool
// configured to run in namespace has, by label ("pool decod; workload llama-prefil"), or "".
func unconfigured(snap *service.Snapshot, namespace string, sel labels.Selector) string {
	has := map[string]map[string]bool{LabelPool: {}, LabelWorkload: {}, LabelRole: {}}
	for i := range snap.ConfigPools {
		p := &snap.ConfigPools[i]
		if config.RunsIn(snap.ConfigPools, p, namespace) {
			has[LabelPool][p.Name] = true
			has[LabelWorkload][p.Workload.Name] = true
			has[LabelRole][string(p.Role)] = true
		}
	}
	named := namedValues(sel)
	var out []string
	for _, k := range []string{LabelPool, LabelWorkload, LabelRole} {
		var unknown []string
		for _, v := range named[k] {
			if !has[k][v] {
				unknown = append(unknown, v)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			out = append(out, k+" "+clipList(unknown))
		}
	}
	return strings.Join(out, "; ")
}

// namedPools are the pools the selector names on the pool label, or by their workload on the workload
// label: the pools the HPA's sum is meant to cover.
func namedPools(snap *service.Snapshot, namespace string, sel labels.Selector) map[string]bool {
	values := namedValues(sel)
	named := map[string]bool{}
	for _, v := range values[LabelPool] {
		named[v] = true
	}
	for _, v := range values[LabelWorkload] {
		for i := range snap.ConfigPools {
			if p := &snap.ConfigPools[i]; p.Workload.Name == v && config.RunsIn(snap.ConfigPools, p, namespace) {
				named[p.Name] = true
			}
		}
	}
	return named
}
