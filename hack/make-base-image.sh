#!/usr/bin/env bash
# Makes a minimal glibc base image for the converter locally, for machines that cannot pull the default
# (gcr.io/distroless/base-debian12:nonroot): the files of this machine's installed Debian libc6 package (the
# glibc the converter was just linked against), the CA bundle, and passwd/group entries for the nonroot user
# 65532, imported with `podman import`. Prints the image name. Idempotent: an existing image is kept.
#   hack/make-base-image.sh [IMAGE]   (default localhost/tokenscale-base-glibc:local)
set -euo pipefail

IMAGE="${1:-localhost/tokenscale-base-glibc:local}"
PODMAN="${PODMAN:-podman}"

if $PODMAN image exists "$IMAGE"; then
  echo "$IMAGE"
  exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root" "$root.tar"' EXIT
if command -v dpkg >/dev/null 2>&1 && dpkg -s libc6 >/dev/null 2>&1; then
  # Every file and symlink of the installed libc6 package (not its directories), at its real path: with
  # Debian's merged /usr, /lib and /lib64 are links to usr/lib and usr/lib64, made again below.
  dpkg -L libc6 | while read -r f; do
    if [ -d "$f" ]; then continue; fi
    if [ -f "$f" ] || [ -L "$f" ]; then
      dir=$(realpath "$(dirname "$f")")
      mkdir -p "$root$dir"
      cp -a "$f" "$root$dir/"
    fi
  done
  for d in lib lib64 bin sbin; do
    if [ -L "/$d" ] && [ ! -e "$root/$d" ]; then ln -s "$(readlink "/$d")" "$root/$d"; fi
  done
else
  echo "make-base-image: no dpkg; copying the shared libraries ldd lists for /bin/sh" >&2
  for f in $(ldd /bin/sh | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
  done
fi
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
chmod 1777 "$root/tmp"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"; fi
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
chown -R 65532:65532 "$root/home/nonroot" 2>/dev/null || true
tar -C "$root" -cf "$root.tar" .
$PODMAN import --quiet --change 'USER 65532:65532' --message "glibc base for tokenscale-converter (local)" "$root.tar" "$IMAGE" >/dev/null
rm -f "$root.tar"
echo "$IMAGE"
