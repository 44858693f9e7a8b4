#!/usr/bin/env bash
# Prints the path of a Prometheus server binary for the e2e lag comparison: one on PATH, else the binary
# from Debian's prometheus package, extracted (not installed: no service, no config) into the cache.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
  command -v prometheus
  exit 0
fi
cache="${TOKENSCALE_CACHE:-$HOME/.cache/tokenscale}/bin/prometheus-deb"
if [ -x "$cache/usr/bin/prometheus" ]; then
  echo "$cache/usr/bin/prometheus"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
  apt-get update >/dev/null 2>&1 || { echo "get-prometheus: apt-get update failed (root needed?)" >&2; exit 1; }
  apt-get download prometheus >/dev/null 2>&1 || { echo "get-prometheus: apt-get download prometheus failed" >&2; exit 1; }
fi
mkdir -p "$cache"
dpkg-deb -x prometheus_*.deb "$cache"
"$cache/usr/bin/prometheus" --version >/dev/null 2>&1 || { echo "get-prometheus: the extracted binary does not run" >&2; exit 1; }
echo "$cache/usr/bin/prometheus"
