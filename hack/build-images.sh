#!/usr/bin/env bash
# Builds the adapter, KEDA scaler and converter images with podman from binaries `make build` made
# (what `make images` runs):
#   hack/build-images.sh BIN REPO TAG VERSION COMMIT BUILD_DATE [CONVERTER_BASE]
# Images: REPO/tokenscale-adapter:TAG, REPO/tokenscale-keda-scaler:TAG, REPO/tokenscale-converter:TAG.
# CONVERTER_BASE is the converter's glibc base: empty means the Containerfile's default
# (gcr.io/distroless/base-debian12:nonroot) when podman can pull it, else a base made here from this
# machine's libc6 (hack/make-base-image.sh), so a machine without a registry still builds all three.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="$1" REPO="$2" TAG="$3" VERSION="$4" COMMIT="$5" CREATED="$6" BASE="${7:-}"
PODMAN="${PODMAN:-podman}"
GO="${GO:-go}"
DEFAULT_BASE=gcr.io/distroless/base-debian12:nonroot

if ! command -v "$PODMAN" >/dev/null 2>&1; then
  echo "build-images: $PODMAN not found; run hack/install-podman.sh (Debian/Ubuntu) or install podman" >&2
  exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp LICENSE "$ctx/"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
else
  echo "build-images: no /etc/ssl/certs/ca-certificates.crt here; the static images get an empty CA bundle" >&2
  : > "$ctx/ca-certificates.crt"
fi
# The images hold these binaries as they are: they must be Linux binaries, and the images are built for
# their architecture (an image made on an arm64 machine for amd64 nodes fails there with "exec format error").
arch=""
for b in tokenscale-adapter tokenscale-keda-scaler tokenscale-converter; do
  cp "$BIN/$b" "$ctx/"
  info=$("$GO" version -m "$BIN/$b")
  goos=$(awk '$2 ~ /^GOOS=/ {sub("GOOS=", "", $2); print $2}' <<<"$info")
  goarch=$(awk '$2 ~ /^GOARCH=/ {sub("GOARCH=", "", $2); print $2}' <<<"$info")
  if [ "$goos" != linux ]; then
    echo "build-images: $BIN/$b is built for GOOS=${goos:-unknown}; images need Linux binaries: GOOS=linux make images (the converter needs a Linux C toolchain, or CONVERTER_CGO=0)" >&2
    exit 1
  fi
  if [ -n "$arch" ] && [ "$goarch" != "$arch" ]; then
    echo "build-images: $BIN/$b is built for $goarch, the others for $arch" >&2
    exit 1
  fi
  arch="$goarch"
done
host=$("$GO" env GOHOSTARCH)
echo "build-images: linux/$arch images (this machine: $host)"

if [ -z "$BASE" ]; then
  if [ "$arch" != "$host" ]; then
    # The local fallback packages this machine's libc6, and a pulled tag may hold this machine's architecture.
    $PODMAN pull -q --platform "linux/$arch" "$DEFAULT_BASE" >/dev/null ||
      { echo "build-images: cannot pull $DEFAULT_BASE for linux/$arch; set CONVERTER_BASE to a glibc base of that architecture" >&2; exit 1; }
    BASE="$DEFAULT_BASE"
  elif $PODMAN image exists "$DEFAULT_BASE" || $PODMAN pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
    BASE="$DEFAULT_BASE"
  else
    echo "build-images: cannot pull $DEFAULT_BASE; making a glibc base from this machine's libc6" >&2
    BASE=$(bash hack/make-base-image.sh)
  fi
elif ! $PODMAN image exists "$BASE"; then
  # A base named by CONVERTER_BASE is pulled as the default is; the build itself never pulls (--pull=never).
  $PODMAN pull -q --platform "linux/$arch" "$BASE" >/dev/null ||
    { echo "build-images: cannot pull CONVERTER_BASE $BASE for linux/$arch" >&2; exit 1; }
fi
base_arch=$($PODMAN image inspect --format '{{.Architecture}}' "$BASE")
if [ "$base_arch" != "$arch" ]; then
  echo "build-images: the converter's base $BASE is $base_arch, the binaries $arch: the converter links its glibc" >&2
  exit 1
fi

args=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$COMMIT" --build-arg "CREATED=$CREATED")
for c in adapter keda-scaler converter; do
  extra=()
  if [ "$c" = converter ]; then extra=(--build-arg "BASE_IMAGE=$BASE"); fi
  echo "== $REPO/tokenscale-$c:$TAG"
  $PODMAN build -q --pull=never --platform "linux/$arch" "${args[@]}" "${extra[@]}" -f "build/$c.Containerfile" -t "$REPO/tokenscale-$c:$TAG" "$ctx"
done
if [ "$arch" != "$host" ]; then
  echo "build-images: linux/$arch images cannot run on this $host machine: their --version and user are not checked here" >&2
  exit 0
fi
# Each image runs, as its non-root user, and says which build it holds.
for c in adapter keda-scaler converter; do
  img="$REPO/tokenscale-$c:$TAG"
  out=$($PODMAN run --rm --read-only "$img" --version)
  user=$($PODMAN image inspect "$img" --format '{{.Config.User}}')
  echo "$img: $out (user $user)"
  case "$out" in *"$VERSION"*"$COMMIT"*) ;; *) echo "build-images: $img says '$out', want $VERSION and $COMMIT" >&2; exit 1 ;; esac
  [ "$user" = 65532:65532 ] || { echo "build-images: $img runs as '$user', want 65532:65532" >&2; exit 1; }
done
$PODMAN images --filter "reference=$REPO/tokenscale-*:$TAG" --format '{{.Repository}}:{{.Tag}} {{.Size}}'
