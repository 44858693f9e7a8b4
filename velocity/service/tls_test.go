package service

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenscale/tokenscale/internal/fakeengine"
	"github.com/tokenscale/tokenscale/velocity/collector"
	"github.com/tokenscale/tokenscale/velocity/config"
	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// Engines that serve /metrics over https are scraped as scrape.tls says: a private CA, the name their
// certificate carries instead of the pod's IP, no check at all, and a client certificate for engines
// that require one. Each case scrapes a real TLS server once and reads the scrape's own error.
func TestScrapeTLS(t *testing.T) {
	write := tempWriter(t)
	srv := httptest.NewUnstartedServer(fakeengine.New(fakeengine.Config{}))
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.StartTLS()
	defer srv.Close()
	// httptest's certificate names 127.0.0.1 and example.com.
	caFile := write("ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	certFile, keyFile := clientPair(t, write, "tokenscale-adapter")

	requireClient := httptest.NewUnstartedServer(fakeengine.New(fakeengine.Config{}))
	requireClient.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS12}
	requireClient.Config.ErrorLog = log.New(io.Discard, "", 0)
	requireClient.StartTLS()
	defer requireClient.Close()

	for _, tc := range []struct {
		name, tls string
		url       string
		wantErr   string // "" for a scrape that succeeds
	}{
		{"system roots refuse a private CA", "", srv.URL, "certificate"},
		{"the CA file", "{caFile: " + caFile + "}", srv.URL, ""},
		{"a name the certificate carries", "{caFile: " + caFile + ", serverName: example.com}", srv.URL, ""},
		{"a name it does not", "{caFile: " + caFile + ", serverName: llama.llm.svc}", srv.URL, "certificate"},
		{"no check", "{insecureSkipVerify: true}", srv.URL, ""},
		{"a client certificate required and not given", "{insecureSkipVerify: true}", requireClient.URL, "certificate"},
		{"a client certificate given", "{insecureSkipVerify: true, certFile: " + certFile + ", keyFile: " + keyFile + "}", requireClient.URL, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, obs := httpsScrape(t, tc.tls)
			src.Collect(context.Background(), onePod(tc.url))
			err := obs.get()
			switch {
			case obs.n != 1:
				t.Fatalf("%d scrapes observed, want 1", obs.n)
			case tc.wantErr == "" && err != nil:
				t.Fatalf("scrape failed: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("scrape error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

// With scrape.prometheusURL no pod is scraped, and scrape.tls checks Prometheus' certificate instead: a
// private CA, and a client certificate where Prometheus (or the proxy before it) requires one.
func TestPrometheusSourceTLS(t *testing.T) {
	write := tempWriter(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "a client certificate is required", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"matrix","result":[]}}`)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	caFile := write("ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	certFile, keyFile := clientPair(t, write, "tokenscale-adapter")
	for _, tc := range []struct{ name, tls, wantErr string }{
		{"system roots refuse a private CA", "", "certificate"},
		{"the CA file, no client certificate", "{caFile: " + caFile + "}", "401"},
		{"the CA file and a client certificate", "{caFile: " + caFile + ", certFile: " + certFile + ", keyFile: " + keyFile + "}", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scrape := "{prometheusURL: '" + srv.URL + "', timeout: 30s, interval: 1m, staleAfter: 1m, latencyWindow: 1m"
			if tc.tls != "" {
				scrape += ", tls: " + tc.tls
			}
			c, err := config.Parse([]byte("version: tokenscale.io/v1alpha1\nscrape: " + scrape + "}\n" + onePool))
			if err != nil {
				t.Fatal(err)
			}
			src, err := newPrometheusSource(c.Scrape.PrometheusURL, c, store.New(StoreOptions(c), nil), nil)
			if err != nil {
				t.Fatal(err)
			}
			// A member pod, so that its namespace is asked for (with none, nothing is).
			src.members.Store(&Members{Pool: map[store.PodKey]PoolKey{{Namespace: "llm", Name: "p"}: {}}})
			err = src.prom.PollOnce(context.Background())
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("query failed: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("query error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

// Settings that cannot work are refused at start, naming the field and the file.
func TestScrapeTLSRefused(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ scrape, want string }{
		{"{scheme: https, tls: {certFile: /x.crt}}", "set both or neither"},
		{"{scheme: https, tls: {insecureSkipVerify: true, caFile: /ca.crt}}", "insecureSkipVerify"},
		{"{tls: {caFile: /ca.crt}}", "no pool scrapes over https"},
		{"{prometheusURL: 'http://prometheus:9090', tls: {caFile: /ca.crt}}", "not https"},
	} {
		_, err := config.Parse([]byte("version: tokenscale.io/v1alpha1\nscrape: " + tc.scrape + "\n" + onePool))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("scrape %s: error %v, want one mentioning %q", tc.scrape, err, tc.want)
		}
	}
	for _, tc := range []struct{ tls, want string }{
		{"{caFile: " + filepath.Join(dir, "missing.crt") + "}", "scrape.tls.caFile"},
		{"{caFile: " + notPEM + "}", "no PEM certificate"},
		{"{certFile: " + notPEM + ", keyFile: " + notPEM + "}", "scrape.tls.certFile"},
		{"{caFile: " + dir + "}", "not a regular file"},
	} {
		c, err := config.Parse([]byte("version: tokenscale.io/v1alpha1\nscrape: {scheme: https, tls: " + tc.tls + "}\n" + onePool))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := New(func() *config.Config { return c }, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("tls %s: error %v, want one mentioning %q", tc.tls, err, tc.want)
		}
	}
}

// A rotated CA bundle (a trust bundle updated before the engines' certificates move to the new CA) is
// trusted from the next connection on without a restart, and a bad file in its place leaves the CAs read
// before.
func TestScrapeTLSCARotates(t *testing.T) {
	write := tempWriter(t)
	var current atomic.Pointer[tls.Certificate]
	serve := func(name string) []byte {
		certPEM, keyPEM := selfSigned(t, name, x509.ExtKeyUsageServerAuth)
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		current.Store(&pair)
		return certPEM
	}
	first := serve("first")
	srv := httptest.NewUnstartedServer(fakeengine.New(fakeengine.Config{}))
	// Per handshake, since httptest's own certificate would answer a GetCertificate without a name.
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*current.Load()}}, nil
	}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	caFile := write("ca.crt", first)
	src, obs := httpsScrape(t, "{caFile: "+caFile+"}")
	m := onePod(srv.URL)
	step := 0
	scrape := func(want string) { // "" for a scrape that succeeds
		t.Helper()
		srv.CloseClientConnections() // each step is a new connection
		src.Collect(context.Background(), m)
		step++
		if err := obs.get(); (want == "") != (err == nil) || want != "" && !strings.Contains(err.Error(), want) {
			t.Fatalf("step %d: scrape error %v, want %q", step, err, want)
		}
	}
	// The file's times move on with each write, as a Secret volume's swap moves them. The bundle is
	// looked at once a second at most, so the next scrape waits past that (a lower bound: load only
	// makes the wait longer, never the test wrong).
	rewrite := func(data []byte) {
		write("ca.crt", data)
		at := time.Now().Add(time.Duration(step) * time.Second)
		if err := os.Chtimes(caFile, at, at); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond)
	}
	scrape("")
	second := serve("second")
	scrape("certificate") // the engine moved to a CA the bundle does not hold yet
	rewrite(append(append([]byte{}, first...), second...))
	scrape("")
	rewrite([]byte("half a rotation"))
	scrape("") // the CAs read before
	scrape("") // and still, the bad file unchanged
	rewrite(first)
	scrape("certificate")
}

// A rotated client certificate (a Secret cert-manager renewed) is used from the next connection on.
func TestScrapeTLSClientCertRotates(t *testing.T) {
	write := tempWriter(t)
	var mu sync.Mutex
	var seen []string
	fake := fakeengine.New(fakeengine.Config{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.TLS.PeerCertificates[0].Subject.CommonName)
		mu.Unlock()
		fake.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS12}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	certFile, keyFile := clientPair(t, write, "first")
	src, _ := httpsScrape(t, "{insecureSkipVerify: true, certFile: "+certFile+", keyFile: "+keyFile+"}")
	m := onePod(srv.URL)
	src.Collect(context.Background(), m)
	clientPair(t, write, "second") // the same files, renewed
	srv.CloseClientConnections()
	src.Collect(context.Background(), m)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != "first" || seen[1] != "second" {
		t.Fatalf("client certificates the engine saw: %v, want [first second]", seen)
	}
}

// httpsScrape returns a scrape source for one pool scraped over https with scrape.tls set to tlsYAML
// ("" for none), and the observer of its scrapes. Generous times: a handshake on a loaded machine must
// not read as a refused certificate.
func httpsScrape(t *testing.T, tlsYAML string) (*scrapeSource, *lastErr) {
	t.Helper()
	scrape := "{scheme: https, interval: 1m, timeout: 30s, staleAfter: 1m, latencyWindow: 1m"
	if tlsYAML != "" {
		scrape += ", tls: " + tlsYAML
	}
	c, err := config.Parse([]byte("version: tokenscale.io/v1alpha1\nscrape: " + scrape + "}\n" + onePool))
	if err != nil {
		t.Fatal(err)
	}
	obs := &lastErr{}
	src, err := newScrapeSource(c, store.New(StoreOptions(c), nil), obs)
	if err != nil {
		t.Fatal(err)
	}
	return src, obs
}

// onePod is a round's membership of one vLLM pod of onePool serving its page at url.
func onePod(url string) *Members {
	return &Members{Targets: []collector.Target{{Pod: store.PodKey{Namespace: "llm", Name: "p"}, Pool: "prefill", URL: url + "/metrics", Engine: engine.VLLM}}}
}

// tempWriter returns a function that writes a file in a fresh temporary directory and returns its path.
func tempWriter(t *testing.T) func(name string, data []byte) string {
	t.Helper()
	dir := t.TempDir()
	return func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
}

// onePool is a config's pools section with one prefill pool, for configs that test scrape settings.
const onePool = "pools:\n- {name: prefill, namespace: llm, role: prefill, selector: {a: b}}\n"

type lastErr struct {
	mu  sync.Mutex
	n   int
	err error
}

func (o *lastErr) ObserveScrape(_ string, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n++
	o.err = err
}

func (o *lastErr) get() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// clientPair writes a self-signed client certificate and its key as PEM files.
func clientPair(t *testing.T, write func(string, []byte) string, name string) (certFile, keyFile string) {
	t.Helper()
	cert, key := selfSigned(t, name, x509.ExtKeyUsageClientAuth)
	return write("client.crt", cert), write("client.key", key)
}

// selfSigned returns a self-signed certificate for one use and its key, PEM; a server's names 127.0.0.1.
func selfSigned(t *testing.T, name string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
