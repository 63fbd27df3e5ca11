"""Reads ab.sh's runs: `ratios.py DIR N` prints each build's medians and its per-pair ratios against build 0
(throughput, p99 and server CPU per op, each the median of the rounds' ratios); `ratios.py --one FILE LABEL`
prints one run."""
import glob
import json
import os
import statistics
import sys


def figures(path):
    d = json.load(open(path))
    rate = d["rates"][0]
    lat = d["latencies"][0]
    server_s = d["cpu"].get("server_cpu_s") or 0
    return {
        "thr": rate["per_s"],
        "p50": lat["p50_us"],
        "p99": lat["p99_us"],
        "cpu": server_s / max(rate["count"], 1) * 1e6,
        "gen": d["cpu"].get("generator_pct") or 0,
    }


def main():
    if sys.argv[1] == "--one":
        try:
            f = figures(sys.argv[2])
        except (OSError, ValueError, KeyError, IndexError) as e:
            print(f"{sys.argv[3]}: no result ({e})")
            return
        print(f"{sys.argv[3]}: {f['thr']:.0f}/s p50 {f['p50']} us p99 {f['p99']} us "
              f"server CPU {f['cpu']:.1f} us/op, generator {f['gen']:.0f}%")
        return
    out, n = sys.argv[1], int(sys.argv[2])
    runs = {}
    for path in glob.glob(os.path.join(out, "*.json")):
        r, i = (int(x) for x in os.path.basename(path).split(".")[:2])
        try:
            runs[(r, i)] = figures(path)
        except (OSError, ValueError, KeyError, IndexError):
            pass
    rounds = sorted({r for r, _ in runs})
    for i in range(n):
        mine = [runs[(r, i)] for r in rounds if (r, i) in runs]
        if not mine:
            continue
        med = {k: statistics.median(f[k] for f in mine) for k in ("thr", "p50", "p99", "cpu")}
        print(f"build {i}: {len(mine)} runs, medians {med['thr']:.0f}/s p50 {med['p50']:.0f} us "
              f"p99 {med['p99']:.0f} us server CPU {med['cpu']:.1f} us/op")
    for i in range(1, n):
        pairs = [(runs[(r, 0)], runs[(r, i)]) for r in rounds if (r, 0) in runs and (r, i) in runs]
        if not pairs:
            continue
        thr = [b["thr"] / a["thr"] for a, b in pairs]
        p99 = [b["p99"] / a["p99"] for a, b in pairs]
        cpu = [b["cpu"] / a["cpu"] for a, b in pairs if a["cpu"]]
        won = sum(x > 1 for x in thr)
        print(f"build {i} / build 0, per pair: throughput {statistics.median(thr):.3f} ({won} of {len(thr)} "
              f"higher: {' '.join(f'{x:.2f}' for x in thr)}), p99 {statistics.median(p99):.3f}, "
              f"server CPU per op {statistics.median(cpu) if cpu else float('nan'):.3f}")


main()
