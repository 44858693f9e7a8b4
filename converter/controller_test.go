package converter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

// An API server that takes a write and never answers must not hold the controller's loop (client-go
// sets no deadline of its own): a round's writes end within one lease, and the round reports the write
// it could not make.
func TestControllerRoundEndsWithinALease(t *testing.T) {
	answer := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-answer:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(answer) }) // first: the handlers return, so the server can close
	client, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	c := NewController(client, ControllerOptions{Lease: 50 * time.Millisecond, Now: func() time.Time { return t0 }})
	leased := decodePod("d1", map[string]string{protocol.AnnotationConvertUntil: protocol.FormatTime(t0.Add(time.Second))})
	pools := []Pool{{Name: "decode", Pods: []*corev1.Pod{leased}, Wanted: 0, Known: true}} // its lease is released
	done := make(chan error, 1)
	go func() { done <- c.Step(context.Background(), pools) }()
	select {
	case err = <-done:
	case <-time.After(time.Minute): // far beyond the 50 ms lease: only a round without a deadline gets here
		t.Fatal("a round whose write got no answer did not return")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "ns/d1") {
		t.Fatalf("error %v; want the deadline, naming the pod", err)
	}
}

// One write the API server never answers holds no other: the round's next lease is still written, and
// the unanswered one counts as granted (the server may apply it yet), so no later round grants its slot
// to another pod as well. The first write ends as one past its deadline does, at once, so a loaded
// machine has a minute for the answered one (a hung write is bounded by the test above).
func TestControllerHungWriteHoldsNoOtherLease(t *testing.T) {
	var mu sync.Mutex
	var patched []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := path.Base(r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"kind":"Pod","apiVersion":"v1","metadata":{"name":%q,"namespace":"ns"}}`, name)
	}))
	t.Cleanup(srv.Close)
	client, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
		return roundTrip(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			patched = append(patched, path.Base(r.URL.Path))
			first := len(patched) == 1
			mu.Unlock()
			if first {
				return nil, context.DeadlineExceeded
			}
			return rt.RoundTrip(r)
		})
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := NewController(client, ControllerOptions{Lease: time.Hour, MaxLease: 2 * time.Hour, WriteTimeout: time.Minute, Now: func() time.Time { return t0 }, Plan: PlanOptions{MaxFraction: 1}})
	c.stepped = true // past a new leader's first round, which grants no fresh lease
	pools := []Pool{{Name: "decode", Pods: []*corev1.Pod{decodePod("d1", nil), decodePod("d2", nil)}, Wanted: 2, Known: true}}
	done := make(chan error, 1)
	go func() { done <- c.Step(context.Background(), pools) }()
	select {
	case err = <-done:
	case <-time.After(5 * time.Minute): // far beyond the writes' minute
		t.Fatal("a round with one write that got no answer did not return")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(patched) != 2 || err == nil || !strings.Contains(err.Error(), "ns/"+patched[0]) {
		t.Fatalf("writes %v, error %v; want both pods written and the unanswered one named", patched, err)
	}
	for _, name := range patched {
		if _, ok := c.granted[types.NamespacedName{Namespace: "ns", Name: name}]; !ok {
			t.Errorf("%s: no grant remembered; want both slots counted (the unanswered write may still land)", name)
		}
	}
}

// roundTrip is an http.RoundTripper from a function.
type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
