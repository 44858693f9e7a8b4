// Command tokenscale-converter runs convertible decoders: `controller` (one per cluster) leases decode
// pods for prefill work as the policy asks, `agent` (a DaemonSet) verifies GPU headroom with NVML and
// flips its node's leased pods, and `gpus` prints what NVML says about this node's GPUs.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/tokenscale/tokenscale/converter"
	"github.com/tokenscale/tokenscale/converter/nvmlgpu"
	"github.com/tokenscale/tokenscale/internal/options"
	"github.com/tokenscale/tokenscale/internal/version"
)

const usage = `usage: tokenscale-converter COMMAND [flags]

Commands:
  controller  one per cluster: leases decode pods for prefill work as the policy asks
  agent       a DaemonSet: verifies GPU headroom with NVML and flips its node's leased pods
  gpus        prints what NVML says about this node's GPUs

"tokenscale-converter COMMAND --help" lists a command's flags by section; --version prints the version.
`

// preamble answers what comes before a command: nothing (the usage, exit 2), --help (the usage, exit 0)
// or an unknown command (exit 2). done is false for a command to run.
func preamble(args []string, stdout, stderr io.Writer) (exit int, done bool) {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2, true
	}
	switch args[0] {
	case "controller", "agent", "gpus":
		return 0, false
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0, true
	}
	fmt.Fprintf(stderr, "tokenscale-converter: unknown command %q: want controller, agent or gpus\n\n%s", args[0], usage)
	return 2, true
}

func main() {
	if version.Requested(os.Args[1:]) {
		version.Print(os.Stdout, "tokenscale-converter")
		return
	}
	if code, done := preamble(os.Args[1:], os.Stdout, os.Stderr); done {
		os.Exit(code)
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
	}
}

func openNVML() (converter.GPUSession, error) {
	r, err := nvmlgpu.Open()
	if err != nil {
		return nil, err
	}
	return r, nil
}
