#!/usr/bin/env python3
"""Summarises a tools/bench/isolation.sh run: a markdown table per scenario,
each figure against its target. With --doc FILE, replaces the text between
the 'isolation:begin' and 'isolation:end' markers of FILE with it."""
import glob
import json
import os
import re
import statistics
import sys


def load(out, run):
    with open(os.path.join(out, run + ".json")) as f:
        text = f.read()
    # fio may print notes before the JSON object.
    return json.loads(text[text.index("{"):])


def job(data, name):
    for j in data["jobs"]:
        if j["jobname"] == name:
            return j
    raise KeyError(name)


def per_second(out, run, name):
    """IOPS per 1-second window, from fio's averaged IOPS log (all directions)."""
    files = glob.glob(os.path.join(out, f"{run}_{name}_iops.*.log"))
    buckets = {}
    for path in files:
        with open(path) as f:
            for line in f:
                parts = [p.strip() for p in line.split(",")]
                if len(parts) < 2:
                    continue
                # One line per averaged window, stamped at its end (999, 1999,
                # 3000, ...): round to the window's number.
                sec = round(int(parts[0]) / 1000)
                buckets[sec] = buckets.get(sec, 0) + int(parts[1])
    return [buckets[k] for k in sorted(buckets)]


def size_bytes(text):
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", text)
    mult = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, None: 1}[m.group(2)]
    return int(m.group(1)) * mult


def verdict(ok):
    return "pass" if ok else "**miss**"


def p99_us(j):
    return j["read"]["clat_ns"]["percentile"]["99.000000"] / 1000.0


def main():
    args = sys.argv[1:]
    doc = None
    if "--doc" in args:
        i = args.index("--doc")
        doc = args[i + 1]
        del args[i:i + 2]
    out = args[0]
    meta = json.load(open(os.path.join(out, "meta.json")))
    lines = []
    add = lines.append
    add(f"Command: `{meta['command']}`; kernel {meta['kernel']}, {meta['cpus']} CPUs, "
        f"{meta['date']}. Profile **{meta['profile']}**"
        + (" (quick: shorter runs)" if meta["quick"] else "") + ".")
    add("")

    # --- 1
    add("### 1. Limit accuracy")
    add("")
    add("| run | limit | delivered (mean) | ratio | 1 s windows within ±10% | target | |")
    add("|---|---|---|---|---|---|---|")
    iops_limit = meta["iops_limit"]
    bps_limit = size_bytes(meta["bps_limit"])
    for run, kind, limit in [("s1-read-iops", "read", iops_limit),
                             ("s1-write-iops", "write", iops_limit),
                             ("s1-read-bps", "bytes", bps_limit)]:
        j = job(load(out, run), "j")
        if kind == "bytes":
            mean = j["read"]["bw_bytes"]
            windows = [w * 128 * 1024 for w in per_second(out, run, "j")]
            shown = f"{mean / 2**20:.1f} MiB/s"
            limit_shown = f"{limit / 2**20:.0f} MiB/s"
        else:
            mean = j[kind]["iops"]
            windows = per_second(out, run, "j")
            shown = f"{mean:.0f} IOPS"
            limit_shown = f"{limit} IOPS"
        windows = windows[1:-1] or windows  # partial first/last second
        within = sum(1 for w in windows if abs(w / limit - 1) <= 0.10) / max(1, len(windows))
        ok = abs(mean / limit - 1) <= 0.05 and within >= 0.95
        add(f"| {run} | {limit_shown} | {shown} | {mean / limit:.3f} | {within * 100:.0f}% of "
            f"{len(windows)} | ±5%, ≥95% | {verdict(ok)} |")
    add("")

    # --- 2
    add("### 2. Burst")
    add("")
    series = per_second(out, "s2-burst", "j")
    rate, base, length = meta["burst_rate"], meta["burst_base"], meta["burst_seconds"]
    burst_part = series[:max(1, length - 1)]
    burst_mean = statistics.mean(burst_part)
    drained = next((i for i, v in enumerate(series) if v < (rate + base) / 2), len(series))
    after = series[length + 1:] or [0]
    after_mean = statistics.mean(after)
    add(f"read-iops {base}, burst {rate} for {length} s; per-second IOPS: "
        + ", ".join(str(v) for v in series))
    add("")
    add("| measure | expected | measured | target | |")
    add("|---|---|---|---|---|")
    add(f"| rate during the burst | {rate} | {burst_mean:.0f} | ±10% | "
        f"{verdict(abs(burst_mean / rate - 1) <= 0.10)} |")
    add(f"| drain time | {length} s | {drained} s | ±25% | "
        f"{verdict(abs(drained / length - 1) <= 0.25)} |")
    add(f"| rate after the burst | {base} | {after_mean:.0f} | ±10% | "
        f"{verdict(abs(after_mean / base - 1) <= 0.10)} |")
    add("")

    # --- 3
    add("### 3. Noisy neighbour")
    add("")
    solo = job(load(out, "s3-solo"), "victim")
    solo_p99 = p99_us(solo)
    solo_iops = solo["read"]["iops"]
    add("| run | victim IOPS | victim p99 | p99 vs alone | seconds with IOPS ≥ 0.9× alone | "
        "aggressor MiB/s | target | |")
    add("|---|---|---|---|---|---|---|---|")
    add(f"| victim alone | {solo_iops:.0f} | {solo_p99:.0f} µs | 1.00 | | | | |")
    for run, label, target in [("s3-fifo", "unprotected (fifo, no limits)", None),
                               ("s3-weights", "default weights", 1.5),
                               ("s3-capped", f"aggressor capped at {meta['aggr_cap']}/s", 1.2),
                               ("s3-device-qd1", "device floor: aggressor QD1 on raw XFS", None)]:
        data = load(out, run)
        v = job(data, "victim")
        a = job(data, "aggr")
        secs = per_second(out, run, "victim")[1:-1]
        good = sum(1 for s in secs if s >= 0.9 * solo_iops) / max(1, len(secs))
        ratio = p99_us(v) / solo_p99
        if run == "s3-device-qd1":
            tgt, ok = "(no localvol: the device alone)", None
        elif target is None:
            tgt, ok = "(shows the interference)", None
        elif target == 1.5:
            tgt, ok = "p99 ≤ 1.5×, 99% of seconds", ratio <= 1.5 and good >= 0.99
        else:
            tgt, ok = "p99 ≤ 1.2×", ratio <= 1.2
        add(f"| {label} | {v['read']['iops']:.0f} | {p99_us(v):.0f} µs | {ratio:.2f} | "
            f"{good * 100:.0f}% | {a['write']['bw_bytes'] / 2**20:.0f} | {tgt} | "
            f"{'' if ok is None else verdict(ok)} |")
    add("")

    # --- 4
    add("### 4. Work conservation")
    add("")
    alone_fair = job(load(out, "s4-alone-fair"), "j")["read"]["iops"]
    alone_fifo = job(load(out, "s4-alone-fifo"), "j")["read"]["iops"]
    pf = load(out, "s4-pair-fair")
    pq = load(out, "s4-pair-fifo")
    h, l = job(pf, "heavy")["read"]["iops"], job(pf, "light")["read"]["iops"]
    hq, lq = job(pq, "heavy")["read"]["iops"], job(pq, "light")["read"]["iops"]
    add("| measure | measured | target | |")
    add("|---|---|---|---|")
    add(f"| one volume alone, fair scheduler vs fifo (4K randread QD32) | {alone_fair:.0f} / "
        f"{alone_fifo:.0f} IOPS = {alone_fair / alone_fifo:.2f} | ≥ 0.90 | "
        f"{verdict(alone_fair / alone_fifo >= 0.90)} |")
    add(f"| weights 2:1, both saturating: split | {h:.0f} / {l:.0f} IOPS = {h / l:.2f} | "
        f"2.0 ± 0.2 | {verdict(abs(h / l - 2.0) <= 0.2)} |")
    add(f"| the same pair under fifo (no weights): split | {hq:.0f} / {lq:.0f} = {hq / lq:.2f} | "
        f"(contrast) | |")
    add(f"| pair total, fair vs fifo | {h + l:.0f} / {hq + lq:.0f} = {(h + l) / (hq + lq):.2f} | "
        f"(cost of the in-flight cap) | |")
    add("")

    text = "\n".join(lines)
    print(text)
    if doc:
        with open(doc) as f:
            body = f.read()
        begin, end = "<!-- isolation:begin -->", "<!-- isolation:end -->"
        i, k = body.index(begin) + len(begin), body.index(end)
        with open(doc, "w") as f:
            f.write(body[:i] + "\n" + text + "\n" + body[k:])


if __name__ == "__main__":
    main()
