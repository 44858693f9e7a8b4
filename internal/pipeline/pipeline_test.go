package pipeline

import (
	"strings"
	"testing"
	"time"
)

// --config-reload is 0 (never) or at least a second: each check re-reads the file, and a bad file is
// parsed and logged at every check, so a millisecond period would spin.
func TestValidateConfigReload(t *testing.T) {
	for _, tc := range []struct {
		every time.Duration
		want  string
	}{
		{0, ""},
		{time.Second, ""},
		{10 * time.Second, ""},
		{time.Millisecond, "--config-reload 1ms: want 0 (never) or at least 1s"},
		{999 * time.Millisecond, "--config-reload 999ms: want 0 (never) or at least 1s"},
		{-time.Second, "--config-reload -1s: want 0 (never) or at least 1s"},
	} {
		var got string
		for _, err := range (&Options{ConfigReload: tc.every}).Validate() {
			got += err.Error()
		}
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("--config-reload %s: errors %q, want %q", tc.every, got, tc.want)
		}
	}
}
