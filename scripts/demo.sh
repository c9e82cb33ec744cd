#!/usr/bin/env bash
# The README's first command: installs what is needed, builds, starts the node
# agent localvold on its embedded disk, creates a demo volume with localvolctl,
# and shows it.
#
#   scripts/demo.sh          start (or show) the demo
#   scripts/demo.sh --stop   stop localvold (it unmounts the volume and the disk)
#
# No existing disk is touched: the configuration names no disk, so localvold
# uses a sparse 10 GiB image under /var/lib/localvol-demo on a loop device.
# The API is on the default socket, so plain `localvolctl` talks to it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=/var/lib/localvol-demo
config=$root/config.yaml
pidfile=$root/localvold.pid
log=$root/localvold.log
publish=/mnt/disks
ctl=build/agent/localvolctl

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (localvold attaches a loop device and mounts)" >&2
  exit 1
fi

# The pid of the demo's localvold, if it runs.
demo_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "localvold --config $config" || return 1
  echo "$pid"
}

stop() {
  local pid
  if pid=$(demo_pid); then
    kill -TERM "$pid"
    for _ in $(seq 900); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "demo.sh: localvold (pid $pid) did not stop within 90 s; see $log" >&2
      exit 1
    fi
    echo "localvold stopped: volumes and the demo disk are unmounted."
  else
    echo "the demo's localvold is not running."
  fi
  rm -f "$pidfile"
  echo "The image and the volume data are kept under $root; delete it to start afresh."
}
if [ "${1:-}" = "--stop" ]; then stop; exit 0; fi

scripts/install-deps.sh
scripts/build.sh

mkdir -p "$root"
if [ ! -f "$config" ]; then
  cat >"$config" <<EOF
# The demo's localvold configuration: no disks listed, so localvold uses a
# sparse file-backed loop disk of embedded_disk_size under state_dir.
state_dir: $root/state
publish_dir: $publish
embedded_disk_size: 10Gi
log_level: info
# The CSI driver's socket; a node of a cluster keeps the default under
# /var/lib/kubelet/plugins/localvol.io (docs/kubernetes.md).
csi_socket: $root/csi.sock
EOF
fi

if ! pid=$(demo_pid); then
  echo "Starting localvold (log: $log)"
  setsid build/agent/localvold --config "$config" >>"$log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pidfile"
fi
for _ in $(seq 300); do
  if "$ctl" disk list >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "demo.sh: localvold exited; the end of its log:" >&2
    tail -n 20 "$log" >&2
    rm -f "$pidfile"
    exit 1
  fi
  sleep 0.1
done

# Idempotent: running the demo again keeps the volume and its data.
"$ctl" volume create demo --size 1Gi >/dev/null

echo
echo "\$ localvolctl disk list"
"$ctl" disk list
echo
echo "\$ localvolctl volume list"
"$ctl" volume list
echo
echo "\$ df -h $publish/demo; df -i $publish/demo"
df -h "$publish/demo"
df -i "$publish/demo"
echo
echo "The volume 'demo' (1 GiB) is served by localvold (pid $pid) at $publish/demo."
echo "Try:"
echo "  dd if=/dev/zero of=$publish/demo/fill bs=1M count=2000     # stops at 1 GiB with ENOSPC"
echo "  $ctl volume resize demo --size 2Gi                      # live"
echo "  $ctl volume create scratch --size 500Mi"
echo "  $ctl -o json volume inspect demo"
echo "  curl -s 127.0.0.1:9477/metrics | grep localvol_volume"
echo "Stop with: scripts/demo.sh --stop"
