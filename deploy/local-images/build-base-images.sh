#!/bin/sh
# Base images for sites that cannot pull from a registry (deploy/compose/local-images.yml):
#   evp-local/debian:bookworm      debootstrap --variant=minbase bookworm, imported (~200 MB, ~4 min)
#   evp-local/python:3.11-bookworm Debian's Python 3.11 + venv on it (python.Dockerfile, ~1 min)
# Idempotent: an image that exists is kept (delete it with `docker rmi` to rebuild). Needs root
# (debootstrap), a running dockerd and the Debian mirror apt already uses (or MIRROR=...).
# The rootfs is made in a temporary directory outside the repository and removed afterwards.
set -eu
cd "$(dirname "$0")"
DEBIAN_IMAGE=${DEBIAN_IMAGE:-evp-local/debian:bookworm}
PYTHON_IMAGE=${PYTHON_IMAGE:-evp-local/python:3.11-bookworm}

mirror() {  # the first http(s) Debian mirror of apt's sources (deb822 or one-line format)
  if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return; fi
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
      | grep -Eo 'https?://[^ ]*/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ')
  echo "${m:-http://deb.debian.org/debian}"
}

has_image() { docker image inspect "$1" >/dev/null 2>&1; }

if has_image "$DEBIAN_IMAGE"; then
  echo "build-base-images: $DEBIAN_IMAGE exists, kept"
else
  command -v debootstrap >/dev/null || { echo "build-base-images: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
  rootfs=$(mktemp -d /var/tmp/evp-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "build-base-images: debootstrap bookworm from $(mirror) into $rootfs (a few minutes)"
  debootstrap --variant=minbase bookworm "$rootfs" "$(mirror)" >"$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
  rm -f "$rootfs.log"
  tar -C "$rootfs" -c . | docker import -m "debootstrap --variant=minbase bookworm" - "$DEBIAN_IMAGE"
  echo "build-base-images: imported $DEBIAN_IMAGE"
fi

if has_image "$PYTHON_IMAGE"; then
  echo "build-base-images: $PYTHON_IMAGE exists, kept"
else
  docker build --network host --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" -t "$PYTHON_IMAGE" -f python.Dockerfile .
fi
