#!/usr/bin/env bash
# Builds prometheus-adapter (sigs.k8s.io/prometheus-adapter, cmd/adapter) from the Go module proxy into a
# cache outside the clone, keyed by version, and prints the binary's path. `go install pkg@version` fails
# here (the proxy refuses the module's version list, which go install reads for deprecations), so a
# wrapper module requires the exact version. About 3 minutes the first time; no time after.
set -euo pipefail

GO="${GO:-go}" # the Go toolchain: the Makefile's GO, or go

VERSION="${PROMETHEUS_ADAPTER_VERSION:-v0.12.0}"
CACHE="${TOKENSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenscale}"
OUT="$CACHE/bin/prometheus-adapter-$VERSION"
mkdir -p "$OUT"
if [ -x "$OUT/prometheus-adapter" ]; then
  echo "$OUT/prometheus-adapter"
  exit 0
fi
# Binaries are built into a directory beside their final place and renamed into it: a build killed
# mid-write (.ci/run stops its background builds when a stage fails) leaves no truncated binary that the
# check above would take for a built one. Directories a killed build left are removed after a day.
find "$OUT" -maxdepth 1 -name '.build.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
stage=$(mktemp -d "$OUT/.build.XXXXXX")
work=$(mktemp -d)
trap 'rm -rf "$work" "$stage"' EXIT
(
  cd "$work"
  printf 'module tokenscale.local/prometheusadapterbuild\n\ngo 1.26.0\n\nrequire sigs.k8s.io/prometheus-adapter %s\n' "$VERSION" > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/prometheus-adapter/cmd/adapter"\n' > tools.go
  # -dwarf=false: the binary is stripped anyway, and compiling no debug info saves about 15% of the CPU (e2e/README.md, CI).
  GOFLAGS=-mod=mod "$GO" build -trimpath -gcflags=all=-dwarf=false -ldflags '-s -w' -o "$stage/prometheus-adapter" sigs.k8s.io/prometheus-adapter/cmd/adapter >&2
)
mv "$stage/prometheus-adapter" "$OUT/prometheus-adapter"
echo "$OUT/prometheus-adapter"
