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
for b in tokenscale-adapter tokenscale-keda-scaler tokenscale-converter; do
  cp "$BIN/$b" "$ctx/"
done

if [ -z "$BASE" ]; then
  if $PODMAN image exists "$DEFAULT_BASE" || $PODMAN pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
    BASE="$DEFAULT_BASE"
  else
    echo "build-images: cannot pull $DEFAULT_BASE; making a glibc base from this machine's libc6" >&2
    BASE=$(bash hack/make-base-image.sh)
  fi
fi

args=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$COMMIT" --build-arg "CREATED=$CREATED")
for c in adapter keda-scaler converter; do
  extra=()
  if [ "$c" = converter ]; then extra=(--build-arg "BASE_IMAGE=$BASE"); fi
  echo "== $REPO/tokenscale-$c:$TAG"
  $PODMAN build -q --pull=never "${args[@]}" "${extra[@]}" -f "build/$c.Containerfile" -t "$REPO/tokenscale-$c:$TAG" "$ctx"
done
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
