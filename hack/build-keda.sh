#!/usr/bin/env bash
# Builds the KEDA operator and its metrics API server from the Go module proxy into a cache outside the
# clone, keyed by version, and prints the bin dir (CRDs are copied beside them). A second run takes no time.
set -euo pipefail

KEDA_VERSION="${KEDA_VERSION:-v2.21.0}"
CACHE="${TOKENSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenscale}"
BIN="$CACHE/bin/keda-$KEDA_VERSION"
mkdir -p "$BIN"

if ! [ -x "$BIN/keda-operator" ] || ! [ -x "$BIN/keda-adapter" ] || ! [ -d "$BIN/crd" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  gomod=$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  dir=$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  (
    cd "$work"
    {
      echo "module tokenscale.local/kedabuild"
      echo
      grep -E '^go ' "$gomod"
      echo
      echo "require github.com/kedacore/keda/v2 $KEDA_VERSION"
      echo
      # KEDA's own replace directives apply only when it is the main module; repeat them here.
      sed -n '/^replace (/,/^)/p' "$gomod"
      grep -E '^replace [^(]' "$gomod" || true
    } > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "github.com/kedacore/keda/v2/cmd/operator"\n\t_ "github.com/kedacore/keda/v2/cmd/adapter"\n)\n' > tools.go
    GOFLAGS=-mod=mod go mod tidy >&2
    go build -trimpath -ldflags '-s -w' -o "$BIN/keda-operator" github.com/kedacore/keda/v2/cmd/operator >&2
    go build -trimpath -ldflags '-s -w' -o "$BIN/keda-adapter" github.com/kedacore/keda/v2/cmd/adapter >&2
  )
  rm -rf "$BIN/crd" && cp -r "$dir/config/crd/bases" "$BIN/crd" && chmod -R u+w "$BIN/crd"
fi
echo "$BIN"
