package kedascaler

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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
			MaxAge: 2 * time.Second, Register: metrics.NewKubeRegistry().MustRegister, Listening: func(a net.Addr) { addr <- a }})
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
		deadline := time.Now().Add(5 * time.Second)
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
	checkHealth(healthpb.HealthCheckResponse_NOT_SERVING) // the snapshot ages past MaxAge
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
}
