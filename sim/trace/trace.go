// Package trace reads production LLM request traces for the demo and the simulator.
package trace

import (
	_ "embed"
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
