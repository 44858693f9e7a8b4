#!/usr/bin/env bash
# Builds the real KEDA operator and KEDA's metrics API server (cmd/operator, cmd/adapter) from the Go module
# proxy into a cache outside the clone, keyed by version, and prints the directory holding the binaries and
# KEDA's CRDs. `go install` cannot build them (keda's go.mod has a replace directive), so a wrapper module
# requires keda and repeats its replace block. A second run with the binaries present takes no time.
set -euo pipefail

GO="${GO:-go}" # the Go toolchain: the Makefile's GO, or go

KEDA_VERSION="${KEDA_VERSION:-v2.21.0}"
CACHE="${TOKENSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenscale}"
OUT="$CACHE/bin/keda-$KEDA_VERSION"
mkdir -p "$OUT"

if [ -x "$OUT/keda-operator" ] && [ -x "$OUT/keda-adapter" ] && [ -d "$OUT/crd" ]; then
  echo "$OUT"
  exit 0
fi

info=$("$GO" mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION")
gomod=$(printf '%s' "$info" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
dir=$(printf '%s' "$info" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')

# Binaries are built into a directory beside their final place and renamed into it: a build killed
# mid-write (.ci/run stops its background builds when a stage fails) leaves no truncated binary that the
# check above would take for a built one. Directories a killed build left are removed after a day.
find "$OUT" -maxdepth 1 -name '.build.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
stage=$(mktemp -d "$OUT/.build.XXXXXX")
work=$(mktemp -d)
trap 'rm -rf "$work" "$stage"' EXIT
(
  cd "$work"
  {
    echo "module tokenscale.local/kedabuild"
    echo
    grep -E '^(go|godebug) ' "$gomod" || true
    echo
    echo "require github.com/kedacore/keda/v2 $KEDA_VERSION"
    echo
    # keda's replace and exclude lines (single-line or block) apply only in its own module; repeat them.
    awk '/^(replace|exclude) \(/{blk=1} blk{print; if ($0 ~ /^\)/) blk=0; next} /^(replace|exclude) /{print}' "$gomod"
  } > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "github.com/kedacore/keda/v2/cmd/operator"\n\t_ "github.com/kedacore/keda/v2/cmd/adapter"\n)\n' > tools.go
  GOFLAGS=-mod=mod "$GO" mod tidy >&2
  ld="-s -w -X github.com/kedacore/keda/v2/version.Version=$KEDA_VERSION"
  # -dwarf=false: the binary is stripped anyway, and compiling no debug info saves about 15% of the CPU (e2e/README.md, CI).
  "$GO" build -trimpath -gcflags=all=-dwarf=false -ldflags "$ld" -o "$stage/keda-operator" github.com/kedacore/keda/v2/cmd/operator >&2
  "$GO" build -trimpath -gcflags=all=-dwarf=false -ldflags "$ld" -o "$stage/keda-adapter" github.com/kedacore/keda/v2/cmd/adapter >&2
)
# The CRDs first and the binaries last: the check above takes the binaries for a finished build.
mkdir -p "$stage/crd"
cp "$dir"/config/crd/bases/*.yaml "$stage/crd/"
chmod -R u+w "$stage/crd"
rm -rf "$OUT/crd"
mv "$stage/crd" "$OUT/crd"
mv "$stage/keda-operator" "$stage/keda-adapter" "$OUT/"
echo "$OUT"
