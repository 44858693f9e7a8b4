package adapter

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"

	"github.com/tokenscale/tokenscale/internal/kubepods"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// Options are the adapter's own flags (custom-metrics-apiserver adds serving, authn/authz and kubeconfig).
type Options struct {
	// ConfigPath is the pool config file; "" uses the llm-d defaults.
	ConfigPath string
	// PodSelector restricts the pod informer (e.g. "llm-d.ai/role"); "" watches all pods.
	PodSelector string
	// Namespace restricts the pod informer; "" watches all namespaces.
	Namespace string
	// ConfigReload is how often the config file is checked for changes.
	ConfigReload time.Duration
	// ExternalMetrics also serves the pool metrics through external.metrics.k8s.io. Off by default:
	// KEDA's metrics server owns that group in most clusters, and only one APIService can.
	ExternalMetrics bool
}

// Run wires the velocity service behind the custom metrics API and serves until ctx ends.
func Run(ctx context.Context, base *basecmd.AdapterBase, o Options) error {
	watcher, err := config.NewWatcher(o.ConfigPath)
	if err != nil {
		return err
	}
	restCfg, err := base.ClientConfig()
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	pods, factory, err := kubepods.New(client, o.Namespace, o.PodSelector, 0)
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !pods.WaitForSync(ctx) {
		return fmt.Errorf("pod informer did not sync")
	}
	mapper, err := base.RESTMapper()
	if err != nil {
		return fmt.Errorf("REST mapper: %w", err)
	}
	lws := func() bool {
		_, err := mapper.ResourceFor(schema.GroupVersionResource{Group: "leaderworkerset.x-k8s.io", Resource: "leaderworkersets"})
		return err == nil
	}
	var svc *service.Service
	snapshot := func() *service.Snapshot {
		if svc == nil {
			return nil
		}
		return svc.Snapshot()
	}
	mon := newMonitor(legacyregistry.MustRegister, time.Now)
	svc = service.New(watcher.Current, pods, mon)
	// The provider must be set before Config(): the OpenAPI definitions are chosen from the providers set.
	custom := NewProvider(svc, lws)
	custom.Observe(mon)
	base.WithCustomMetrics(custom)
	if o.ExternalMetrics {
		ext := NewExternal(svc)
		ext.Observe(mon)
		base.WithExternalMetrics(ext)
	}
	apiCfg, err := base.Config()
	if err != nil {
		return fmt.Errorf("API server config: %w", err)
	}
	// Ready only while values are fresh: an adapter that cannot scrape must not take traffic.
	interval := watcher.Current().Scrape.Interval.Duration
	apiCfg.GenericConfig.AddReadyzChecks(freshness{snapshot: snapshot, maxAge: 3*interval + time.Second, now: time.Now})
	go svc.Run(ctx)
	if o.ConfigReload > 0 && o.ConfigPath != "" {
		go watcher.Run(ctx, o.ConfigReload)
	}
	klog.InfoS("Starting tokenscale adapter", "config", o.ConfigPath, "pools", len(watcher.Current().Pools), "externalMetrics", o.ExternalMetrics)
	return base.Run(ctx)
}
