package kedascaler

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/internal/selfmetrics"
	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// TLS is the optional server TLS: a certificate, and a client CA to require client certificates (KEDA's
// TriggerAuthentication tlsClientCert/tlsClientKey with caCert).
type TLS struct {
	CertFile, KeyFile, ClientCAFile string
}

func (t TLS) credentials() (credentials.TransportCredentials, error) {
	if t.CertFile == "" && t.KeyFile == "" {
		if t.ClientCAFile != "" {
			return nil, errors.New("--client-ca-file needs --tls-cert-file and --tls-private-key-file")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the serving certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA %s holds no PEM certificate", t.ClientCAFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(cfg), nil
}

// rpcMetrics are the scaler's own metrics, on component-base's registry with the scrape metrics.
type rpcMetrics struct {
	requests *metrics.HistogramVec
	streams  *metrics.Gauge
	pushes   *metrics.Counter
}

func newRPCMetrics(register func(...metrics.Registerable)) *rpcMetrics {
	m := &rpcMetrics{
		requests: metrics.NewHistogramVec(&metrics.HistogramOpts{
			Namespace: "tokenscale", Subsystem: "keda", Name: "request_duration_seconds",
			Help:    "Time to answer a KEDA external scaler call, by RPC and gRPC code.",
			Buckets: []float64{0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01},
		}, []string{"rpc", "code"}),
		streams: metrics.NewGauge(&metrics.GaugeOpts{
			Namespace: "tokenscale", Subsystem: "keda", Name: "active_streams",
			Help: "Open StreamIsActive streams (external-push triggers).",
		}),
		pushes: metrics.NewCounter(&metrics.CounterOpts{
			Namespace: "tokenscale", Subsystem: "keda", Name: "pushes_total",
			Help: "Activation changes pushed on StreamIsActive streams.",
		}),
	}
	register(m.requests, m.streams, m.pushes)
	return m
}

func (m *rpcMetrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	m.requests.WithLabelValues(info.FullMethod, status.Code(err).String()).Observe(time.Since(start).Seconds())
	return resp, err
}

func (m *rpcMetrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	m.streams.Inc()
	defer m.streams.Dec()
	return h(srv, ss)
}

// Options configure Serve.
type Options struct {
	GRPCAddress    string // e.g. :9090
	MetricsAddress string // plain HTTP /metrics and /healthz, e.g. :8080; "" disables
	TLS            TLS
	// MaxAge: older snapshots are stale (every answer Unavailable, health NOT_SERVING).
	MaxAge time.Duration
	// Register registers the scaler's metrics; default component-base's legacy registry.
	Register func(...metrics.Registerable)
	// Listening, when set, is told the gRPC address once it listens.
	Listening func(net.Addr)
}

// Serve runs the gRPC scaler (with the standard health service, SERVING while values are fresh) and
// the metrics endpoint until ctx ends.
func Serve(ctx context.Context, src Source, o Options) error {
	creds, err := o.TLS.credentials()
	if err != nil {
		return err
	}
	if o.Register == nil {
		o.Register = legacyregistry.MustRegister
	}
	m := newRPCMetrics(o.Register)
	selfmetrics.NewBuildInfo(o.Register, version.Get())
	srv := New(src, o.MaxAge)
	srv.onPush = m.pushes.Inc
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(m.unary), grpc.ChainStreamInterceptor(m.stream)}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	g := grpc.NewServer(opts...)
	externalscaler.RegisterExternalScalerServer(g, srv)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	go srv.reportHealth(ctx, hs)

	lis, err := net.Listen("tcp", o.GRPCAddress)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.GRPCAddress, err)
	}
	var httpSrv *http.Server
	if o.MetricsAddress != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", legacyregistry.Handler())
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if err := srv.fresh(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		httpSrv = &http.Server{Addr: o.MetricsAddress, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := httpSrv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				klog.ErrorS(err, "Metrics endpoint stopped")
			}
		}()
	}
	go func() {
		<-ctx.Done()
		hs.Shutdown()
		g.GracefulStop()
		if httpSrv != nil {
			_ = httpSrv.Close()
		}
	}()
	if o.Listening != nil {
		o.Listening(lis.Addr())
	}
	klog.InfoS("Serving the KEDA external scaler", "grpc", lis.Addr().String(), "tls", creds != nil, "metrics", o.MetricsAddress)
	return g.Serve(lis)
}

// fresh says whether answers can be given now.
func (s *Server) fresh() error { return service.Fresh(s.src.Snapshot(), s.now(), s.maxAge) }

// reportHealth keeps the gRPC health status (overall and the scaler service) in step with freshness.
func (s *Server) reportHealth(ctx context.Context, hs *health.Server) {
	ch, cancel := s.src.Subscribe()
	defer cancel()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		st := healthpb.HealthCheckResponse_SERVING
		if s.fresh() != nil {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		hs.SetServingStatus("", st)
		hs.SetServingStatus(externalscaler.ExternalScaler_ServiceDesc.ServiceName, st)
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-t.C:
		}
	}
}
