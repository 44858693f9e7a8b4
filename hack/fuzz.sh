#!/usr/bin/env bash
# Runs every fuzz target of the given packages for FUZZTIME each (make fuzz).
#
# Usage: hack/fuzz.sh FUZZTIME FUZZMINIMIZETIME PACKAGES...
#
# go test takes one -fuzz target per run and links an instrumented test binary each time; listing the
# targets with `go test -list` compiled and linked every package's tests once more. Here the targets are
# read from the test files go list names (so build tags hold), each package's instrumented binary is built
# once, and its targets run from it in the package's directory, with the corpus cache go test would use.
#
# A run must show it fuzzed: Go passes a -test.fuzz pattern that matches no target ("no fuzz tests to
# fuzz") and a target that stops early says nothing either, so each run's last "execs:" count is read and
# must reach FUZZTIME's count (a count such as 20000x), or FUZZMINEXECS (1000) for a duration.
set -euo pipefail
fuzztime=$1 minimize=$2
shift 2
go=${GO:-go}
cache="$($go env GOCACHE)/fuzz"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
want=${FUZZMINEXECS:-1000}
if [[ $fuzztime =~ ^([0-9]+)x$ ]]; then
  want=${BASH_REMATCH[1]}
fi

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
        -test.fuzzminimizetime "$minimize" -test.fuzzcachedir "$cache/$pkg" -test.paniconexit0 -test.timeout 10m) 2>&1 |
        tee "$bin/out"
      execs=$(sed -n 's/^fuzz: elapsed: .*, execs: \([0-9]*\) .*/\1/p' "$bin/out" | tail -n 1)
      if [ -z "$execs" ] || [ "$execs" -lt "$want" ]; then
        echo "fuzz: $pkg $t ran ${execs:-no} execs, want at least $want (a target go test does not register, or one that stopped early)" >&2
        exit 1
      fi
    done
  done
