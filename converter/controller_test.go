package converter

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
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
