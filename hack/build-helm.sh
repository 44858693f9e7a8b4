#!/usr/bin/env bash
# Builds helm from the Go module proxy into a cache outside the clone, keyed by version, and prints the
# binary's path (what `make chart` and the chart test use as TOKENSCALE_HELM). A second run with the binary
# present takes no time. The first build takes a few minutes of CPU, so it runs niced.
set -euo pipefail

GO="${GO:-go}" # the Go toolchain: the Makefile's GO, or go

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${TOKENSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenscale}"
OUT="$CACHE/bin/helm-$HELM_VERSION"

if [ -x "$OUT" ]; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$CACHE/bin"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# helm's own version package is internal; -X sets it all the same, so `helm version` tells the truth.
ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
# -dwarf=false: the binary is stripped anyway, and compiling no debug info saves about 15% of the CPU (e2e/README.md, CI).
GOBIN="$work" CGO_ENABLED=0 nice -n 10 "$GO" install -trimpath -gcflags=all=-dwarf=false -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
mv "$work/helm" "$OUT"
echo "$OUT"
