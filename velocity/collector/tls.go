package collector

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"sync"
)

// TLS checks https endpoints: the engines' pages, or Prometheus' answers.
type TLS struct {
	// Config holds the settings (nil: Go's defaults, the system's roots and the host dialled as the name).
	Config *tls.Config
	// Roots, if set, is asked for the CAs before each request and replaces Config.RootCAs; when it
	// returns another pool (a CA bundle rotated on disk), new connections trust it. It must be cheap.
	Roots func() *x509.CertPool
}

// transport returns tr set to check https endpoints as t says.
func (t *TLS) transport(tr *http.Transport) http.RoundTripper {
	if t == nil || t.Config == nil {
		return tr
	}
	tr.TLSClientConfig = t.Config.Clone()
	if t.Roots == nil {
		return tr
	}
	return &rootsTransport{roots: t.Roots, base: tr, tr: tr.Clone(), pool: tr.TLSClientConfig.RootCAs}
}

// rootsTransport moves to a transport trusting new CAs when Roots returns a new pool. The handshake
// stays net/http's (its proxy, handshake timeout and name checks, an IP's included): tls.Config has
// no per-connection hook for the roots that still checks the name of a pod dialled by IP.
type rootsTransport struct {
	roots func() *x509.CertPool
	base  *http.Transport // never used, so each clone starts clean (a used transport carries HTTP/2 state)
	mu    sync.Mutex
	pool  *x509.CertPool
	tr    *http.Transport
}

func (r *rootsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.current().RoundTrip(req)
}

func (r *rootsTransport) current() *http.Transport {
	pool := r.roots()
	r.mu.Lock()
	defer r.mu.Unlock()
	if pool != r.pool {
		next := r.base.Clone()
		next.TLSClientConfig.RootCAs = pool
		// Requests in flight finish on the old transport; its idle connections, checked against the
		// old CAs, are closed rather than left to their idle timeout.
		r.tr.CloseIdleConnections()
		r.tr, r.pool = next, pool
	}
	return r.tr
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the transport in use.
func (r *rootsTransport) CloseIdleConnections() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tr.CloseIdleConnections()
}
