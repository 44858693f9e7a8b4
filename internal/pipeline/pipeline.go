// Package pipeline wires the Kubernetes inputs of the adapter's loop (velocity/service) for every front
// (the custom-metrics adapter, the KEDA scaler, the converter controller): the config file watcher and
// the pod informer that feeds the loop's pod lister.
package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/internal/kubepods"
	"github.com/tokenscale/tokenscale/velocity/collector"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// Options select the pools and the pods to watch.
type Options struct {
	// ConfigPath is the pool config file; "" uses the llm-d defaults.
	ConfigPath string
	// PodSelector restricts the pod informer (e.g. "llm-d.ai/role"); "" watches all pods.
	PodSelector string
	// Namespace restricts the pod informer; "" watches all namespaces.
	Namespace string
	// ConfigReload is how often the config file is checked for changes (0: never).
	ConfigReload time.Duration
}

// MinConfigReload is the shortest --config-reload other than 0 (never).
const MinConfigReload = time.Second

// AddFlags registers the pipeline's flags, with the same names, defaults and meaning in every binary.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.ConfigPath, "config", "", "pool configuration file (default: llm-d layout, see docs/metrics.md)")
	fs.StringVar(&o.PodSelector, "pod-selector", "", "label selector restricting the pod informer, e.g. llm-d.ai/role")
	fs.StringVar(&o.Namespace, "namespace", "", "namespace to watch (default: all)")
	fs.DurationVar(&o.ConfigReload, "config-reload", 10*time.Second, "how often to check the config file for changes (0: never; else at least 1s)")
}

// Validate reports every pipeline flag that cannot work.
func (o *Options) Validate() []error {
	var errs []error
	if _, err := labels.Parse(o.PodSelector); err != nil {
		errs = append(errs, fmt.Errorf("--pod-selector %q: %w", o.PodSelector, err))
	}
	if o.Namespace != "" {
		for _, msg := range validation.IsDNS1123Label(o.Namespace) {
			errs = append(errs, fmt.Errorf("--namespace %q: %s", o.Namespace, msg))
		}
	}
	// At least a second: each check re-reads the file, and a bad one is parsed and logged every time.
	if o.ConfigReload != 0 && o.ConfigReload < MinConfigReload {
		errs = append(errs, fmt.Errorf("--config-reload %s: want 0 (never) or at least %s", o.ConfigReload, MinConfigReload))
	}
	return errs
}

// scope checks a config against what the pod informer sees: a pool fixed to a namespace outside
// --namespace is refused (none of its pods could ever be seen, and every read of it would say it has no
// pods), and a pool whose selector does not itself satisfy --pod-selector is logged, since its pods are
// seen only if they carry more labels than the pool selects on.
func (o *Options) scope() func(*config.Config) error {
	sel, err := labels.Parse(o.PodSelector)
	if err != nil {
		sel = labels.Everything() // Validate reports it
	}
	return func(c *config.Config) error {
		for i := range c.Pools {
			p := &c.Pools[i]
			if o.Namespace != "" && p.Namespace != "" && p.Namespace != o.Namespace {
				return fmt.Errorf("pool %s is fixed to namespace %q, but --namespace %q limits the pod informer to that namespace: none of its pods would be seen (run without --namespace, or fix the pool to %q)", p.Name, p.Namespace, o.Namespace, o.Namespace)
			}
			if !sel.Matches(labels.Set(p.Selector)) {
				klog.InfoS("WARNING: a pool's selector does not satisfy --pod-selector; its pods are seen only if their other labels do", "pool", p.Name, "selector", labels.Set(p.Selector).String(), "podSelector", o.PodSelector)
			}
		}
		return nil
	}
}

// Sees reports whether the pod informer surely sees every pod of pool p in namespace: the namespace is
// watched, and each requirement of --pod-selector is that a key p's selector sets exists. Any other
// requirement may filter out some of p's pods: a value (a converted decoder's role label changes), or a
// label p does not select on (app!=x, !canary: a pod of p may carry it). A front that reads "no pods" as
// "idle" must check it first.
func (o *Options) Sees(namespace string, p *config.Pool) bool {
	if o.Namespace != "" && namespace != o.Namespace {
		return false
	}
	sel, err := labels.Parse(o.PodSelector)
	if err != nil {
		return false
	}
	reqs, _ := sel.Requirements()
	for _, r := range reqs {
		if _, set := p.Selector[r.Key()]; !set || r.Operator() != selection.Exists {
			return false
		}
	}
	return true
}

// Pipeline is a running velocity service fed by a pod informer.
type Pipeline struct {
	Service *service.Service
	Config  *config.Watcher
}

// Start loads the config, syncs the pod informer and builds the service; Run starts scraping.
func Start(ctx context.Context, restCfg *rest.Config, o Options, obs collector.Observer) (*Pipeline, error) {
	watcher, err := config.NewWatcher(o.ConfigPath)
	if err != nil {
		return nil, err
	}
	check := o.scope()
	if err := check(watcher.Current()); err != nil {
		return nil, fmt.Errorf("config %s: %w", o.ConfigPath, err)
	}
	watcher.Check = check
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	pods, factory, err := kubepods.New(client, o.Namespace, o.PodSelector, 0)
	if err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	if !pods.WaitForSync(ctx) {
		return nil, fmt.Errorf("pod informer did not sync (can the ServiceAccount list and watch pods?)")
	}
	svc, err := service.New(watcher.Current, pods, obs)
	if err != nil {
		return nil, err
	}
	// The observer exports whether the config's last reload was applied, when it can.
	if r, ok := obs.(interface{ ConfigReloaded(error) }); ok {
		watcher.OnReload = r.ConfigReloaded
		r.ConfigReloaded(nil) // the config in force was loaded at start
	}
	p := &Pipeline{Service: svc, Config: watcher}
	if o.ConfigReload > 0 && o.ConfigPath != "" {
		go watcher.Run(ctx, o.ConfigReload)
	}
	klog.InfoS("Velocity pipeline ready", "config", o.ConfigPath, "pools", len(watcher.Current().Pools), "podSelector", o.PodSelector)
	return p, nil
}

// Interval is the scrape interval in force.
func (p *Pipeline) Interval() time.Duration { return p.Config.Current().Scrape.Interval.Duration }

// MaxAge is how old a snapshot may be before a front refuses to answer from it and reports not ready
// (service.MaxAge).
func (p *Pipeline) MaxAge() time.Duration { return service.MaxAge(p.Interval()) }
