package converter

import (
	"context"
	"errors"
	"fmt"
	"github.com/spf13/pflag"
	"os"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// LeaderElection configures the controller's leader election on a coordination.k8s.io Lease, so that of
// several replicas exactly one writes conversion leases and a standby takes over when it goes.
type LeaderElection struct {
	Enabled         bool
	Namespace, Name string
	// Identity of this candidate (default: $POD_NAME, else the host name, plus a random suffix).
	Identity      string
	LeaseDuration time.Duration // default 15s
	RenewDeadline time.Duration // default 10s
	RetryPeriod   time.Duration // default 2s
}

// ErrLeadershipLost is returned by RunLeading when another replica took over; the process should exit so
// that it restarts with no state from its time as leader.
var ErrLeadershipLost = errors.New("converter controller: leadership lost")

// RunLeading runs run while this process leads (at once when election is disabled) and returns when ctx
// ends (run's error, after releasing the Lease) or leadership is lost (ErrLeadershipLost). run's context
// ends with leadership or ctx. When ctx ends the Lease is released only once run has returned; when a
// renewal fails, client-go releases it at once and ends run's context, so a standby may start while run
// finishes its last write.
func RunLeading(ctx context.Context, client kubernetes.Interface, le LeaderElection, run func(context.Context) error) error {
	if !le.Enabled {
		return run(ctx)
	}
	if le.Namespace == "" || le.Name == "" {
		return errors.New("leader election needs a namespace and a name for its Lease")
	}
	id := le.Identity
	if id == "" {
		id = os.Getenv("POD_NAME")
		if id == "" {
			id, _ = os.Hostname()
		}
		id += "_" + string(uuid.NewUUID())
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	dflt := func(d, v time.Duration) time.Duration {
		if d == 0 {
			return v
		}
		return d
	}
	// The elector's context ends only after run returned, since ending it releases the Lease
	// (ReleaseOnCancel): a standby must not start while run still writes. run's context ends with ctx.
	electCtx, stopElecting := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElecting()
	var (
		mu       sync.Mutex // orders run's start against stopRun, so that stopRun waits for any run that starts
		started  bool
		ending   bool
		ran      = make(chan struct{}) // closed when run returned
		runError error
	)
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   dflt(le.LeaseDuration, 15*time.Second),
		RenewDeadline:   dflt(le.RenewDeadline, 10*time.Second),
		RetryPeriod:     dflt(le.RetryPeriod, 2*time.Second),
		ReleaseOnCancel: true,
		Name:            le.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				mu.Lock()
				if ending {
					mu.Unlock()
					return
				}
				started = true
				mu.Unlock()
				defer close(ran)
				klog.InfoS("Leading: writing conversion leases", "lease", klog.KRef(le.Namespace, le.Name), "identity", id)
				runCtx, cancel := context.WithCancel(ctx)
				defer cancel()
				stop := context.AfterFunc(lctx, cancel)
				defer stop()
				runError = run(runCtx)
			},
			OnStoppedLeading: func() { klog.InfoS("Stopped leading", "lease", klog.KRef(le.Namespace, le.Name), "identity", id) },
			OnNewLeader: func(leader string) {
				if leader != id {
					klog.InfoS("Standing by: another replica leads", "leader", leader)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	// stopRun keeps run from starting from now on and waits for it if it started.
	stopRun := func() (bool, error) {
		mu.Lock()
		ending = true
		s := started
		mu.Unlock()
		if s {
			<-ran
		}
		return s, runError
	}
	go func() {
		select {
		case <-ctx.Done():
			_, _ = stopRun() // run's error is returned below, by the second call
			stopElecting()
		case <-electCtx.Done():
		}
	}()
	// Run returns when electCtx ends (run has returned then) or when renewing failed (it led); then it has
	// cancelled run's context but not waited for run, so wait here: the process must not exit while run
	// still writes.
	elector.Run(electCtx)
	cancelled := ctx.Err() != nil
	led, err := stopRun()
	if cancelled {
		return err // nil if it stood by until the end
	}
	if led && err != nil {
		return fmt.Errorf("%w: %w", ErrLeadershipLost, err)
	}
	return ErrLeadershipLost
}

// AddFlags registers the leader election flags; the namespace defaults to $POD_NAMESPACE (the downward
// API in the manifests), else tokenscale.
func (le *LeaderElection) AddFlags(fs *pflag.FlagSet) {
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "tokenscale"
	}
	fs.BoolVar(&le.Enabled, "leader-elect", true, "run only while holding the leader election Lease, so that one of several replicas writes conversion leases")
	fs.StringVar(&le.Namespace, "leader-election-namespace", ns, "namespace of the leader election Lease ($POD_NAMESPACE when set)")
	fs.StringVar(&le.Name, "leader-election-name", "tokenscale-converter-controller", "name of the leader election Lease")
	fs.DurationVar(&le.LeaseDuration, "leader-election-lease-duration", 15*time.Second, "how long a standby waits after the leader's last renewal before taking over")
	fs.DurationVar(&le.RenewDeadline, "leader-election-renew-deadline", 10*time.Second, "how long the leader retries renewing before it gives up leading")
	fs.DurationVar(&le.RetryPeriod, "leader-election-retry-period", 2*time.Second, "how often candidates try to acquire or renew")
}
