#!/usr/bin/env python3
"""The fio matrix of tools/bench/run.sh: runs it, parses it, reports it.

  fio_matrix.py run --profile P --out DIR --reps N [--quick]
                    --target NAME=PATH[,backing=DIR][,pid=PID] ...
      Runs every test on every target, round-robin (one test on all targets,
      in a rotating order, then the next test), N rounds. Caches are dropped
      before every single fio run. Writes DIR/<test>/<target>-r<round>.json
      (fio's JSON) and DIR/results.json (the parsed figures).

  fio_matrix.py report --results DIR [--doc docs/performance.md]
                       [--png docs/performance.png] [--command CMD]
      Reads DIR/<profile>/results.json for each profile, prints the markdown
      tables, draws the chart and rewrites the generated part of the doc.

The first target is the baseline (raw XFS): every ratio is a target's figure
divided by the baseline's figure of the same round, median over the rounds.
A target "b0" (run.sh --baseline: localvol from another build) adds the
column b/b0, localvol's figure over b0's of the same round, median.
"""
import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

MiB = 1 << 20
GiB = 1 << 30

# name, title, fio arguments, metric, kind
#   metric: "bw" (MiB/s), "iops", "ops" (1 / mean syscall latency, per file op)
#   kind:   "time" runs for the runtime over the data file;
#           "size" runs once through a given size (no wrap: no cache reuse);
#           "meta" runs the many-small-files jobs.
TESTS = [
    ("seqread_direct", "1 MiB seq read, direct, QD16",
     dict(rw="read", bs="1M", direct=1, ioengine="io_uring", iodepth=16), "bw", "time"),
    ("seqwrite_direct", "1 MiB seq write, direct, QD16",
     dict(rw="write", bs="1M", direct=1, ioengine="io_uring", iodepth=16), "bw", "time"),
    ("seqwrite_buffered_fsync", "1 MiB seq write, buffered + end fsync",
     dict(rw="write", bs="1M", direct=0, ioengine="psync", end_fsync=1), "bw", "size"),
    ("seqread_buffered_cold", "1 MiB seq read, buffered, cold cache",
     dict(rw="read", bs="1M", direct=0, ioengine="psync"), "bw", "size"),
    ("randread_qd1", "4 KiB randread QD1, direct",
     dict(rw="randread", bs="4k", direct=1, ioengine="io_uring", iodepth=1), "iops", "time"),
    ("randread_qd32", "4 KiB randread QD32, direct",
     dict(rw="randread", bs="4k", direct=1, ioengine="io_uring", iodepth=32), "iops", "time"),
    ("randread_buffered_qd1", "4 KiB randread QD1, buffered",
     dict(rw="randread", bs="4k", direct=0, ioengine="psync"), "iops", "time"),
    ("randread_buffered_qd32", "4 KiB randread QD32, buffered",
     dict(rw="randread", bs="4k", direct=0, ioengine="io_uring", iodepth=32), "iops", "time"),
    ("randread_mmap", "4 KiB randread, mmap",
     dict(rw="randread", bs="4k", ioengine="mmap"), "iops", "time"),
    ("randwrite_qd1", "4 KiB randwrite QD1, direct",
     dict(rw="randwrite", bs="4k", direct=1, ioengine="io_uring", iodepth=1), "iops", "time"),
    ("randwrite_qd32", "4 KiB randwrite QD32, direct",
     dict(rw="randwrite", bs="4k", direct=1, ioengine="io_uring", iodepth=32), "iops", "time"),
    ("create", "file create (filecreate)", dict(ioengine="filecreate"), "ops", "meta"),
    ("stat", "file stat (filestat)", dict(ioengine="filestat"), "ops", "meta"),
    ("delete", "file delete (filedelete)", dict(ioengine="filedelete"), "ops", "meta"),
]
TEST_BY_NAME = {t[0]: t for t in TESTS}
UNITS = {"bw": "MiB/s", "iops": "IOPS", "ops": "ops/s"}

# The bar of issue 5: minimum localvol / raw XFS ratio, per device profile.
BAR = {
    "seqread_direct": {"device": 0.85, "fast": 0.40},
    "seqwrite_direct": {"device": 0.85, "fast": 0.60},
    "seqwrite_buffered_fsync": {"device": 0.85, "fast": 0.70},
    "seqread_buffered_cold": {"device": 0.85, "fast": 0.50},
    "randread_qd1": {"device": 0.80, "fast": 0.60},
    "randread_qd32": {"device": 0.80, "fast": 0.50},
    "randwrite_qd1": {"device": 0.75, "fast": 0.50},
    "randwrite_qd32": {"device": 0.75, "fast": 0.50},
    "create": {"device": 0.50, "fast": 0.35},
    "stat": {"device": 0.50, "fast": 0.35},
}
# The bar of issue 21 (kernel FUSE passthrough for reads): every read row at
# least this ratio to raw XFS on both profiles; write and metadata rows no
# slower than the same volume with passthrough off, within the noise allowed.
READ_ROWS = ("seqread_direct", "seqread_buffered_cold", "randread_qd1", "randread_qd32",
             "randread_buffered_qd1", "randread_buffered_qd32", "randread_mmap")
PASSTHROUGH_BAR = 0.90
NO_REGRESSION_BAR = 0.95
SUT = "localvol"            # the system under test
LIMITED = "limited"         # the same volume with I/O limits configured, never binding
RING = "ring"               # the same volume taking requests through FUSE over io_uring (opt-in)
NOPT = "nopt"               # the same volume with read passthrough off (every read via the server)
PREVIOUS = "b0"             # the same volume served by another build (run.sh --baseline)
VARIANTS = (SUT, LIMITED, RING, NOPT, PREVIOUS)  # localvol's own targets; the rest are other filesystems
DISPLAY = {"raw": "raw XFS (a)", "localvol": "localvol (b)", LIMITED: "localvol + limits (c)",
           RING: "localvol, io_uring (b')", NOPT: "localvol, passthrough off (b-)",
           PREVIOUS: "localvol, baseline build (b0)",
           "bindfs": "bindfs (d)", "mergerfs": "mergerfs (d)"}
ENFORCEMENT_BAR = 0.03      # (c) may be at most 3% slower than (b)

# Sizes: data file per target, bytes written by the buffered-write test,
# runtime of the time-based tests, a cap for the size-based ones, and the
# metadata jobs (sequential fio jobs of 1000 files each: fio's own per-file
# bookkeeping grows with the square of nrfiles, so one big job is unusable).
PLAN = {
    "quick": dict(data=1 * GiB, write=1 * GiB, runtime=4, cap=30, meta_jobs=4, meta_files=1000),
    "full": dict(data=2 * GiB, write=2 * GiB, runtime=7, cap=40, meta_jobs=8, meta_files=1000),
}


# ------------------------------------------------------------------ running

def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def proc_cpu_seconds(pid):
    """utime + stime of a process and all its threads, in seconds."""
    if not pid:
        return None
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def cached_bytes(path):
    """Page-cache residency of a file (fincore), or None if it cannot be read."""
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path],
                             capture_output=True, text=True, timeout=30)
        return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.split() else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def meta_jobfile(path, engine, jobs, files):
    lines = ["[global]", "ioengine=%s" % engine, "fallocate=none", "filesize=4k", "bs=4k",
             "nrfiles=%d" % files, "openfiles=1", ""]
    for j in range(jobs):
        lines += ["[m%d]" % j, "stonewall", "filename_format=meta/m%d/f.$filenum" % j, ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def parse_fio(doc, metric, rw):
    """The figure of one fio run: MiB/s, IOPS or file ops/s."""
    jobs = doc["jobs"]
    if metric == "ops":
        # 1 / mean latency of the timed syscall (open+O_CREAT, stat, unlink),
        # over all jobs. fio's own "IOPS" here includes its per-file
        # bookkeeping, which is larger than the syscall itself.
        n = sum(j["read"]["total_ios"] for j in jobs)
        ns = sum(j["read"]["clat_ns"]["mean"] * j["read"]["total_ios"] for j in jobs)
        return n / ns * 1e9 if ns > 0 else None
    side = jobs[0]["write" if "write" in rw else "read"]
    if metric == "bw":
        return side["bw_bytes"] / MiB
    return side["iops"]


def fio_error(doc, stderr, returncode):
    errs = [j.get("error", 0) for j in doc.get("jobs", [])] if doc else []
    for line in stderr.splitlines():
        if "error" in line.lower():
            return line.strip()[:200]
    if any(errs):
        e = next(x for x in errs if x)
        return "fio error %s (%s)" % (e, os.strerror(e))
    tail = stderr.strip().splitlines()[-1:] or ["no output"]
    return "fio exited %d: %s" % (returncode, tail[0][:200])


def run(args):
    # Ctrl-C must stop the matrix even when the caller ran us in the background
    # (where SIGINT starts out ignored); run.sh's EXIT trap then cleans up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    plan = PLAN["quick" if args.quick else "full"]
    targets = []
    for spec in args.target:
        name, rest = spec.split("=", 1)
        parts = rest.split(",")
        t = {"name": name, "path": parts[0], "backing": parts[0], "pid": None}
        for p in parts[1:]:
            k, v = p.split("=", 1)
            t[k] = int(v) if k == "pid" else v
        targets.append(t)
    os.makedirs(args.out, exist_ok=True)

    # Lay out the data file on every target (buffered, then fsync'd).
    for t in targets:
        log("%s: laying out the %d MiB data file" % (t["name"], plan["data"] // MiB))
        subprocess.run(["fio", "--name=layout", "--filename=" + os.path.join(t["path"], "data"),
                        "--size=%d" % plan["data"], "--rw=write", "--bs=1M", "--ioengine=psync",
                        "--end_fsync=1", "--fallocate=none", "--output-format=terse"],
                       check=True, stdout=subprocess.DEVNULL)
        for j in range(plan["meta_jobs"]):
            os.makedirs(os.path.join(t["path"], "meta", "m%d" % j), exist_ok=True)

    tests = [t for t in TESTS if not args.only or t[0] in args.only.split(",")]
    results = {"profile": args.profile, "plan": plan, "reps": args.reps, "disk": args.disk_note,
               "targets": [t["name"] for t in targets],
               "tests": [t[0] for t in tests], "runs": []}
    meta_files = {}
    for name, _, _, _, kind in tests:
        if kind == "meta":
            jf = os.path.join(args.out, "%s.fio" % name)
            meta_jobfile(jf, TEST_BY_NAME[name][2]["ioengine"], plan["meta_jobs"], plan["meta_files"])
            meta_files[name] = jf

    started = time.time()
    for rep in range(args.reps):
        for ti, (name, title, opts, metric, kind) in enumerate(tests):
            os.makedirs(os.path.join(args.out, name), exist_ok=True)
            # Rotate the order so no target always runs first after a test switch.
            k = (rep + ti) % len(targets)
            order = targets[k:] + targets[:k]
            for t in order:
                cwd = t["path"]
                cmd = ["fio", "--output-format=json"]
                if kind == "meta":
                    if name == "create":  # start from empty directories
                        for j in range(plan["meta_jobs"]):
                            d = os.path.join(cwd, "meta", "m%d" % j)
                            for e in os.listdir(d):
                                os.unlink(os.path.join(d, e))
                    cmd += [meta_files[name]]
                else:
                    fname = "data"
                    if name == "seqwrite_buffered_fsync":
                        fname = "bw"
                        try:
                            os.unlink(os.path.join(cwd, fname))
                        except FileNotFoundError:
                            pass
                    cmd += ["--name=" + name, "--filename=" + fname, "--fallocate=none",
                            "--numjobs=1", "--randrepeat=0"]
                    cmd += ["--%s=%s" % (k2, v) for k2, v in opts.items()]
                    if kind == "time":
                        cmd += ["--size=%d" % plan["data"], "--time_based",
                                "--runtime=%d" % plan["runtime"]]
                    else:
                        size = plan["write"] if opts["rw"] == "write" else plan["data"]
                        cmd += ["--size=%d" % size, "--runtime=%d" % plan["cap"]]
                out = os.path.join(args.out, name, "%s-r%d.json" % (t["name"], rep))
                cmd += ["--output=" + out]
                drop_caches()
                cpu0, w0 = proc_cpu_seconds(t["pid"]), time.time()
                p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
                cpu1, w1 = proc_cpu_seconds(t["pid"]), time.time()
                if name == "seqwrite_buffered_fsync":  # do not fill the shared disk
                    try:
                        os.unlink(os.path.join(cwd, fname))
                    except FileNotFoundError:
                        pass
                try:
                    with open(out) as f:
                        doc = json.load(f)
                except (OSError, ValueError):
                    doc = None
                err = fio_error(doc, p.stderr, p.returncode) if (p.returncode != 0 or doc is None) else None
                value = None
                if doc is not None and err is None:
                    value = parse_fio(doc, metric, opts.get("rw", ""))
                rec = {"test": name, "target": t["name"], "rep": rep, "value": value,
                       "error": err, "wall_s": round(w1 - w0, 3)}
                if doc is not None:
                    j0 = doc["jobs"][0]
                    rec["fio_runtime_ms"] = sum(j["job_runtime"] for j in doc["jobs"])
                    rec["fio_cpu"] = {"usr": j0["usr_cpu"], "sys": j0["sys_cpu"]}
                if cpu0 is not None and cpu1 is not None and rec.get("fio_runtime_ms"):
                    rec["server_cpu_pct"] = round(100 * (cpu1 - cpu0) / (w1 - w0), 1)
                if opts.get("direct") == 1:
                    # Honesty check: a direct run must leave nothing cached,
                    # neither in the FUSE file's pages nor in the backing file's.
                    rec["cached_after"] = {
                        "file": cached_bytes(os.path.join(cwd, fname)),
                        "backing": cached_bytes(os.path.join(t["backing"], fname)),
                    }
                results["runs"].append(rec)
                shown = ("%.0f %s" % (value, UNITS[metric])) if value is not None else ("ERROR " + str(err))
                extra = ""
                if "server_cpu_pct" in rec:
                    extra += " server cpu %s%%" % rec["server_cpu_pct"]
                if "cached_after" in rec:
                    c = rec["cached_after"]
                    extra += " cached %s/%s B" % (c["file"], c["backing"])
                log("r%d %-24s %-9s %s%s" % (rep, name, t["name"], shown, extra))
                with open(os.path.join(args.out, "results.json"), "w") as f:
                    json.dump(results, f, indent=1)
    results["elapsed_s"] = round(time.time() - started)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


# ---------------------------------------------------------------- reporting

def paired_median(reps, other):
    """Median over the rounds of reps' figure over other's of the same round."""
    ratios = [r["value"] / other[rep]["value"] for rep, r in reps.items()
              if r["value"] is not None and rep in other and other[rep]["value"]]
    return statistics.median(ratios) if ratios else None


def summarize(res):
    """{test: {target: {"abs": median, "ratio": median paired ratio, "err": str,
    "vs_sut": against localvol (b), "vs_b0": against b0}}}"""
    base = res["targets"][0]
    by = {}
    for r in res["runs"]:
        by.setdefault(r["test"], {}).setdefault(r["target"], {})[r["rep"]] = r
    out = {}
    for test in res["tests"]:
        out[test] = {}
        runs = by.get(test, {})
        for target in res["targets"]:
            reps = runs.get(target, {})
            vals = [r["value"] for r in reps.values() if r["value"] is not None]
            errs = [r["error"] for r in reps.values() if r["error"]]
            cpus = [r["server_cpu_pct"] for r in reps.values() if "server_cpu_pct" in r]
            cached = [max(v or 0 for v in r["cached_after"].values())
                      for r in reps.values() if "cached_after" in r]
            out[test][target] = {
                "vs_sut": paired_median(reps, runs.get(SUT, {})),
                "vs_b0": paired_median(reps, runs.get(PREVIOUS, {})),
                "abs": statistics.median(vals) if vals else None,
                "ratio": paired_median(reps, runs.get(base, {})),
                "n": len(vals),
                "err": errs[0] if errs and not vals else None,
                "cpu": statistics.median(cpus) if cpus else None,
                "cached_max": max(cached) if cached else None,
            }
    return out


def fmt_ratio(r, bar=None):
    """Two decimals, or three when two would round onto the bar."""
    if bar is not None and abs(r - bar) < 0.005:
        return "%.3f" % r
    return "%.2f" % r


def fmt_abs(v, metric):
    if v is None:
        return "-"
    return "{:,.0f}".format(v) if v >= 100 else "%.1f" % v


def short_err(err):
    if not err:
        return "error"
    for code in ("EINVAL", "Invalid argument", "ENOSPC", "No space", "EIO"):
        if code in err:
            return "error (%s)" % {"Invalid argument": "EINVAL", "No space": "ENOSPC"}.get(code, code)
    return "error"


def table(profile, res, summ):
    targets = res["targets"]
    base = targets[0]
    others = [t for t in targets[1:] if t not in VARIANTS]
    ring = [t for t in (NOPT, RING) if t in targets]
    previous = SUT in targets and PREVIOUS in targets
    head = ["fio test", "unit", DISPLAY.get(base, base)]
    if SUT in targets:
        head += [DISPLAY[SUT]] + ([DISPLAY[PREVIOUS], "b/b0"] if previous else []) + [DISPLAY[LIMITED]]
    head += [DISPLAY[t] for t in ring]
    head += [DISPLAY.get(t, t) for t in others] + ["bar (%s)" % profile, "%s vs bar" % SUT, "%s beats %s" % (SUT, "/".join(others) or "others")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    verdicts = []
    for test in res["tests"]:
        _, title, _, metric, _ = TEST_BY_NAME[test]
        row = [title, UNITS[metric]]
        s = summ[test]
        b = s[base]
        row.append(fmt_abs(b["abs"], metric) if b["abs"] is not None else short_err(b["err"]))

        def cell(t):
            c = s[t]
            if c["abs"] is None:
                return short_err(c["err"])
            return "%s (%.2f×)" % (fmt_abs(c["abs"], metric), c["ratio"]) if c["ratio"] is not None \
                else fmt_abs(c["abs"], metric)
        if SUT in targets:
            row.append(cell(SUT))
            if previous:
                vs_b0 = s[SUT]["vs_b0"]
                row += [cell(PREVIOUS), "-" if vs_b0 is None else "%.3f" % vs_b0]
            if LIMITED in targets and s[LIMITED]["vs_sut"] is not None:
                row.append("%s (c/b %.3f)" % (cell(LIMITED), s[LIMITED]["vs_sut"]))
            else:
                row.append(cell(LIMITED) if LIMITED in targets else "-")
        row += [cell(t) for t in ring + others]
        bar = BAR.get(test, {}).get(profile)
        sut = s.get(SUT, {})
        if bar is None:
            row += ["-", "-"]
        elif sut.get("ratio") is None:
            row += ["≥ %.2f" % bar, "**FAIL** (no result)"]
            verdicts.append((test, False))
        else:
            ok = sut["ratio"] >= bar
            verdicts.append((test, ok))
            row += ["≥ %.2f" % bar, "pass" if ok else "**FAIL** (%s)" % fmt_ratio(sut["ratio"], bar)]
        if SUT in targets and sut.get("abs") is not None:
            beaten = [t for t in others if s[t]["abs"] is None or sut["abs"] > s[t]["abs"]]
            row.append("yes" if len(beaten) == len(others) else
                       "no (%s faster)" % ", ".join(t for t in others if t not in beaten))
        else:
            row.append("-")
        lines.append("| " + " | ".join(row) + " |")
    cost = enforcement_cost(res, summ)
    cells = ["cost of enforcement (c) vs (b)", "%", "-"]
    if SUT in targets:
        cells += ["-"] * (3 if previous else 1) + [cost["text"]]
    cells += ["-"] * len(ring + others) + ["≤ %d%%" % (ENFORCEMENT_BAR * 100), cost["verdict"], "-"]
    lines.append("| " + " | ".join(cells) + " |")
    if cost["ok"] is not None:
        verdicts.append(("enforcement", cost["ok"]))
    return "\n".join(lines), verdicts


def enforcement_cost(res, summ):
    """How much slower (c) is than (b): the median over the tests of 1 - c/b
    (paired by round), with the worst test named. Judged on the median: one
    test's c/b moves by several percent between rounds on this machine."""
    if LIMITED not in res["targets"] or SUT not in res["targets"]:
        return {"text": "not run", "verdict": "**FAIL** (not run)", "ok": False}
    costs = [(1 - summ[t][LIMITED]["vs_sut"], t) for t in res["tests"]
             if summ[t][LIMITED]["vs_sut"] is not None]
    if not costs:
        return {"text": "no result", "verdict": "**FAIL** (no result)", "ok": False}
    median = statistics.median(c for c, _ in costs)
    worst, worst_test = max(costs)
    ok = median <= ENFORCEMENT_BAR
    text = "median %.1f%%, worst %.1f%% (%s)" % (median * 100, worst * 100, worst_test)
    return {"text": text, "verdict": "pass" if ok else "**FAIL** (%.1f%%)" % (median * 100),
            "ok": ok, "median": median}


def bar_table(profiles):
    """One row per bar row: the bar, localvol's ratio and the verdict, per profile."""
    head = ["fio test"]
    for p, _, _ in profiles:
        head += ["bar (%s)" % p, "localvol (%s)" % p, "verdict (%s)" % p]
    head.append("localvol beats bindfs and mergerfs")
    with_ring = any(RING in res["targets"] for _, res, _ in profiles)
    if with_ring:
        head.append("with io_uring (b')")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for test in profiles[0][1]["tests"]:
        if test not in BAR:
            continue
        row = [TEST_BY_NAME[test][1]]
        beats = []
        ring_cells = []
        for p, res, summ in profiles:
            bar = BAR[test][p]
            c = summ[test].get(SUT, {})
            r = c.get("ratio")
            row += ["≥ %.2f" % bar, fmt_ratio(r, bar) if r is not None else "-",
                    ("pass" if r >= bar else "**FAIL**") if r is not None else "**FAIL**"]
            others = [t for t in res["targets"][1:] if t not in VARIANTS]
            if RING in res["targets"]:
                rr = summ[test][RING].get("ratio")
                ring_cells.append("%s: %s" % (p, "-" if rr is None else "%.2f%s" % (rr, "" if rr >= bar else " (below)")))
            slower = [t for t in others if c.get("abs") is not None and summ[test][t]["abs"] is not None
                      and summ[test][t]["abs"] >= c["abs"]]
            beats.append("%s: %s" % (p, "yes" if not slower else "no (%s)" % ", ".join(slower)))
        row.append("; ".join(beats))
        if with_ring:
            row.append("; ".join(ring_cells) or "-")
        lines.append("| " + " | ".join(row) + " |")
    row = ["cost of enforcement (c) vs (b)"]
    for p, res, summ in profiles:
        cost = enforcement_cost(res, summ)
        row += ["≤ %d%%" % (ENFORCEMENT_BAR * 100), cost["text"], cost["verdict"]]
    row.append("-")
    if with_ring:
        row.append("-")
    lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def passthrough_table(profiles):
    """The bar of issue 21: read rows of (b) against raw XFS, next to (b-)
    (passthrough off); write and metadata rows of (b) against (b-)."""
    head = ["fio test"]
    for p, _, _ in profiles:
        head += ["(b) / raw (%s)" % p, "(b-) / raw (%s)" % p, "(b) / (b-) (%s)" % p,
                 "verdict (%s)" % p]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    verdicts = []
    for test in profiles[0][1]["tests"]:
        row = [TEST_BY_NAME[test][1]]
        for p, res, summ in profiles:
            s = summ.get(test, {})
            b = s.get(SUT, {}).get("ratio")
            nopt = s.get(NOPT, {}).get("ratio")
            b_vs_nopt = None
            if NOPT in res["targets"] and s.get(SUT, {}).get("abs") and s.get(NOPT, {}).get("abs"):
                b_vs_nopt = b / nopt if b and nopt else None
            if test in READ_ROWS:
                ok = b is not None and b >= PASSTHROUGH_BAR
                verdict = ("pass" if ok else "**FAIL**") + " (≥ %.2f of raw)" % PASSTHROUGH_BAR
            else:
                ok = b_vs_nopt is not None and b_vs_nopt >= NO_REGRESSION_BAR
                verdict = ("pass" if ok else "**FAIL**") + " (≥ %.2f of b-)" % NO_REGRESSION_BAR
            verdicts.append(ok)
            row += ["-" if b is None else "%.2f" % b, "-" if nopt is None else "%.2f" % nopt,
                    "-" if b_vs_nopt is None else "%.2f" % b_vs_nopt, verdict]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines), verdicts


def previous_table(profiles):
    """b/b0 per test and profile: this build against the baseline build, paired
    by round, median; None when no profile ran b0."""
    ran = [(p, summ) for p, res, summ in profiles if PREVIOUS in res["targets"] and SUT in res["targets"]]
    if not ran:
        return None
    head = ["fio test"] + ["b/b0 (%s)" % p for p, _ in ran]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for test in profiles[0][1]["tests"]:
        cells = [summ[test][SUT]["vs_b0"] if test in summ else None for _, summ in ran]
        lines.append("| " + " | ".join([TEST_BY_NAME[test][1]] + ["-" if c is None else "%.3f" % c
                                                                  for c in cells]) + " |")
    return "\n".join(lines)


def cpu_table(profiles):
    """Server CPU per test (percent of one core over the fio run), median."""
    servers = []
    for _, res, summ in profiles:
        for t in res["targets"][1:]:
            if t not in servers:
                servers.append(t)
    head = ["fio test"] + ["%s, %s" % (t, p) for p, _, _ in profiles for t in servers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    tests = profiles[0][1]["tests"]
    for test in tests:
        row = [TEST_BY_NAME[test][1]]
        for p, res, summ in profiles:
            for t in servers:
                c = summ.get(test, {}).get(t)
                row.append("%.0f%%" % c["cpu"] if c and c["cpu"] is not None else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def honesty_lines(profiles):
    out = []
    for p, res, summ in profiles:
        for t in res["targets"]:
            worst = [summ[test][t]["cached_max"] for test in res["tests"]
                     if summ[test][t]["cached_max"] is not None]
            if worst:
                out.append("- %s, %s: at most %d bytes cached (FUSE file or backing file) after any "
                           "direct run." % (p, t, max(worst)))
    return out


def chart(profiles, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(profiles), 1, figsize=(10, 3.6 * len(profiles)), dpi=80,
                             squeeze=False)
    colors = {"localvol": "#1f77b4", LIMITED: "#9467bd", RING: "#17becf", NOPT: "#7f7f7f", "bindfs": "#ff7f0e", "mergerfs": "#2ca02c"}
    for ax, (p, res, summ) in zip(axes[:, 0], profiles):
        tests = res["tests"]
        targets = res["targets"][1:]
        width = 0.8 / max(1, len(targets))
        for i, t in enumerate(targets):
            xs = [k + (i - (len(targets) - 1) / 2) * width for k in range(len(tests))]
            ys = [summ[test][t]["ratio"] or 0 for test in tests]
            ax.bar(xs, ys, width, label=t, color=colors.get(t))
            for x, test in zip(xs, tests):
                if summ[test][t]["abs"] is None:
                    ax.text(x, 0.02, "error", rotation=90, fontsize=6, ha="center", va="bottom")
        for k, test in enumerate(tests):
            bar = BAR.get(test, {}).get(p)
            if bar is not None:
                ax.hlines(bar, k - 0.45, k + 0.45, colors="red", linewidth=1.5,
                          label="bar" if k == 0 else None)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(tests)))
        ax.set_xticklabels([t.replace("_", "\n", 1) for t in tests], fontsize=7)
        ax.set_ylabel("ratio to raw XFS")
        ax.set_title("profile: %s (median of %d rounds; red: the bar for localvol)" % (p, res["reps"]),
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        ax.set_ylim(0, max(1.3, max([summ[t_][x]["ratio"] or 0 for t_ in tests for x in targets] + [0]) * 1.1))
    fig.tight_layout()
    fig.savefig(png, dpi=80)


def machine(results_dir):
    path = os.path.join(results_dir, "machine.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


BEGIN = "<!-- BEGIN GENERATED by tools/bench/fio_matrix.py report -->"
END = "<!-- END GENERATED -->"


def report(args):
    profiles = []
    for p in ("device", "fast"):
        path = os.path.join(args.results, p, "results.json")
        if os.path.exists(path):
            with open(path) as f:
                res = json.load(f)
            profiles.append((p, res, summarize(res)))
    if not profiles:
        sys.exit("no results under %s" % args.results)
    m = machine(args.results)
    parts = []
    parts.append("Command: `%s`, results in `%s` (fio JSON of every run, not committed)."
                 % (args.command or m.get("command", "tools/bench/run.sh"), os.path.relpath(args.results, os.getcwd()) if args.results.startswith("/") else args.results))
    if m:
        parts.append("")
        parts.append("Machine: %s cores, %s GiB memory, kernel %s, fio %s, %s. Date %s. "
                     "localvol at `%s`. Load average before/after the run: %s / %s."
                     % (m.get("nproc"), m.get("mem_gib"), m.get("kernel"), m.get("fio"),
                        m.get("os"), m.get("date"), m.get("commit"), m.get("load_before"),
                        m.get("load_after", "?")))
    all_verdicts = []
    for p, res, summ in profiles:
        t, verdicts = table(p, res, summ)
        all_verdicts += [(p, v) for v in verdicts]
        plan = res["plan"]
        parts += ["", "### Profile `%s`" % p, "",
                  "Median of %d round(s); data file %d MiB per target, %d s per time-based test, "
                  "%d MiB written by the buffered-write test, %d×%d files in the metadata tests. "
                  "Ratios in parentheses are against raw XFS in the same round. Run time of the "
                  "matrix: %s s. Disk: %s." % (res["reps"], plan["data"] // MiB, plan["runtime"],
                                     plan["write"] // MiB, plan["meta_jobs"], plan["meta_files"],
                                     res.get("elapsed_s", "?"), res.get("disk") or "?"),
                  "", t]
    prev = previous_table(profiles)
    if prev:
        parts += ["", "### This build against the baseline build", "",
                  "localvol (b) over the same volume served by the baseline build (b0, %s), "
                  "paired by round, median: below 1 is slower than the baseline." % m.get("baseline", "?"),
                  "", prev]
    passed = sum(1 for _, (_, ok) in all_verdicts if ok)
    parts += ["", "### The bar of issue 5", "", bar_table(profiles), "",
              "%d of %d rows pass (localvol against raw XFS, median paired ratio; the "
              "enforcement row: the same volume with limits configured far above what the "
              "tests reach, against (b))." % (passed, len(all_verdicts))]
    if any(NOPT in res["targets"] for _, res, _ in profiles):
        pt, pv = passthrough_table(profiles)
        parts += ["", "### The bar of issue 21: read passthrough", "", pt, "",
                  "%d of %d cells pass. (b) serves read-only opens with kernel FUSE passthrough "
                  "(the default, `read_passthrough: auto`); (b-) is the same volume with "
                  "`--read-passthrough=off`. Read rows: (b) against raw XFS in the same round; "
                  "write and metadata rows: (b) against (b-), paired by round."
                  % (sum(pv), len(pv))]
    parts += ["", "### CPU of the FUSE server during each test", "",
              "Percent of one core (user + system time of the server process over the wall time "
              "of the fio run), median over the rounds. 200% is both cores.", "",
              cpu_table(profiles)]
    hl = honesty_lines(profiles)
    if hl:
        parts += ["", "### Cache check of the direct runs", "",
                  "After every `direct=1` run the harness reads the page-cache residency "
                  "(`fincore`) of the file through the target and of its backing file:", ""] + hl
    if args.png:
        chart(profiles, args.png)
        parts += ["", "![ratios to raw XFS per test and target](%s)" % os.path.basename(args.png)]
    generated = "\n".join(parts)
    print(generated)
    if args.doc:
        text = open(args.doc).read() if os.path.exists(args.doc) else ""
        block = BEGIN + "\n" + generated + "\n" + END
        if BEGIN in text and END in text:
            text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
        with open(args.doc, "w") as f:
            f.write(text)


def machine_info(args):
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    fio = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
    osname = "?"
    if os.path.exists("/etc/os-release"):
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip().strip('"')
    info = {"nproc": os.cpu_count(), "mem_gib": round(mem / GiB, 1), "kernel": platform.release(),
            "fio": fio, "os": osname,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": args.commit, "command": args.command,
            **({"baseline": args.baseline_commit} if args.baseline_commit else {}),
            "load_before": open("/proc/loadavg").read().split()[0]}
    path = os.path.join(args.results, "machine.json")
    if os.path.exists(path) and args.finish:
        with open(path) as f:
            info = json.load(f)
        info["load_after"] = open("/proc/loadavg").read().split()[0]
    os.makedirs(args.results, exist_ok=True)
    with open(path, "w") as f:
        json.dump(info, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--profile", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--reps", type=int, default=3)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--only", help="comma-separated test names")
    r.add_argument("--disk-note", default="", help="how the disk was set up, for the report")
    r.add_argument("--target", action="append", required=True,
                   help="NAME=PATH[,backing=DIR][,pid=PID]; the first one is the baseline")
    g = sub.add_parser("report")
    g.add_argument("--results", required=True)
    g.add_argument("--doc")
    g.add_argument("--png")
    g.add_argument("--command")
    mi = sub.add_parser("machine")
    mi.add_argument("--results", required=True)
    mi.add_argument("--commit", default="?")
    mi.add_argument("--command", default="")
    mi.add_argument("--baseline-commit", help="the build of target b0, for the report")
    mi.add_argument("--finish", action="store_true")
    args = ap.parse_args()
    {"run": run, "report": report, "machine": machine_info}[args.cmd](args)


if __name__ == "__main__":
    main()
