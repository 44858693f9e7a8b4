// The fake kubelet stands in for the kubelets of a test cluster: for every pod the API server holds in
// a namespace it starts a fake engine (internal/fakeengine) on its own loopback address, and reports the pod
// Running and Ready with that address as its IP; when the pod goes, its engine stops. The real
// deployment, replicaset and HPA controllers then work against pods whose /metrics are real HTTP.

package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
)

// Labels and annotations a pod template uses to shape its fake engine.
const (
	// FlavorAnnotation picks the engine flavor (vllm-v1, vllm-v0, sglang, sglang-old); default vllm-v1.
	FlavorAnnotation = "fakekubelet.tokenscale.io/flavor"
	// LoadLabel names the load group a pod belongs to; a group's load is split evenly over its pods, as a
	// router would split it. Pods without the label get no load.
	LoadLabel = "fakekubelet.tokenscale.io/load"
	// AttackAnnotation makes the pod's engine serve a hostile page (a fakeengine.Attack).
	AttackAnnotation = "fakekubelet.tokenscale.io/attack"
)

// KubeletOptions configure a Kubelet.
type KubeletOptions struct {
	Namespace string
	// Port every engine listens on (each on its own 127.0.x.y address, as pods share a port).
	Port int
	// Engine is the capacity of every engine; Flavor is overridden per pod by FlavorAnnotation.
	Engine fakeengine.Config
	// Tick is how often engines advance and loads are re-split (default 100ms).
	Tick time.Duration
	// ColdStart is how long a new pod stays Running but not Ready (model loading), getting no load.
	ColdStart time.Duration
	// Nodes, when set, are the nodes a pod without one is bound to, round-robin, as a scheduler would.
	Nodes []string
}

// Kubelet runs the engines of one namespace's pods.
type Kubelet struct {
	o      KubeletOptions
	client kubernetes.Interface

	mu      sync.Mutex
	pods    map[string]*Pod // by pod name
	loads   map[string]fakeengine.Load
	requeue func(key string, after time.Duration)
	bound   int
}

// Pod is one running fake engine.
type Pod struct {
	Name, IP, Group string
	Engine          *fakeengine.Engine
	readyAt         time.Time // end of the cold start
	srv             *http.Server
	ln              net.Listener
	dead            atomic.Bool
}

// URL is the pod's metrics endpoint.
func (p *Pod) URL() string {
	return "http://" + net.JoinHostPort(p.IP, strconv.Itoa(p.ln.Addr().(*net.TCPAddr).Port)) + "/metrics"
}

// Kill stops the engine's listener while the pod stays Ready, as a crashed engine behind a stale
// readiness state does: scrapes get connection refused.
func (p *Pod) Kill() {
	if p.dead.CompareAndSwap(false, true) {
		_ = p.srv.Close()
	}
}

// NewKubelet returns a kubelet for o.Namespace; Run starts it.
func NewKubelet(client kubernetes.Interface, o KubeletOptions) *Kubelet {
	if o.Tick <= 0 {
		o.Tick = 100 * time.Millisecond
	}
	return &Kubelet{o: o, client: client, pods: map[string]*Pod{}, loads: map[string]fakeengine.Load{}}
}

// SetLoad sets the total load of a group (the value of LoadLabel); it is split over the group's pods.
func (k *Kubelet) SetLoad(group string, l fakeengine.Load) {
	k.mu.Lock()
	k.loads[group] = l
	k.mu.Unlock()
	k.split()
}

// Pod returns a running pod's engine, or nil.
func (k *Kubelet) Pod(name string) *Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pods[name]
}

// Pods returns the running pods of a load group.
func (k *Kubelet) Pods(group string) []*Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []*Pod
	for _, p := range k.pods {
		if p.Group == group {
			out = append(out, p)
		}
	}
	return out
}

// Run watches the namespace's pods until ctx ends, then stops every engine.
func (k *Kubelet) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0, informers.WithNamespace(k.o.Namespace))
	inf := factory.Core().V1().Pods().Informer()
	work := make(chan string, 1024)
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			work <- key
		}
	}
	k.requeue = func(key string, after time.Duration) {
		time.AfterFunc(after, func() {
			select {
			case work <- key:
			default:
			}
		})
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue,
	}); err != nil {
		return fmt.Errorf("fake kubelet: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return ctx.Err()
	}
	tick := time.NewTicker(k.o.Tick)
	defer tick.Stop()
	last := time.Now()
	defer k.stopAll()
	for {
		select {
		case <-ctx.Done():
			return nil
		case key := <-work:
			_, name, _ := cache.SplitMetaNamespaceKey(key)
			obj, exists, err := inf.GetIndexer().GetByKey(key)
			var pod *corev1.Pod
			if err == nil && exists {
				pod, _ = obj.(*corev1.Pod)
			}
			if err := k.sync(ctx, name, pod); err != nil {
				// A conflict means a controller updated the pod first: the retry reads the new version.
				if apierrors.IsConflict(err) {
					klog.V(2).InfoS("Fake kubelet: pod changed under us; retrying", "pod", key)
				} else {
					klog.ErrorS(err, "Fake kubelet: sync failed; retrying", "pod", key)
				}
				k.requeue(key, 200*time.Millisecond)
			}
		case now := <-tick.C:
			dt := now.Sub(last)
			last = now
			k.split() // a killed engine's share moves to the others, as a router's would
			k.mu.Lock()
			for _, p := range k.pods {
				p.Engine.Advance(dt)
			}
			k.mu.Unlock()
		}
	}
}

// sync starts or stops one pod's engine and reports its status.
func (k *Kubelet) sync(ctx context.Context, name string, pod *corev1.Pod) error {
	k.mu.Lock()
	running := k.pods[name]
	k.mu.Unlock()
	if pod == nil || pod.DeletionTimestamp != nil {
		if running != nil {
			k.stop(name)
		}
		return nil
	}
	if pod.Spec.NodeName == "" && len(k.o.Nodes) > 0 {
		node := k.o.Nodes[k.bound%len(k.o.Nodes)]
		k.bound++
		b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace}, Target: corev1.ObjectReference{Kind: "Node", Name: node}}
		if err := k.client.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("binding pod %s/%s to %s: %w", pod.Namespace, pod.Name, node, err)
		}
		return nil // the bound pod's update event starts its engine
	}
	if running == nil {
		p, err := k.start(pod)
		if err != nil {
			return err
		}
		running = p
	}
	ready := !time.Now().Before(running.readyAt)
	if !ready {
		k.requeue(pod.Namespace+"/"+name, time.Until(running.readyAt))
	}
	if isReportedAt(pod, running.IP, ready) {
		return nil
	}
	now := metav1.Now()
	readiness := corev1.ConditionFalse
	if ready {
		readiness = corev1.ConditionTrue
	}
	st := pod.DeepCopy()
	st.Status.Phase = corev1.PodRunning
	st.Status.HostIP = "127.0.0.1"
	st.Status.PodIP = running.IP
	st.Status.PodIPs = []corev1.PodIP{{IP: running.IP}}
	st.Status.StartTime = &now
	st.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: readiness, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: readiness, LastTransitionTime: now},
	}
	if _, err := k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, st, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("reporting pod %s/%s Running at %s: %w", pod.Namespace, pod.Name, running.IP, err)
	}
	return nil
}

func isReportedAt(p *corev1.Pod, ip string, ready bool) bool {
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP != ip {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return (c.Status == corev1.ConditionTrue) == ready
		}
	}
	return false
}

// nextIP hands out loopback addresses 127.0.1.1, 127.0.1.2, ... across every kubelet in the process.
var nextIP atomic.Uint32

func allocIP() string {
	n := nextIP.Add(1) - 1
	return fmt.Sprintf("127.0.%d.%d", 1+n/250%250, 1+n%250)
}

func (k *Kubelet) start(pod *corev1.Pod) (*Pod, error) {
	cfg := k.o.Engine
	if f := pod.Annotations[FlavorAnnotation]; f != "" {
		cfg.Flavor = fakeengine.Flavor(f)
	}
	eng := fakeengine.New(cfg)
	var ln net.Listener
	var ip string
	var err error
	// Another process may hold the port on an address; move on to the next one.
	for range 20 {
		ip = allocIP()
		if ln, err = net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(k.o.Port))); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fake kubelet: no free loopback address for pod %s: %w", pod.Name, err)
	}
	mux := http.NewServeMux()
	if a := pod.Annotations[AttackAnnotation]; a != "" {
		mux.Handle("/metrics", fakeengine.Hostile(eng, fakeengine.Attack(a)))
	} else {
		mux.Handle("/metrics", eng)
	}
	p := &Pod{Name: pod.Name, IP: ip, Group: pod.Labels[LoadLabel], Engine: eng, ln: ln, readyAt: time.Now().Add(k.o.ColdStart),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Fake engine stopped", "pod", pod.Name)
		}
	}()
	k.mu.Lock()
	k.pods[pod.Name] = p
	k.mu.Unlock()
	k.split()
	klog.V(2).InfoS("Fake kubelet started an engine", "pod", pod.Name, "ip", ip, "flavor", cfg.Flavor)
	return p, nil
}

func (k *Kubelet) stop(name string) {
	k.mu.Lock()
	p := k.pods[name]
	delete(k.pods, name)
	k.mu.Unlock()
	if p != nil {
		p.Kill()
		k.split()
	}
}

func (k *Kubelet) stopAll() {
	k.mu.Lock()
	names := make([]string, 0, len(k.pods))
	for n := range k.pods {
		names = append(names, n)
	}
	k.mu.Unlock()
	for _, n := range names {
		k.stop(n)
	}
}

// split divides each group's load evenly over its live pods that are past their cold start.
func (k *Kubelet) split() {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	serving := func(p *Pod) bool { return !p.dead.Load() && !now.Before(p.readyAt) }
	count := map[string]int{}
	for _, p := range k.pods {
		if serving(p) {
			count[p.Group]++
		}
	}
	for _, p := range k.pods {
		l := k.loads[p.Group]
		if n := count[p.Group]; n > 0 && serving(p) {
			l.PromptTokensPerSec /= float64(n)
			l.OutputTokensPerSec /= float64(n)
		} else {
			l = fakeengine.Load{}
		}
		p.Engine.SetLoad(l)
	}
}

// Deployment returns an llm-d style Deployment of fake engines: pods labelled llm-d.ai/role=role, in
// the load group role, with the engine flavor and any extra pod annotations (key, value pairs).
func Deployment(ns, name, role string, flavor fakeengine.Flavor, replicas int32, podAnnotations ...string) *appsv1.Deployment {
	ann := map[string]string{FlavorAnnotation: string(flavor)}
	for i := 0; i+1 < len(podAnnotations); i += 2 {
		ann[podAnnotations[i]] = podAnnotations[i+1]
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name, "llm-d.ai/role": role, LoadLabel: role}, Annotations: ann},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "engine", Image: "fake-engine"}}},
			},
		},
	}
}
