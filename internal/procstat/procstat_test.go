package procstat

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	// A real line's shape, with a command name holding a space and a parenthesis.
	line := "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 12 0 100 0 0\n"
	comm, cpu, err := Parse([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if comm != "my (odd) proc" || cpu != 3250*time.Millisecond {
		t.Errorf("got %q, %s; want %q, 3.25s", comm, cpu, "my (odd) proc")
	}
	for _, bad := range []string{"", "4242 no parens S 1", "1 (x) S 1 2", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 zz 75"} {
		if _, _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q): no error", bad)
		}
	}
}

func TestCPUOfThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc/self/stat: procstat reads Linux's /proc; run `go test ./internal/procstat` on Linux")
	}
	before, err := CPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the reading moves (times are in 10 ms ticks); on a starved machine the process may
	// get no tick in any fixed wall time, so the deadline only bounds a reading that never moves.
	after := before
	for deadline := time.Now().Add(30 * time.Second); after <= before && time.Now().Before(deadline); {
		for end := time.Now().Add(20 * time.Millisecond); time.Now().Before(end); {
			_ = strings.Repeat("x", 64)
		}
		if after, err = CPU(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	if after <= before {
		t.Errorf("CPU time did not grow in 30 s of busy loops: %s then %s", before, after)
	}
	if _, err := CPU(-1); err == nil {
		t.Error("CPU(-1): no error")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("4242 (a b) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 12 0 100 0 0"))
	f.Add([]byte(")("))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, cpu, err := Parse(b)
		if err == nil && cpu < 0 {
			t.Fatalf("negative CPU time %s", cpu)
		}
	})
}
