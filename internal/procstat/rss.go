package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// PeakRSS is a process's peak resident set size in bytes (VmHWM in /proc/<pid>/status): the number a
// memory limit is compared with, as the kernel's OOM killer counts resident pages.
func PeakRSS(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusKiB(status, "VmHWM:")
}

// parseStatusKiB reads a "Field:   1234 kB" line of /proc/<pid>/status, in bytes.
func parseStatusKiB(status []byte, field string) (int64, error) {
	for _, line := range bytes.Split(status, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte(field))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("%s line %.60q: want a number of kB", field, line)
		}
		kib, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil || kib < 0 || kib > 1<<40 {
			return 0, fmt.Errorf("%s %q: not a size", field, f[0])
		}
		return kib << 10, nil
	}
	return 0, fmt.Errorf("no %s line in /proc status", field)
}
