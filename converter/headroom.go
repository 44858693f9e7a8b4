package converter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

// GPUReading is what NVML says about one GPU (or MIG device) of a pod.
type GPUReading struct {
	UUID, Name       string
	MemTotal         uint64 // bytes
	MemFree          uint64 // bytes
	Utilisation      uint32 // percent of time a kernel ran; UtilisationKnown false when unsupported (MIG only)
	UtilisationKnown bool
	MIG              bool   // a MIG device (or a GPU in MIG mode)
	Problem          string // non-empty: the device is not healthy (pending page retirement, row-remap failure, uncorrected ECC errors)
}

// GPUReader reads GPUs by UUID; the NVML implementation lives in converter/nvmlgpu (cgo).
type GPUReader interface {
	Read(uuids []string) ([]GPUReading, error)
}

// DeviceMapper maps a pod to the IDs of the devices the kubelet gave it (PodResources API).
type DeviceMapper interface {
	Devices(ctx context.Context, namespace, pod string) ([]string, error)
}

// Need is the headroom a converted decoder needs on every one of its GPUs. Zero values are honoured
// (the agent's flags give the defaults, 2 GiB and 90%): MaxUtilisation 0 admits only idle GPUs.
type Need struct {
	// MinFreeBytes for prefill chunks' activations on top of what the engine holds.
	MinFreeBytes uint64
	// MaxUtilisation in percent above which the GPU is too busy to take prefill work.
	MaxUtilisation uint32
}

// Decide says whether GPUs have the headroom; when not, the reason (a Reason* constant) and a detail
// naming the GPU and the numbers. Health and memory are judged on every GPU before utilisation, so a
// busy first GPU (a converted decoder is busy by design) cannot hide a later one running out of memory.
// A reading that cannot be true, or a GPU other than a MIG device without utilisation, is an nvml-error.
func Decide(gpus []GPUReading, need Need) (ok bool, reason, detail string) {
	if len(gpus) == 0 {
		return false, protocol.ReasonNoGPUs, "the kubelet assigned the pod no GPU"
	}
	for _, g := range gpus {
		if err := g.implausible(); err != nil {
			return false, protocol.ReasonNVMLError, err.Error()
		}
	}
	for _, g := range gpus {
		if g.Problem != "" {
			return false, protocol.ReasonUnhealthy, g.UUID + ": " + g.Problem
		}
	}
	for _, g := range gpus {
		if g.MemFree < need.MinFreeBytes {
			return false, protocol.ReasonMemoryShort, fmt.Sprintf("%s: %.1f GiB free of %.1f GiB, need %.1f GiB", g.UUID,
				gib(g.MemFree), gib(g.MemTotal), gib(need.MinFreeBytes))
		}
	}
	for _, g := range gpus {
		if g.UtilisationKnown && g.Utilisation > need.MaxUtilisation {
			return false, protocol.ReasonBusy, fmt.Sprintf("%s: %d%% utilised, limit %d%%", g.UUID, g.Utilisation, need.MaxUtilisation)
		}
	}
	return true, "", ""
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

// implausible says what makes a reading untrustworthy: memory that cannot be (no total, more free than
// total) would pass any free-memory check, and a GPU without utilisation would pass any busy check, which
// is sound only for MIG devices, the ones NVML reports none for. A utilisation over 100% cannot be either,
// and the agent's gauge would serve it as a ratio far above 1.
func (g GPUReading) implausible() error {
	if g.MemTotal == 0 || g.MemFree > g.MemTotal {
		return fmt.Errorf("%s: NVML reports %d bytes free of %d, which cannot be", g.UUID, g.MemFree, g.MemTotal)
	}
	if g.UtilisationKnown && g.Utilisation > 100 {
		return fmt.Errorf("%s: NVML reports %d%% utilisation, which cannot be", g.UUID, g.Utilisation)
	}
	if !g.UtilisationKnown && !g.MIG {
		return fmt.Errorf("%s: NVML reports no utilisation for a GPU that is not a MIG device", g.UUID)
	}
	return nil
}

// Headroom checks a pod's GPUs: PodResources for which devices, NVML for their state.
type Headroom struct {
	Devices DeviceMapper
	GPUs    GPUReader
	Need    Need
	// Observe, when set, sees every reading (for the agent's per-GPU metrics), and Unknown every GPU a
	// read failed for.
	Observe func(GPUReading)
	Unknown func(uuid string)
	// ReadTimeout bounds one NVML read (default 5 s). A cgo call cannot be stopped: a read past it is left
	// to finish on its own, and until it does every check fails at once, so a GPU lost from the bus costs
	// the agent's loop one timeout, not one per pod, and reverts of other pods go on.
	ReadTimeout time.Duration

	mu       sync.Mutex
	inFlight bool
}

// read reads the GPUs within ReadTimeout.
func (h *Headroom) read(uuids []string) ([]GPUReading, error) {
	h.mu.Lock()
	if h.inFlight {
		h.mu.Unlock()
		return nil, errors.New("an earlier NVML read has not returned yet (a hung driver or a GPU off the bus)")
	}
	h.inFlight = true
	h.mu.Unlock()
	type result struct {
		gpus []GPUReading
		err  error
	}
	done := make(chan result, 1)
	go func() {
		g, err := h.GPUs.Read(uuids)
		h.mu.Lock()
		h.inFlight = false
		h.mu.Unlock()
		done <- result{g, err}
	}()
	timeout := h.ReadTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-done:
		return r.gpus, r.err
	case <-t.C:
		return nil, fmt.Errorf("NVML did not answer within %s (a hung driver or a GPU off the bus)", timeout)
	}
}

// Check returns whether the pod's GPUs have headroom, and why not.
func (h *Headroom) Check(ctx context.Context, pod *corev1.Pod) (ok bool, reason, detail string) {
	ids, err := h.Devices.Devices(ctx, pod.Namespace, pod.Name)
	if err != nil {
		return false, protocol.ReasonNVMLError, "pod resources: " + err.Error()
	}
	uuids := gpuUUIDs(ids)
	if len(uuids) == 0 && len(ids) > 0 {
		// GPUs named by index (the device plugin's deviceIDStrategy: index) or by device name (GKE's
		// nvidia0): NVML is read by UUID, and "no GPU" would be false.
		shown := ids[:min(len(ids), 4)]
		return false, protocol.ReasonNVMLError, fmt.Sprintf("the kubelet names the pod's GPUs %.64q, not by UUID (GPU-…, MIG-…); the agent reads GPUs by UUID (the NVIDIA device plugin's deviceIDStrategy: uuid, its default)", shown)
	}
	if len(uuids) == 0 {
		return Decide(nil, h.Need)
	}
	readings, err := h.read(uuids)
	if err != nil {
		if h.Unknown != nil {
			for _, u := range uuids {
				h.Unknown(u)
			}
		}
		return false, protocol.ReasonNVMLError, err.Error()
	}
	// A reading that cannot be true is no reading: its series are dropped rather than served.
	for _, r := range readings {
		switch {
		case r.implausible() != nil:
			if h.Unknown != nil {
				h.Unknown(r.UUID)
			}
		case h.Observe != nil:
			h.Observe(r)
		}
	}
	return Decide(readings, h.Need)
}

// maxUUIDLen bounds a GPU's name: "GPU-" and 36 characters, or MIG's older "MIG-GPU-<uuid>/<gi>/<ci>",
// with a time-sliced replica's "::<n>" after either.
const maxUUIDLen = 80

// uuidChars says whether s holds only characters a GPU's or MIG device's UUID can (hex digits, dashes,
// MIG's older slashes). Letters past f are let through, as NVML is the judge of which UUIDs exist; control
// characters, spaces and quotes are not, as the name reaches the agent's log and the pod's status.
func uuidChars(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '/') {
			return false
		}
	}
	return true
}

// gpuUUIDs picks the GPUs named by UUID among a pod's device IDs. The NVIDIA device plugin names devices
// by UUID (GPU-..., MIG-...) unless told to name them by index (Check refuses those). With time-slicing it names each shared replica
// <uuid>::<n>, which NVML does not know: the replica is read as its GPU, once. An ID longer than
// maxUUIDLen, or with a character no UUID has, is no UUID, whatever its prefix: it would reach NVML's
// errors, the agent's log and the pod's status whole.
func gpuUUIDs(ids []string) []string {
	var uuids []string
	for _, id := range ids {
		if !strings.HasPrefix(id, "GPU-") && !strings.HasPrefix(id, "MIG-") || len(id) > maxUUIDLen {
			continue
		}
		id, _, _ = strings.Cut(id, "::")
		if !uuidChars(id) {
			continue
		}
		if !slices.Contains(uuids, id) {
			uuids = append(uuids, id)
		}
	}
	return uuids
}
