package kedascaler

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/tokenscale/tokenscale/internal/options"
)

// AddFlags registers the scaler's serving flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.GRPCAddress, "grpc-address", ":9090", "address of the external scaler gRPC server")
	fs.StringVar(&o.MetricsAddress, "metrics-address", "127.0.0.1:8080", "address of the plain-HTTP /metrics and /healthz endpoint, unauthenticated, so loopback by default (empty: off)")
	fs.StringVar(&o.ProbeAddress, "probe-address", "", "address of a plain-HTTP /healthz only, for the kubelet's probes (empty: off)")
	fs.IntVar(&o.MaxStreams, "max-streams", DefaultMaxStreams, fmt.Sprintf("most concurrent server streams (StreamIsActive and health Watch together); more are refused with ResourceExhausted, as are calls of any kind past this plus %d (negative: no cap on either)", CallRoom))
	fs.IntVar(&o.MaxConnections, "max-connections", DefaultMaxConnections, "most connections served at once; one past it waits to be accepted until another closes (negative: no cap)")
	fs.IntVar(&o.MaxConnectionsPerClient, "max-connections-per-client", DefaultMaxConnectionsPerClient, "most connections from one client address; one past it is closed at once (negative: no cap)")
	fs.DurationVar(&o.MaxConnectionIdle, "max-connection-idle", DefaultMaxConnectionIdle, "close a connection that has had no call open for this long (its client reconnects when it next calls)")
	fs.DurationVar(&o.KeepaliveTime, "keepalive-time", 30*time.Second, "ping a client after this long without activity on its connection")
	fs.DurationVar(&o.KeepaliveTimeout, "keepalive-timeout", 10*time.Second, "close a connection whose client does not answer a ping within this long (reaps silent clients' streams)")
	fs.StringVar(&o.TLS.CertFile, "tls-cert-file", "", "serving certificate (PEM); with --tls-private-key-file enables TLS")
	fs.StringVar(&o.TLS.KeyFile, "tls-private-key-file", "", "serving key (PEM)")
	fs.StringVar(&o.TLS.ClientCAFile, "client-ca-file", "", "CA (PEM) that client certificates must chain to; requires TLS")
	fs.BoolVar(&o.AllowCrossNamespace, "allow-cross-namespace", false, "let a trigger's namespace key name another namespace than its ScaledObject's (KEDA asks for every tenant alike, so without this a ScaledObject reads only its own namespace's pools)")
}

// Validate reports every flag that cannot work, before anything listens.
func (o *Options) Validate() []error {
	var errs []error
	errs = append(errs, options.CheckListen(
		options.Listen{Flag: "grpc-address", Value: o.GRPCAddress, Required: true},
		options.Listen{Flag: "metrics-address", Value: o.MetricsAddress},
		options.Listen{Flag: "probe-address", Value: o.ProbeAddress})...)
	if (o.TLS.CertFile == "") != (o.TLS.KeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-private-key-file go together"))
	}
	if o.TLS.ClientCAFile != "" && o.TLS.CertFile == "" {
		errs = append(errs, errors.New("--client-ca-file needs --tls-cert-file and --tls-private-key-file"))
	}
	if o.KeepaliveTime <= 0 || o.KeepaliveTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--keepalive-time %s and --keepalive-timeout %s must be positive", o.KeepaliveTime, o.KeepaliveTimeout))
	}
	if o.MaxStreams == 0 {
		errs = append(errs, errors.New("--max-streams 0 would refuse every stream: give a positive cap, or a negative number for none"))
	}
	if o.MaxConnections == 0 {
		errs = append(errs, errors.New("--max-connections 0 would accept no connection: give a positive cap, or a negative number for none"))
	}
	if o.MaxConnectionsPerClient == 0 {
		errs = append(errs, errors.New("--max-connections-per-client 0 would accept no connection: give a positive cap, or a negative number for none"))
	}
	if o.MaxConnectionIdle <= 0 {
		errs = append(errs, fmt.Errorf("--max-connection-idle %s must be positive", o.MaxConnectionIdle))
	}
	return errs
}
