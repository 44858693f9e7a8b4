package adapter

import (
	"bytes"
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"
	cmapiserver "sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver"
)

// BenchmarkEncodePods1000 is the API server library's cost of encoding a 1,000-pod answer, in JSON (what
// kubectl asks for) and in protobuf (what the HPA controller asks for), with the encoded size
// (docs/performance.md).
func BenchmarkEncodePods1000(b *testing.B) {
	for _, mt := range []string{runtime.ContentTypeJSON, runtime.ContentTypeProtobuf} {
		b.Run(mt, func(b *testing.B) {
			p, _ := benchProvider()
			sel, _ := labels.Parse("llm-d.ai/role=decode")
			list, err := p.GetMetricBySelector(context.Background(), "llm", sel, info("pods", DecodeVelocity), labels.Everything())
			if err != nil {
				b.Fatal(err)
			}
			info, ok := runtime.SerializerInfoForMediaType(cmapiserver.Codecs.SupportedMediaTypes(), mt)
			if !ok {
				b.Fatalf("no serializer for %s", mt)
			}
			enc := cmapiserver.Codecs.EncoderForVersion(info.Serializer, cmv1beta2.SchemeGroupVersion)
			var buf bytes.Buffer
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				if err := enc.Encode(list, &buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(buf.Len()), "bytes")
		})
	}
}
