package converter

import (
	"strings"
	"testing"
	"time"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/testutil"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

func TestAgentMetrics(t *testing.T) {
	reg := metrics.NewKubeRegistry()
	m := NewMetrics(reg.MustRegister)
	m.Now = func() time.Time { return time.Unix(1700000000, 500e6) }
	m.Flipped("convert", 20*time.Millisecond)
	m.Refused(protocol.ReasonMemoryShort)
	m.Refused(protocol.ReasonMemoryShort)
	m.GPU(GPUReading{UUID: "GPU-1", MemFree: 2 << 30, MemTotal: 80 << 30, Utilisation: 45, UtilisationKnown: true})
	m.GPU(GPUReading{UUID: "MIG-1", MemFree: 1 << 30, MemTotal: 10 << 30}) // no utilisation: no series
	want := `
# HELP tokenscale_converter_refusals_total [ALPHA] Conversions refused by this agent, by reason.
# TYPE tokenscale_converter_refusals_total counter
tokenscale_converter_refusals_total{reason="memory-short"} 2
# HELP tokenscale_converter_flips_total [ALPHA] Pods flipped by this agent, by action (convert, revert).
# TYPE tokenscale_converter_flips_total counter
tokenscale_converter_flips_total{action="convert"} 1
# HELP tokenscale_converter_gpu_utilisation_ratio [ALPHA] GPU utilisation (0-1) at the last headroom check; absent for MIG devices, which do not report it.
# TYPE tokenscale_converter_gpu_utilisation_ratio gauge
tokenscale_converter_gpu_utilisation_ratio{uuid="GPU-1"} 0.45
# HELP tokenscale_converter_gpu_memory_free_bytes [ALPHA] Free GPU memory NVML reported at the last headroom check, per GPU or MIG device.
# TYPE tokenscale_converter_gpu_memory_free_bytes gauge
tokenscale_converter_gpu_memory_free_bytes{uuid="GPU-1"} 2.147483648e+09
tokenscale_converter_gpu_memory_free_bytes{uuid="MIG-1"} 1.073741824e+09
# HELP tokenscale_converter_gpu_read_timestamp_seconds [ALPHA] When the GPU's readings were taken (Unix seconds): NVML is read at headroom checks only.
# TYPE tokenscale_converter_gpu_read_timestamp_seconds gauge
tokenscale_converter_gpu_read_timestamp_seconds{uuid="GPU-1"} 1.7000000005e+09
tokenscale_converter_gpu_read_timestamp_seconds{uuid="MIG-1"} 1.7000000005e+09
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenscale_converter_refusals_total", "tokenscale_converter_flips_total",
		"tokenscale_converter_gpu_utilisation_ratio", "tokenscale_converter_gpu_memory_free_bytes", "tokenscale_converter_gpu_read_timestamp_seconds"); err != nil {
		t.Error(err)
	}
	// A failed read drops the GPU's series (a stale reading would look current), and a reading without
	// utilisation drops that one.
	m.GPUUnknown("MIG-1")
	m.Now = func() time.Time { return time.Unix(1700000060, 0) }
	m.GPU(GPUReading{UUID: "GPU-1", MemFree: 3 << 30, MemTotal: 80 << 30})
	want = `
# HELP tokenscale_converter_gpu_utilisation_ratio [ALPHA] GPU utilisation (0-1) at the last headroom check; absent for MIG devices, which do not report it.
# TYPE tokenscale_converter_gpu_utilisation_ratio gauge
# HELP tokenscale_converter_gpu_memory_free_bytes [ALPHA] Free GPU memory NVML reported at the last headroom check, per GPU or MIG device.
# TYPE tokenscale_converter_gpu_memory_free_bytes gauge
tokenscale_converter_gpu_memory_free_bytes{uuid="GPU-1"} 3.221225472e+09
# HELP tokenscale_converter_gpu_read_timestamp_seconds [ALPHA] When the GPU's readings were taken (Unix seconds): NVML is read at headroom checks only.
# TYPE tokenscale_converter_gpu_read_timestamp_seconds gauge
tokenscale_converter_gpu_read_timestamp_seconds{uuid="GPU-1"} 1.70000006e+09
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenscale_converter_gpu_utilisation_ratio", "tokenscale_converter_gpu_memory_free_bytes", "tokenscale_converter_gpu_read_timestamp_seconds"); err != nil {
		t.Error(err)
	}
}
