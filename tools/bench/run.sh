#!/usr/bin/env bash
# The fio performance harness (issue 5): localvol against raw XFS, bindfs and
# mergerfs on one scratch loop disk, for two device profiles.
#
#   sudo tools/bench/run.sh [--quick] [--profile fast|device] [--no-doc] [--only TESTS]
#                           [--baseline BUILD_DIR] [--targets NAMES]
#
#   --quick     1 round and smaller files (about 7 minutes for both profiles);
#               the default is 3 rounds (about 40 minutes)
#   --profile   run one device profile only (default: device, then fast)
#   --no-doc    do not rewrite docs/performance.md and docs/performance.png
#   --only      comma-separated test names (fio_matrix.py's TESTS), for a smoke
#               run of a few rows; implies --no-doc
#   --targets   comma-separated target names to measure (raw first; of raw,
#               localvol, nopt, limited, ring, b0, bindfs, mergerfs), for a
#               shorter side-by-side run of a few targets; implies --no-doc
#   --baseline  BUILD_DIR is the build directory of another localvol build
#               (BUILD_DIR/tools/localvol-fuse): adds target (b0), that build's
#               volume with the options of (b), and the column b/b0 (this
#               build against that one, paired by round, median): the check
#               that a change regressed no row
#
# Profiles (see tools/bench/lib.sh): "device" is a loop device with
# --direct-io=on over an image on the real disk (/var/tmp); "fast" is a
# buffered loop device over an image in /dev/shm, so the "disk" is RAM and
# only the CPU cost of each path shows.
#
# Targets, all on the same XFS, each in its own directory: raw XFS (a), a
# localvol volume (b: quota on, capacity above what the tests write, read
# passthrough on as by default), the same with read passthrough off (b-), the
# same with I/O limits configured but never binding (c: a read limit, so no
# passthrough either), the same taking requests
# through FUSE over io_uring (b', opt-in; the fuse module parameter enable_uring
# is turned on for the run and put back afterwards), with --baseline the (b)
# volume served by the other build (b0), bindfs and mergerfs (d).
# Each test runs on every target before the next test starts, in a
# rotating order; caches are dropped before every run; the figures are medians
# over the rounds. The results go to tools/bench/results/<timestamp>/ (fio JSON
# of every run, results.json, the report); the table and chart go to
# docs/performance.md and docs/performance.png.
#
# Everything (servers, mounts, loop devices, images) is removed on exit,
# including on error and Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

quick=""
profiles="device fast"
write_doc=1
only=()
baseline=""
wanted=""
while [ $# -gt 0 ]; do
  case $1 in
    --only) shift; only=(--only "${1:?--only needs test names}"); write_doc="" ;;
    --quick) quick=1 ;;
    --profile) shift; profiles=${1:?--profile needs fast or device} ;;
    --no-doc) write_doc="" ;;
    --targets) shift; wanted=${1:?--targets needs target names}; write_doc="" ;;
    --baseline) shift; baseline=${1:?--baseline needs the build directory of another localvol build} ;;
    -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
    *) echo "unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for p in $profiles; do
  case $p in fast|device) ;; *) echo "unknown profile '$p' (fast or device)" >&2; exit 2 ;; esac
done
if [ -n "$baseline" ]; then
  [ -x "$baseline/tools/localvol-fuse" ] || { echo "--baseline $baseline: no tools/localvol-fuse there; give the build directory of another localvol build (cmake --build DIR --target localvol-fuse)" >&2; exit 2; }
  baseline=$(cd "$baseline" && pwd)
fi
[ "$(id -u)" -eq 0 ] || { echo "run as root: sudo $0 $*" >&2; exit 1; }

# --- dependencies (Debian packages), installed only when missing
need=()
command -v fio >/dev/null || need+=(fio)
command -v bindfs >/dev/null || need+=(bindfs)
command -v mergerfs >/dev/null || need+=(mergerfs)
command -v fincore >/dev/null || need+=(util-linux)
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The system python: matplotlib comes from Debian, not from a pyenv/venv.
py=/usr/bin/python3
[ -x "$root/build/tools/localvol-fuse" ] || "$root/scripts/build.sh"

source "$here/lib.sh"

# (b') needs FUSE over io_uring, which the kernel offers only with this on.
uring_param=/sys/module/fuse/parameters/enable_uring
uring_was=""
if [ -w "$uring_param" ]; then
  uring_was=$(cat "$uring_param")
  echo 1 >"$uring_param"
  restore_uring() { [ "$uring_was" = Y ] || echo 0 >"$uring_param" || true; bench_cleanup; }
  trap restore_uring EXIT
fi

stamp=$(date -u +%Y%m%d-%H%M%S)
results=$here/results/$stamp
mkdir -p "$results"
if [ -n "$quick" ]; then reps=1; disk_size=10G; capacity=4Gi; mode=--quick; data_gib=1
else reps=3; disk_size=16G; capacity=8Gi; mode=""; data_gib=2; fi
# (b0) writes one more data file (fio_matrix.py's PLAN).
if [ -n "$baseline" ]; then disk_size=$(( ${disk_size%G} + data_gib ))G; fi
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain -- base iopath fuse tools/localvol_fuse_main.cc 2>/dev/null)" ]; then
  commit="$commit + uncommitted changes"
fi
command_line="sudo tools/bench/run.sh${quick:+ --quick}"
[ "$profiles" = "device fast" ] || command_line="$command_line --profile $profiles"
machine_args=()
if [ -n "$baseline" ]; then
  command_line="$command_line --baseline $baseline"
  # The source tree the baseline was configured from, as CMake recorded it.
  baseline_src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$baseline/CMakeCache.txt" 2>/dev/null || true)
  baseline_commit=$(git -C "${baseline_src:-/nonexistent}" rev-parse --short HEAD 2>/dev/null || echo unknown)
  machine_args=(--baseline-commit "$baseline_commit ($baseline)")
fi
"$py" "$here/fio_matrix.py" machine --results "$results" --commit "$commit" --command "$command_line" \
  "${machine_args[@]}"

wait_mounted() {  # MOUNTPOINT PID NAME
  for _ in $(seq 100); do
    mountpoint -q "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 exited before mounting $1" >&2; return 1; }
    sleep 0.1
  done
  echo "$3 did not mount $1 within 10 s" >&2
  return 1
}

for profile in $profiles; do
  echo "=== profile $profile: $disk_size XFS on a loop device"
  if [ "$profile" = fast ]; then
    # The image lives in RAM: make sure it fits next to everything else.
    avail=$(df -B1 --output=avail /dev/shm | tail -1)
    want=$(( ${disk_size%G} * 3 / 4 * 1024 * 1024 * 1024 ))
    [ "$avail" -gt "$want" ] || { echo "/dev/shm has $avail bytes free, the fast profile needs about $want" >&2; exit 1; }
  fi
  bench_make_disk_profile "$profile" "$disk_size"
  if [ "$profile" = device ] && [ "$(losetup -n -O DIO "$dev" | tr -d ' ')" != 1 ]; then
    echo "losetup --direct-io=on did not take effect on $dev" >&2; exit 1
  fi
  out=$results/$profile
  loopdev=$(basename "$dev")
  disk_note="$disk_size image in $(dirname "$bench_img"), $dev with direct-io=$(losetup -n -O DIO "$dev" | tr -d ' '), read_ahead_kb=$(cat /sys/block/$loopdev/queue/read_ahead_kb) (as losetup left it)"
  mkdir -p "$out" "$work/disk/raw" "$work/disk/localvol" "$work/disk/nopt" "$work/disk/limited" \
    "$work/disk/ring" "$work/disk/bindfs" "$work/disk/mergerfs" "$work/mnt/localvol" \
    "$work/mnt/nopt" "$work/mnt/limited" "$work/mnt/ring" "$work/mnt/bindfs" "$work/mnt/mergerfs" \
    "$work/disk/b0" "$work/mnt/b0"

  # (b) a localvol volume, quota on (capacity well above what the tests write).
  "$bench_fuse" "$work/disk/localvol" "$work/mnt/localvol" --capacity "$capacity" --foreground \
    >"$out/localvol-fuse.log" 2>&1 &
  vol_pid=$!; bench_track_pid "$vol_pid"
  wait_mounted "$work/mnt/localvol" "$vol_pid" localvol-fuse
  # (b-) the same with read passthrough off: every read through the server.
  "$bench_fuse" "$work/disk/nopt" "$work/mnt/nopt" --capacity "$capacity" --foreground \
    --read-passthrough=off >"$out/localvol-fuse-nopt.log" 2>&1 &
  nopt_pid=$!; bench_track_pid "$nopt_pid"
  wait_mounted "$work/mnt/nopt" "$nopt_pid" localvol-fuse
  # (c) the same kind of volume with every I/O limit configured, far above
  # anything the tests reach: what checking and charging the buckets costs.
  "$bench_fuse" "$work/disk/limited" "$work/mnt/limited" --capacity "$capacity" --foreground \
    --read-iops 100000000 --write-iops 100000000 --read-bps 1000Gi --write-bps 1000Gi \
    >"$out/localvol-fuse-limited.log" 2>&1 &
  lim_pid=$!; bench_track_pid "$lim_pid"
  wait_mounted "$work/mnt/limited" "$lim_pid" localvol-fuse
  # (b') the (b) volume taking its requests through FUSE over io_uring.
  ring_target=()
  if [ -n "$uring_was" ]; then
    "$bench_fuse" "$work/disk/ring" "$work/mnt/ring" --capacity "$capacity" --foreground --io-uring \
      >"$out/localvol-fuse-ring.log" 2>&1 &
    ring_pid=$!; bench_track_pid "$ring_pid"
    wait_mounted "$work/mnt/ring" "$ring_pid" localvol-fuse
    ring_target=(--target "ring=$work/mnt/ring,backing=$work/disk/ring,pid=$ring_pid")
  fi
  # (b0) the (b) volume served by the baseline build. Its command line starts
  # "localvol-fuse $work/" too, so bench_stop_servers stops it by name as well.
  base_target=()
  if [ -n "$baseline" ]; then
    "$baseline/tools/localvol-fuse" "$work/disk/b0" "$work/mnt/b0" --capacity "$capacity" --foreground \
      >"$out/localvol-fuse-b0.log" 2>&1 &
    b0_pid=$!; bench_track_pid "$b0_pid"
    wait_mounted "$work/mnt/b0" "$b0_pid" "baseline localvol-fuse"
    base_target=(--target "b0=$work/mnt/b0,backing=$work/disk/b0,pid=$b0_pid")
  fi
  # (d) bindfs: multithreaded (its default is one thread), and O_DIRECT
  # forwarded to the backing file (its default drops O_DIRECT, so a direct read
  # would be served from the backing file's page cache).
  bindfs -f --multithreaded --forward-odirect=4096 -o subtype=bindfs \
    "$work/disk/bindfs" "$work/mnt/bindfs" >"$out/bindfs.log" 2>&1 &
  bind_pid=$!; bench_track_pid "$bind_pid"
  wait_mounted "$work/mnt/bindfs" "$bind_pid" bindfs
  # (d) mergerfs: its documented setup for applications that need no mmap
  # (cache.files=off: FOPEN_DIRECT_IO, no page cache on the mergerfs side).
  mergerfs -f -o allow_other,use_ino,cache.files=off,dropcacheonclose=true,category.create=mfs,minfreespace=0 \
    "$work/disk/mergerfs" "$work/mnt/mergerfs" >"$out/mergerfs.log" 2>&1 &
  merge_pid=$!; bench_track_pid "$merge_pid"
  wait_mounted "$work/mnt/mergerfs" "$merge_pid" mergerfs
  findmnt -l -o TARGET,FSTYPE,OPTIONS | grep -E "^TARGET|^$work/" | tee "$out/mounts.txt"

  all_targets=(--target "raw=$work/disk/raw"
    --target "localvol=$work/mnt/localvol,backing=$work/disk/localvol,pid=$vol_pid"
    --target "nopt=$work/mnt/nopt,backing=$work/disk/nopt,pid=$nopt_pid"
    --target "limited=$work/mnt/limited,backing=$work/disk/limited,pid=$lim_pid"
    "${ring_target[@]}" "${base_target[@]}"
    --target "bindfs=$work/mnt/bindfs,backing=$work/disk/bindfs,pid=$bind_pid"
    --target "mergerfs=$work/mnt/mergerfs,backing=$work/disk/mergerfs,pid=$merge_pid")
  targets=()
  for ((i = 1; i < ${#all_targets[@]}; i += 2)); do
    name=${all_targets[i]%%=*}
    if [ -z "$wanted" ] || [[ ",$wanted," == *",$name,"* ]]; then
      targets+=(--target "${all_targets[i]}")
    fi
  done
  [ "${targets[1]%%=*}" = raw ] || { echo "--targets must include raw (the baseline of every ratio)" >&2; exit 2; }
  "$py" "$here/fio_matrix.py" run --profile "$profile" --out "$out" --reps "$reps" $mode \
    --disk-note "$disk_note" "${only[@]}" "${targets[@]}"
  bench_drop_disk
done

"$py" "$here/fio_matrix.py" machine --results "$results" --finish
doc_args=()
if [ -n "$write_doc" ]; then
  doc_args=(--doc "$root/docs/performance.md" --png "$root/docs/performance.png")
fi
(cd "$root" && "$py" "$here/fio_matrix.py" report --results "$results" "${doc_args[@]}") | tee "$results/report.md"
echo "results: $results"
