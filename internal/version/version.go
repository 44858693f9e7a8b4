// Package version says which build of tokenscale is running. The release build sets Version, Commit and
// BuildDate with -ldflags -X (see the Makefile's LDFLAGS); a plain `go build` or `go run` falls back to
// what the Go toolchain recorded (the module version and the VCS revision, when it had them).
package version

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set by the linker: -X github.com/tokenscale/tokenscale/internal/version.Version=v0.1.0 and so on.
var (
	Version   = ""
	Commit    = ""
	BuildDate = ""
)

// Info is one build's identity.
type Info struct {
	Version   string // a tag such as v0.1.0, or "dev"
	Commit    string // the git revision, or "unknown"
	BuildDate string // RFC 3339, or "unknown"
	GoVersion string
}

// Get returns this binary's Info: the linker's values where set, else the build info's, else the defaults.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return get(Version, Commit, BuildDate, bi)
}

func get(v, commit, date string, bi *debug.BuildInfo) Info {
	i := Info{Version: v, Commit: commit, BuildDate: date, GoVersion: runtime.Version()}
	if bi != nil {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Commit == "" {
					i.Commit = s.Value
				}
			case "vcs.time":
				if i.BuildDate == "" {
					i.BuildDate = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && commit == "" && i.Commit != "" {
			i.Commit += "-dirty"
		}
		if bi.GoVersion != "" {
			i.GoVersion = bi.GoVersion
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	if i.BuildDate == "" {
		i.BuildDate = "unknown"
	}
	return i
}

// String is the one line `--version` prints, without the program's name.
func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, built %s, %s)", i.Version, i.Commit, i.BuildDate, i.GoVersion)
}

// Print writes "<program> <version> (commit ..., built ..., go...)" to w.
func Print(w io.Writer, program string) {
	fmt.Fprintf(w, "%s %s\n", program, Get())
}

// Requested reports whether args (os.Args[1:]) ask for the version: a first argument "version", or a
// --version (or -version) flag anywhere before a "--". Each command checks it before parsing anything else.
func Requested(args []string) bool {
	if len(args) > 0 && args[0] == "version" {
		return true
	}
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--version", "-version":
			return true
		}
	}
	return false
}
