#!/usr/bin/env bash
# Fetches the Prometheus Operator's ServiceMonitor and PodMonitor CRDs from its Go module (the module proxy
# serves the repository's example/prometheus-operator-crd) into the cache outside the clone, and prints the
# directory that holds them. The e2e suite applies them so components/monitoring and the chart's
# monitoring objects pass a server-side dry run.
set -euo pipefail

GO="${GO:-go}" # the Go toolchain: the Makefile's GO, or go

VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.88.0}"
CACHE="${TOKENSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenscale}"
OUT="$CACHE/prometheus-operator-crds-$VERSION"

if [ -s "$OUT/monitoring.coreos.com_servicemonitors.yaml" ] && [ -s "$OUT/monitoring.coreos.com_podmonitors.yaml" ]; then
  echo "$OUT"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$GO" mod init crds >/dev/null 2>&1
dir=$("$GO" mod download -json "github.com/prometheus-operator/prometheus-operator@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ]; then
  echo "get-prometheus-operator-crds: go mod download of github.com/prometheus-operator/prometheus-operator@$VERSION failed" >&2
  exit 1
fi
mkdir -p "$OUT.tmp"
cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
   "$dir/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml" "$OUT.tmp/"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
