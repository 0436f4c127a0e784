#!/usr/bin/env bash
# Runs upstream csi-sanity (kubernetes-csi/csi-test; v5.3.1 is the yardstick) against the real driver
# in --mode all with a local:// test source. Extra arguments go to csi-sanity, e.g.
#   CSI_SANITY=/path/to/csi-sanity csi-sanity/run.sh --ginkgo.focus 'Node Service'
# Needs root (the driver mounts) and a build (npm run build).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sanity=${CSI_SANITY:-$(command -v csi-sanity || true)}
if [ -z "$sanity" ] || [ ! -x "$sanity" ]; then
  echo "csi-sanity not found: put it on PATH or set CSI_SANITY=/path/to/csi-sanity" >&2
  exit 2
fi
if [ ! -f "$root/dist/main.js" ]; then
  echo "dist/main.js is missing: run npm run build first" >&2
  exit 2
fi

work=$(mktemp -d /tmp/dcsi-sanity-XXXXXX)
mem_cache="/dev/shm/dcsi-sanity-${work##*-}"
driver_pid=""

# shellcheck disable=SC2317  # invoked through the EXIT trap
cleanup() {
  if [ -n "$driver_pid" ]; then
    kill -TERM "$driver_pid" 2>/dev/null || true
    wait "$driver_pid" 2>/dev/null || true
  fi
  # Mounts a failed run may have left: deepest first, lazily (a dead FUSE mount must not hang us).
  findmnt -rn -o TARGET | awk -v w="$work/" -v m="$mem_cache" 'index($0, w) == 1 || index($0, m) == 1' |
    sort -r | while read -r mount; do
      umount -l "$mount" || true
    done
  # Cache clients the driver recorded, by PID (they exit on unmount; this catches the stubborn).
  if [ -f "$work/state/journal.json" ]; then
    node -e 'const j = require(process.argv[1]); for (const d of Object.values(j.datasets)) { try { process.kill(d.pid, "SIGKILL"); } catch {} }' \
      "$work/state/journal.json" || true
  fi
  rm -rf "$work" "$mem_cache"
}
trap cleanup EXIT

mkdir -p "$work/source/dir"
echo "csi-sanity test data" >"$work/source/dir/hello.txt"
printf 'source: "local://%s/source"\n' "$work" >"$work/parameters.yaml"

node "$root/dist/main.js" --endpoint "unix://$work/csi.sock" --node-id csi-sanity-node \
  --state-dir "$work/state" --mem-cache-dir "$mem_cache" --mode all --log-level debug \
  2>"$work/driver.log" &
driver_pid=$!
# Ready means the node state is loaded (Probe would say so too); the driver logs it once.
for _ in $(seq 1 200); do
  [ -S "$work/csi.sock" ] && grep -q '"msg":"ready"' "$work/driver.log" && break
  sleep 0.1
done
if ! grep -q '"msg":"ready"' "$work/driver.log"; then
  echo "the driver did not become ready; its log:" >&2
  cat "$work/driver.log" >&2
  exit 1
fi

status=0
"$sanity" \
  --csi.endpoint "unix://$work/csi.sock" \
  --csi.mountdir "$work/mount" \
  --csi.stagingdir "$work/staging" \
  --csi.testvolumeparameters "$work/parameters.yaml" \
  --csi.testvolumesize 1073741824 \
  --ginkgo.no-color \
  "$@" || status=$?
if [ "$status" != 0 ]; then
  echo "csi-sanity failed (exit $status); last lines of the driver log:" >&2
  tail -n 40 "$work/driver.log" >&2
fi
exit "$status"
