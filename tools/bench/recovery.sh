#!/usr/bin/env bash
# Measures how long localvol-fuse takes to come back after a crash (kill -9)
# of a volume holding many files: the usage rescan runs before the mount.
#
#   sudo tools/bench/recovery.sh [FILES]     (default 100000)
#
# Prints the time to remount with cold caches (caches dropped) and warm
# caches, and the rescan time the server logs, next to a clean restart.
set -euo pipefail
files=${1:-100000}
source "$(dirname "$0")/lib.sh"
bench_make_disk 20G
mkdir -p "$work/disk/vol" "$work/mnt"

# Populate through the volume, 1000 files per directory, 4 KiB each.
"$bench_fuse" "$work/disk/vol" "$work/mnt" --capacity 10Gi --inodes $((files * 2))
python3 - "$work/mnt" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
block = b"x" * 4096
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.mkdir(d)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(block)
PY
df -B1 "$work/mnt" | tail -1

remount() {  # prints seconds until the volume is mounted
  local start end
  start=$(date +%s.%N)
  "$bench_fuse" "$work/disk/vol" "$work/mnt" --capacity 10Gi --inodes $((files * 2))
  end=$(date +%s.%N)
  python3 -c "print(round($end - $start, 3))"
}
crash() {
  pkill -9 -f "localvol-fuse $work/disk/vol"
  sleep 0.2
  umount -l "$work/mnt"
}

crash; sync; echo 3 > /proc/sys/vm/drop_caches
cold=$(remount)
crash
warm=$(remount)
pkill -TERM -f "localvol-fuse $work/disk/vol"; while mountpoint -q "$work/mnt"; do sleep 0.1; done
clean=$(remount)
used=$(df -B1 --output=used "$work/mnt" | tail -1)
du_bytes=$(du -B1 -s "$work/disk/vol" | cut -f1)
pkill -TERM -f "localvol-fuse $work/disk/vol"; while mountpoint -q "$work/mnt"; do sleep 0.1; done

echo
echo "| restart of a volume with $files files | seconds to mounted |"
echo "|---|---|"
echo "| after kill -9, cold caches (rescan) | $cold |"
echo "| after kill -9, warm caches (rescan) | $warm |"
echo "| after clean shutdown (no rescan) | $clean |"
echo
echo "statfs used after recovery: $used bytes; du of backing dir: $du_bytes bytes"
