# Shared by the benchmark scripts: a scratch XFS loop disk that is always
# cleaned up, and the localvol-fuse binary. Source it, then call
# bench_make_disk SIZE; everything is removed on exit (normal exit, error,
# Ctrl-C or SIGTERM).
#
#   bench_make_disk 8G      -> $work (scratch dir), $dev (loop device),
#                              $work/disk (the mounted XFS)
#   bench_make_disk_profile PROFILE SIZE
#                           -> the same, with the loop device set up for a
#                              device profile:
#                                fast   image in /dev/shm, buffered loop: the
#                                       "disk" is RAM, only CPU costs show
#                                device image in $work (/var/tmp, the real
#                                       disk), losetup --direct-io=on: no
#                                       second page cache under XFS
#   bench_attach_profile PROFILE SIZE
#                           -> only the loop device ($dev), unformatted
#   bench_drop_disk          stops the servers, unmounts and detaches the
#                            current disk so another one can be made
#   bench_track_pid PID      a FUSE server (bindfs, mergerfs, ...) started in
#                            the foreground in the background: SIGTERM'd by
#                            bench_drop_disk and on exit
#   $bench_fuse              the localvol-fuse binary

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bench_fuse=$bench_root/build/tools/localvol-fuse
[ -x "$bench_fuse" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "run as root (loop devices and mounts)" >&2; exit 1; }
work=$(mktemp -d /var/tmp/localvol-bench.XXXXXX)
dev=""
bench_img=""      # the current disk image
bench_shm=""      # scratch dir in /dev/shm for the fast profile, if any
bench_pids=()

bench_stop_servers() {
  pkill -TERM -f "localvol-fuse $work/" 2>/dev/null || true
  local pid
  for pid in "${bench_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=""
    if pgrep -f "localvol-fuse $work/" >/dev/null; then alive=1; fi
    for pid in "${bench_pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive=1; fi; done
    if [ -z "$alive" ]; then break; fi
    sleep 0.1
  done
  pkill -KILL -f "localvol-fuse $work/" 2>/dev/null || true
  for pid in "${bench_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  bench_pids=()
}

bench_track_pid() { bench_pids+=("$1"); }

bench_drop_disk() {
  # Servers hold the backing disk: stop them, then detach what is left.
  bench_stop_servers
  { findmnt -rn -o TARGET | grep "^$work/" | sort -r || true; } | while read -r m; do
    [ "$m" = "$work/disk" ] || umount -l "$m" || true
  done
  if mountpoint -q "$work/disk" 2>/dev/null; then
    umount "$work/disk" 2>/dev/null || umount -l "$work/disk" 2>/dev/null || true
  fi
  if [ -n "$dev" ]; then losetup -d "$dev" 2>/dev/null || true; fi
  dev=""
  if [ -n "$bench_img" ]; then rm -f "$bench_img"; fi
  bench_img=""
  return 0
}

bench_cleanup() {
  # Runs under set -e from the EXIT trap: nothing here may stop it early.
  bench_drop_disk || true
  rm -rf "$work" || true
  if [ -n "$bench_shm" ]; then rm -rf "$bench_shm" || true; fi
  return 0
}
trap bench_cleanup EXIT
# Make Ctrl-C and SIGTERM run the EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM

bench_make_disk() {
  bench_img=$work/disk.img
  truncate -s "$1" "$bench_img"
  dev=$(losetup --find --show "$bench_img")
  mkfs.xfs -q "$dev"
  mkdir -p "$work/disk"
  mount "$dev" "$work/disk"
}

# Attaches a loop device for PROFILE over a fresh image of SIZE -> $dev,
# $bench_img. Nothing is formatted: for the agent, which formats its disks.
bench_attach_profile() {
  local profile=$1 size=$2
  case $profile in
    fast)
      [ -n "$bench_shm" ] || bench_shm=$(mktemp -d /dev/shm/localvol-bench.XXXXXX)
      bench_img=$bench_shm/disk.img
      truncate -s "$size" "$bench_img"
      dev=$(losetup --find --show "$bench_img")
      ;;
    device)
      bench_img=$work/disk.img
      truncate -s "$size" "$bench_img"
      dev=$(losetup --find --show --direct-io=on "$bench_img")
      ;;
    *) echo "unknown disk profile '$profile' (fast or device)" >&2; return 1 ;;
  esac
}

bench_make_disk_profile() {
  bench_attach_profile "$1" "$2"
  mkfs.xfs -q -f "$dev"
  mkdir -p "$work/disk"
  mount "$dev" "$work/disk"
}
