//go:build cgo

package nvmlgpu

import (
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/tokenscale/tokenscale/converter"
	"github.com/tokenscale/tokenscale/converter/protocol"
)

const gib = 1 << 30

// h100 is go-nvml's mock DGX H100 (8 × 80 GB) with the queries the reader makes filled in: every GPU
// healthy, 20 GiB free and 40% utilised unless a test changes one.
func h100(t *testing.T) *server.Server {
	t.Helper()
	s := dgxh100.New()
	for _, d := range s.Devices {
		dev := d.(*server.Device)
		healthy(dev)
	}
	return s
}

func healthy(dev *server.Device) {
	dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		return nvml.Memory{Total: 80 * gib, Free: 20 * gib, Used: 60 * gib}, nvml.SUCCESS
	}
	dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 40}, nvml.SUCCESS }
	dev.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_DISABLED, nvml.SUCCESS }
	dev.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 0, false, false, nvml.SUCCESS }
	dev.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) { return 0, nvml.SUCCESS }
}

func uuidOf(t *testing.T, s *server.Server, i int) string {
	t.Helper()
	return s.Devices[i].(*server.Device).UUID
}

func decide(t *testing.T, r *Reader, uuids ...string) (bool, string, string) {
	t.Helper()
	gpus, err := r.Read(uuids)
	if err != nil {
		t.Fatal(err)
	}
	return converter.Decide(gpus, converter.Need{MinFreeBytes: 4 * gib, MaxUtilisation: 85})
}

func TestHeadroomOnMockDGXH100(t *testing.T) {
	t.Run("enough memory and idle enough", func(t *testing.T) {
		s := h100(t)
		all, err := New(s).All()
		if err != nil || len(all) != 8 || all[0].MemTotal != 80*gib || !strings.Contains(all[0].Name, "H100") {
			t.Fatalf("All: %d GPUs %+v, %v", len(all), all, err)
		}
		if ok, reason, detail := decide(t, New(s), uuidOf(t, s, 0), uuidOf(t, s, 1)); !ok {
			t.Errorf("refused: %s %s", reason, detail)
		}
	})
	t.Run("too little free memory on one of the pod's GPUs", func(t *testing.T) {
		s := h100(t)
		s.Devices[1].(*server.Device).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 80 * gib, Free: 1 * gib, Used: 79 * gib}, nvml.SUCCESS
		}
		ok, reason, detail := decide(t, New(s), uuidOf(t, s, 0), uuidOf(t, s, 1))
		if ok || reason != protocol.ReasonMemoryShort || !strings.Contains(detail, uuidOf(t, s, 1)) || !strings.Contains(detail, "1.0 GiB free of 80.0 GiB, need 4.0 GiB") {
			t.Errorf("got %v %s %q", ok, reason, detail)
		}
	})
	t.Run("busy", func(t *testing.T) {
		s := h100(t)
		s.Devices[0].(*server.Device).GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 97}, nvml.SUCCESS }
		if ok, reason, _ := decide(t, New(s), uuidOf(t, s, 0)); ok || reason != protocol.ReasonBusy {
			t.Errorf("got %v %s", ok, reason)
		}
	})
	for name, breakIt := range map[string]func(*server.Device){
		"retired pages pending": func(d *server.Device) {
			d.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_ENABLED, nvml.SUCCESS }
		},
		"row remapping failed": func(d *server.Device) {
			d.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 3, false, true, nvml.SUCCESS }
		},
		"uncorrected ECC errors": func(d *server.Device) {
			d.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) { return 2, nvml.SUCCESS }
		},
	} {
		t.Run("unhealthy: "+name, func(t *testing.T) {
			s := h100(t)
			breakIt(s.Devices[2].(*server.Device))
			ok, reason, detail := decide(t, New(s), uuidOf(t, s, 2))
			if ok || reason != protocol.ReasonUnhealthy || !strings.Contains(detail, strings.Fields(name)[0]) {
				t.Errorf("got %v %s %q", ok, reason, detail)
			}
		})
	}
	t.Run("queries the GPU does not support are not problems", func(t *testing.T) {
		s := h100(t)
		d := s.Devices[3].(*server.Device)
		d.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 0, false, false, nvml.ERROR_NOT_SUPPORTED }
		d.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
			return 0, nvml.ERROR_NOT_SUPPORTED
		}
		if ok, reason, detail := decide(t, New(s), uuidOf(t, s, 3)); !ok {
			t.Errorf("refused: %s %s", reason, detail)
		}
	})
	for name, breakIt := range map[string]func(*server.Device){
		"retired pages": func(d *server.Device) {
			d.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST }
		},
		"remapped rows": func(d *server.Device) {
			d.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 0, false, false, nvml.ERROR_UNKNOWN }
		},
		"uncorrected ECC errors": func(d *server.Device) {
			d.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
				return 0, nvml.ERROR_NO_PERMISSION
			}
		},
	} {
		t.Run("a failed health query is an error, not a healthy GPU: "+name, func(t *testing.T) {
			s := h100(t)
			breakIt(s.Devices[4].(*server.Device))
			_, err := New(s).Read([]string{uuidOf(t, s, 4)})
			if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), uuidOf(t, s, 4)) {
				t.Errorf("error %v; want one naming the GPU and the %s query", err, name)
			}
		})
	}
	t.Run("driver versions", func(t *testing.T) {
		s := h100(t)
		if d, v, err := New(s).Driver(); err != nil || d == "" || v == "" {
			t.Errorf("driver %q NVML %q, %v", d, v, err)
		}
		s.SystemGetDriverVersionFunc = func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN }
		if _, _, err := New(s).Driver(); err == nil {
			t.Error("a failed driver query gave no error")
		}
	})
	// A reading that cannot be true would pass the free-memory check; an agent refuses it as nvml-error.
	for name, mem := range map[string]nvml.Memory{
		"no total":             {Total: 0, Free: 0},
		"more free than total": {Total: 80 * gib, Free: 81 * gib},
	} {
		t.Run("implausible memory is an error naming the GPU: "+name, func(t *testing.T) {
			s := h100(t)
			s.Devices[5].(*server.Device).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return mem, nvml.SUCCESS }
			if _, err := New(s).Read([]string{uuidOf(t, s, 5)}); err == nil || !strings.Contains(err.Error(), uuidOf(t, s, 5)) {
				t.Errorf("error %v; want one naming the GPU", err)
			}
		})
	}
	// Only MIG devices report no utilisation; a whole GPU that does not would pass every busy check.
	t.Run("no utilisation on a GPU that is not MIG is an error", func(t *testing.T) {
		s := h100(t)
		s.Devices[6].(*server.Device).GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED
		}
		if _, err := New(s).Read([]string{uuidOf(t, s, 6)}); err == nil || !strings.Contains(err.Error(), uuidOf(t, s, 6)) {
			t.Errorf("error %v; want one naming the GPU", err)
		}
	})
	t.Run("a GPU in MIG mode may report no utilisation", func(t *testing.T) {
		s := h100(t)
		d := s.Devices[6].(*server.Device)
		d.MigMode = nvml.DEVICE_MIG_ENABLE
		d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED }
		gpus, err := New(s).Read([]string{uuidOf(t, s, 6)})
		if err != nil || !gpus[0].MIG || gpus[0].UtilisationKnown {
			t.Errorf("reading %+v, %v; want MIG with utilisation unknown", gpus, err)
		}
	})
	t.Run("unknown UUID is an error, not a pass", func(t *testing.T) {
		if _, err := New(h100(t)).Read([]string{"GPU-not-here"}); err == nil {
			t.Error("no error for a GPU NVML does not know")
		}
	})
}

// A MIG device: memory from the instance, no utilisation (NVML does not report it per instance), health
// from the parent GPU.
func TestHeadroomOnMIGDevice(t *testing.T) {
	s := h100(t)
	parent := s.Devices[4].(*server.Device)
	migUUID := "MIG-5b1f2a3e-0000-4000-8000-000000000001"
	mig := &mock.Device{
		GetNameFunc:       func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3 MIG 3g.40gb", nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) { return nvml.Memory{Total: 40 * gib, Free: 6 * gib}, nvml.SUCCESS },
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED
		},
		GetDeviceHandleFromMigDeviceHandleFunc: func() (nvml.Device, nvml.Return) { return parent, nvml.SUCCESS },
	}
	byUUID := s.DeviceGetHandleByUUIDFunc
	s.DeviceGetHandleByUUIDFunc = func(uuid string) (nvml.Device, nvml.Return) {
		if uuid == migUUID {
			return mig, nvml.SUCCESS
		}
		return byUUID(uuid)
	}
	gpus, err := New(s).Read([]string{migUUID})
	if err != nil || len(gpus) != 1 || !gpus[0].MIG || gpus[0].UtilisationKnown || gpus[0].MemFree != 6*gib {
		t.Fatalf("MIG reading %+v, %v", gpus, err)
	}
	if ok, reason, detail := converter.Decide(gpus, converter.Need{MinFreeBytes: 4 * gib}); !ok {
		t.Errorf("refused: %s %s", reason, detail)
	}
	parent.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_ENABLED, nvml.SUCCESS }
	gpus, _ = New(s).Read([]string{migUUID})
	if ok, reason, _ := converter.Decide(gpus, converter.Need{MinFreeBytes: 4 * gib}); ok || reason != protocol.ReasonUnhealthy {
		t.Errorf("a MIG device on an unhealthy GPU: %v %s", ok, reason)
	}
}

// The real library: on a machine without the NVIDIA driver Open fails with a clear error instead of
// crashing; with a driver it lists the GPUs (`tokenscale-converter gpus` prints the same).
func TestOpenRealNVML(t *testing.T) {
	r, err := Open()
	if err != nil {
		if !strings.Contains(err.Error(), "NVML init") {
			t.Fatalf("error does not say what failed: %v", err)
		}
		t.Skipf("no NVIDIA driver here (%v); run `go test ./converter/nvmlgpu` on a GPU node to read real GPUs", err)
	}
	defer r.Close()
	gpus, err := r.All()
	if err != nil {
		t.Fatal(err)
	}
	driver, nv, err := r.Driver()
	if err != nil || driver == "" || nv == "" {
		t.Errorf("driver %q NVML %q, %v", driver, nv, err)
	}
	for _, g := range gpus {
		if g.MemTotal == 0 || g.MemFree > g.MemTotal || !(strings.HasPrefix(g.UUID, "GPU-") || strings.HasPrefix(g.UUID, "MIG-")) {
			t.Errorf("implausible reading %+v", g)
		}
		t.Logf("%s %s: %.1f/%.1f GiB free, util %d%% (known %v), MIG %v, problem %q", g.UUID, g.Name,
			float64(g.MemFree)/gib, float64(g.MemTotal)/gib, g.Utilisation, g.UtilisationKnown, g.MIG, g.Problem)
	}
}
