package converter

import (
	"context"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/internal/kubepods"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// Snapshots is what the controller needs of the velocity service.
type Snapshots interface {
	Snapshot() *service.Snapshot
	Subscribe() (<-chan struct{}, func())
}

// DecodePools turns a snapshot into the controller's view: every decode pool with its Ready pods (from
// pods) and the conversions the policy wants there, unknown when the policy could not say. A converted
// pod may have left the pool's selector (llm-d relabels it prefill-decode), so every pod of the pool's
// namespace that holds a lease or says it is converted (from inNamespace) is counted with the first
// decode pool, in the config's order as pods are assigned, whose selector its labels before the
// conversion match: a slot it holds is never given to another pod, and another decode pool of the
// namespace does not take it for its own.
func DecodePools(snap *service.Snapshot, pods func(namespace, name string) *corev1.Pod, inNamespace func(namespace string) []*corev1.Pod) []Pool {
	if snap == nil {
		return nil
	}
	var out []Pool
	for key, v := range snap.Pools {
		if v.Config == nil || v.Config.Role != config.RoleDecode {
			continue
		}
		p := Pool{Name: key.String()}
		if n, err := v.Value(service.Conversions); err == nil {
			p.Wanted, p.Known = int(n), true
		}
		seen := map[string]bool{}
		for _, k := range v.Pods {
			if pod := pods(k.Namespace, k.Name); pod != nil {
				p.Pods = append(p.Pods, pod)
				seen[pod.Name] = true
			}
		}
		for _, pod := range inNamespace(key.Namespace) {
			_, leased := pod.Annotations[protocol.AnnotationConvertUntil]
			if !seen[pod.Name] && (leased || pod.Annotations[protocol.AnnotationStatus] == protocol.StatusConverted) &&
				firstDecodePool(snap.ConfigPools, key.Namespace, protocol.PoolLabels(pod)) == v.Config.Name {
				p.Pods = append(p.Pods, pod)
			}
		}
		out = append(out, p)
	}
	// A fixed order, so the same pools are written first every round.
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// firstDecodePool is the name of the first pool of the config, in its order, that a pod of namespace ns
// with these labels belongs to, if that pool is a decode pool ("" otherwise): pods go to the first pool
// that runs in ns (config.RunsIn) and whose selector matches, as velocity/service assigns them.
func firstDecodePool(pools []config.Pool, ns string, labels map[string]string) string {
	for i := range pools {
		p := &pools[i]
		if config.RunsIn(pools, p, ns) && service.Matches(p.Selector, labels) {
			if p.Role == config.RoleDecode {
				return p.Name
			}
			return ""
		}
	}
	return ""
}

// RunController steps the controller on every new snapshot, and at least every interval so that leases
// are renewed while the service is quiet; a snapshot older than maxAge counts as no signal (every
// lease is released). It caches only the pods the pipeline watches (its --namespace and --pod-selector):
// a cache of every pod of the cluster would not fit the controller's memory on a large one.
func RunController(ctx context.Context, client kubernetes.Interface, c *Controller, src Snapshots, interval, maxAge time.Duration, namespace, podSelector string) error {
	factory, err := kubepods.Factory(client, namespace, podSelector, 0)
	if err != nil {
		return err
	}
	inf := factory.Core().V1().Pods().Informer()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return ctx.Err()
	}
	lookup := func(ns, name string) *corev1.Pod {
		o, ok, err := inf.GetStore().GetByKey(ns + "/" + name)
		if err != nil || !ok {
			return nil
		}
		return o.(*corev1.Pod)
	}
	inNamespace := func(ns string) []*corev1.Pod {
		objs, _ := inf.GetIndexer().ByIndex(cache.NamespaceIndex, ns) // the factory's pod informer indexes namespaces
		out := make([]*corev1.Pod, 0, len(objs))
		for _, o := range objs {
			out = append(out, o.(*corev1.Pod))
		}
		return out
	}
	updates, cancel := src.Subscribe()
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-updates:
		case <-tick.C:
		}
		snap := src.Snapshot()
		pools := DecodePools(snap, lookup, inNamespace)
		if err := service.Fresh(snap, time.Now(), maxAge); err != nil {
			for i := range pools {
				pools[i].Known = false // stale decisions are no signal: release every lease
			}
		}
		if err := c.Step(ctx, pools); err != nil {
			klog.ErrorS(err, "Conversion leases not all written; retrying on the next round")
		}
	}
}
