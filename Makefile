# tokenscale Makefile. Every target runs on a fresh machine with only Go installed.

GO        ?= go
PKGS      ?= ./...
BIN       ?= _output/bin
FUZZTIME  ?= 10s
# Input minimisation is capped in executions: with the default (60 s per new input) a target that keeps
# finding inputs spent its whole run minimising, 5 to 1,404 execs in 60 s.
FUZZMINIMIZETIME ?= 100x
BENCHTIME ?= 1s
# go-nvml's cgo prolog calls functions NVML 13 marks deprecated; gcc's warnings about them are noise.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: all build test lint vet fmt-check bench fuzz e2e demo demo-no-k8s sim clean tidy-check preflight perf

all: lint test build

## build: compile every binary into $(BIN).
build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ ./cmd/...

## test: unit tests with the race detector.
test:
	$(GO) test -race -count=1 $(PKGS)

## lint: go vet, gofmt and go mod tidy checks.
lint: vet fmt-check tidy-check

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './_output/*')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

tidy-check:
	$(GO) mod tidy -diff

## bench: every benchmark, with allocation counts.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)

## fuzz: run each fuzz target for FUZZTIME (go test allows one -fuzz target per run).
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg; \
	  done; \
	done

## perf: scrape cost and store memory (docs/performance.md). PERF=full for the documented run.
PERF ?= quick
perf:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/tokenscale-perf ./cmd/tokenscale-perf
	@if [ "$(PERF)" = full ]; then \
	  $(BIN)/tokenscale-perf scrape -endpoints 2000 -duration 60s && $(BIN)/tokenscale-perf memory -pods 10000 -rounds 120; \
	else \
	  $(BIN)/tokenscale-perf scrape -endpoints 200 -duration 5s && $(BIN)/tokenscale-perf memory -pods 2000 -rounds 40; \
	fi

## e2e: end-to-end tests against a real control plane and a real KEDA (see e2e/README.md).
e2e:
	@if ls e2e/*.go >/dev/null 2>&1; then \
	  bin=$$(bash hack/build-control-plane.sh) && keda=$$(bash hack/build-keda.sh) && \
	  prom=$$(bash hack/get-prometheus.sh || true) && pa=$$(bash hack/build-prometheus-adapter.sh || true) && \
	  TOKENSCALE_K8S_BIN=$$bin TOKENSCALE_KEDA_BIN=$$keda TOKENSCALE_PROMETHEUS=$$prom TOKENSCALE_PROMETHEUS_ADAPTER=$$pa \
	  $(GO) test -count=1 -tags e2e -timeout 60m ./e2e/...; \
	else echo "e2e: no suite yet"; fi

## preflight: refuse to install where another adapter owns a metrics API (PREFLIGHT_ARGS=--external-metrics).
preflight:
	bash hack/preflight.sh $(PREFLIGHT_ARGS)

## demo: the local demo on a local control plane (see README.md); Ctrl-C stops it and everything it started.
demo:
	$(GO) run ./cmd/tokenscale-demo $(DEMO_ARGS)

## demo-no-k8s: the demo without Kubernetes (fake engines, scraper, policy; no control-plane build).
demo-no-k8s:
	$(GO) run ./cmd/tokenscale-demo --no-k8s $(DEMO_ARGS)

## sim: the trace-driven policy comparison of docs/evaluation.md (SIM_ARGS passes flags).
SIM_ARGS ?= --trace code,conv --rate-scale 4 --tuning --plots docs/img
sim:
	$(GO) run ./cmd/tokenscale-sim $(SIM_ARGS)

clean:
	rm -rf _output
