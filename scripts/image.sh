#!/usr/bin/env bash
# Builds the driver's container image from the Dockerfile with podman (or docker where its engine
# answers), and prints the image's name on the last line of stdout. `npm run image` runs it, and so
# does the container test.
#
# The Dockerfile's base is the official node image (ARG BASE_IMAGE and BASE_TAG). Where it cannot
# be pulled (a machine without access to Docker Hub), a stand-in base is built from Debian bookworm
# (debootstrap) with this machine's node and npm, named localhost/dataset-cache-csi-base-standin,
# and the result is tagged <image>-standin: an image for tests on this machine only, never one to
# push. The stand-in is kept and reused; DCSI_REBUILD_STANDIN=1 rebuilds it. See docs/containers.md.
#
#   IMAGE=name:tag   the image to build (default localhost/dataset-cache-csi:<package version>)
#   DCSI_STANDIN=1   use the stand-in base without trying to pull the official one
#   DEBIAN_MIRROR    for the stand-in (default http://deb.debian.org/debian)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() { echo "image: $*" >&2; }

version=$(node -p 'require("./package.json").version')
image=${IMAGE:-localhost/dataset-cache-csi:$version}
# The base the Dockerfile names by default (one place: its ARG).
official_name=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile | head -n 1)
official_tag=$(sed -n 's/^ARG BASE_TAG=//p' Dockerfile | head -n 1)
if [ -z "$official_name" ] || [ -z "$official_tag" ]; then
  log "Dockerfile has no ARG BASE_IMAGE=<name> and ARG BASE_TAG=<tag>"
  exit 2
fi
# Fully qualified: podman without a short-name alias for it would not know where to look.
case "$official_name" in
  */*) ;;
  *) official_name=docker.io/library/$official_name ;;
esac
official=$official_name:$official_tag
standin_name=localhost/dataset-cache-csi-base-standin
standin_tag=node$(node -p 'process.versions.node')-bookworm
standin=$standin_name:$standin_tag

# podman first: it needs no daemon. docker only when its engine answers (a client alone is not enough).
if command -v podman >/dev/null; then
  tool=podman
  # runc and cgroupfs: crun and systemd cgroups fail on hybrid cgroup hosts; chroot isolation
  # builds without a user namespace.
  build=(podman --runtime runc --cgroup-manager cgroupfs build --isolation=chroot)
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  tool=docker
  build=(docker build)
else
  log "neither podman nor a running docker engine found (Debian: apt-get install podman runc)"
  exit 2
fi

has_image() { "$tool" image inspect "$1" >/dev/null 2>&1; }

# Debian bookworm (minbase) with this machine's node and npm in /usr/local, as the official image
# has them; this machine's CA bundle, because TLS to the npm registry may be signed by a local CA.
build_standin() {
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" != 20 ]; then
    log "the stand-in base needs this machine's node to be 20.x (it is $(node --version))"
    exit 2
  fi
  command -v debootstrap >/dev/null || {
    log "debootstrap is missing (apt-get install debootstrap)"
    exit 2
  }
  local rootfs node_bin npm_dir
  rootfs=$(mktemp -d /tmp/dcsi-standin-XXXXXX)
  # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
  trap "rm -rf '$rootfs'" EXIT
  log "building the stand-in base $standin (debootstrap bookworm, about 2 minutes)"
  debootstrap --variant=minbase bookworm "$rootfs/root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$rootfs/debootstrap.log" 2>&1 || {
    tail -n 20 "$rootfs/debootstrap.log" >&2
    exit 1
  }
  node_bin=$(readlink -f "$(command -v node)")
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  install -m 0755 "$node_bin" "$rootfs/root/usr/local/bin/node"
  mkdir -p "$rootfs/root/usr/local/lib/node_modules"
  cp -a "$npm_dir" "$rootfs/root/usr/local/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/root/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/root/usr/local/bin/npx"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/root/etc/ssl/certs/ca-certificates.crt" 2>/dev/null ||
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/root/etc/ssl/certs/ca-certificates.crt"
  # What makes the official bookworm-slim images slim (debuerreotype): no docs, man pages or
  # locales from packages, no apt caches or translations kept; so that image sizes compare.
  cat >"$rootfs/root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  cat >"$rootfs/root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
EOF
  find "$rootfs/root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$rootfs/root/usr/share/"{groff,info,linda,locale,man}/* "$rootfs/root/usr/share/lintian/overrides/"*
  rm -rf "$rootfs/root/var/cache/apt/"*.bin "$rootfs/root/var/cache/apt/archives/"*.deb "$rootfs/root/var/lib/apt/lists/"*
  tar -C "$rootfs/root" -c . | "$tool" import \
    --change "ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change 'CMD ["node"]' \
    - "$standin" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
}

base=(--build-arg "BASE_IMAGE=$official_name" --build-arg "BASE_TAG=$official_tag")
if [ "${DCSI_STANDIN:-}" != 1 ] && { has_image "$official" || "$tool" pull -q "$official" >/dev/null 2>&1; }; then
  log "base: $official"
else
  base=(--build-arg "BASE_IMAGE=$standin_name" --build-arg "BASE_TAG=$standin_tag")
  if [ "${DCSI_REBUILD_STANDIN:-}" = 1 ] || ! has_image "$standin"; then
    build_standin
  fi
  # Never a pushable name for an image on the stand-in base.
  case "$image" in
    *standin*) ;;
    *:*) image="$image-standin" ;;
    *) image="$image:standin" ;;
  esac
  log "base: $standin (LOCAL STAND-IN for tests: $official could not be pulled); image: $image"
fi

pull=()
[ "$tool" = podman ] && pull=(--pull=never)
start=$(date +%s)
"${build[@]}" "${pull[@]}" "${base[@]}" -t "$image" -f Dockerfile . >&2
size=$("$tool" image inspect --format '{{.Size}}' "$image")
log "built $image in $(($(date +%s) - start)) s, $((size / 1000000)) MB"
echo "$image"
