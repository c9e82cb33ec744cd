#!/usr/bin/env bash
# Measures what the kernel's attribute/entry/listing cache buys a volume:
# the same metadata workload on raw XFS, a volume with --cache-timeout 3600
# (the default) and one with --cache-timeout 0, all on one loop disk, run
# alternately, median of 3.
#
#   sudo tools/bench/caching.sh [FILES]    (default 10000)
set -euo pipefail
files=${1:-10000}
source "$(dirname "$0")/lib.sh"
bench_make_disk 8G
mkdir -p "$work/disk/raw" "$work/disk/cached" "$work/disk/uncached" "$work/mnt-cached" "$work/mnt-uncached"
"$bench_fuse" "$work/disk/cached" "$work/mnt-cached" --capacity 4Gi --cache-timeout 3600 2>/dev/null
"$bench_fuse" "$work/disk/uncached" "$work/mnt-uncached" --capacity 4Gi --cache-timeout 0 2>/dev/null

python3 - "$files" "$work/disk/raw" "$work/mnt-cached" "$work/mnt-uncached" <<'PY'
import os, statistics, sys, time
n = int(sys.argv[1])
targets = {"raw XFS": sys.argv[2], "volume, cache 3600 s": sys.argv[3], "volume, cache 0": sys.argv[4]}
for root in targets.values():
    for i in range(n):
        d = os.path.join(root, "d%03d" % (i // 100))
        if i % 100 == 0:
            os.mkdir(d)
        with open(os.path.join(d, "f%05d" % i), "wb") as f:
            f.write(b"x" * 1024)

def stat_all(root):
    for i in range(n):
        os.stat(os.path.join(root, "d%03d" % (i // 100), "f%05d" % i))

def list_all(root):
    for d in os.listdir(root):
        os.listdir(os.path.join(root, d))

def missing(root):  # negative lookups, as PATH searches and build tools do
    for i in range(n):
        try:
            os.stat(os.path.join(root, "d%03d" % (i // 100), "absent%05d" % i))
        except FileNotFoundError:
            pass

workloads = {"stat every file": stat_all, "list every directory": list_all,
             "stat a missing name": missing}
results = {w: {t: [] for t in targets} for w in workloads}
for rnd in range(3):
    for wname, fn in workloads.items():
        for tname, root in targets.items():  # alternate targets within a round
            fn(root)  # warm: the cache is what is measured
            start = time.perf_counter()
            fn(root)
            results[wname][tname].append(time.perf_counter() - start)

print("| workload (%d files, warm) | %s |" % (n, " | ".join(targets)))
print("|---|" + "---|" * len(targets))
for wname in workloads:
    med = {t: statistics.median(v) for t, v in results[wname].items()}
    raw = med["raw XFS"]
    cells = []
    for t in targets:
        ops = n / med[t] if wname != "list every directory" else (n // 100) / med[t]
        cells.append("%.0f ops/s (%.2fx raw)" % (ops, raw / med[t]))
    print("| %s | %s |" % (wname, " | ".join(cells)))
PY
