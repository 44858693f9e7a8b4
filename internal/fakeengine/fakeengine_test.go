package fakeengine

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var update = flag.Bool("update", false, "rewrite velocity/engine/testdata/synthetic-*.txt")

// Every flavor's page must be valid exposition text (by expfmt, the reference parser), and counters must
// grow under load. With -update the pages are written as the extractor's synthetic test pages.
func TestPagesAreValidAndMove(t *testing.T) {
	for _, fl := range Flavors {
		e := New(Config{Flavor: fl, Engines: 2, TPRanks: 2})
		e.SetLoad(Load{PromptTokensPerSec: 12000, OutputTokensPerSec: 2000})
		var before bytes.Buffer
		e.WriteMetrics(&before)
		for i := 0; i < 60; i++ {
			e.Advance(time.Second)
		}
		var page bytes.Buffer
		e.WriteMetrics(&page)
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(bytes.NewReader(page.Bytes()))
		if err != nil {
			t.Fatalf("%s: expfmt rejects the page: %v", fl, err)
		}
		if len(fams) < 8 {
			t.Errorf("%s: only %d families", fl, len(fams))
		}
		if bytes.Equal(before.Bytes(), page.Bytes()) {
			t.Errorf("%s: page did not change under load", fl)
		}
		if *update {
			path := filepath.Join("..", "..", "velocity", "engine", "testdata", "synthetic-"+string(fl)+".txt")
			if err := os.WriteFile(path, page.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// BenchmarkWriteMetrics is a fake engine's cost per page, which the e2e serving and scrape measurements
// pay on the same machine as the adapter (docs/performance.md).
func BenchmarkWriteMetrics(b *testing.B) {
	for _, fl := range []Flavor{VLLMV1, SGLang} {
		b.Run(string(fl), func(b *testing.B) {
			e := New(Config{Flavor: fl})
			e.SetLoad(Load{PromptTokensPerSec: 12000, OutputTokensPerSec: 2000})
			e.Advance(time.Second)
			var page bytes.Buffer
			b.ReportAllocs()
			for b.Loop() {
				page.Reset()
				e.WriteMetrics(&page)
			}
			b.ReportMetric(float64(page.Len()), "bytes")
		})
	}
}
