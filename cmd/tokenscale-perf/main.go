// Command tokenscale-perf measures what the scraping side of tokenscale costs, repeatably (see
// internal/perfharness): `scrape` runs the adapter's scraper and store against fake engines served by a
// child process (`engines`), `memory` measures the store's retained heap per pod.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tokenscale/tokenscale/internal/perfharness"
	"github.com/tokenscale/tokenscale/internal/version"
)

func main() {
	if version.Requested(os.Args[1:]) {
		version.Print(os.Stdout, "tokenscale-perf")
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tokenscale-perf scrape|memory [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "scrape":
		err = perfharness.Scrape(ctx, os.Args[2:])
	case "memory":
		err = perfharness.Memory(os.Args[2:])
	case "engines":
		err = perfharness.Engines(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenscale-perf:", err)
		os.Exit(1)
	}
}
