// Package kubepods lists pods for the velocity service from a shared informer cache, so that no scrape
// round or API request ever lists pods from the API server.
package kubepods

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// Lister answers service.PodLister from an informer cache.
type Lister struct {
	lister corelisters.PodLister
	synced cache.InformerSynced

	mu sync.Mutex
	// pool holds the pool labels of converted pods (protocol.PoolLabels, a copy of the pod's labels) by
	// pod and resource version: copied on every round, a pod's thousands of labels cost their size a
	// second in garbage, and the annotation that asks for the copy is the pod's own.
	pool map[podVersion]map[string]string
}

// podVersion is one version of one pod: its name, its UID (a pod recreated under the name is another)
// and its resource version.
type podVersion struct {
	name    types.NamespacedName
	uid     types.UID
	version string
}

var _ service.PodLister = (*Lister)(nil)

// New registers a pod informer on factory. selector restricts the watch (e.g. "llm-d.ai/role"); ""
// watches every pod the factory's namespace scope allows. Start the factory afterwards.
func New(client kubernetes.Interface, namespace, selector string, resync time.Duration) (*Lister, informers.SharedInformerFactory, error) {
	factory, err := Factory(client, namespace, selector, resync)
	if err != nil {
		return nil, nil, err
	}
	inf := factory.Core().V1().Pods()
	return &Lister{lister: inf.Lister(), synced: inf.Informer().HasSynced}, factory, nil
}

// Factory is an informer factory watching only namespace ("": all) and pods matching selector, so every
// component that caches pods caches the same ones: what --namespace and --pod-selector name.
func Factory(client kubernetes.Interface, namespace, selector string, resync time.Duration) (informers.SharedInformerFactory, error) {
	if _, err := labels.Parse(selector); err != nil {
		return nil, fmt.Errorf("pod label selector %q: %w", selector, err)
	}
	return informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }),
		informers.WithTransform(slim)), nil
}

// slim keeps of a pod only what the components that cache pods read: its metadata less server-side-apply
// field records and kubectl's last-applied copy, its node, and the status fields that say whether it is
// Ready and where (phase, IP, conditions). The containers, volumes and container statuses, most of a
// serving pod's object, would otherwise be held for every pod watched (BenchmarkCachedPodBytes).
func slim(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone or another type: stored as it came
	}
	meta := p.ObjectMeta
	meta.ManagedFields = nil
	if _, has := meta.Annotations[lastApplied]; has {
		meta.Annotations = maps.Clone(meta.Annotations)
		delete(meta.Annotations, lastApplied)
	}
	return &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: meta,
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs,
			Conditions: p.Status.Conditions},
	}, nil
}

// lastApplied is kubectl's copy of a whole applied object, kept as an annotation.
const lastApplied = corev1.LastAppliedConfigAnnotation

// WaitForSync blocks until the cache is filled or ctx ends.
func (l *Lister) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), l.synced)
}

// Pods returns every cached pod; pods not Ready, not Running, being deleted or without an IP are
// marked not Ready so the service neither scrapes nor counts them.
func (l *Lister) Pods() []service.Pod {
	pods, err := l.lister.List(labels.Everything())
	if err != nil {
		return nil // a cache lister does not fail
	}
	out := make([]service.Pod, 0, len(pods))
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := make(map[podVersion]map[string]string, len(l.pool))
	for _, p := range pods {
		out = append(out, service.Pod{
			Key:    store.PodKey{Namespace: p.Namespace, Name: p.Name},
			Labels: l.poolLabels(p, seen), // a converted decoder stays in its decode pool
			IP:     p.Status.PodIP,
			Ready:  Ready(p),
			Gone:   p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed,
		})
	}
	l.pool = seen // pods gone, or no longer converted, are forgotten
	return out
}

// poolLabels is protocol.PoolLabels of p, the copy made once per version of the pod and recorded in seen.
// A pod without a resource version (never from an API server) is copied each time.
func (l *Lister) poolLabels(p *corev1.Pod, seen map[podVersion]map[string]string) map[string]string {
	if _, converted := p.Annotations[protocol.AnnotationConvertedFrom]; !converted {
		return p.Labels // no copy
	}
	if p.ResourceVersion == "" {
		return protocol.PoolLabels(p)
	}
	k := podVersion{types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, p.UID, p.ResourceVersion}
	c, ok := l.pool[k]
	if !ok {
		c = protocol.PoolLabels(p)
	}
	seen[k] = c
	return c
}

// Ready reports whether a pod should be scraped: Running, Ready, not being deleted, with an IP.
func Ready(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
