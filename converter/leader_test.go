package converter

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

// Two replicas on one Lease: one leads, the other stands by and takes over once the leader stops; never
// both at once.
func TestLeaderElectionOneAtATime(t *testing.T) {
	client := fake.NewClientset()
	le := LeaderElection{Enabled: true, Namespace: "tokenscale", Name: "converter", LeaseDuration: 2 * time.Second,
		RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond}
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
	stopB, doneB := replica("b")
	// Longer than the lease, so a must have renewed it for b to stand by. On a starved machine a can miss
	// its renew deadline and lose the lease; b may then lead, but never while a still does (the overlap
	// count below), so that is not a failure: a test that needed a's renewals on time failed under load.
	tookOver := false
	select {
	case n := <-led:
		if n != "b" {
			t.Fatalf("%s led again", n)
		}
		tookOver = true
	case <-time.After(2500 * time.Millisecond):
	}
	stopA()
	if err := <-doneA; err != nil && !(tookOver && errors.Is(err, ErrLeadershipLost)) {
		t.Fatalf("a after its context ended: %v", err)
	}
	if !tookOver {
		select {
		case n := <-led:
			if n != "b" {
				t.Fatalf("%s took over", n)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("b did not take over after a released the lease")
		}
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
