package kedascaler

import (
	"context"
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
