package procstat

import (
	"os"
	"testing"
)

func TestParseStatusKiB(t *testing.T) {
	status := []byte("Name:\tx\nVmPeak:\t  2000 kB\nVmHWM:\t    1536 kB\nVmRSS:\t 1024 kB\n")
	if got, err := parseStatusKiB(status, "VmHWM:"); err != nil || got != 1536<<10 {
		t.Errorf("VmHWM: %d, %v; want %d", got, err, 1536<<10)
	}
	for _, bad := range []string{"VmHWM:\t12 MB\n", "VmHWM:\t-5 kB\n", "VmHWM:\n", "Name: x\n"} {
		if _, err := parseStatusKiB([]byte(bad), "VmHWM:"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPeakRSSOfThisProcess(t *testing.T) {
	rss, err := PeakRSS(os.Getpid())
	if err != nil {
		t.Skipf("no /proc/<pid>/status here (Linux only): %v", err)
	}
	// A running Go test binary holds more than 1 MiB and less than 64 GiB resident.
	if rss < 1<<20 || rss > 64<<30 {
		t.Errorf("peak RSS %d bytes", rss)
	}
}
