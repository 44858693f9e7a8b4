// Package procstat reads a process's CPU time from Linux's /proc, for the harnesses that report what
// each process of a measurement used.
package procstat

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of /proc/<pid>/stat's times: 100 on every Linux architecture Go supports.
const userHZ = 100

// Parse reads a /proc/<pid>/stat line: the process's command name and its user + system CPU time.
func Parse(stat []byte) (comm string, cpu time.Duration, err error) {
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
	s := string(stat)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return "", 0, fmt.Errorf("stat line without a (comm): %.40q", s)
	}
	f := strings.Fields(s[closing+1:])
	if len(f) < 13 {
		return "", 0, fmt.Errorf("stat line with %d fields after comm, want at least 13", len(f))
	}
	u, err := strconv.ParseUint(f[11], 10, 64) // utime, field 14
	if err != nil {
		return "", 0, fmt.Errorf("utime: %w", err)
	}
	k, err := strconv.ParseUint(f[12], 10, 64) // stime, field 15
	if err != nil {
		return "", 0, fmt.Errorf("stime: %w", err)
	}
	ticks := u + k
	if ticks < u || ticks > math.MaxInt64/uint64(time.Second) {
		return "", 0, fmt.Errorf("CPU ticks %d + %d out of range", u, k)
	}
	return s[open+1 : closing], time.Duration(ticks) * time.Second / userHZ, nil
}

// CPU is the user + system CPU time process pid has used so far.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	_, cpu, err := Parse(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return cpu, nil
}
