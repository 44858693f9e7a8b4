package engine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// MaxInspectPage bounds a page the inspectors read: four times scrape.maxBodyBytes' default.
const MaxInspectPage = 16 << 20

// ErrPageTooLarge is a page past MaxInspectPage, which inspect does not read.
var ErrPageTooLarge = errors.New("not a metrics page inspect reads")

// ReadPageUpTo reads a page for the inspectors whole, or fails naming src when it holds more than limit
// bytes (at least 1): a cut page would be reported as if it were all there.
func ReadPageUpTo(r io.Reader, src string, limit int64) ([]byte, error) {
	limit = max(limit, 1)
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", src, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", src, limit, ErrPageTooLarge)
	}
	return b, nil
}

// ReadPageFile reads a page of at most MaxInspectPage bytes from a file, or from stdin for "-": what the
// inspectors read when not given a URL.
func ReadPageFile(src string) ([]byte, error) { return ReadPageFileUpTo(src, MaxInspectPage) }

// ReadPageFileUpTo is ReadPageFile with a limit of its own (ReadPageUpTo).
func ReadPageFileUpTo(src string, limit int64) ([]byte, error) {
	if src == "-" {
		return ReadPageUpTo(os.Stdin, "stdin", limit)
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadPageUpTo(f, src, limit)
}

// Report writes a human-readable account of a page: the engine detected, which catalog fields were
// found under which names, what is missing and why that matters. It is what `tokenscale inspect`
// prints; the returned error is non-nil when the page cannot give token velocity.
func Report(w io.Writer, page []byte, kind Kind) error {
	return ReportBefore(w, page, kind, time.Time{})
}

// ReportBefore is Report that parses the page within deadline (zero: none), as the adapter's scrape
// parses it within its scrape.timeout: a page too slow to parse fails there, so it fails here too.
func ReportBefore(w io.Writer, page []byte, kind Kind, deadline time.Time) error {
	snap, err := ExtractBytesBefore(page, kind, deadline)
	if err != nil {
		fmt.Fprintf(w, "error: %v\n", err)
		if errors.Is(err, ErrParseTimeout) {
			fmt.Fprintln(w, "hint: the adapter parses a page within its scrape.timeout, counted from the start of the scrape; this one")
			fmt.Fprintln(w, "      did not parse in time, so its scrapes fail too (a longer --timeout reads it anyway)")
		}
		if errors.Is(err, ErrUnknownEngine) {
			fmt.Fprintln(w, "hint: vLLM names start with \"vllm:\", SGLang with \"sglang:\" (start SGLang with --enable-metrics),")
			fmt.Fprintln(w, "      TensorRT-LLM with \"trtllm_\". Is this the engine's port (vLLM 8000, SGLang 30000) and path /metrics?")
		}
		return err
	}
	how := "detected from metric names"
	if kind != Auto {
		how = "forced"
	}
	fmt.Fprintf(w, "engine: %s (%s)\n", snap.Engine, how)
	if snap.EngineRole != "" {
		fmt.Fprintf(w, "engine role (engine_type label): %s\n", snap.EngineRole)
	}
	fmt.Fprintln(w, "\nfound:")
	for _, f := range Fields() {
		src, ok := snap.Found(f)
		if !ok {
			continue
		}
		note := ""
		for _, a := range Specs[f].Aliases[snap.Engine] {
			if a.String() == src {
				note = a.Note
			}
		}
		val := ""
		if s, ok := snap.Scalar(f); ok {
			val = fmt.Sprintf("= %g", s.Value)
		} else if h, ok := snap.Hist(f); ok {
			val = fmt.Sprintf("count %g", h.Count)
		}
		fmt.Fprintf(w, "  %-22s %s %s  [%s]\n", f, src, val, note)
	}
	var missing []string
	for _, f := range Fields() {
		if _, ok := snap.Found(f); ok {
			continue
		}
		aliases := Specs[f].Aliases[snap.Engine]
		if len(aliases) == 0 {
			continue // not exposed by this engine at all
		}
		names := make([]string, len(aliases))
		for i, a := range aliases {
			names[i] = a.String()
		}
		req := "optional"
		if Specs[f].Required {
			req = "REQUIRED"
		}
		missing = append(missing, fmt.Sprintf("  %-22s %s; looked for %s\n  %-22s why it matters: %s\n", f, req, strings.Join(names, " or "), "", Specs[f].Why))
	}
	if len(missing) > 0 {
		fmt.Fprintln(w, "\nmissing:")
		for _, m := range missing {
			fmt.Fprint(w, m)
		}
	}
	if len(snap.Problems) > 0 {
		fmt.Fprintln(w, "\nproblems:")
		for _, p := range snap.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	if err := snap.Err(); err != nil {
		fmt.Fprintf(w, "\nverdict: token velocity is UNKNOWN for this pod: %v\n", err)
		return err
	}
	fmt.Fprintln(w, "\nverdict: token velocity can be computed for this pod.")
	return nil
}
