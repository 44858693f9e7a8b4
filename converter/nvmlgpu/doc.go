// Package nvmlgpu reads GPUs through NVML (github.com/NVIDIA/go-nvml): memory, utilisation, health and
// MIG state, for the converter's headroom check. go-nvml needs cgo, so the real reader is built only
// with cgo; without it Open returns an error and every other binary stays static.
package nvmlgpu
