package kedascaler

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/velocity/config"
)

// TLS is the server TLS: a certificate, and a client CA to require client certificates (KEDA's
// TriggerAuthentication tlsClientCert/tlsClientKey with caCert). All files are re-read when they change
// (a Secret volume swaps them on rotation), so a renewed certificate is served without a restart.
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
	r := &tlsFiles{TLS: t}
	if _, err := r.current(); err != nil {
		return nil, err
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	// Every handshake gets a config built from the newest files (checked by modification time), so a
	// rotated certificate or client CA is used from the next connection on.
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		s, err := r.current()
		if err != nil {
			return nil, err
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*s.cert}}
		if s.clientCAs != nil {
			cfg.ClientCAs, cfg.ClientAuth = s.clientCAs, tls.RequireAndVerifyClientCert
		}
		return cfg, nil
	}
	return credentials.NewTLS(base), nil
}

// tlsFiles loads the TLS files and reloads them when one of them changes.
type tlsFiles struct {
	TLS
	mu     sync.Mutex
	stamps [3]fileStamp
	state  *tlsState
	failed string // the last reload error logged, until a reload succeeds
	// bad holds the stamps of files that failed to load, and badAt when: they are loaded again when one
	// changes, or badRetry later (a failure that was the read's, not the files', passes). Each handshake,
	// an unauthenticated client's included, re-read and re-parsed up to 3 MiB of broken files under mu,
	// which serialised every handshake behind it.
	bad   *[3]fileStamp
	badAt time.Time
	// loads counts loads (tests).
	loads int
}

type tlsState struct {
	cert      *tls.Certificate
	clientCAs *x509.CertPool
}

// tlsFlags name the TLS files (certificate, key, client CA, in the order of tlsFiles.stamps) in errors by
// what each is and the flag that set it: a missing file is otherwise only a path.
var tlsFlags = [3]string{"the serving certificate (--tls-cert-file)", "the serving key (--tls-private-key-file)", "the client CA (--client-ca-file)"}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(path string) (fileStamp, error) {
	if path == "" {
		return fileStamp{}, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// current returns the loaded files, reloading them first if any changed. A reload that fails (a rotation
// caught half-written) keeps serving the last good pair and is retried on the next handshake; each
// distinct failure is logged once.
func (r *tlsFiles) current() (*tlsState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var now [3]fileStamp
	var err error
	for i, p := range []string{r.CertFile, r.KeyFile, r.ClientCAFile} {
		if now[i], err = stamp(p); err != nil {
			err = fmt.Errorf("%s: %w", tlsFlags[i], err)
			break
		}
	}
	if err == nil && r.state != nil && (now == r.stamps || r.bad != nil && now == *r.bad && time.Since(r.badAt) < badRetry) {
		return r.state, nil
	}
	if err == nil {
		var s *tlsState
		r.loads++
		if s, err = r.load(); err == nil {
			if r.state != nil {
				klog.InfoS("Reloaded the TLS files after a change", "cert", r.CertFile, "clientCA", r.ClientCAFile)
			}
			r.state, r.stamps, r.failed, r.bad = s, now, "", nil
			return s, nil
		}
		r.bad, r.badAt = &now, time.Now()
	}
	if r.state == nil {
		return nil, err
	}
	if msg := err.Error(); msg != r.failed {
		// Once per distinct failure, not on every handshake until the rotation lands.
		klog.ErrorS(err, "Reloading the TLS files failed; serving the previous ones", "cert", r.CertFile)
		r.failed = msg
	}
	return r.state, nil
}

// badRetry is how long files that failed to load wait before they are tried again unchanged.
const badRetry = 10 * time.Second

func (r *tlsFiles) load() (*tlsState, error) {
	// Bounded reads: a path mounted wrong (a device, a FIFO, a huge file) is an error, not the memory.
	certPEM, err := config.ReadFile(r.CertFile)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", tlsFlags[0], err)
	}
	keyPEM, err := config.ReadFile(r.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", tlsFlags[1], err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading the serving certificate %s (--tls-cert-file) and key %s (--tls-private-key-file): %w", r.CertFile, r.KeyFile, err)
	}
	s := &tlsState{cert: &cert}
	if r.ClientCAFile != "" {
		pem, err := config.ReadFile(r.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", tlsFlags[2], err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA %s (--client-ca-file) holds no PEM certificate", r.ClientCAFile)
		}
		s.clientCAs = pool
	}
	return s, nil
}
