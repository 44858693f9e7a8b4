package kedascaler

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/component-base/metrics"
)

// A handler that panics answers Internal; the scaler goes on serving.
func TestHandlerPanicIsContained(t *testing.T) {
	m := newRPCMetrics(func(...metrics.Registerable) {})
	_, err := m.unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x/GetMetrics"},
		func(context.Context, any) (any, error) { panic("a broken handler") })
	if status.Code(err) != codes.Internal {
		t.Errorf("unary: %v, want Internal", err)
	}
	err = m.stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/x/StreamIsActive"},
		func(any, grpc.ServerStream) error { panic("a broken stream") })
	if status.Code(err) != codes.Internal {
		t.Errorf("stream: %v, want Internal", err)
	}
}

// A message holding a pod's text reaches KEDA with its control bytes escaped and cut to maxMessage,
// keeping its code; a printable one is passed on as it is.
func TestReturnedErrorsArePrintable(t *testing.T) {
	m := newRPCMetrics(func(...metrics.Registerable) {})
	call := func(err error) error {
		_, got := m.unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x/GetMetrics"},
			func(context.Context, any) (any, error) { return nil, err })
		return got
	}
	got := call(status.Error(codes.Unavailable, "tokenscale: pod a: x509: certificate is valid for \x1b[31mevil\x1b[0m"))
	if status.Code(got) != codes.Unavailable {
		t.Errorf("code %v, want Unavailable kept", status.Code(got))
	}
	if msg := status.Convert(got).Message(); strings.ContainsRune(msg, 0x1b) || !strings.Contains(msg, `\x1b[31mevil`) {
		t.Errorf("message %q: want its escape bytes written as \\x1b", msg)
	}
	if msg := status.Convert(call(status.Error(codes.Unavailable, "pod a: \u202eevil"))).Message(); msg != `pod a: \u202eevil` {
		t.Errorf("a bidirectional override: message %q, want it written as \\u202e", msg)
	}
	long := status.Error(codes.Unavailable, strings.Repeat("a", 10*maxMessage))
	if msg := status.Convert(call(long)).Message(); len(msg) > maxMessage+len("… (truncated)") {
		t.Errorf("a %d-byte message came back as %d bytes; want at most about %d", 10*maxMessage, len(msg), maxMessage)
	}
	plain := status.Error(codes.NotFound, "tokenscale: no pool \"p\"")
	if got := call(plain); status.Code(got) != codes.NotFound || status.Convert(got).Message() != status.Convert(plain).Message() {
		t.Errorf("a printable message was rewritten: %v", got)
	}
	stream := m.stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/x/StreamIsActive"},
		func(any, grpc.ServerStream) error { return status.Error(codes.Unavailable, "\x07") })
	if msg := status.Convert(stream).Message(); msg != `\x07` {
		t.Errorf("stream: message %q, want \\x07", msg)
	}
}
