// Package docs holds the checks that keep the project's Markdown honest about itself.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// linkRE finds inline Markdown links' targets: [text](target).
var linkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// headingRE finds ATX headings.
var headingRE = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)

// inlineLinkRE keeps a heading's link text, as GitHub does when it makes the anchor.
var inlineLinkRE = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)

// Every relative link in the project's Markdown names a file that exists and, where it names a heading
// of a Markdown file, a heading that file has: a page moved or a section renamed otherwise leaves readers
// on a dead link, and nothing else would notice.
func TestRelativeLinksResolve(t *testing.T) {
	root := ".."
	files := markdownFiles(t, root)
	if len(files) < 5 {
		t.Fatalf("found %d Markdown files under the repository root, want the README and docs at least", len(files))
	}
	anchors := map[string]map[string]bool{}
	checked := 0
	for _, f := range files {
		for _, target := range links(t, f) {
			if strings.Contains(target, ":") && !strings.HasPrefix(target, "#") {
				continue // a URL (https:, mailto:), not a file of this repository
			}
			checked++
			path, frag, _ := strings.Cut(target, "#")
			dest := f
			if path != "" {
				dest = filepath.Join(filepath.Dir(f), filepath.FromSlash(path))
			}
			if _, err := os.Stat(dest); err != nil {
				t.Errorf("%s: link %q: %v", f, target, err)
				continue
			}
			if frag == "" || !strings.HasSuffix(dest, ".md") {
				continue
			}
			a, ok := anchors[dest]
			if !ok {
				a = headingAnchors(t, dest)
				anchors[dest] = a
			}
			if !a[frag] {
				t.Errorf("%s: link %q: %s has no heading with that anchor", f, target, dest)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked %d relative links, want the docs' cross-references (20 or more)", checked)
	}
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{
		"Where tokenscale loses, and why":                      "where-tokenscale-loses-and-why",
		"Llama-3.1-8B on H100, traces at 4× (`make sim`)":      "llama-31-8b-on-h100-traces-at-4-make-sim",
		"Mooncake's conversation trace":                        "mooncakes-conversation-trace",
		"policy (`velocity/policy/controller.go`)":             "policy-velocitypolicycontrollergo",
		"2026-12-05: BlitzScale-like Ready in 1 s":             "2026-12-05-blitzscale-like-ready-in-1-s",
		"Detection lag against Prometheus, prometheus-adapter": "detection-lag-against-prometheus-prometheus-adapter",
		"[The referee](#the-referee) and snake_case":           "the-referee-and-snake_case",
	} {
		if got := slug(in); got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
	}
}

// markdownFiles lists the repository's Markdown files, leaving out build output, test data and hidden
// directories (.git, caches).
func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if p != root && (strings.HasPrefix(name, ".") || name == "_output" || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, ".md") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// prose returns a Markdown file's lines outside fenced code blocks, where links and headings live.
func prose(t *testing.T, f string) []string {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fenced := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			out = append(out, l)
		}
	}
	return out
}

// links returns the targets of a file's inline links, code spans left out.
func links(t *testing.T, f string) []string {
	var out []string
	for _, l := range prose(t, f) {
		for _, m := range linkRE.FindAllStringSubmatch(stripCodeSpans(l), -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// stripCodeSpans drops `code` spans, whose brackets are not links.
func stripCodeSpans(l string) string {
	parts := strings.Split(l, "`")
	var b strings.Builder
	for i, p := range parts {
		if i%2 == 0 {
			b.WriteString(p)
		}
	}
	return b.String()
}

// headingAnchors returns the anchors GitHub gives a file's headings, a repeated one numbered -1, -2, ...
func headingAnchors(t *testing.T, f string) map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	for _, l := range prose(t, f) {
		m := headingRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		s := slug(m[1])
		n := seen[s]
		seen[s] = n + 1
		if n > 0 {
			s += "-" + strconv.Itoa(n)
		}
		out[s] = true
	}
	return out
}

// slug is GitHub's heading anchor: link text kept, lower case, letters, digits, '-' and '_' kept, spaces
// turned into '-', everything else dropped.
func slug(h string) string {
	h = inlineLinkRE.ReplaceAllString(h, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
