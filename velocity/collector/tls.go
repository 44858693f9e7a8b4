package collector

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"time"
)

// TLS checks https endpoints: the engines' pages, or Prometheus' answers.
type TLS struct {
	// Config holds the settings (nil: Go's defaults, the system's roots and the host dialled as the name).
	Config *tls.Config
	// Roots, if set, is asked for the CAs at each new connection and replaces Config.RootCAs, so a CA
	// bundle rotated on disk is trusted from the next connection on. Connections already open stay.
	Roots func() *x509.CertPool
}

// apply makes tr check https endpoints as t says.
func (t *TLS) apply(tr *http.Transport) {
	if t == nil || t.Config == nil {
		return
	}
	tr.TLSClientConfig = t.Config.Clone()
	if t.Roots == nil {
		return
	}
	// tls.Config has no per-connection hook for the roots on the client side, so the transport's
	// handshake is done here, as net/http does it: the host dialled is the name unless one is set.
	base := t.Config.Clone()
	base.NextProtos = nil // HTTP/1.1, as the engines and a Prometheus behind no proxy speak
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		cfg := base.Clone()
		cfg.RootCAs = t.Roots()
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			cfg.ServerName = host
		}
		return (&tls.Dialer{NetDialer: dialer, Config: cfg}).DialContext(ctx, network, addr)
	}
}
