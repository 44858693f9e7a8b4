//go:build cgo

package nvmlgpu

import (
	"errors"
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/tokenscale/tokenscale/converter"
)

// Reader reads GPUs through an initialised NVML library.
type Reader struct {
	lib      nvml.Interface
	shutdown bool
}

// Open initialises NVML (it loads libnvidia-ml.so.1 now, not at process start).
func Open() (*Reader, error) {
	lib := nvml.New()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("NVML init: %w (is the NVIDIA driver's libnvidia-ml.so.1 visible to the container?)", ret)
	}
	return &Reader{lib: lib, shutdown: true}, nil
}

// New wraps an NVML interface that is already initialised (tests pass go-nvml's mocks).
func New(lib nvml.Interface) *Reader { return &Reader{lib: lib} }

// Close shuts NVML down if Open initialised it.
func (r *Reader) Close() error {
	if r.shutdown {
		if ret := r.lib.Shutdown(); ret != nvml.SUCCESS {
			return fmt.Errorf("NVML shutdown: %w", ret)
		}
	}
	return nil
}

// Driver returns the driver and NVML versions.
func (r *Reader) Driver() (driver, nvmlVersion string, err error) {
	driver, ret := r.lib.SystemGetDriverVersion()
	if ret != nvml.SUCCESS {
		return "", "", fmt.Errorf("NVML driver version: %w", ret)
	}
	nvmlVersion, ret = r.lib.SystemGetNVMLVersion()
	if ret != nvml.SUCCESS {
		return "", "", fmt.Errorf("NVML version: %w", ret)
	}
	return driver, nvmlVersion, nil
}

// All reads every GPU of the node.
func (r *Reader) All() ([]converter.GPUReading, error) {
	n, ret := r.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("NVML device count: %w", ret)
	}
	out := make([]converter.GPUReading, 0, n)
	for i := range n {
		dev, ret := r.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("NVML device %d: %w", i, ret)
		}
		uuid, ret := dev.GetUUID()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("NVML device %d UUID: %w", i, ret)
		}
		g, err := read(dev, uuid)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

// Read reads the GPUs (GPU-...) or MIG devices (MIG-...) with these UUIDs.
func (r *Reader) Read(uuids []string) ([]converter.GPUReading, error) {
	out := make([]converter.GPUReading, 0, len(uuids))
	for _, u := range uuids {
		dev, ret := r.lib.DeviceGetHandleByUUID(u)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("NVML device %s: %w", u, ret)
		}
		g, err := read(dev, u)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

func read(dev nvml.Device, uuid string) (converter.GPUReading, error) {
	g := converter.GPUReading{UUID: uuid, MIG: strings.HasPrefix(uuid, "MIG-")}
	g.Name, _ = dev.GetName()
	mem, ret := dev.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return g, fmt.Errorf("NVML memory of %s: %w", uuid, ret)
	}
	g.MemTotal, g.MemFree = mem.Total, mem.Free
	// A total of zero, or more free than total, would pass any free-memory check.
	if mem.Total == 0 || mem.Free > mem.Total {
		return g, fmt.Errorf("NVML memory of %s: %d bytes free of %d, which cannot be", uuid, mem.Free, mem.Total)
	}
	// Health is a property of the physical GPU: a MIG device is judged by its parent.
	phys := dev
	if g.MIG {
		parent, ret := dev.GetDeviceHandleFromMigDeviceHandle()
		if ret != nvml.SUCCESS {
			return g, fmt.Errorf("NVML parent GPU of %s: %w", uuid, ret)
		}
		phys = parent
	} else if cur, _, ret := dev.GetMigMode(); ret == nvml.SUCCESS && cur == nvml.DEVICE_MIG_ENABLE {
		g.MIG = true
	}
	// MIG devices report no utilisation (NOT_SUPPORTED): the decision then rests on memory alone. Any other
	// GPU without it would pass every busy check, so there it is an error.
	switch util, ret := dev.GetUtilizationRates(); {
	case ret == nvml.SUCCESS && util.Gpu > 100:
		return g, fmt.Errorf("NVML utilisation of %s: %d%%, which cannot be", uuid, util.Gpu)
	case ret == nvml.SUCCESS:
		g.Utilisation, g.UtilisationKnown = util.Gpu, true
	case !errors.Is(ret, nvml.ERROR_NOT_SUPPORTED):
		return g, fmt.Errorf("NVML utilisation of %s: %w", uuid, ret)
	case !g.MIG:
		return g, fmt.Errorf("NVML utilisation of %s: %w on a GPU that is not MIG, so no busy check could hold", uuid, ret)
	}
	p, err := health(phys)
	if err != nil {
		return g, fmt.Errorf("NVML health of %s: %w", uuid, err)
	}
	g.Problem = p
	return g, nil
}

// health names what makes a GPU unfit for more work, or "". A query the GPU does not support (row
// remapping before Ampere, ECC on GPUs without it) is no evidence of a problem; any other failure (a
// GPU lost from the bus, an unknown error) is an error, not a healthy GPU.
func health(dev nvml.Device) (string, error) {
	var problems []string
	failed := func(what string, ret nvml.Return) error {
		if ret == nvml.SUCCESS || errors.Is(ret, nvml.ERROR_NOT_SUPPORTED) {
			return nil
		}
		return fmt.Errorf("%s: %w", what, ret)
	}
	pending, ret := dev.GetRetiredPagesPendingStatus()
	if err := failed("retired pages", ret); err != nil {
		return "", err
	}
	if ret == nvml.SUCCESS && pending == nvml.FEATURE_ENABLED {
		problems = append(problems, "retired memory pages pending a GPU reset")
	}
	_, _, isPending, remapFailed, ret := dev.GetRemappedRows()
	if err := failed("remapped rows", ret); err != nil {
		return "", err
	}
	if ret == nvml.SUCCESS && (isPending || remapFailed) {
		if remapFailed {
			problems = append(problems, "row remapping failed")
		} else {
			problems = append(problems, "row remapping pending a GPU reset")
		}
	}
	n, ret := dev.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC)
	if err := failed("uncorrected ECC errors", ret); err != nil {
		return "", err
	}
	if ret == nvml.SUCCESS && n > 0 {
		problems = append(problems, fmt.Sprintf("%d uncorrected ECC errors since the driver loaded", n))
	}
	return strings.Join(problems, "; "), nil
}
