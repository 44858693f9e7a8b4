package kedascaler

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"k8s.io/component-base/metrics"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client certificate into dir.
func pki(t *testing.T, dir string) (caFile, srvCrt, srvKey string, client tls.Certificate, roots *x509.CertPool) {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	roots = x509.NewCertPool()
	roots.AddCert(ca)
	leaf := func(serial int64, usage x509.ExtKeyUsage, name string) ([]byte, []byte) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile = write("ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	c, k := leaf(2, x509.ExtKeyUsageServerAuth, "scaler")
	srvCrt, srvKey = write("srv.crt", c), write("srv.key", k)
	c, k = leaf(3, x509.ExtKeyUsageClientAuth, "keda")
	client, err = tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return caFile, srvCrt, srvKey, client, roots
}

// Serve with mutual TLS: KEDA with its client certificate is answered, a client without one is refused;
// the gRPC health service follows freshness.
func TestServeTLSAndHealth(t *testing.T) {
	caFile, crt, key, clientCert, roots := pki(t, t.TempDir())
	src := &source{}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, src, Options{GRPCAddress: "127.0.0.1:0", TLS: TLS{CertFile: crt, KeyFile: key, ClientCAFile: caFile},
			MaxAge: time.Minute, Register: metrics.NewKubeRegistry().MustRegister, Listening: func(a net.Addr) { addr <- a }})
	}()
	target := (<-addr).String()
	dialWith := func(certs []tls.Certificate) *grpc.ClientConn {
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: certs})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	good := dialWith([]tls.Certificate{clientCert})
	hc := healthpb.NewHealthClient(good)
	checkHealth := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: externalscaler.ExternalScaler_ServiceDesc.ServiceName})
			if err == nil && r.Status == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("health: %v %v, want %s", r, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	checkHealth(healthpb.HealthCheckResponse_NOT_SERVING) // no snapshot yet
	src.publish(snapshot(time.Now(), 12000))
	checkHealth(healthpb.HealthCheckResponse_SERVING)

	r, err := externalscaler.NewExternalScalerClient(good).IsActive(ctx, ref(map[string]string{"pool": "prefill"}))
	if err != nil || !r.Result {
		t.Fatalf("IsActive with a client certificate: %v %v", r, err)
	}
	if _, err := externalscaler.NewExternalScalerClient(dialWith(nil)).IsActive(ctx, ref(map[string]string{"pool": "prefill"})); err == nil {
		t.Fatal("a client without a certificate was answered")
	}
	// A snapshot older than MaxAge (published so, rather than waited for: a starved machine could take
	// longer than a short MaxAge between publishing and the checks above).
	src.publish(snapshot(time.Now().Add(-time.Hour), 12000))
	checkHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after its context ended: %v", err)
	}
}

func TestTLSOptionsAreChecked(t *testing.T) {
	if _, err := (TLS{ClientCAFile: "ca.pem"}).credentials(); err == nil {
		t.Error("a client CA without a serving certificate must be refused")
	}
	if _, err := (TLS{CertFile: "missing.crt", KeyFile: "missing.key"}).credentials(); err == nil {
		t.Error("missing certificate files must be refused")
	}
	// A file mounted wrong is refused at once, naming it: a FIFO would block the start and a huge file
	// (here one past the 1 MiB bound) would be read whole into memory.
	dir := t.TempDir()
	caFile, crt, key, _, _ := pki(t, dir)
	fifo, huge := filepath.Join(dir, "fifo"), filepath.Join(dir, "huge.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(huge, make([]byte, 1<<20+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tls TLS
		bad string
	}{
		{TLS{CertFile: fifo, KeyFile: key}, fifo},
		{TLS{CertFile: crt, KeyFile: huge}, huge},
		{TLS{CertFile: crt, KeyFile: key, ClientCAFile: fifo}, fifo},
		{TLS{CertFile: crt, KeyFile: key, ClientCAFile: huge}, huge},
	} {
		if _, err := c.tls.credentials(); err == nil || !strings.Contains(err.Error(), c.bad) {
			t.Errorf("%+v: %v, want an error naming %s", c.tls, err, c.bad)
		}
	}
	if _, err := (TLS{CertFile: crt, KeyFile: key, ClientCAFile: caFile}).credentials(); err != nil {
		t.Errorf("the good files: %v", err)
	}
}

// A TLS file missing at start is refused naming the flag that set it, not only its path.
func TestTLSMissingFileNamesTheFlag(t *testing.T) {
	dir := t.TempDir()
	caFile, crt, key, _, _ := pki(t, dir)
	missing := filepath.Join(dir, "missing.pem")
	for _, c := range []struct {
		tls  TLS
		flag string
	}{
		{TLS{CertFile: missing, KeyFile: key}, "--tls-cert-file"},
		{TLS{CertFile: crt, KeyFile: missing}, "--tls-private-key-file"},
		{TLS{CertFile: crt, KeyFile: key, ClientCAFile: missing}, "--client-ca-file"},
	} {
		_, err := c.tls.credentials()
		if err == nil || !strings.Contains(err.Error(), c.flag) || !strings.Contains(err.Error(), missing) || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%+v: %v; want an error naming %s and %s, wrapping os.ErrNotExist", c.tls, err, c.flag, missing)
		}
	}
	if _, err := (TLS{CertFile: crt, KeyFile: key, ClientCAFile: caFile}).credentials(); err != nil {
		t.Errorf("the good files: %v", err)
	}
}

// serveForTest runs Serve on a loopback port until the test ends and returns its address.
func serveForTest(t *testing.T, src Source, o Options) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	o.GRPCAddress, o.Register, o.Listening = "127.0.0.1:0", metrics.NewKubeRegistry().MustRegister, func(a net.Addr) { addr <- a }
	if o.MaxAge == 0 {
		o.MaxAge = time.Minute
	}
	go func() { done <- Serve(ctx, src, o) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case a := <-addr:
		return a.String()
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	}
	return ""
}

func leafOf(t *testing.T, certFile string) []byte {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	return blk.Bytes
}

// A rotated serving certificate (the Secret volume's files replaced) is served from the next connection
// on, without a restart.
func TestServeReloadsRotatedCertificate(t *testing.T) {
	dir, next := t.TempDir(), t.TempDir()
	caFile, crt, key, _, _ := pki(t, dir)
	caNext, crtNext, keyNext, _, _ := pki(t, next)
	roots := x509.NewCertPool()
	for _, f := range []string{caFile, caNext} {
		b, _ := os.ReadFile(f)
		roots.AppendCertsFromPEM(b)
	}
	target := serveForTest(t, &source{}, Options{TLS: TLS{CertFile: crt, KeyFile: key}})
	served := func() []byte {
		t.Helper()
		c, err := tls.Dial("tcp", target, &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	if !bytes.Equal(served(), leafOf(t, crt)) {
		t.Fatal("the first certificate is not the one served")
	}
	// Rotate: new files in place, with a later modification time (as a Secret update gives them).
	for src, dst := range map[string]string{crtNext: crt, keyNext: key} {
		b, _ := os.ReadFile(src)
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Minute)
		if err := os.Chtimes(dst, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(served(), leafOf(t, crtNext)) {
		t.Fatal("after rotation the old certificate is still served")
	}
	// A broken rotation (key missing) keeps the last good pair.
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(), leafOf(t, crtNext)) {
		t.Fatal("a broken rotation stopped the last good certificate being served")
	}
}

// StreamIsActive streams past MaxStreams are refused with ResourceExhausted; a closed stream frees its
// slot.
func TestServeCapsStreams(t *testing.T) {
	src := &source{}
	src.publish(snapshot(time.Now(), 12000))
	o := Options{MaxStreams: 2, limit: &streamLimit{}}
	target := serveForTest(t, src, o)
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := externalscaler.NewExternalScalerClient(conn)
	open := func() (context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(context.Background())
		st, err := c.StreamIsActive(ctx, ref(map[string]string{"pool": "prefill"}))
		if err == nil {
			_, err = st.Recv()
		}
		return cancel, err
	}
	stop1, err := open()
	if err != nil {
		t.Fatal(err)
	}
	stop2, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	stop3, err := open()
	defer stop3()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-streams") {
		t.Fatalf("third stream with a cap of 2: %v, want ResourceExhausted naming --max-streams", err)
	}
	stop1()
	// The server frees the slot when it sees the cancel, after the client's stop1 returned: wait for that
	// (the deadline is a hang guard), then a new stream must get the slot.
	deadline := time.Now().Add(time.Minute)
	for o.limit.open.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams still open a minute after one of 2 closed", o.limit.open.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop4, err := open()
	defer stop4()
	if err != nil {
		t.Fatalf("a stream after one closed: %v", err)
	}
}

// A client that goes silent (its packets stop, the TCP connection stays open) is reaped by keepalive: the
// server's ping goes unanswered and the connection, with its StreamIsActive stream, is closed.
func TestServeReapsSilentClients(t *testing.T) {
	src := &source{}
	src.publish(snapshot(time.Now(), 12000))
	lim := &streamLimit{}
	// A 2 s answer timeout: a healthy client that a loaded machine schedules late still answers in time.
	target := serveForTest(t, src, Options{KeepaliveTime: time.Second, KeepaliveTimeout: 2 * time.Second, limit: lim})
	// A proxy that can stop forwarding without closing anything: a client whose host vanished.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var silent atomic.Bool
	go func() {
		in, err := lis.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		pipe := func(dst, src net.Conn) {
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if err != nil {
					return
				}
				if !silent.Load() {
					if _, err := dst.Write(buf[:n]); err != nil {
						return
					}
				}
			}
		}
		go pipe(out, in)
		pipe(in, out)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := externalscaler.NewExternalScalerClient(conn).StreamIsActive(context.Background(), ref(map[string]string{"pool": "prefill"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	if n := lim.open.Load(); n != 1 {
		t.Fatalf("%d streams open, want 1", n)
	}
	silent.Store(true)
	deadline := time.Now().Add(time.Minute) // a hang guard: keepalive reaps it within 3 s of unloaded time
	for lim.open.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the silent client's stream is still open a minute later; keepalive did not reap it")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serveUntil runs Serve with o until the returned cancel, and returns a client connection and Serve's result.
func serveUntil(t *testing.T, src Source, o Options) (*grpc.ClientConn, context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	o.GRPCAddress, o.MaxAge, o.Register, o.Listening = "127.0.0.1:0", time.Minute, metrics.NewKubeRegistry().MustRegister, func(a net.Addr) { addr <- a }
	go func() { done <- Serve(ctx, src, o) }()
	var target string
	select {
	case a := <-addr:
		target = a.String()
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, cancel, done
}

// waitServe fails the test unless Serve returns cleanly within a minute (a bound no healthy machine
// reaches: the stops below take milliseconds to a fraction of a second).
func waitServe(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after its context ended: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Serve still running a minute after its context ended, with a client's stream open")
	}
}

// A stop does not wait for KEDA to close its StreamIsActive streams, which it never does while it runs:
// they end at once, well within a grace long enough that only that can end them, and cleanly: KEDA
// reconnects (to another replica) after 2 s on io.EOF, but backs off up to a minute on an error.
func TestServeStopsWithStreamsOpen(t *testing.T) {
	src := &source{}
	src.publish(snapshot(time.Now(), 12000))
	conn, stop, done := serveUntil(t, src, Options{ShutdownGrace: time.Hour})
	// The client's stream outlives the server: its own context never ends.
	st, err := externalscaler.NewExternalScalerClient(conn).StreamIsActive(context.Background(), ref(map[string]string{"pool": "prefill"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	stop()
	waitServe(t, done)
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("the StreamIsActive stream after the stop: %v, want io.EOF (KEDA's retry back-off resets only on that)", err)
	}
}

// A health Watch still open after the grace is closed: the stop is bounded whatever a client holds.
func TestServeStopsWithWatchOpen(t *testing.T) {
	src := &source{}
	src.publish(snapshot(time.Now(), 12000))
	conn, stop, done := serveUntil(t, src, Options{ShutdownGrace: 200 * time.Millisecond})
	w, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	stop()
	waitServe(t, done)
}

// The stream cap counts health Watch streams too: each holds a goroutine like StreamIsActive, and the
// health service shares the port.
func TestServeCapsWatchStreams(t *testing.T) {
	src := &source{}
	src.publish(snapshot(time.Now(), 12000))
	lim := &streamLimit{}
	target := serveForTest(t, src, Options{MaxStreams: 2, limit: lim})
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	watch := func() error {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		return err
	}
	for i := range 2 {
		if err := watch(); err != nil {
			t.Fatalf("watch %d of 2: %v", i+1, err)
		}
	}
	if err := watch(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-streams") {
		t.Fatalf("a third Watch with a cap of 2: %v, want ResourceExhausted naming --max-streams", err)
	}
	st, err := externalscaler.NewExternalScalerClient(conn).StreamIsActive(context.Background(), ref(map[string]string{"pool": "prefill"}))
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("StreamIsActive with two Watch streams open and a cap of 2: %v, want ResourceExhausted", err)
	}
	if n := lim.open.Load(); n != 2 {
		t.Fatalf("%d streams counted open, want 2 (a refused one is not open)", n)
	}
}

// Files that fail to load (a key that does not match the certificate, a rotation caught half-written)
// are loaded again only once one of them changes: every handshake, an unauthenticated client's too,
// re-read and re-parsed them under the lock that serialises handshakes.
func TestBrokenTLSFilesAreNotReloadedOnEveryHandshake(t *testing.T) {
	dir := t.TempDir()
	_, crt, key, _, _ := pki(t, dir)
	r := &tlsFiles{TLS: TLS{CertFile: crt, KeyFile: key}}
	first, err := r.current()
	if err != nil {
		t.Fatal(err)
	}
	_, _, otherKey, _, _ := pki(t, t.TempDir())
	b, err := os.ReadFile(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, append(b, '\n'), 0o600); err != nil { // another size: a new stamp
		t.Fatal(err)
	}
	for range 5 {
		if s, err := r.current(); err != nil || s != first {
			t.Fatalf("a key that does not match: %v, %v; want the previous pair served", s, err)
		}
	}
	if r.loads != 2 {
		t.Errorf("%d loads for five handshakes after one broken change; want 2 (the first, and the broken one once)", r.loads)
	}
	if err := os.WriteFile(key, b, 0o600); err != nil { // changed again: tried again
		t.Fatal(err)
	}
	_, _ = r.current()
	if r.loads != 3 {
		t.Errorf("%d loads after the files changed again; want 3", r.loads)
	}
}
