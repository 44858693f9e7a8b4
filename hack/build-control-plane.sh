#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kubectl from the Go module proxy (no Docker, no
# downloads of prebuilt binaries) into a cache outside the clone, keyed by version, and prints the bin dir.
# A second run with the binaries present takes no time. Wrapper modules are needed because
# k8s.io/kubernetes and etcd's server have replace directives, so `go install` fails on them.
set -euo pipefail

GO="${GO:-go}" # the Go toolchain: the Makefile's GO, or go

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${TOKENSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenscale}"
BIN="$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
mkdir -p "$BIN"

have() { for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done; }

# Binaries are built into a directory beside their final place and renamed into it: a build killed
# mid-write (.ci/run stops its background builds when a stage fails) leaves no truncated binary that the
# check above would take for a built one. Directories a killed build left are removed after a day.
stage= work_etcd= work_k8s=
trap 'rm -rf "$stage" "$work_etcd" "$work_k8s"' EXIT
make_stage() {
  [ -n "$stage" ] && return
  find "$BIN" -maxdepth 1 -name '.build.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
  stage=$(mktemp -d "$BIN/.build.XXXXXX")
}

if ! have etcd; then
  make_stage
  work_etcd=$(mktemp -d)
  work=$work_etcd
  (
    cd "$work"
    cat > go.mod <<MOD
module tokenscale.local/etcdbuild

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    GOFLAGS=-mod=mod "$GO" mod tidy >&2
    # -dwarf=false: the binary is stripped anyway, and compiling no debug info saves about 15% of the CPU (e2e/README.md, CI).
    "$GO" build -trimpath -gcflags=all=-dwarf=false -ldflags '-s -w' -o "$stage/etcd" go.etcd.io/etcd/server/v3 >&2
    mv "$stage/etcd" "$BIN/etcd"
  )
fi

if ! have kube-apiserver kube-controller-manager kubectl; then
  make_stage
  work_k8s=$(mktemp -d)
  work=$work_k8s
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  staging="v0.${K8S_VERSION#v1.}"
  gomod=$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  (
    cd "$work"
    {
      echo "module tokenscale.local/k8sbuild"
      echo
      grep -E '^(go|godebug) ' "$gomod" || true
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      # Every staging module k8s.io/kubernetes replaces with a local path is taken from the proxy instead.
      grep -E '=> \./staging/' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n' > tools.go
    GOFLAGS=-mod=mod "$GO" mod tidy >&2
    ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    "$GO" build -trimpath -gcflags=all=-dwarf=false -ldflags "$ld" -o "$stage/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl >&2
    for b in kube-apiserver kube-controller-manager kubectl; do mv "$stage/$b" "$BIN/$b"; done
  )
fi
echo "$BIN"
