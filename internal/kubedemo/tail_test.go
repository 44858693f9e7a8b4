package kubedemo

import (
	"strings"
	"testing"
)

// A failed control-plane build shows the end of its output, however long the build wrote.
func TestTailBufferKeepsTheEnd(t *testing.T) {
	var b tailBuffer
	for i := 0; i < 1000; i++ {
		if _, err := b.Write([]byte(strings.Repeat("x", 99) + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = b.Write([]byte("go: downloading failed: no space left on device\n"))
	if s := b.String(); len(s) > 4096 || !strings.HasSuffix(s, "no space left on device\n") {
		t.Errorf("kept %d bytes ending %q, want at most 4096 ending with the last line", len(s), s[max(0, len(s)-60):])
	}
}
