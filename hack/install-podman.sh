#!/usr/bin/env bash
# Installs podman and runc from the distribution (Debian/Ubuntu apt) where podman is missing. With
# --sandbox (CI does this) it also makes podman usable in a container-in-container sandbox: runc instead
# of crun, cgroupfs, and no default ulimits (all refused there), written into the machine's
# /etc/containers/containers.conf unless the file already says otherwise; without it the machine's
# podman settings are left alone. Idempotent: a second run changes nothing. Needs root (or sudo) the
# first time.
set -euo pipefail

sandbox=false
case "${1:-}" in
  --sandbox) sandbox=true ;;
  "") ;;
  *) echo "usage: install-podman.sh [--sandbox]" >&2; exit 2 ;;
esac

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-podman: no podman and no apt-get; install podman and runc with your package manager" >&2
    exit 1
  fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends podman runc >&2
fi

if [ "$sandbox" != true ]; then
  podman --version
  exit 0
fi

# containers.conf: runtime runc and no default ulimits, unless the file already says otherwise.
conf=/etc/containers/containers.conf
$SUDO mkdir -p /etc/containers
if [ ! -f "$conf" ]; then
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' | $SUDO tee "$conf" >/dev/null
else
  if ! grep -q '^[[:space:]]*default_ulimits' "$conf"; then
    if grep -q '^\[containers\]' "$conf"; then
      $SUDO sed -i 's/^\[containers\]/[containers]\ndefault_ulimits = []/' "$conf"
    else
      printf '\n[containers]\ndefault_ulimits = []\n' | $SUDO tee -a "$conf" >/dev/null
    fi
  fi
  for kv in 'runtime = "runc"' 'cgroup_manager = "cgroupfs"'; do
    key=${kv%% *}
    if ! grep -q "^[[:space:]]*$key[[:space:]]*=" "$conf"; then
      if grep -q '^\[engine\]' "$conf"; then
        $SUDO sed -i "s/^\[engine\]/[engine]\n$kv/" "$conf"
      else
        printf '\n[engine]\n%s\n' "$kv" | $SUDO tee -a "$conf" >/dev/null
      fi
    fi
  done
fi
podman --version
