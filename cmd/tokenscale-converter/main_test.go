package main

import (
	"bytes"
	"strings"
	"testing"
)

// --help answers with the commands on stdout and exit 0; no command or an unknown one is an error that
// shows the same usage; a command runs.
func TestPreamble(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		exit           int
		done           bool
		stdout, stderr string // substrings wanted; "" wants nothing written
	}{
		{[]string{"--help"}, 0, true, "controller  one per cluster", ""},
		{[]string{"-h"}, 0, true, "gpus", ""},
		{nil, 2, true, "", "usage: tokenscale-converter COMMAND"},
		{[]string{"contoller"}, 2, true, "", `unknown command "contoller"`},
		{[]string{"agent", "--help"}, 0, false, "", ""},
	} {
		var out, errOut bytes.Buffer
		exit, done := preamble(tc.args, &out, &errOut)
		if exit != tc.exit || done != tc.done {
			t.Errorf("%q: exit %d done %v, want %d %v", tc.args, exit, done, tc.exit, tc.done)
		}
		for _, c := range []struct {
			got  string
			want string
		}{{out.String(), tc.stdout}, {errOut.String(), tc.stderr}} {
			if (c.want == "") != (c.got == "") || !strings.Contains(c.got, c.want) {
				t.Errorf("%q: wrote %q, want %q", tc.args, c.got, c.want)
			}
		}
	}
}
