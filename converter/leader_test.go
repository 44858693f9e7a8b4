package converter

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

// Two replicas on one Lease: one leads, the other stands by and takes over once the leader stops; never
// both at once.
func TestLeaderElectionOneAtATime(t *testing.T) {
	client := fake.NewClientset()
	le := LeaderElection{Enabled: true, Namespace: "tokenscale", Name: "converter", LeaseDuration: time.Second,
		RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond}
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
	select {
	case n := <-led:
		t.Fatalf("%s led while a held the lease", n)
	case <-time.After(1500 * time.Millisecond): // longer than the lease: a renews it
	}
	stopA()
	if err := <-doneA; err != nil {
		t.Fatalf("a after its context ended: %v", err)
	}
	select {
	case n := <-led:
		if n != "b" {
			t.Fatalf("%s took over", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b did not take over after a released the lease")
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
