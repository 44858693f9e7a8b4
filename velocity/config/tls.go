package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// ScrapeTLS says how the pages of pools with scheme https are checked or, with PrometheusURL (no pod is
// scraped then), how an https Prometheus is. Every file is read at start, where an error stops the
// component; the CA file again when it changes and the client certificate for each new connection, so a
// rotated Secret is used from the next connection on without a restart.
type ScrapeTLS struct {
	// CAFile is a PEM bundle of the CAs the engines' (or Prometheus') certificates chain to; default: the
	// system's roots.
	CAFile string `yaml:"caFile"`
	// ServerName is the name checked in each certificate; default: the pod's IP, which certificates
	// issued for a Service name do not carry (with PrometheusURL, the URL's host).
	ServerName string `yaml:"serverName"`
	// InsecureSkipVerify accepts any certificate: the answer is encrypted but its sender is not checked.
	InsecureSkipVerify bool `yaml:"insecureSkipVerify"`
	// CertFile and KeyFile are a PEM client certificate and key, for endpoints that require one.
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

func (t *ScrapeTLS) validate() []error {
	var errs []error
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("scrape.tls.certFile and scrape.tls.keyFile go together: set both or neither"))
	}
	if t.InsecureSkipVerify && (t.CAFile != "" || t.ServerName != "") {
		errs = append(errs, errors.New("scrape.tls.insecureSkipVerify checks nothing, so caFile and serverName would be ignored: set one or the other"))
	}
	return errs
}

// ClientConfig reads the files and returns the TLS settings for scraping, or nil when none are set (Go's
// defaults: the system's roots, the pod's IP as the name). Every error names the field and the file.
// With caFile set, roots returns the CAs as the file holds them (looked at once a second at most, re-read
// when its modification time or size changes; a new file that does not load leaves the last good CAs).
func (t *ScrapeTLS) ClientConfig() (c *tls.Config, roots func() *x509.CertPool, err error) {
	if *t == (ScrapeTLS{}) {
		return nil, nil, nil
	}
	if errs := t.validate(); len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	c = &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: t.ServerName,
		// The user's explicit choice, documented as checking nothing (docs/metrics.md).
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // opt-in, off by default
	}
	if t.CAFile != "" {
		ca := &caBundle{path: t.CAFile}
		if err := ca.load(); err != nil {
			return nil, nil, err
		}
		c.RootCAs, roots = ca.pool, ca.roots
	}
	if t.CertFile != "" {
		if _, err := t.clientPair(); err != nil {
			return nil, nil, err
		}
		files := *t // the paths as they were at start, whatever becomes of t
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			pair, err := files.clientPair()
			if err != nil {
				return nil, err
			}
			return &pair, nil
		}
	}
	return c, roots, nil
}

// caBundle is scrape.tls.caFile, read again when it changes: a Secret volume swaps its files on rotation.
type caBundle struct {
	path    string
	mu      sync.Mutex
	checked time.Time // the last look at the file: once a second at most, as roots is asked per request
	mod     time.Time
	size    int64
	pool    *x509.CertPool
	missing bool // the file was gone at the last look (logged once)
}

// load reads the file, bounded, and keeps its CAs with its modification time and size.
func (b *caBundle) load() error {
	fi, err := os.Stat(b.path)
	if err != nil {
		return fmt.Errorf("scrape.tls.caFile: %w", err)
	}
	pem, err := ReadFile(b.path)
	if err != nil {
		return fmt.Errorf("scrape.tls.caFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("scrape.tls.caFile %s: no PEM certificate in it", b.path)
	}
	b.pool, b.mod, b.size = pool, fi.ModTime(), fi.Size()
	return nil
}

// roots returns the CAs, re-reading the file first if it changed; it looks at the file at most once a
// second. A file that does not load is not read again until it changes once more, so a bad rotation is
// logged once, not on every request.
func (b *caBundle) roots() *x509.CertPool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if now.Sub(b.checked) < time.Second && !now.Before(b.checked) {
		return b.pool
	}
	b.checked = now
	fi, err := os.Stat(b.path)
	if err != nil {
		// Gone for a moment (a swap in progress) or for good (a volume moved): the CAs stay as they are.
		if !b.missing {
			klog.ErrorS(err, "The CA bundle cannot be read; trusting the CAs read before", "file", b.path)
		}
		b.missing = true
		return b.pool
	}
	b.missing = false
	if fi.ModTime().Equal(b.mod) && fi.Size() == b.size {
		return b.pool
	}
	if err := b.load(); err != nil {
		b.mod, b.size = fi.ModTime(), fi.Size()
		klog.ErrorS(err, "Reloading the CA bundle failed; trusting the CAs read before", "file", b.path)
		return b.pool
	}
	klog.InfoS("Reloaded the CA bundle after a change", "file", b.path)
	return b.pool
}

// clientPair reads the client certificate and key, bounded, each error naming the field and the file.
func (t *ScrapeTLS) clientPair() (tls.Certificate, error) {
	cert, err := ReadFile(t.CertFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("scrape.tls.certFile: %w", err)
	}
	key, err := ReadFile(t.KeyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("scrape.tls.keyFile: %w", err)
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("scrape.tls.certFile %s and keyFile %s: %w", t.CertFile, t.KeyFile, err)
	}
	return pair, nil
}
