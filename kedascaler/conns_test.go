package kedascaler

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// HTTP/2 SETTINGS identifiers (RFC 9113 6.5.2).
const (
	settingMaxConcurrentStreams = 0x3
	settingMaxHeaderListSize    = 0x6
)

// serverSettings opens a plaintext HTTP/2 connection to target and returns the settings of the server's
// first SETTINGS frame (what it announces to every client).
func serverSettings(t *testing.T, target string) map[uint16]uint32 {
	t.Helper()
	c, err := net.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute)) // a hang guard only
	// The client preface and an empty SETTINGS frame.
	if _, err := c.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 0x4, 0, 0, 0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	for {
		var hdr [9]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			t.Fatalf("reading the server's frames: %v", err)
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		payload := make([]byte, n)
		if _, err := io.ReadFull(c, payload); err != nil {
			t.Fatalf("reading the server's frames: %v", err)
		}
		if hdr[3] != 0x4 || hdr[4]&0x1 != 0 { // not SETTINGS, or an ACK
			continue
		}
		settings := map[uint16]uint32{}
		for p := payload; len(p) >= 6; p = p[6:] {
			settings[binary.BigEndian.Uint16(p)] = binary.BigEndian.Uint32(p[2:])
		}
		return settings
	}
}

// The server announces a per-connection stream cap (--max-streams plus CallRoom) and a header list bound
// in its SETTINGS; without them gRPC allows 2^32 - 1 streams per connection, each with 16 MiB of headers.
// With --max-streams negative (no cap) no stream cap is announced, and the header bound still is.
func TestServeAnnouncesConnectionLimits(t *testing.T) {
	src := &source{}
	got := serverSettings(t, serveForTest(t, src, Options{}))
	if v, ok := got[settingMaxConcurrentStreams]; !ok || v != DefaultMaxStreams+CallRoom {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d (sent: %v); want %d", v, ok, DefaultMaxStreams+CallRoom)
	}
	if v, ok := got[settingMaxHeaderListSize]; !ok || v != MaxHeaderListSize || v > 64<<10 {
		t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE %d (sent: %v); want %d", v, ok, MaxHeaderListSize)
	}
	got = serverSettings(t, serveForTest(t, src, Options{MaxStreams: -1}))
	if v, ok := got[settingMaxConcurrentStreams]; ok {
		t.Errorf("with --max-streams -1: SETTINGS_MAX_CONCURRENT_STREAMS %d; want none", v)
	}
	if v := got[settingMaxHeaderListSize]; v != MaxHeaderListSize {
		t.Errorf("with --max-streams -1: SETTINGS_MAX_HEADER_LIST_SIZE %d; want %d", v, MaxHeaderListSize)
	}
}

// Calls are capped across connections, unary ones included: a client that sends a unary call's headers
// and never its request holds the call open (its request is read before any interceptor runs), so only
// the transport's count can refuse the next. A call leaves the count when it ends: cancelled, answered,
// or to an unknown method (answered without the stats handler's End).
func TestServeCapsCallsAcrossConnections(t *testing.T) {
	src := &source{}
	src.publish(snapshot(time.Now(), 12000))
	calls := &callLimit{unaryDeadline: time.Hour} // held calls must stay held however slow the test
	target := serveForTest(t, src, Options{MaxStreams: 1, callRoom: 2, calls: calls})
	dial := func() *grpc.ClientConn {
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	waitOpen := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(time.Minute) // a hang guard: the server counts within milliseconds
		for calls.open.Load() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%d calls counted open a minute on; want %d", calls.open.Load(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Three GetMetrics calls whose requests never come: headers only.
	hold := dial()
	var cancels []context.CancelFunc
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		if _, err := hold.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/externalscaler.ExternalScaler/GetMetrics"); err != nil {
			t.Fatal(err)
		}
		cancels = append(cancels, cancel)
	}
	waitOpen(3)

	other := dial()
	c := externalscaler.NewExternalScalerClient(other)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	get := func() error {
		_, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"pool": "prefill"})})
		return err
	}
	if err := get(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-streams") {
		t.Fatalf("GetMetrics on another connection with 3 of 3 calls open: %v; want ResourceExhausted naming --max-streams", err)
	}
	if _, err := healthpb.NewHealthClient(other).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("health Check with 3 of 3 calls open: %v; want ResourceExhausted", err)
	}
	// The refusal names the method the client sent, clipped as every message is: it echoed 4 KB whole.
	long := "/" + strings.Repeat("m", 4000)
	if err := other.Invoke(ctx, long, &externalscaler.ScaledObjectRef{}, &externalscaler.IsActiveResponse{}); status.Code(err) != codes.ResourceExhausted ||
		len(status.Convert(err).Message()) > 1000 || !strings.Contains(err.Error(), "(4001 bytes)") {
		t.Fatalf("a 4,001-byte method with 3 of 3 calls open: %.300v; want ResourceExhausted, the method clipped", err)
	}
	cancels[0]()
	waitOpen(2)
	if err := get(); err != nil {
		t.Fatalf("GetMetrics after a held call was cancelled: %v", err)
	}
	waitOpen(2)
	if err := other.Invoke(ctx, "/no.Such/Method", &externalscaler.ScaledObjectRef{}, &externalscaler.IsActiveResponse{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("an unknown method: %v; want Unimplemented", err)
	}
	waitOpen(2)
	if err := get(); err != nil {
		t.Fatalf("GetMetrics after an answered call and an unknown method: %v", err)
	}
}

// A connection that never completes its handshake is closed after the handshake timeout (gRPC's default
// is 120 s), instead of holding a goroutine for two minutes.
func TestServeClosesStalledHandshakes(t *testing.T) {
	target := serveForTest(t, &source{}, Options{handshakeTimeout: 100 * time.Millisecond})
	c, err := net.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Minute)) // a hang guard, well under gRPC's default
	_, err = io.Copy(io.Discard, c)                    // the server's SETTINGS, then the close
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a connection that sent nothing is still open a minute later: %v", err)
	}
}

// A unary call whose request never comes ends at its deadline and leaves the count, so held calls cannot
// keep the cap full; a push stream (long-lived by design) is not cut.
func TestServeEndsStalledUnaryCalls(t *testing.T) {
	src := &source{}
	src.publish(snapshot(time.Now(), 12000))
	calls := &callLimit{unaryDeadline: 200 * time.Millisecond}
	target := serveForTest(t, src, Options{MaxStreams: 1, callRoom: 2, calls: calls})
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Headers only: the request never comes. The client's own deadline is a hang guard, a minute on.
	heldCtx, heldCancel := context.WithTimeout(ctx, time.Minute)
	t.Cleanup(heldCancel)
	start := time.Now()
	held, err := conn.NewStream(heldCtx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/externalscaler.ExternalScaler/GetMetrics")
	if err != nil {
		t.Fatal(err)
	}
	push, err := externalscaler.NewExternalScalerClient(conn).StreamIsActive(ctx, ref(map[string]string{"pool": "prefill"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := push.Recv(); err != nil {
		t.Fatalf("the push stream's first answer: %v", err)
	}
	// The held call ends with the server's deadline (200 ms), long before the client's minute.
	var m externalscaler.GetMetricsResponse
	if err := held.RecvMsg(&m); err == nil || time.Since(start) > 30*time.Second {
		t.Fatalf("a unary call with no request ended after %s with %v; want the server's deadline to end it", time.Since(start).Round(time.Second), err)
	}
	deadline := time.Now().Add(time.Minute) // a hang guard: the count drops as the call ends
	for calls.open.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls counted open; want the push stream alone", calls.open.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// StreamMetricSpec, which KEDA opens beside StreamIsActive for every external-push trigger and stops
// only on Unimplemented, is answered so with every stream slot taken: counted under --max-streams it was
// refused with ResourceExhausted, which KEDA retries without end, and it took the slots of push streams.
func TestStreamMetricSpecIsNotCappedAsAStream(t *testing.T) {
	src := &source{}
	src.publish(snapshot(time.Now(), 12000))
	target := serveForTest(t, src, Options{MaxStreams: 1})
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := externalscaler.NewExternalScalerClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	push, err := c.StreamIsActive(ctx, ref(map[string]string{"pool": "prefill"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := push.Recv(); err != nil { // the stream runs: the one slot is taken
		t.Fatalf("StreamIsActive: %v", err)
	}
	spec, err := c.StreamMetricSpec(ctx, ref(map[string]string{"pool": "prefill"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := spec.Recv(); status.Code(err) != codes.Unimplemented {
		t.Errorf("StreamMetricSpec with the one stream slot taken: %v; want Unimplemented", err)
	}
	// A second push stream is still refused: the cap holds for the streams that stay open.
	second, err := c.StreamIsActive(ctx, ref(map[string]string{"pool": "prefill"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := second.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a second StreamIsActive with one slot: %v; want ResourceExhausted", err)
	}
}

// Connections past --max-connections wait to be accepted until one closes: a client that connects and
// sends nothing held its connection (about 100 KB) for good, keepalive pings being answered by the
// HTTP/2 stack itself, so enough of them ran the scaler out of memory. Here the one slot is held by a
// bare TCP connection; KEDA's call waits for it, then is served once it closes.
func TestServeCapsConnections(t *testing.T) {
	src := &source{}
	src.publish(snapshot(time.Now(), 12000))
	target := serveForTest(t, src, Options{MaxConnections: 1})
	idle, err := net.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := externalscaler.NewExternalScalerClient(conn)
	req := &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"pool": "prefill"})}
	// While the slot is held the call cannot be served: the wait only bounds the test, a slow machine
	// cannot make the call pass.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err = c.GetMetrics(ctx, req)
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a call while the one connection slot is held: %v; want it to wait (DeadlineExceeded)", err)
	}
	idle.Close()
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute) // a hang guard
	defer cancel()
	if _, err := c.GetMetrics(ctx, req, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("the call once the slot is free: %v", err)
	}
}

// One client address holds at most --max-connections-per-client connections; one past it is closed at
// once, so a client re-opening silent connections cannot take every slot of --max-connections (each is
// taken at accept, before the handshake) and KEDA, from its own address, is still served.
func TestServeCapsConnectionsPerClient(t *testing.T) {
	src := &source{}
	src.publish(snapshot(time.Now(), 12000))
	// A handshake timeout of an hour: no held connection is closed for its silence while the test runs.
	target := serveForTest(t, src, Options{MaxConnections: 3, MaxConnectionsPerClient: 2, handshakeTimeout: time.Hour})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range 4 {
		c, err := net.Dial("tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if i < 2 {
			continue
		}
		// Past the cap: closed by the server, so the read ends at once (the deadline only bounds the test).
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !strings.Contains(fmt.Sprint(err), "reset") {
			t.Fatalf("connection %d from one address, cap 2: read %v; want it closed by the server", i+1, err)
		}
	}
	// KEDA from another address (127.0.0.2 on the loopback) is served beside them.
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
			return d.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard
	defer cancel()
	req := &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"pool": "prefill"})}
	if _, err := externalscaler.NewExternalScalerClient(conn).GetMetrics(ctx, req); err != nil {
		t.Fatalf("KEDA from another address: %v", err)
	}
}
