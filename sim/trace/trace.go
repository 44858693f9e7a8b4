// Package trace reads production LLM request traces for the demo and the simulator.
package trace

import (
	_ "embed"
	"fmt"
	"io"
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

//go:embed azure2023_conv.csv
var azureConv string

//go:embed mooncake_synthetic.jsonl
var mooncakeSynthetic string

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

const azureLayout = "2006-01-02 15:04:05.9999999"

// ParseAzure reads the Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens). Errors
// name the file and line; timestamps must not go backwards.
func ParseAzure(r io.Reader, name string) ([]Request, error) {
	t, err := Read(r, name, Options{Format: Azure})
	if err != nil {
		return nil, err
	}
	return t.Requests, nil
}
