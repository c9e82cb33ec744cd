#!/usr/bin/env bash
# The README's first command: installs what is needed, builds, and serves a
# demo volume from a file-backed loop disk, then shows it mounted.
#
#   scripts/demo.sh          start (or show) the demo
#   scripts/demo.sh --stop   unmount the volume and detach the disk
#
# Everything lives under /var/lib/localvol-demo; no existing disk is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
root=/var/lib/localvol-demo
image=$root/disk.img
disk_mount=$root/disk
volume_dir=$disk_mount/volumes/demo
publish=/mnt/disks/demo

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (it attaches a loop device and mounts)" >&2
  exit 1
fi

stop() {
  if mountpoint -q "$publish"; then pkill -TERM -f "localvol-fuse $volume_dir" || umount -l "$publish"; fi
  for _ in $(seq 50); do mountpoint -q "$publish" || break; sleep 0.1; done
  if mountpoint -q "$disk_mount"; then umount "$disk_mount"; fi
  for dev in $(losetup -j "$image" -O NAME -n 2>/dev/null); do losetup -d "$dev"; done
  echo "demo stopped (the image $image is kept; delete it to start afresh)"
}
if [ "${1:-}" = "--stop" ]; then stop; exit 0; fi

scripts/install-deps.sh
scripts/build.sh

mkdir -p "$root" "$disk_mount" "$publish"
if [ ! -f "$image" ]; then
  truncate -s 10G "$image"   # sparse: takes no space until written
fi
dev=$(losetup -j "$image" -O NAME -n | head -n1)
if [ -z "$dev" ]; then dev=$(losetup --find --show "$image"); fi
# Format only the demo's own image, and only if it holds no filesystem yet.
if ! blkid -p "$dev" >/dev/null 2>&1; then mkfs.xfs -q -L localvol-demo "$dev"; fi
mountpoint -q "$disk_mount" || mount "$dev" "$disk_mount"
mkdir -p "$volume_dir"
if ! mountpoint -q "$publish"; then
  build/tools/localvol-fuse "$volume_dir" "$publish" --capacity 1Gi --name demo
fi

echo
echo "Demo volume 'demo' (1 GiB, backed by $dev) is mounted at $publish:"
findmnt "$publish"
echo
df -h "$publish"
df -i "$publish"
echo
echo "Try: dd if=/dev/zero of=$publish/fill bs=1M count=2000   # stops at 1 GiB with ENOSPC"
echo "Stop with: scripts/demo.sh --stop"
