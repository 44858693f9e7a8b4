package trace

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// BenchmarkReadWindow reads a 40-minute window of a long Azure CSV (1,000,000 rows at 28 requests/s,
// about 10 h, the 2024 release's code rate) against reading it whole: the window is cut while reading and
// reading stops at its end, so its time and allocation follow the window, not the file.
// go test ./sim/trace -run '^$' -bench ReadWindow -benchmem
func BenchmarkReadWindow(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString("TIMESTAMP,ContextTokens,GeneratedTokens\n")
	t0 := time.Date(2024, 5, 10, 0, 0, 0, 0, time.UTC)
	for i := range 1_000_000 {
		at := t0.Add(time.Duration(i) * time.Second / 28)
		fmt.Fprintf(&buf, "%s,%d,%d\n", at.Format("2006-01-02 15:04:05.000000-07:00"), 100+i%4000, 1+i%300)
	}
	data := buf.Bytes()
	for _, c := range []struct {
		name string
		o    Options
	}{{"whole", Options{Format: Azure}}, {"40min", Options{Format: Azure, Start: time.Hour, Duration: 40 * time.Minute}}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Read(bytes.NewReader(data), "bench.csv", c.o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseServeGenDataset parses one client's chunk-<n>-dataset.json shaped like the release's
// larger ones (56 six-hour windows, 1,500 input and 1,500 output values each, 4.8 MB), whole and cut to
// a 3-day window: only the cut's windows are turned into distributions.
// go test ./sim/trace -run '^$' -bench ParseServeGenDataset -benchmem
func BenchmarkParseServeGenDataset(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString("{")
	for w := range 56 {
		if w > 0 {
			buf.WriteString(",")
		}
		fmt.Fprintf(&buf, "%q: {", fmt.Sprint(w*21600))
		for j, f := range []string{"input_tokens", "output_tokens"} {
			if j > 0 {
				buf.WriteString(", ")
			}
			var d bytes.Buffer
			d.WriteString("{")
			for v := range 1500 {
				if v > 0 {
					d.WriteString(", ")
				}
				fmt.Fprintf(&d, "%d: %v", 20+v*3, 1.0/1500)
			}
			d.WriteString("}")
			fmt.Fprintf(&buf, "%q: %q", f, d.String())
		}
		buf.WriteString("}")
	}
	buf.WriteString("}")
	data := buf.Bytes()
	b.Logf("%.1f MB", float64(len(data))/1e6)
	for _, c := range []struct {
		name     string
		from, to float64
	}{{"whole", 0, 0}, {"3days", 7 * 86400, 10 * 86400}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseServeGenDataset(bytes.NewReader(data), "bench.json", c.from, c.to); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
