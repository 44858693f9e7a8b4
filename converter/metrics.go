package converter

import (
	"time"

	"k8s.io/component-base/metrics"
)

// Metrics is the agent's own /metrics: flips, refusals by reason, flip latency and the NVML readings.
type Metrics struct {
	flips    *metrics.CounterVec
	refusals *metrics.CounterVec
	latency  *metrics.HistogramVec
	memFree  *metrics.GaugeVec
	memTotal *metrics.GaugeVec
	util     *metrics.GaugeVec
	readAt   *metrics.GaugeVec
	// Now stamps the readings (time.Now when nil).
	Now func() time.Time
}

// NewMetrics registers the agent's metrics with register.
func NewMetrics(register func(...metrics.Registerable)) *Metrics {
	m := &Metrics{
		flips: metrics.NewCounterVec(&metrics.CounterOpts{Namespace: "tokenscale", Subsystem: "converter", Name: "flips_total",
			Help: "Pods flipped by this agent, by action (convert, revert)."}, []string{"action"}),
		refusals: metrics.NewCounterVec(&metrics.CounterOpts{Namespace: "tokenscale", Subsystem: "converter", Name: "refusals_total",
			Help: "Conversions refused by this agent, by reason."}, []string{"reason"}),
		latency: metrics.NewHistogramVec(&metrics.HistogramOpts{Namespace: "tokenscale", Subsystem: "converter", Name: "flip_duration_seconds",
			Help: "Time the actuator took to flip a pod, by action.", Buckets: []float64{0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30}}, []string{"action"}),
		memFree: metrics.NewGaugeVec(&metrics.GaugeOpts{Namespace: "tokenscale", Subsystem: "converter", Name: "gpu_memory_free_bytes",
			Help: "Free GPU memory NVML reported at the last headroom check, per GPU or MIG device."}, []string{"uuid"}),
		memTotal: metrics.NewGaugeVec(&metrics.GaugeOpts{Namespace: "tokenscale", Subsystem: "converter", Name: "gpu_memory_total_bytes",
			Help: "GPU memory NVML reported at the last headroom check, per GPU or MIG device."}, []string{"uuid"}),
		util: metrics.NewGaugeVec(&metrics.GaugeOpts{Namespace: "tokenscale", Subsystem: "converter", Name: "gpu_utilisation_ratio",
			Help: "GPU utilisation (0-1) at the last headroom check; absent for MIG devices, which do not report it."}, []string{"uuid"}),
		// NVML is read only when a conversion is checked, so a GPU with no conversion keeps its last
		// readings for good: this says how old they are.
		readAt: metrics.NewGaugeVec(&metrics.GaugeOpts{Namespace: "tokenscale", Subsystem: "converter", Name: "gpu_read_timestamp_seconds",
			Help: "When the GPU's readings were taken (Unix seconds): NVML is read at headroom checks only."}, []string{"uuid"}),
	}
	register(m.flips, m.refusals, m.latency, m.memFree, m.memTotal, m.util, m.readAt)
	return m
}

// Flipped implements Observer.
func (m *Metrics) Flipped(action string, took time.Duration) {
	m.flips.WithLabelValues(action).Inc()
	m.latency.WithLabelValues(action).Observe(took.Seconds())
}

// Refused implements Observer.
func (m *Metrics) Refused(reason string) { m.refusals.WithLabelValues(reason).Inc() }

// GPU records one NVML reading (Headroom.Observe).
func (m *Metrics) GPU(g GPUReading) {
	m.memFree.WithLabelValues(g.UUID).Set(float64(g.MemFree))
	m.memTotal.WithLabelValues(g.UUID).Set(float64(g.MemTotal))
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	m.readAt.WithLabelValues(g.UUID).Set(float64(now().UnixNano()) / 1e9)
	if g.UtilisationKnown {
		m.util.WithLabelValues(g.UUID).Set(float64(g.Utilisation) / 100)
	} else {
		m.util.DeleteLabelValues(g.UUID)
	}
}

// GPUUnknown drops a GPU's series when a read of it failed (Headroom.Unknown): its last reading kept as
// the gauges' value would read as current on a dashboard, where unknown has no series.
func (m *Metrics) GPUUnknown(uuid string) {
	m.memFree.DeleteLabelValues(uuid)
	m.memTotal.DeleteLabelValues(uuid)
	m.util.DeleteLabelValues(uuid)
	m.readAt.DeleteLabelValues(uuid)
}
