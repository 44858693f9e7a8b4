// Package trace reads production LLM request traces for the demo and the simulator.
package trace

import (
	"cmp"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"
)

// Request is one request of a trace.
type Request struct {
	Arrival      time.Duration // since the first request
	PromptTokens int
	OutputTokens int
	// Blocks are the hashes of the prompt's 512-token blocks from its start (Mooncake's hash_ids), when
	// the trace gives them: requests sharing a leading block share that prefix.
	Blocks []uint64
}

// BlockTokens is the prompt tokens per hashed block (Mooncake's hash_ids).
const BlockTokens = 512

//go:embed azure2023_code.csv
var azureCode string

// CheckSkip refuses a replay start that leaves no request of reqs to replay, naming the span they cover:
// the demos otherwise started everything and stopped at once with nothing shown.
func CheckSkip(reqs []Request, skip time.Duration) error {
	if len(reqs) == 0 {
		return errors.New("the trace has no requests")
	}
	if end := reqs[len(reqs)-1].Arrival; skip < 0 || skip >= end {
		return fmt.Errorf("--skip %s: the trace's requests arrive between 0s and %s", skip, end.Round(time.Second))
	}
	return nil
}

// AzureCode returns the embedded Azure LLM inference 2023 code trace (CC-BY 4.0; see README.md).
func AzureCode() ([]Request, error) {
	return ParseAzure(strings.NewReader(azureCode), "azure2023_code.csv")
}

//go:embed azure2023_conv.csv
var azureConv string

//go:embed mooncake_synthetic.jsonl
var mooncakeSynthetic string

// servegenMLarge holds days 8, 9 and 10 of ServeGen's language/m-large model folder (see README.md).
//
//go:embed servegen_m-large
var servegenMLarge embed.FS

// EmbeddedServeGen synthesises requests from the embedded three days of ServeGen's language/m-large
// production load (Apache-2.0; see README.md), token lengths drawn from lengths, read with o.
func EmbeddedServeGen(lengths []Request, o Options) (*Trace, error) {
	sub, err := fs.Sub(servegenMLarge, "servegen_m-large")
	if err != nil {
		return nil, err
	}
	return readServeGen(sub, "servegen_m-large", lengths, o)
}

// Embedded returns an embedded trace by name, read with o (its Format is set): the Azure LLM inference
// 2023 "code" and "conv" traces (CC-BY 4.0) and Mooncake's "mooncake" synthetic trace (Apache-2.0); see
// README.md.
func Embedded(name string, o Options) (*Trace, error) {
	o.Format = Azure
	switch name {
	case "code":
		return Read(strings.NewReader(azureCode), "azure2023_code.csv", o)
	case "conv":
		return Read(strings.NewReader(azureConv), "azure2023_conv.csv", o)
	case "mooncake":
		o.Format = Mooncake
		return Read(strings.NewReader(mooncakeSynthetic), "mooncake_synthetic.jsonl", o)
	}
	return nil, fmt.Errorf("no embedded trace %q: embedded traces are code, conv and mooncake", name)
}

// The 2023 release writes times without a zone (UTC); the 2024 release (AzureLLMInferenceTrace_*_1week.csv)
// appends the offset, as in 2024-05-10 00:00:00.009930+00:00, and leaves the fraction out on whole seconds.
const (
	azureLayout     = "2006-01-02 15:04:05.9999999"
	azureZoneLayout = "2006-01-02 15:04:05.9999999Z07:00"
)

// parseAzureTime reads a TIMESTAMP of either release: a zone, if any, follows the seconds.
func parseAzureTime(s string) (time.Time, error) {
	const seconds = len("2006-01-02 15:04:05")
	if len(s) > seconds && strings.ContainsAny(s[seconds:], "+-Z") {
		return time.Parse(azureZoneLayout, s)
	}
	return time.Parse(azureLayout, s)
}

// ParseAzure reads the Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens). Errors
// name the file and line; timestamps must not go backwards.
func ParseAzure(r io.Reader, name string) ([]Request, error) {
	t, err := Read(r, name, Options{Format: Azure})
	if err != nil {
		return nil, err
	}
	return t.Requests, nil
}

// byArrival orders requests by arrival time (slices.SortStableFunc keeps equal arrivals in order).
func byArrival(a, b Request) int { return cmp.Compare(a.Arrival, b.Arrival) }
