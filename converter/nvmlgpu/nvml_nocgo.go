//go:build !cgo

package nvmlgpu

import (
	"errors"

	"github.com/tokenscale/tokenscale/converter"
)

// errNoCgo is what every reader call answers in a build without cgo.
var errNoCgo = errors.New("NVML is unavailable: this binary was built with CGO_ENABLED=0 (the converter needs cgo for go-nvml)")

// Reader is unavailable without cgo.
type Reader struct{}

// Open fails without cgo.
func Open() (*Reader, error) { return nil, errNoCgo }

// Close does nothing.
func (r *Reader) Close() error { return nil }

// Driver fails without cgo.
func (r *Reader) Driver() (driver, nvmlVersion string, err error) { return "", "", errNoCgo }

// All fails without cgo.
func (r *Reader) All() ([]converter.GPUReading, error) { return nil, errNoCgo }

// Read fails without cgo.
func (r *Reader) Read([]string) ([]converter.GPUReading, error) { return nil, errNoCgo }
