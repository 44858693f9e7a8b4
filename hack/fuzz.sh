#!/usr/bin/env bash
# Runs every fuzz target of the given packages for FUZZTIME each (make fuzz).
#
# Usage: hack/fuzz.sh FUZZTIME FUZZMINIMIZETIME PACKAGES...
#
# go test takes one -fuzz target per run and links an instrumented test binary each time; listing the
# targets with `go test -list` compiled and linked every package's tests once more. Here the targets are
# read from the test files go list names (so build tags hold), each package's instrumented binary is built
# once, and its targets run from it in the package's directory, with the corpus cache go test would use.
set -euo pipefail
fuzztime=$1 minimize=$2
shift 2
go=${GO:-go}
cache="$($go env GOCACHE)/fuzz"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT

$go list -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' "$@" |
  while read -r pkg dir files; do
    [ -n "$files" ] || continue
    # shellcheck disable=SC2086 # files is a list of names without spaces (go list's)
    targets=$(cd "$dir" && sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $files)
    [ -n "$targets" ] || continue
    $go test -c -fuzz . -o "$bin/fuzz.test" "$pkg"
    for t in $targets; do
      echo "== $pkg $t"
      (cd "$dir" && "$bin/fuzz.test" -test.run '^$' -test.fuzz "^$t\$" -test.fuzztime "$fuzztime" \
        -test.fuzzminimizetime "$minimize" -test.fuzzcachedir "$cache/$pkg" -test.paniconexit0 -test.timeout 10m)
    done
  done
