// Package adapter serves tokenscale's numbers through the custom metrics API (custom.metrics.k8s.io) and,
// with --external-metrics, the external metrics API, from the velocity service's snapshot and store;
// it also holds the adapter's command line and server wiring. Request paths read memory only.
package adapter

import (
	"github.com/tokenscale/tokenscale/velocity/service"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// Metric names served. Pods metrics are per pod; object metrics sit on the workload a pool belongs to.
const (
	PrefillVelocity = "tokenscale_prefill_tokens_per_second"
	DecodeVelocity  = "tokenscale_decode_tokens_per_second"
	QueuedTokens    = "tokenscale_queued_tokens"

	ArrivalVelocity  = "tokenscale_arrival_tokens_per_second"
	CapacityVelocity = "tokenscale_capacity_tokens_per_second"
	Utilisation      = "tokenscale_utilisation"
	Backpressure     = "tokenscale_predicted_backpressure"
	DesiredReplicas  = "tokenscale_desired_replicas"
	Conversions      = "tokenscale_conversions_wanted"
)

// podMetrics read one pod's velocity.
var podMetrics = map[string]func(store.Velocity) float64{
	PrefillVelocity: func(v store.Velocity) float64 { return v.PrefillTPS },
	DecodeVelocity:  func(v store.Velocity) float64 { return v.DecodeTPS },
	QueuedTokens:    func(v store.Velocity) float64 { return v.QueuedTokens },
}

// poolMetrics maps the served names to the pool's numbers.
var poolMetrics = map[string]service.PoolMetric{
	ArrivalVelocity:  service.Arrival,
	CapacityVelocity: service.Capacity,
	Utilisation:      service.Utilisation,
	Backpressure:     service.Backpressure,
	DesiredReplicas:  service.Desired,
	Conversions:      service.Conversions,
}
