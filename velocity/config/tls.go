package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ScrapeTLS says how the pages of pools with scheme https are checked or, with PrometheusURL (no pod is
// scraped then), how an https Prometheus is. The CA file is read once, at
// start (scrape.* is fixed at start): a new CA takes a restart. The client certificate is read at start
// and again for each new connection, so a rotated Secret is used from the next connection on.
type ScrapeTLS struct {
	// CAFile is a PEM bundle of the CAs the engines' certificates chain to; default: the system's roots.
	CAFile string `yaml:"caFile"`
	// ServerName is the name checked in each engine's certificate; default: the pod's IP, which
	// certificates issued for a Service name do not carry.
	ServerName string `yaml:"serverName"`
	// InsecureSkipVerify accepts any certificate: the page is encrypted but its sender is not checked.
	InsecureSkipVerify bool `yaml:"insecureSkipVerify"`
	// CertFile and KeyFile are a PEM client certificate and key, for engines that require one.
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
func (t *ScrapeTLS) ClientConfig() (*tls.Config, error) {
	if *t == (ScrapeTLS{}) {
		return nil, nil
	}
	if errs := t.validate(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: t.ServerName,
		// The user's explicit choice, documented as checking nothing (docs/metrics.md).
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // opt-in, off by default
	}
	if t.CAFile != "" {
		pem, err := ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("scrape.tls.caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("scrape.tls.caFile %s: no PEM certificate in it", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		if _, err := t.clientPair(); err != nil {
			return nil, err
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
	return c, nil
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
