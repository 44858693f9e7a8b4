//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tokenscale/tokenscale/internal/procstat"
)

// cpuTimes is the CPU time each process name has used so far, from /proc (Linux only): the share of
// the machine each part of the stack takes during a measurement.
func cpuTimes() map[string]time.Duration {
	out := map[string]time.Duration{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the process ended
		}
		if comm, cpu, err := procstat.Parse(b); err == nil {
			out[comm] += cpu
		}
	}
	return out
}

// cpuShare says, in cores, what each process name used between two cpuTimes over d, biggest first.
func cpuShare(before, after map[string]time.Duration, d time.Duration) string {
	type use struct {
		name  string
		cores float64
	}
	var all []use
	total := 0.0
	for name, t := range after {
		c := (t - before[name]).Seconds() / d.Seconds()
		if c >= 0.01 {
			all = append(all, use{name, c})
			total += c
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].cores > all[j].cores })
	parts := []string{fmt.Sprintf("total %.2f cores", total)}
	for _, u := range all {
		parts = append(parts, fmt.Sprintf("%s %.2f", u.name, u.cores))
	}
	return strings.Join(parts, ", ")
}

// peakRSS is the peak resident memory (VmHWM) of the processes named name, in MiB, from /proc.
func peakRSS(name string) float64 {
	peak := 0.0
	stats, _ := filepath.Glob("/proc/[0-9]*/status")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var comm string
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Name:"); ok {
				comm = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok && comm == name {
				f := strings.Fields(v)
				if kb, err := strconv.ParseFloat(f[0], 64); err == nil && kb/1024 > peak {
					peak = kb / 1024
				}
			}
		}
	}
	return peak
}
