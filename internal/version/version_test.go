package version

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"
)

func TestGetPrefersLinkerValues(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.9"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.time", Value: "2026-01-01T00:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	got := get("v0.1.0", "0123456", "2026-11-30T00:00:00Z", bi)
	want := Info{Version: "v0.1.0", Commit: "0123456", BuildDate: "2026-11-30T00:00:00Z", GoVersion: "go1.26.8"}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestGetFallsBackToBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.time", Value: "2026-01-01T00:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	got := get("", "", "", bi)
	want := Info{Version: "dev", Commit: "abc-dirty", BuildDate: "2026-01-01T00:00:00Z", GoVersion: "go1.26.8"}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// `go install module@v1.2.3` records the module version.
	if got := get("", "", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}); got.Version != "v1.2.3" || got.Commit != "unknown" || got.BuildDate != "unknown" {
		t.Errorf("go install build: %+v", got)
	}
}

func TestGetDefaults(t *testing.T) {
	got := get("", "", "", nil)
	if got.Version != "dev" || got.Commit != "unknown" || got.BuildDate != "unknown" || got.GoVersion == "" {
		t.Errorf("got %+v", got)
	}
}

func TestPrint(t *testing.T) {
	var b bytes.Buffer
	Print(&b, "tokenscale-adapter")
	if s := b.String(); !strings.HasPrefix(s, "tokenscale-adapter ") || !strings.Contains(s, "(commit ") || !strings.HasSuffix(s, ")\n") {
		t.Errorf("Print wrote %q", s)
	}
}

func TestRequested(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"version"}, true},
		{[]string{"--version"}, true},
		{[]string{"-version"}, true},
		{[]string{"--v=2", "--version"}, true},
		{[]string{"inspect", "version"}, false},
		{[]string{"inspect", "--", "--version"}, false},
		{[]string{"controller", "--config", "x"}, false},
	} {
		if got := Requested(c.args); got != c.want {
			t.Errorf("Requested(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}
