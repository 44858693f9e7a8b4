package converter

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

// FuzzGPUUUIDs checks the agent's reading of the device IDs the kubelet's PodResources API lists for a pod
// (a device plugin writes them): what it passes to NVML, logs and writes into the pod's status is a
// GPU-/MIG- name of UUID characters within maxUUIDLen, once each, cut of a time-sliced replica's "::<n>",
// and every such ID of the input is read.
func FuzzGPUUUIDs(f *testing.F) {
	f.Add("GPU-8a6d6b4e-2f0c-4f4e-9d0c-1f2e3d4c5b6a::0\nGPU-8a6d6b4e-2f0c-4f4e-9d0c-1f2e3d4c5b6a::1\nMIG-GPU-8a6d/1/0")
	f.Add("0\n1\nnvidia0")
	f.Add("MIG-4f1b2c3d-aaaa-bbbb-cccc-0123456789ab\nGPU-\x1b[2J\nGPU-a b")
	f.Add("GPU-::3\n::\nGPU-a::::b")
	f.Fuzz(func(t *testing.T, list string) {
		ids := strings.Split(list, "\n")
		got := gpuUUIDs(ids)
		for i, u := range got {
			if !strings.HasPrefix(u, "GPU-") && !strings.HasPrefix(u, "MIG-") || len(u) > maxUUIDLen || strings.Contains(u, "::") {
				t.Fatalf("%q passed as a GPU UUID", u)
			}
			if !uuidChars(u) {
				t.Fatalf("%q passed with a character no UUID has", u)
			}
			if slices.Index(got, u) != i {
				t.Fatalf("%q passed twice: %q", u, got)
			}
			if !slices.ContainsFunc(ids, func(id string) bool { return id == u || strings.HasPrefix(id, u+"::") }) {
				t.Fatalf("%q is none of the IDs %q", u, ids)
			}
		}
		for _, id := range ids {
			u, _, _ := strings.Cut(id, "::")
			if (strings.HasPrefix(u, "GPU-") || strings.HasPrefix(u, "MIG-")) && len(id) <= maxUUIDLen &&
				uuidChars(u) && !slices.Contains(got, u) {
				t.Fatalf("%q is a UUID the agent did not read (got %q)", id, got)
			}
		}
	})
}

// FuzzDecide checks the headroom decision on any readings a reader returns: it admits exactly when every
// reading is plausible, healthy, has the free memory and, where utilisation is known, is at or under the
// limit; it refuses with the first failing check's reason, in the order plausible, healthy, memory,
// utilisation, over all GPUs; and a refusal's detail names a GPU that fails that check.
func FuzzDecide(f *testing.F) {
	reading := func(total, free uint64, util uint32, flags byte) []byte {
		b := binary.LittleEndian.AppendUint64(nil, total)
		b = binary.LittleEndian.AppendUint64(b, free)
		b = binary.LittleEndian.AppendUint32(b, util)
		return append(b, flags)
	}
	f.Add(reading(80<<30, 20<<30, 40, 1), uint64(2<<30), uint32(90))
	f.Add(append(reading(80<<30, 20<<30, 100, 1), reading(80<<30, 1<<30, 10, 1)...), uint64(2<<30), uint32(90))
	f.Add(reading(40<<30, 20<<30, 0, 2), uint64(0), uint32(0))
	f.Add(reading(0, 0, 0, 4), uint64(1), uint32(100))
	f.Fuzz(func(t *testing.T, data []byte, minFree uint64, maxUtil uint32) {
		const size = 8 + 8 + 4 + 1
		var gpus []GPUReading
		for i := 0; len(data) >= size && i < 8; i++ {
			fl := data[20]
			g := GPUReading{
				UUID:     "GPU-" + string(rune('a'+i)),
				MemTotal: binary.LittleEndian.Uint64(data), MemFree: binary.LittleEndian.Uint64(data[8:]),
				Utilisation: binary.LittleEndian.Uint32(data[16:]), UtilisationKnown: fl&1 != 0, MIG: fl&2 != 0,
			}
			if fl&4 != 0 {
				g.Problem = "uncorrected ECC errors"
			}
			gpus = append(gpus, g)
			data = data[size:]
		}
		need := Need{MinFreeBytes: minFree, MaxUtilisation: maxUtil}
		checks := []struct {
			reason string
			fails  func(GPUReading) bool
		}{
			{protocol.ReasonNVMLError, func(g GPUReading) bool { return g.implausible() != nil }},
			{protocol.ReasonUnhealthy, func(g GPUReading) bool { return g.Problem != "" }},
			{protocol.ReasonMemoryShort, func(g GPUReading) bool { return g.MemFree < minFree }},
			{protocol.ReasonBusy, func(g GPUReading) bool { return g.UtilisationKnown && g.Utilisation > maxUtil }},
		}
		want := ""
		if len(gpus) == 0 {
			want = protocol.ReasonNoGPUs
		}
		for _, c := range checks {
			if want == "" && slices.ContainsFunc(gpus, c.fails) {
				want = c.reason
			}
		}
		ok, reason, detail := Decide(gpus, need)
		if ok != (want == "") || reason != want {
			t.Fatalf("Decide(%+v, %+v) = %v %q %q; want reason %q", gpus, need, ok, reason, detail, want)
		}
		if ok {
			if detail != "" {
				t.Fatalf("admitted with a detail %q", detail)
			}
			return
		}
		if len(detail) == 0 || len(detail) > 256 {
			t.Fatalf("refusal %s with a detail of %d bytes: %q", reason, len(detail), detail)
		}
		for _, c := range checks {
			if c.reason == reason && !slices.ContainsFunc(gpus, func(g GPUReading) bool { return c.fails(g) && strings.Contains(detail, g.UUID+":") }) {
				t.Fatalf("refusal %s names no GPU that fails it: %q", reason, detail)
			}
		}
	})
}
