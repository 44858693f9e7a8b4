package selfmetrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
)

// Serve serves /healthz (Healthz of check) on addr and, withMetrics, /metrics from component-base's
// legacy registry, until ctx ends; addr "" serves nothing. It listens before it returns, so a port that
// is taken or an address that is wrong is the caller's error, not a log line after start.
func Serve(ctx context.Context, addr, what string, withMetrics bool, check func() error) error {
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/healthz", Healthz(check))
	if withMetrics {
		mux.Handle("/metrics", legacyregistry.Handler())
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s endpoint: %w", what, err)
	}
	srv := newServer(mux)
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "HTTP endpoint stopped", "endpoint", what, "address", addr)
		}
	}()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return nil
}

// newServer bounds what a client of these plain-HTTP endpoints may hold: the converter's are on the pod
// network, and without an idle limit any pod could keep thousands of connections open.
func newServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10}
}
