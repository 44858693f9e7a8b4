package adapter

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"

	"github.com/tokenscale/tokenscale/internal/pipeline"
	"github.com/tokenscale/tokenscale/internal/selfmetrics"
	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// Options are the adapter's own flags (custom-metrics-apiserver adds serving, authn/authz and kubeconfig).
type Options struct {
	pipeline.Options
	// ExternalMetrics also serves the pool metrics through external.metrics.k8s.io. Off by default:
	// KEDA's metrics server owns that group in most clusters, and only one APIService can.
	ExternalMetrics bool
}

// Run wires the velocity service behind the custom metrics API and serves until ctx ends.
func Run(ctx context.Context, base *basecmd.AdapterBase, o Options) error {
	restCfg, err := base.ClientConfig()
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	mon := newMonitor(legacyregistry.MustRegister, time.Now)
	p, err := pipeline.Start(ctx, restCfg, o.Options, mon)
	if err != nil {
		return err
	}
	svc := p.Service
	legacyregistry.CustomMustRegister(selfmetrics.NewPools(svc.Snapshot, func(s *service.Snapshot) error { return service.Fresh(s, time.Now(), p.MaxAge()) }))
	selfmetrics.NewBuildInfo(legacyregistry.MustRegister, version.Get())
	mapper, err := base.RESTMapper()
	if err != nil {
		return fmt.Errorf("REST mapper: %w", err)
	}
	// The library's mapper re-reads discovery only when told to run: without it a LeaderWorkerSet CRD
	// installed after the adapter started stayed unlisted until a restart (--discovery-interval).
	if r, ok := mapper.(interface{ RunUntil(stop <-chan struct{}) }); ok && base.DiscoveryInterval > 0 {
		r.RunUntil(ctx.Done())
	}
	lws := func() bool {
		_, err := mapper.ResourceFor(schema.GroupVersionResource{Group: "leaderworkerset.x-k8s.io", Resource: "leaderworkersets"})
		return err == nil
	}
	// The provider must be set before Config(): the OpenAPI definitions are chosen from the providers set.
	custom := NewProvider(svc, lws)
	custom.Observe(mon)
	custom.RefuseOlderThan(p.MaxAge())
	custom.RatesOver(p.Interval())
	base.WithCustomMetrics(custom)
	if o.ExternalMetrics {
		ext := NewExternal(svc)
		ext.Observe(mon)
		ext.RefuseOlderThan(p.MaxAge())
		base.WithExternalMetrics(ext)
	}
	apiCfg, err := base.Config()
	if err != nil {
		return fmt.Errorf("API server config: %w", err)
	}
	// Selectors are checked inside authentication and authorization, before the library reads them.
	chain := apiCfg.GenericConfig.BuildHandlerChainFunc
	apiCfg.GenericConfig.BuildHandlerChainFunc = func(h http.Handler, c *genericapiserver.Config) http.Handler {
		return chain(CheckSelectors(h), c)
	}
	// Ready only while values are fresh: an adapter that cannot scrape must not take traffic.
	apiCfg.GenericConfig.AddReadyzChecks(freshness{snapshot: svc.Snapshot, maxAge: p.MaxAge(), now: time.Now})
	go svc.Run(ctx)
	klog.InfoS("Starting tokenscale adapter", "externalMetrics", o.ExternalMetrics)
	return base.Run(ctx)
}
