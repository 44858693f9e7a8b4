package kedascaler

import (
	"context"
	"fmt"
	"math"
	"net"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/internal/selfmetrics"
	"github.com/tokenscale/tokenscale/internal/version"
	"github.com/tokenscale/tokenscale/kedascaler/trigger"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/service"
)

// rpcMetrics are the scaler's own metrics, on component-base's registry with the scrape metrics.
type rpcMetrics struct {
	requests *metrics.HistogramVec
	streams  *metrics.Gauge
	pushes   *metrics.Counter
}

// RegisterMetrics registers the scaler's own metric families (what Serve exports), each with a series
// so that a Gather lists it, for tests that check dashboards and docs against them.
func RegisterMetrics(register func(...metrics.Registerable)) {
	newRPCMetrics(register).requests.WithLabelValues("GetMetrics", "OK")
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
			Help: "Open gRPC streams: StreamIsActive (external-push triggers) and health Watch.",
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
	var resp any
	err := contained(info.FullMethod, func() (err error) {
		resp, err = h(ctx, req)
		return err
	})
	m.requests.WithLabelValues(info.FullMethod, status.Code(err).String()).Observe(time.Since(start).Seconds())
	return resp, err
}

func (m *rpcMetrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if longLived[info.FullMethod] { // the streams --max-streams caps
		m.streams.Inc()
		defer m.streams.Dec()
	}
	return contained(info.FullMethod, func() error { return h(srv, ss) })
}

// contained runs a handler with a panic turned into an Internal error: grpc does not recover handlers,
// and one call must not take the scaler, and every ScaledObject it serves, down. What it returns is made
// printable.
func contained(method string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(nil, "Recovered from a panic serving a call", "method", method, "panic", r, "stack", string(debug.Stack()))
			err = status.Errorf(codes.Internal, "tokenscale: internal error serving %s", method)
		}
		err = printable(err)
	}()
	return f()
}

// maxMessage bounds an error message KEDA is sent, as the adapter bounds its own.
const maxMessage = 1000

// printable writes an error's control bytes as \xNN, its other characters that are not printable as
// \uNNNN or \UNNNNNNNN, and cuts it to maxMessage, keeping its code: the
// messages carry pods' scrape errors, whose text is the pod's (a certificate's names can hold escape
// sequences), and KEDA prints them to its log and the ScaledObject's events.
func printable(err error) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	msg := engine.PrintableWithin(st.Message(), maxMessage)
	if msg == st.Message() {
		return err
	}
	return status.Error(st.Code(), msg)
}

// streamLimit caps concurrent server streams, StreamIsActive and the health service's Watch alike: each
// holds a goroutine until the client goes, so an unbounded number would let one client exhaust the scaler.
type streamLimit struct {
	max  int64
	open atomic.Int64
}

func (l *streamLimit) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	// Other streams (StreamMetricSpec, answered Unimplemented at once) are bounded as unary calls are, by
	// the call cap and its deadline: counted here, KEDA's StreamMetricSpec beside every push stream was
	// refused at the cap (which KEDA retries without end, as it stops only on Unimplemented) and took
	// the push streams' slots.
	if l.max <= 0 || !longLived[info.FullMethod] {
		return h(srv, ss)
	}
	if n := l.open.Add(1); n > l.max {
		l.open.Add(-1)
		return status.Errorf(codes.ResourceExhausted, "tokenscale: %d streams (StreamIsActive and health Watch) are open, the most this scaler serves (--max-streams); %s refused", l.max, info.FullMethod)
	}
	defer l.open.Add(-1)
	return h(srv, ss)
}

// callLimit caps the gRPC calls open at once on every connection together, unary ones included. The
// stream cap cannot: a unary call's request is read before any interceptor runs, so a client that sends
// a call's headers and never its request would hold a goroutine and the headers per call, without bound.
// It counts in the transport's tap, before the call gets a goroutine (the tap runs in the connection's
// reader, under its lock, so it only counts), and a call leaves the count when its context ends, which the
// transport does when the call finishes, is reset, runs past its deadline or loses its connection (a stats
// handler's End would miss calls to unknown methods, which the server answers without one).
//
// A call other than the long-lived streams also ends after unaryDeadline (default 30 s, far above the
// milliseconds an answer takes): without it, calls whose requests never come would hold the cap, and so
// lock KEDA out, for as long as their client kept the connection.
type callLimit struct {
	max, room     int64 // room: how many of max are beyond --max-streams, for the refusal's message
	open          atomic.Int64
	unaryDeadline time.Duration
}

// longLived are the methods whose calls stay open by design: KEDA's push stream and health watches.
var longLived = map[string]bool{
	externalscaler.ExternalScaler_StreamIsActive_FullMethodName: true,
	healthpb.Health_Watch_FullMethodName:                        true,
}

func (l *callLimit) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if n := l.open.Add(1); n > l.max {
		l.open.Add(-1)
		return nil, status.Errorf(codes.ResourceExhausted, "tokenscale: %d calls (streams and unary calls together) are open, the most this scaler serves (--max-streams plus %d); %s refused", l.max, l.room, trigger.Clip(info.FullMethodName))
	}
	if !longLived[info.FullMethodName] {
		d := l.unaryDeadline
		if d <= 0 {
			d = 30 * time.Second
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		context.AfterFunc(ctx, cancel) // releases the timer once the call ends
	}
	context.AfterFunc(ctx, func() { l.open.Add(-1) })
	return ctx, nil
}

// Options configure Serve.
type Options struct {
	GRPCAddress string // e.g. :9090
	// MetricsAddress serves plain HTTP /metrics and /healthz, e.g. 127.0.0.1:8080 (loopback: the numbers
	// are not for the network unless a proxy with authentication fronts them); "" disables.
	MetricsAddress string
	// ProbeAddress serves only /healthz over plain HTTP, for the kubelet (whose gRPC probe cannot speak
	// TLS); "" disables.
	ProbeAddress string
	TLS          TLS
	// AllowCrossNamespace lets a trigger read another namespace's pools through its namespace key; off, a
	// ScaledObject reads only its own namespace's (see trigger.Options).
	AllowCrossNamespace bool
	// MaxStreams caps concurrent server streams, StreamIsActive and health Watch together (0:
	// DefaultMaxStreams, < 0: no cap); past it a new stream is refused with ResourceExhausted. Every call
	// together, unary ones included, is capped at MaxStreams + CallRoom, on all connections and on each.
	MaxStreams int
	// MaxConnections caps the connections served at once (0: DefaultMaxConnections, < 0: no cap); one
	// past it waits to be accepted until another closes. MaxConnectionIdle closes (GOAWAY) a connection
	// that has had no call open for that long (0: DefaultMaxConnectionIdle): keepalive pings, which the
	// HTTP/2 stack answers by itself, never reaped a client that finished its handshake and opened no
	// call, and each such connection holds about 100 KB of buffers and three goroutines.
	MaxConnections    int
	MaxConnectionIdle time.Duration
	// MaxConnectionsPerClient caps the connections from one address (0: DefaultMaxConnectionsPerClient,
	// < 0: no cap); one past it is closed at once. A connection takes its slot of MaxConnections before its
	// handshake, so without it one client re-opening silent connections held every slot.
	MaxConnectionsPerClient int
	// ShutdownGrace is how long a stopping scaler lets calls finish before it closes every connection
	// (default DefaultShutdownGrace).
	ShutdownGrace time.Duration
	// KeepaliveTime: after this long without activity on a connection the server pings the client, and
	// closes the connection when no answer comes within KeepaliveTimeout, so dead or silent clients'
	// streams are reaped (defaults 30s and 10s).
	KeepaliveTime, KeepaliveTimeout time.Duration
	// MaxAge: older snapshots are stale (every answer Unavailable, health NOT_SERVING).
	MaxAge time.Duration
	// Sees, when set, says whether the pod informer sees every pod of a pool in a namespace
	// (pipeline.Options.Sees): a pool it cannot see with no pods in the snapshot is unknown, not idle.
	Sees func(namespace string, pool *config.Pool) bool
	// Register registers the scaler's metrics; default component-base's legacy registry.
	Register func(...metrics.Registerable)
	// Listening, when set, is told the gRPC address once it listens.
	Listening func(net.Addr)
	// limit is the stream cap in use (tests read its count).
	limit *streamLimit
	// calls is the cap on every call in use (tests read its count); callRoom and handshakeTimeout
	// replace CallRoom and HandshakeTimeout when set (tests).
	calls            *callLimit
	callRoom         int
	handshakeTimeout time.Duration
}

// DefaultMaxStreams is the default cap on concurrent streams: one per external-push trigger per KEDA
// operator replica, with room to spare.
const DefaultMaxStreams = 1000

// DefaultMaxConnections is the default cap on connections: KEDA opens one per scaler address and TLS
// setting per operator replica, so 512 leaves room for many, and bounds what idle clients can hold to
// about 50 MB. DefaultMaxConnectionIdle is far above KEDA's polling interval (30 s by default) and its
// push streams keep their connection busy.
const (
	DefaultMaxConnections          = 512
	DefaultMaxConnectionIdle       = 5 * time.Minute
	DefaultMaxConnectionsPerClient = 32
)

// MaxRecvMsgSize bounds the memory one request takes (gRPC's default is 4 MiB): KEDA's largest, a
// ScaledObjectRef with the most metadata trigger.Parse accepts, is under 8 KiB; past the bound a request is
// refused with ResourceExhausted before it is decoded.
const MaxRecvMsgSize = 64 << 10

// MaxHeaderListSize bounds the headers of one call (gRPC's default is 16 MiB per call): KEDA sends a few
// hundred bytes of them (its request travels in the message), and a call whose request never comes holds
// its headers for as long as it stays open. Past the bound the call is reset before it starts.
const MaxHeaderListSize = 16 << 10

// CallRoom is how many calls beyond --max-streams may be open at once: room for the unary calls (KEDA's
// GetMetrics, IsActive and GetMetricSpec, health Check), which take microseconds each, beside the push
// streams. KEDA sends every ScaledObject's calls and push streams over one connection, so one connection
// may use the whole cap.
const CallRoom = 1000

// HandshakeTimeout bounds a new connection's TLS and HTTP/2 handshake (gRPC's default is 120 s): KEDA's
// takes milliseconds, and a connection that never completes one holds a goroutine until it ends.
const HandshakeTimeout = 10 * time.Second

// DefaultShutdownGrace bounds a stop: KEDA holds StreamIsActive streams, and a health client its Watch,
// open for as long as it runs, so a graceful stop that waited for them would last until the kubelet's
// SIGKILL. StreamIsActive streams end at once, cleanly (KEDA reconnects, to another replica, after its
// shortest back-off); what is still open after the grace is closed.
const DefaultShutdownGrace = 5 * time.Second

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
	srv.stopping = ctx.Done()
	srv.parse = trigger.Options{AllowCrossNamespace: o.AllowCrossNamespace}
	srv.sees = o.Sees
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = DefaultShutdownGrace
	}
	if o.MaxStreams == 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	if o.limit == nil {
		o.limit = &streamLimit{}
	}
	o.limit.max = int64(o.MaxStreams)
	if o.KeepaliveTime <= 0 {
		o.KeepaliveTime = 30 * time.Second
	}
	if o.KeepaliveTimeout <= 0 {
		o.KeepaliveTimeout = 10 * time.Second
	}
	if o.handshakeTimeout <= 0 {
		o.handshakeTimeout = HandshakeTimeout
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	if o.MaxConnectionIdle <= 0 {
		o.MaxConnectionIdle = DefaultMaxConnectionIdle
	}
	if o.MaxConnectionsPerClient == 0 {
		o.MaxConnectionsPerClient = DefaultMaxConnectionsPerClient
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRecvMsgSize), grpc.MaxHeaderListSize(MaxHeaderListSize), grpc.ConnectionTimeout(o.handshakeTimeout),
		// The cap goes first, so a refused stream is not counted open.
		grpc.ChainUnaryInterceptor(m.unary), grpc.ChainStreamInterceptor(o.limit.intercept, m.stream),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: o.KeepaliveTime, Timeout: o.KeepaliveTimeout, MaxConnectionIdle: o.MaxConnectionIdle}),
		// Clients may ping as often as every 10 s, also between calls: more often is abuse (GOAWAY).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	var maxCalls int64 // 0: no cap
	if o.MaxStreams > 0 {
		if o.callRoom <= 0 {
			o.callRoom = CallRoom
		}
		if o.calls == nil {
			o.calls = &callLimit{}
		}
		// Kept under 2^32 - 1, which gRPC reads as no per-connection cap.
		maxCalls = min(int64(o.MaxStreams), math.MaxUint32-1-int64(o.callRoom)) + int64(o.callRoom)
		o.calls.max, o.calls.room = maxCalls, int64(o.callRoom)
		// The per-connection cap is announced in HTTP/2 SETTINGS, so a gRPC client (KEDA) queues calls past
		// it instead of having them refused; the tap holds the total across connections.
		opts = append(opts, grpc.MaxConcurrentStreams(uint32(maxCalls)), grpc.InTapHandle(o.calls.tap))
	}
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
	if o.MaxConnections > 0 {
		lis = netutil.LimitListener(lis, o.MaxConnections)
	}
	if o.MaxConnectionsPerClient > 0 {
		// Outside the global cap, so a connection closed here gives its global slot back at once.
		lis = limitPerClient(lis, o.MaxConnectionsPerClient)
	}
	if err := selfmetrics.Serve(ctx, o.MetricsAddress, "metrics", true, srv.fresh); err != nil {
		_ = lis.Close()
		return err
	}
	if err := selfmetrics.Serve(ctx, o.ProbeAddress, "probe", false, srv.fresh); err != nil {
		_ = lis.Close()
		return err
	}
	go func() {
		<-ctx.Done()
		hs.Shutdown()
		stopped := make(chan struct{})
		go func() { g.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(o.ShutdownGrace):
			klog.InfoS("Closing the connections still open after the shutdown grace", "grace", o.ShutdownGrace)
			g.Stop()
		}
	}()
	if o.Listening != nil {
		o.Listening(lis.Addr())
	}
	if creds == nil {
		klog.InfoS("WARNING: serving the KEDA external scaler without TLS; any client that reaches the port reads pool numbers (set --tls-cert-file and --tls-private-key-file)")
	}
	klog.InfoS("Serving the KEDA external scaler", "grpc", lis.Addr().String(), "tls", creds != nil, "clientCerts", o.TLS.ClientCAFile != "", "allowCrossNamespace", o.AllowCrossNamespace,
		"maxStreams", o.MaxStreams, "maxCalls", maxCalls, "maxConnections", o.MaxConnections, "maxConnectionsPerClient", o.MaxConnectionsPerClient, "maxConnectionIdle", o.MaxConnectionIdle, "metrics", o.MetricsAddress, "probe", o.ProbeAddress)
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
