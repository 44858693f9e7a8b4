package trace

import (
	"testing"
	"time"
)

func count(reqs []Request, from, to time.Duration) int {
	n := 0
	for _, r := range reqs {
		if r.Arrival >= from && r.Arrival < to {
			n++
		}
	}
	return n
}

// Mixed holds all of code and conv thinned to code's count, in time order, the same for the same seed.
func TestMixed(t *testing.T) {
	code, _ := Embedded("code", Options{})
	conv, _ := Embedded("conv", Options{})
	m, err := Mixed(Options{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	n, c := len(m.Requests), len(code.Requests)
	// The thinned conv share is binomial(19,366, 8,819/19,366): within 3% of code's count.
	if n < 2*c-c*3/100 || n > 2*c+c*3/100 {
		t.Errorf("%d requests, want about 2 × %d (code's count twice)", n, c)
	}
	for i := 1; i < n; i++ {
		if m.Requests[i].Arrival < m.Requests[i-1].Arrival {
			t.Fatalf("request %d arrives before %d", i, i-1)
		}
	}
	again, _ := Mixed(Options{Seed: 1})
	other, _ := Mixed(Options{Seed: 2})
	if len(again.Requests) != n || len(other.Requests) == n && same(other.Requests[n/2], m.Requests[n/2]) {
		t.Errorf("seeded choice: same seed %d vs %d requests; another seed gave the same trace", len(again.Requests), n)
	}
	if len(conv.Requests) <= c {
		t.Fatal("conv should be the larger trace")
	}
	w, err := Mixed(Options{Seed: 1, Start: 10 * time.Minute, Duration: 5 * time.Minute})
	if err != nil || len(w.Requests) != count(m.Requests, 10*time.Minute, 15*time.Minute) {
		t.Errorf("windowed mixed: %v, %d requests", err, len(w.Requests))
	}
}

// Burst multiplies conv's request count by BurstFactor inside the spike and changes nothing outside it.
func TestBurst(t *testing.T) {
	conv, _ := Embedded("conv", Options{})
	b, err := Burst(Options{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	in := count(conv.Requests, BurstStart, BurstStart+BurstLength)
	if got := count(b.Requests, BurstStart, BurstStart+BurstLength); got != BurstFactor*in {
		t.Errorf("%d requests in the spike, want %d × %d", got, BurstFactor, in)
	}
	if a, z := count(b.Requests, 0, BurstStart), count(conv.Requests, 0, BurstStart); a != z {
		t.Errorf("%d requests before the spike, conv has %d", a, z)
	}
	if a, z := count(b.Requests, BurstStart+BurstLength, 24*time.Hour), count(conv.Requests, BurstStart+BurstLength, 24*time.Hour); a != z {
		t.Errorf("%d requests after the spike, conv has %d", a, z)
	}
	// The surge is spread over the spike, not piled on its first instant: each 10 s third holds a share.
	third := BurstLength / 3
	for k := range 3 {
		from := BurstStart + time.Duration(k)*third
		if got := count(b.Requests, from, from+third); got < BurstFactor*in/6 {
			t.Errorf("third %d of the spike holds %d of %d requests", k, got, BurstFactor*in)
		}
	}
}

// The embedded Mooncake synthetic trace is the release's file: 3,993 requests over about 17 minutes.
func TestEmbeddedMooncake(t *testing.T) {
	m, err := Embedded("mooncake", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(m.Requests); n != 3993 {
		t.Errorf("%d requests, want 3993", n)
	}
	last := m.Requests[len(m.Requests)-1].Arrival
	if last < 16*time.Minute || last > 18*time.Minute {
		t.Errorf("last arrival %s, want about 17 minutes", last)
	}
}
