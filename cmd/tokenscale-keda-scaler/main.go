// Command tokenscale-keda-scaler serves tokenscale's pool numbers to KEDA as an external scaler (trigger
// types external and external-push), from its own velocity pipeline (pod informer, scraper, policy).
package main

import (
	"context"
	"time"

	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/tokenscale/tokenscale/internal/options"
	"github.com/tokenscale/tokenscale/internal/pipeline"
	"github.com/tokenscale/tokenscale/internal/selfmetrics"
	"github.com/tokenscale/tokenscale/kedascaler"
	"github.com/tokenscale/tokenscale/velocity/service"
)

func main() {
	var (
		kube options.Kube
		po   pipeline.Options
		so   kedascaler.Options
	)
	cmd := options.New("tokenscale-keda-scaler")
	so.AddFlags(cmd.Section("serving"))
	po.AddFlags(cmd.Section("pools"))
	kube.AddFlags(cmd.Section("kubernetes"))
	cmd.Validate(so.Validate, po.Validate, kube.Validate)
	cmd.Main(1, func(ctx context.Context) error {
		cfg, err := kube.RESTConfig()
		if err != nil {
			return err
		}
		p, err := pipeline.Start(ctx, cfg, po, selfmetrics.NewScrape(legacyregistry.MustRegister, time.Now))
		if err != nil {
			return err
		}
		so.MaxAge = p.MaxAge()
		so.Sees = po.Sees
		legacyregistry.CustomMustRegister(selfmetrics.NewPools(p.Service.Snapshot, func(s *service.Snapshot) error { return service.Fresh(s, time.Now(), so.MaxAge) }))
		go p.Service.Run(ctx)
		return kedascaler.Serve(ctx, p.Service, so)
	})
}
