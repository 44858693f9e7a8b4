package fakeengine

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Each attack serves what it says, so the soak test exercises what it claims to.
func TestHostilePages(t *testing.T) {
	fetch := func(h http.Handler, limit int64) (int, []byte) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		// Only bounds a hang: pages of up to 8 MiB are read twice per attack, slowly on a starved machine.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
		if err != nil {
			t.Fatalf("reading the page: %v", err)
		}
		return resp.StatusCode, body
	}
	eng := New(Config{})
	eng.SetLoad(Load{PromptTokensPerSec: 1000, OutputTokensPerSec: 100})
	eng.Advance(5 * time.Second)
	check := map[Attack]func(code int, pages [][]byte) bool{
		EndlessBody: func(_ int, p [][]byte) bool { return len(p[0]) == 8<<20 },
		HugeLabels:  func(_ int, p [][]byte) bool { return len(p[0]) > 1<<20 && !bytes.Equal(p[0], p[1]) },
		BadFloat:    func(_ int, p [][]byte) bool { return bytes.Contains(p[0], []byte(" 1.1.1.1")) && len(p[0]) > 4<<20 },
		ManySeries:  func(_ int, p [][]byte) bool { return bytes.Count(p[0], []byte("shard=")) == 60000 },
		CounterHuge: func(_ int, p [][]byte) bool {
			return bytes.Contains(p[0], []byte("prompt_tokens_total{")) && bytes.Count(p[0], []byte("} 1e308\n")) >= 2
		},
		TypeFlip: func(_ int, p [][]byte) bool {
			return bytes.Contains(p[0], []byte("vllm:")) != bytes.Contains(p[1], []byte("vllm:"))
		},
		Redirect:  func(code int, _ [][]byte) bool { return code == http.StatusFound },
		Duplicate: func(_ int, p [][]byte) bool { return hasDuplicateLine(p[0]) },
		Garbage:   func(_ int, p [][]byte) bool { return bytes.HasPrefix(p[0], []byte("<html>")) },
	}
	for attack, ok := range check {
		h := Hostile(eng, attack)
		var pages [][]byte
		var code int
		for range 2 {
			var p []byte
			code, p = fetch(h, 8<<20)
			pages = append(pages, p)
		}
		if !ok(code, pages) {
			t.Errorf("%s: status %d, first page %d bytes: %.200q", attack, code, len(pages[0]), pages[0])
		}
	}
	// Glitch and queue attacks spoil one scrape in ten, at the third.
	for _, attack := range []Attack{Glitch, QueueHuge} {
		h := Hostile(eng, attack)
		var spoiled []int
		for i := 1; i <= 10; i++ {
			_, p := fetch(h, 1<<20)
			if bytes.Contains(p, []byte("e+12\n")) || bytes.Contains(p, []byte(" 1e308\n")) {
				spoiled = append(spoiled, i)
			}
		}
		if len(spoiled) != 1 || spoiled[0] != 3 {
			t.Errorf("%s: spoiled scrapes %v, want [3]", attack, spoiled)
		}
	}
}

func hasDuplicateLine(page []byte) bool {
	seen := map[string]bool{}
	for _, l := range strings.Split(string(page), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		if seen[l] {
			return true
		}
		seen[l] = true
	}
	return false
}
