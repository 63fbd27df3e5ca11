"""Reads a hop trace ("nanoseconds name" per line, oxkeeper_storage::hoptrace); the first quarter is skipped.

`hops.py TRACE`: the log's cycle (one `wal_done` to the next) with, for every hop name, when it first comes
after the cycle's start (p50, p90) and how often per cycle: where a write's time goes between two
fdatasyncs. Then the commonest transitions between consecutive hops (a -> b: count, p50, p90 of the gap).
"""
import collections
import statistics
import sys


def q(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main():
    events = []
    for line in open(sys.argv[1]):
        ns, name = line.split()
        events.append((int(ns), name))
    events = events[len(events) // 4:]
    starts = [i for i, (_, name) in enumerate(events) if name == "wal_done"]
    first = collections.defaultdict(list)
    counts = collections.Counter()
    cycles = []
    for a, b in zip(starts, starts[1:]):
        t0 = events[a][0]
        seen = {}
        for t, name in events[a + 1:b + 1]:
            counts[name] += 1
            seen.setdefault(name, (t - t0) / 1000)
        for name, at in seen.items():
            first[name].append(at)
        cycles.append((events[b][0] - t0) / 1000)
    if cycles:
        print(f"log cycles: {len(cycles)}, p50 {q(cycles, .5):.1f} us, mean {statistics.mean(cycles):.1f} us")
        print(f"{'hop':>16}  first after the cycle's start: p50, p90 (us)  cycles with it  per cycle")
        for name, at in sorted(first.items(), key=lambda kv: q(kv[1], .5)):
            print(f"{name:>16}  {q(at, .5):8.1f} {q(at, .9):8.1f}  {len(at):14d}  {counts[name] / len(cycles):9.2f}")
    gaps = collections.defaultdict(list)
    for (t0, a), (t1, b) in zip(events, events[1:]):
        gaps[(a, b)].append((t1 - t0) / 1000)
    print("\ntransition (consecutive hops)            count   p50 us   p90 us")
    for (a, b), v in sorted(gaps.items(), key=lambda kv: -len(kv[1]))[:30]:
        print(f"{a:>16} -> {b:<18} {len(v):8d} {q(v, .5):8.1f} {q(v, .9):8.1f}")


main()
