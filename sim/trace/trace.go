// Package trace reads production LLM request traces for the demo and the simulator.
package trace

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Request is one request of a trace.
type Request struct {
	Arrival      time.Duration // since the first request
	PromptTokens int
	OutputTokens int
}

//go:embed azure2023_code.csv
var azureCode string

// AzureCode returns the embedded Azure LLM inference 2023 code trace (CC-BY 4.0; see README.md).
func AzureCode() ([]Request, error) {
	return ParseAzure(strings.NewReader(azureCode), "azure2023_code.csv")
}

const azureLayout = "2006-01-02 15:04:05.9999999"

// ParseAzure reads the Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens). Errors
// name the file and line; timestamps must not go backwards.
func ParseAzure(r io.Reader, name string) ([]Request, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []Request
	var first, prev time.Time
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if line == 1 {
			if text != "TIMESTAMP,ContextTokens,GeneratedTokens" {
				return nil, fmt.Errorf("%s:1: header is %q, want TIMESTAMP,ContextTokens,GeneratedTokens", name, text)
			}
			continue
		}
		if text == "" {
			continue
		}
		f := strings.Split(text, ",")
		if len(f) != 3 {
			return nil, fmt.Errorf("%s:%d: want 3 columns, got %d", name, line, len(f))
		}
		ts, err := time.Parse(azureLayout, f[0])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: bad TIMESTAMP %q: %w", name, line, f[0], err)
		}
		in, err1 := strconv.Atoi(f[1])
		outTok, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil || in < 0 || outTok < 0 {
			return nil, fmt.Errorf("%s:%d: token counts must be non-negative integers, got %q,%q", name, line, f[1], f[2])
		}
		if first.IsZero() {
			first = ts
		} else if ts.Before(prev) {
			return nil, fmt.Errorf("%s:%d: timestamp %s is before the previous line's %s", name, line, f[0], prev.Format(azureLayout))
		}
		prev = ts
		out = append(out, Request{Arrival: ts.Sub(first), PromptTokens: in, OutputTokens: outTok})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", name, line, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no requests", name)
	}
	return out, nil
}
