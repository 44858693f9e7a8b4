package main

import "testing"

// Every form the flag package reads as a boolean chooses the demo without Kubernetes; false ones do not.
func TestNoK8s(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"--no-k8s"}, true},
		{[]string{"-no-k8s"}, true},
		{[]string{"--speedup", "5", "--no-k8s=true"}, true},
		{[]string{"-no-k8s=1"}, true},
		{[]string{"--no-k8s=false"}, false},
		{[]string{"--no-k8s", "--no-k8s=false"}, false},
		{[]string{"--speedup", "5"}, false},
		{[]string{"--", "--no-k8s"}, false},
		{[]string{"no-k8s"}, false},
	} {
		if got := noK8s(c.args); got != c.want {
			t.Errorf("noK8s(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}
