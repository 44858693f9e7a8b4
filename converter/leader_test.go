package converter

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// Two replicas on one Lease: one leads, the other stands by and takes over once the leader stops; never
// both at once, and the Lease stays the leader's until its run has returned.
func TestLeaderElectionOneAtATime(t *testing.T) {
	client := fake.NewClientset()
	// A lease far longer than any pause of the test process, so that only a's release hands over (fast,
	// since RunLeading releases on cancel).
	le := LeaderElection{Enabled: true, Namespace: "tokenscale", Name: "converter", LeaseDuration: time.Minute,
		RenewDeadline: 45 * time.Second, RetryPeriod: 100 * time.Millisecond}
	// While a leads it renews by updates alone, so each get of the Lease is a try of b to acquire it.
	var bStarted atomic.Bool
	bTries := make(chan struct{}, 100)
	client.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if bStarted.Load() {
			select {
			case bTries <- struct{}{}:
			default:
			}
		}
		return false, nil, nil
	})
	// While a's run is ending, hand it each Lease update, and note one that gives the Lease away.
	var aEnding, gaveAway atomic.Bool
	endingUpdates := make(chan struct{}, 100)
	client.PrependReactor("update", "leases", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if aEnding.Load() {
			if h := action.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease).Spec.HolderIdentity; h == nil || *h != "a" {
				gaveAway.Store(true)
			}
			select {
			case endingUpdates <- struct{}{}:
			default:
			}
		}
		return false, nil, nil
	})
	var leading, overlap atomic.Int32
	led := make(chan string, 2)
	replica := func(name string) (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		o := le
		o.Identity = name
		go func() {
			done <- RunLeading(ctx, client, o, func(ctx context.Context) error {
				if leading.Add(1) > 1 {
					overlap.Add(1)
				}
				led <- name
				<-ctx.Done()
				if name == "a" {
					// Go on writing over two more Lease updates: a's renewals if the Lease stays a's until
					// run returns, else its release or b's acquire.
					aEnding.Store(true)
					for range 2 {
						select {
						case <-endingUpdates:
						case <-time.After(time.Minute):
							t.Error("no Lease update while a's run was ending")
						}
					}
					aEnding.Store(false)
				}
				leading.Add(-1)
				return nil
			})
		}()
		return cancel, done
	}
	stopA, doneA := replica("a")
	if first := <-led; first != "a" {
		t.Fatalf("%s led first", first)
	}
	bStarted.Store(true)
	stopB, doneB := replica("b")
	for range 3 {
		select {
		case <-bTries:
		case n := <-led:
			t.Fatalf("%s led while a did", n)
		case <-time.After(time.Minute):
			t.Fatal("b did not try to acquire the Lease")
		}
	}
	stopA()
	if err := <-doneA; err != nil {
		t.Fatalf("a after its context ended: %v", err)
	}
	if gaveAway.Load() {
		t.Fatal("a's Lease was given away before its run returned")
	}
	select {
	case n := <-led:
		if n != "b" {
			t.Fatalf("%s took over", n)
		}
	case <-time.After(time.Minute):
		t.Fatal("b did not take over after a released the Lease")
	}
	stopB()
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
	if overlap.Load() > 0 {
		t.Fatal("both replicas led at once")
	}
}

// Disabled, run runs at once.
func TestLeaderElectionDisabled(t *testing.T) {
	ran := false
	if err := RunLeading(context.Background(), nil, LeaderElection{}, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("ran %v, err %v", ran, err)
	}
}
