// Command tokenscale-converter runs convertible decoders: `controller` (one per cluster) leases decode
// pods for prefill work as the policy asks, `agent` (a DaemonSet) verifies GPU headroom with NVML and
// flips its node's leased pods, and `gpus` prints what NVML says about this node's GPUs.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/tokenscale/tokenscale/converter"
	"github.com/tokenscale/tokenscale/converter/nvmlgpu"
	"github.com/tokenscale/tokenscale/internal/options"
	"github.com/tokenscale/tokenscale/internal/version"
)

func main() {
	if version.Requested(os.Args[1:]) {
		version.Print(os.Stdout, "tokenscale-converter")
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, "usage: tokenscale-converter controller|agent|gpus [flags]  (--help after a command lists its flags)\n")
		os.Exit(2)
	}
	cmd := options.New("tokenscale-converter " + os.Args[1])
	switch os.Args[1] {
	case "controller":
		var c converter.ControllerCommand
		c.AddFlags(cmd)
		cmd.Main(2, c.Run)
	case "agent":
		c := converter.AgentCommand{OpenGPUs: openNVML}
		c.AddFlags(cmd, os.Getenv("NODE_NAME"))
		cmd.Main(2, c.Run)
	case "gpus":
		var c converter.AgentCommand
		c.AddGPUFlags(cmd)
		cmd.Main(2, func(context.Context) error {
			r, err := nvmlgpu.Open()
			if err != nil {
				return err
			}
			defer r.Close()
			gpus, err := r.All()
			if err != nil {
				return err
			}
			driver, nv, err := r.Driver()
			if err != nil {
				return err
			}
			converter.PrintGPUs(os.Stdout, driver, nv, gpus, c.Need())
			if len(gpus) == 0 {
				// NVML loaded but sees no device: the container lacks the GPUs (NVIDIA_VISIBLE_DEVICES, the
				// runtime class), which a zero-GPU listing with exit 0 would hide.
				return fmt.Errorf("NVML %s (driver %s) sees no GPU: is this container given GPUs (the NVIDIA runtime, NVIDIA_VISIBLE_DEVICES)?", nv, driver)
			}
			return nil
		})
	default:
		fmt.Fprintf(os.Stderr, "tokenscale-converter: unknown command %q: want controller, agent or gpus\n", os.Args[1])
		os.Exit(2)
	}
}

func openNVML() (converter.GPUSession, error) {
	r, err := nvmlgpu.Open()
	if err != nil {
		return nil, err
	}
	return r, nil
}
