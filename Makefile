# tokenscale Makefile. Every target runs on a fresh Linux machine with Go, a C compiler, git, make and bash (README.md, Run it).

GO        ?= go
# A path (GO=./sdk/bin/go) is made absolute: the scripts and tests that run it work in other directories.
override GO := $(if $(findstring /,$(GO)),$(abspath $(GO)),$(GO))
PKGS      ?= ./...
BIN       ?= _output/bin
FUZZTIME  ?= 20000x
# Input minimisation is capped in executions: with the default (60 s per new input) a target that keeps
# finding inputs spent its whole run minimising, 5 to 1,404 execs in 60 s.
FUZZMINIMIZETIME ?= 100x
BENCHTIME ?= 1s
# go-nvml's cgo prolog calls functions NVML 13 marks deprecated; gcc's warnings about them are noise.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: all build test lint golangci-lint vet fmt-check bench fuzz e2e demo demo-no-k8s sim clean tidy-check preflight perf images chart

all: lint test build

# The build's identity (internal/version), set with -ldflags -X. VERSION is the nearest v* tag (v0.1.0-dev
# before the first one); override any of them: make build VERSION=v0.1.0.
# Each is evaluated once per make run (simply expanded), so every binary carries the same values.
ifeq ($(origin VERSION),undefined)
VERSION    := $(shell git describe --tags --match 'v*' --dirty 2>/dev/null || echo v0.1.0-dev)
endif
ifeq ($(origin COMMIT),undefined)
COMMIT     := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet HEAD -- && echo -dirty)
endif
# BUILD_DATE is the commit's time on a clean tree, so a rebuild of one commit is the same binary (and Go's
# build cache is not defeated by a new date each run); on a dirty tree, or without git, it is now.
ifeq ($(origin BUILD_DATE),undefined)
ifneq ($(filter %-dirty unknown,$(COMMIT)),)
BUILD_DATE := $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
else
BUILD_DATE := $(shell TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ)
endif
endif
VERSION_PKG = github.com/tokenscale/tokenscale/internal/version
LDFLAGS    ?= -s -w -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Commit=$(COMMIT) -X $(VERSION_PKG).BuildDate=$(BUILD_DATE)
# Every command but the converter is pure Go: static, no cgo. The converter's agent needs cgo for go-nvml
# (it dlopens libnvidia-ml.so.1, which the NVIDIA container runtime injects), so it links glibc dynamically.
STATIC_CMDS = tokenscale tokenscale-adapter tokenscale-keda-scaler tokenscale-demo tokenscale-sim tokenscale-perf
CGO_CMDS    = tokenscale-converter
# CONVERTER_CGO=0 builds a converter without NVML (its agent then refuses every conversion): for machines without a C compiler.
CONVERTER_CGO ?= 1
# The static binaries' settings. vet, golangci-lint, the fuzz binaries, the chart test and perf run with
# them too, so they share one compiled package graph: go's cache keys a package on cgo and -trimpath, and
# on an empty cache a second graph is minutes of compiling (e2e/README.md, CI).
# Nothing is compiled with debug info (-dwarf=false): the binaries are stripped (-s -w) anyway, and
# compiling none saves about 15% of the CPU on an empty cache (e2e/README.md, CI); `make test` too.
NODWARF    = -gcflags=all=-dwarf=false
STATIC_ENV = CGO_ENABLED=0 GOFLAGS='$(strip $(GOFLAGS) -trimpath $(NODWARF))'
# With cgo on, only go-nvml needs it: netgo and osusergo keep net and os/user pure Go, as in the static
# binaries, so the converter and the e2e suite reuse their packages (84 compiled on top rather than about 800).
comma := ,
CONVERTER_TAGS = $(if $(filter 1,$(CONVERTER_CGO)),netgo$(comma)osusergo)
CONVERTER_ENV  = CGO_ENABLED=$(CONVERTER_CGO) GOFLAGS='$(strip $(GOFLAGS) -trimpath $(NODWARF) $(if $(CONVERTER_TAGS),-tags=$(CONVERTER_TAGS)))'

## build: compile every binary into $(BIN) (static except tokenscale-converter), with version ldflags.
build:
	@mkdir -p $(BIN)
	$(STATIC_ENV) $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(STATIC_CMDS))
	$(CONVERTER_ENV) $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(CGO_CMDS))

## images: the adapter, KEDA scaler and converter images, built with podman from binaries built here
## (build/<image>.Containerfile; IMAGE_REPO and IMAGE_TAG name them; hack/install-podman.sh installs podman).
IMAGE_REPO ?= ghcr.io/tokenscale
IMAGE_TAG  ?= $(VERSION)
PODMAN     ?= podman
# The converter's glibc base; CI and machines without a registry pass a locally made one (hack/make-base-image.sh).
CONVERTER_BASE ?=
images: build
	GO=$(GO) bash hack/build-images.sh "$(BIN)" "$(IMAGE_REPO)" "$(IMAGE_TAG)" "$(VERSION)" "$(COMMIT)" "$(BUILD_DATE)" "$(CONVERTER_BASE)"

## chart: helm lint and helm template of charts/tokenscale (helm built by hack/build-helm.sh), then the
## chart-versus-kustomize comparison test.
chart:
	@helm=$$(GO=$(GO) bash hack/build-helm.sh) && \
	$$helm lint --strict charts/tokenscale && \
	$$helm lint --strict charts/tokenscale --set externalMetrics.enabled=true,kedaScaler.enabled=true,converter.enabled=true,tls.mode=cert-manager && \
	mkdir -p _output/chart && $$helm template tokenscale charts/tokenscale --namespace tokenscale > _output/chart/default.yaml && \
	$$helm template tokenscale charts/tokenscale --namespace tokenscale --set externalMetrics.enabled=true,kedaScaler.enabled=true,converter.enabled=true,tls.mode=cert-manager > _output/chart/all.yaml && \
	echo "rendered into _output/chart" && \
	TOKENSCALE_HELM=$$helm $(STATIC_ENV) $(GO) test -count=1 -run Chart ./charts/

## test: unit tests with the race detector.
test:
	@cc=$$($(GO) env CC); command -v "$${cc%% *}" >/dev/null 2>&1 || { echo "make test runs with -race, which needs cgo and a C compiler ($$cc not found): apt-get install gcc libc6-dev" >&2; exit 1; }
	$(GO) test -race -count=1 $(NODWARF) $(PKGS)

## lint: go vet, gofmt, go mod tidy and golangci-lint (.golangci.yml; built pinned from the Go module proxy and cached).
lint: vet fmt-check tidy-check golangci-lint

# The cgo files (converter/nvmlgpu's NVML reader) are linted in a second run with the converter's settings.
golangci-lint:
	@bin=$$(GO=$(GO) bash hack/build-golangci-lint.sh) && export PATH="$$($(GO) env GOROOT)/bin:$$PATH" && $(STATIC_ENV) $$bin run ./... && \
	$(CONVERTER_ENV) $$bin run --build-tags '$(E2E_TAGS)' ./converter/nvmlgpu/...

vet:
	$(STATIC_ENV) $(GO) vet $(PKGS)
	$(CONVERTER_ENV) $(GO) vet ./converter/nvmlgpu/...

fmt-check:
	@out=$$("$$($(GO) env GOROOT)/bin/gofmt" -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './_output/*')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

tidy-check:
	$(GO) mod tidy -diff

## bench: every benchmark, with allocation counts.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)

## fuzz: run each fuzz target for FUZZTIME (hack/fuzz.sh: one instrumented test binary per package).
fuzz:
	@$(STATIC_ENV) GO=$(GO) bash hack/fuzz.sh $(FUZZTIME) $(FUZZMINIMIZETIME) $(PKGS)

## perf: scrape cost and store memory (docs/performance.md). PERF=full for the documented run.
PERF ?= quick
perf:
	@mkdir -p $(BIN)
	$(STATIC_ENV) $(GO) build -o $(BIN)/tokenscale-perf ./cmd/tokenscale-perf
	@if [ "$(PERF)" = full ]; then \
	  $(BIN)/tokenscale-perf scrape -endpoints 2000 -duration 60s && $(BIN)/tokenscale-perf memory -pods 10000 -rounds 120; \
	else \
	  $(BIN)/tokenscale-perf scrape -endpoints 200 -duration 5s && $(BIN)/tokenscale-perf memory -pods 2000 -rounds 40; \
	fi

## e2e: end-to-end tests against a real control plane and a real KEDA (see e2e/README.md). The adapter image
## test uses $(ADAPTER_IMAGE) when `make images` built it (or TOKENSCALE_ADAPTER_IMAGE), and skips otherwise.
## E2E_RUN selects tests by name (go test -run), e.g. make e2e E2E_RUN=TestHostileEngines; E2E_FLAGS adds
## go test flags (E2E_FLAGS=-v prints the measurements each test logs).
ADAPTER_IMAGE = $(IMAGE_REPO)/tokenscale-adapter:$(IMAGE_TAG)
# The suite runs with the converter's settings: TestConverter opens the real NVML path (cgo) in its own
# process, and the binaries the tests build (the converter, the demo, the KEDA scaler) share its packages.
# A command-line -tags replaces the one in GOFLAGS, so the converter's tags are repeated here.
E2E_TAGS = e2e$(if $(CONVERTER_TAGS),$(comma)$(CONVERTER_TAGS))
e2e:
	@if ls e2e/*.go >/dev/null 2>&1; then \
	  bin=$$(GO=$(GO) bash hack/build-control-plane.sh) && keda=$$(GO=$(GO) bash hack/build-keda.sh) && \
	  prom=$$(bash hack/get-prometheus.sh || true) && pa=$$(GO=$(GO) bash hack/build-prometheus-adapter.sh || true) && \
	  crds=$$(GO=$(GO) bash hack/get-prometheus-operator-crds.sh || true) && helm=$$(GO=$(GO) bash hack/build-helm.sh || true) && \
	  img=$${TOKENSCALE_ADAPTER_IMAGE:-$$($(PODMAN) image exists $(ADAPTER_IMAGE) 2>/dev/null && echo $(ADAPTER_IMAGE) || true)} && \
	  TOKENSCALE_K8S_BIN=$$bin TOKENSCALE_KEDA_BIN=$$keda TOKENSCALE_PROMETHEUS=$$prom TOKENSCALE_PROMETHEUS_ADAPTER=$$pa \
	  TOKENSCALE_PROMETHEUS_OPERATOR_CRDS=$$crds TOKENSCALE_HELM=$$helm TOKENSCALE_ADAPTER_IMAGE=$$img GO=$(GO) $(CONVERTER_ENV) $(GO) test -count=1 -tags '$(E2E_TAGS)' -timeout 60m $(E2E_FLAGS) $(if $(E2E_RUN),-run '$(E2E_RUN)') ./e2e/...; \
	else echo "e2e: no suite yet"; fi

## preflight: refuse to install where another adapter owns a metrics API the install would register:
## OVERLAY=manifests/overlays/NAME checks what that overlay writes; else PREFLIGHT_ARGS (--external-metrics).
preflight:
ifdef OVERLAY
	$${KUBECTL:-kubectl} kustomize $(OVERLAY) | bash hack/preflight.sh --from -
else
	bash hack/preflight.sh $(PREFLIGHT_ARGS)
endif

## demo: the local demo on a local control plane (see README.md); Ctrl-C stops it and everything it started.
demo:
	@echo "compiling the demo (a few minutes the first time)..."
	@mkdir -p _output/bin && $(GO) build -o _output/bin/tokenscale-demo ./cmd/tokenscale-demo
	GO=$(GO) exec _output/bin/tokenscale-demo $(DEMO_ARGS)

## demo-no-k8s: the demo without Kubernetes (fake engines, scraper, policy; no control-plane build).
demo-no-k8s:
	@mkdir -p _output/bin && $(GO) build -o _output/bin/tokenscale-demo ./cmd/tokenscale-demo
	GO=$(GO) exec _output/bin/tokenscale-demo --no-k8s $(DEMO_ARGS)

## sim: the trace-driven policy comparison of docs/evaluation.md (SIM_ARGS passes flags). The plots go
## under _output/sim; `make sim SIM_PLOTS=docs/img/4x` refreshes docs/evaluation.md's 4x plots.
SIM_PLOTS ?= _output/sim
SIM_ARGS  ?= --trace code,conv --rate-scale 4 --tuning --plots $(SIM_PLOTS)
sim:
	$(GO) run ./cmd/tokenscale-sim $(SIM_ARGS)

clean:
	rm -rf _output
