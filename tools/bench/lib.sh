# Shared by the benchmark scripts: a scratch XFS loop disk that is always
# cleaned up, and the localvol-fuse binary. Source it, then call
# bench_make_disk SIZE; everything is removed on exit.
#
#   bench_make_disk 8G      -> $work (scratch dir), $dev (loop device),
#                              $work/disk (the mounted XFS)
#   $bench_fuse              the localvol-fuse binary

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bench_fuse=$bench_root/build/tools/localvol-fuse
[ -x "$bench_fuse" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "run as root (loop devices and mounts)" >&2; exit 1; }
work=$(mktemp -d /var/tmp/localvol-bench.XXXXXX)
dev=""

bench_stop_servers() {
  pkill -TERM -f "localvol-fuse $work/" 2>/dev/null || true
  for _ in $(seq 50); do pgrep -f "localvol-fuse $work/" >/dev/null || break; sleep 0.1; done
  pkill -KILL -f "localvol-fuse $work/" 2>/dev/null || true
}

bench_cleanup() {
  # Servers hold the backing disk: stop them, then detach what is left.
  bench_stop_servers
  findmnt -rn -o TARGET | grep "^$work/" | sort -r | while read -r m; do umount -l "$m" || true; done
  umount "$work/disk" 2>/dev/null || true
  [ -n "$dev" ] && losetup -d "$dev" 2>/dev/null || true
  rm -rf "$work"
}
trap bench_cleanup EXIT

bench_make_disk() {
  truncate -s "$1" "$work/disk.img"
  dev=$(losetup --find --show "$work/disk.img")
  mkfs.xfs -q "$dev"
  mkdir -p "$work/disk"
  mount "$dev" "$work/disk"
}
