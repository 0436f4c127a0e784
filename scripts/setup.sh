#!/usr/bin/env bash
# Brings a fresh Debian 12 machine to what the demo and the tests need: the cache-client programs
# (rclone, s3fs, FUSE 3, bindfs), util-linux mount, e2fsprogs (SSD cache images), openssl and
# ssh-keygen (test certificates and keys), promtool (alert rules) and the npm dependencies. Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup: the driver mounts file systems and must run as root (try: sudo npm run demo)" >&2
  exit 1
fi
if [ ! -e /dev/fuse ]; then
  echo "setup: /dev/fuse is missing; load the fuse module (modprobe fuse) or run a privileged container" >&2
  exit 1
fi

missing=()
command -v rclone >/dev/null || missing+=(rclone)
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v bindfs >/dev/null || missing+=(bindfs)
command -v s3fs >/dev/null || missing+=(s3fs)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v findmnt >/dev/null || missing+=(util-linux)
command -v mount >/dev/null || missing+=(mount)
# Tests only: a TLS test certificate and an SSH key for the loopback servers.
command -v openssl >/dev/null || missing+=(openssl)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
# Tests only: promtool checks and unit-tests the shipped alert rules.
command -v promtool >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
