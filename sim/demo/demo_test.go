package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// The demo runs end to end on loopback (fake engines, real scraper, store and policy) and stops cleanly.
func TestDemoRuns(t *testing.T) {
	var out bytes.Buffer
	// A data row needs two full scrape rounds (about 2 s); 12 s leaves room for a starved machine.
	if err := Run(context.Background(), Options{Duration: 12 * time.Second, ColdStart: time.Second, Out: &out}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	rows := 0
	for _, line := range strings.Split(s, "\n") {
		if f := strings.Fields(line); len(f) == 10 && strings.Contains(line, "/") {
			rows++
		}
	}
	if rows < 1 || !strings.Contains(s, "demo finished") {
		t.Fatalf("want at least one data row and a clean finish, got:\n%s", s)
	}
}
