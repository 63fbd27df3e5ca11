#!/usr/bin/env python3
"""The summary of a bench/compare.sh run: the side-by-side table of medians, the machine's ceiling and the
targets of issue 6, and the cross-check, read off the run's directory (its runs/*.json, memory.tsv,
probes.tsv). compare.sh runs it at the end; `bench/summarize.py BENCH_DIR IDLE_SESSIONS NODES` (or
`SUMMARY_ONLY=1 BENCH_DIR=... bench/compare.sh`) reads an earlier run's directory again."""
import glob, json, os, re, statistics, sys

work, idle_n, nodes_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
KINDS = ("oxkeeper", "zookeeper")
runs = {}  # (label, kind) -> [(pair, json), ...]
for path in sorted(glob.glob(os.path.join(work, "runs", "*.json"))):
    label, kind, pair = os.path.basename(path)[: -len(".json")].rsplit(".", 2)
    with open(path) as f:
        runs.setdefault((label, kind), []).append((pair, json.load(f)))
mem = {}  # (metric, kind) -> [(pair, value), ...]
with open(os.path.join(work, "memory.tsv")) as f:
    for line in f:
        kind, pair, metric, value = line.rstrip("\n").split("\t")
        if value:
            mem.setdefault((metric, kind), []).append((pair, float(value)))
probes = {}  # metric -> [value at each server start, ...]
with open(os.path.join(work, "probes.tsv")) as f:
    for line in f:
        _, k, v = line.rstrip("\n").split("\t")
        probes.setdefault(k, []).append(float(v))

rows = []  # (figure, better, {kind: [values]})

def rate(d, name):
    return next((r for r in d["rates"] if r["name"] == name), None)

def lat(d, name=None):
    ls = d["latencies"]
    if name is None:
        return next((l for l in ls if l["name"] == "all"), ls[0] if ls else None)
    return next((l for l in ls if l["name"] == name), None)

def fig(d, name):
    return next((x["value"] for x in d["figures"] if x["name"] == name), None)

def values(label, kind, f):
    vs = []
    for _, d in runs.get((label, kind), []):
        try:
            v = f(d)
        except (KeyError, TypeError, ZeroDivisionError, IndexError):
            v = None
        if v is not None:
            vs.append(v)
    return vs

def add(figure, better, label, f):
    vals = {kind: values(label, kind, f) for kind in KINDS}
    if any(vals.values()):
        rows.append((figure, better, vals))

def add_latency(prefix, label, name=None):
    for q, key in (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us"), ("max", "max_us")):
        add(f"{prefix} {q} (ms)", "lower", label, lambda d, key=key: lat(d, name)[key] / 1000)

def cpu_per(d, count):
    s = d["cpu"].get("server_cpu_s")
    return None if s is None or not count else s * 1e6 / count

def add_cpu(prefix, label, unit, count):
    add(f"{prefix} server CPU per {unit} (us)", "lower", label, lambda d: cpu_per(d, count(d)))
    add(f"{prefix} generator CPU (% of a core)", "-", label, lambda d: d["cpu"]["generator_pct"])
    add(f"{prefix} other processes' CPU (% of a core)", "-", label, lambda d: d["cpu"]["others_pct"])

OPS = ["set", "get", "create", "mixed"]
labels = sorted({l for l, _ in runs if l.startswith("ops-")},
                key=lambda l: (OPS.index(l.split("-")[1]), int(l.split("-")[2])))
for label in labels:
    _, op, n = label.split("-")
    name = f"{op}{' (get=90,set=10)' if op == 'mixed' else ''}, {n} session{'s' if n != '1' else ''}:"
    add(f"{name} throughput (ops/s)", "higher", label, lambda d: rate(d, "requests")["per_s"])
    add_latency(f"{name} latency", label)
    add_cpu(name, label, "op", lambda d: rate(d, "requests")["count"])
    add(f"{name} errors", "lower", label, lambda d: d["error_total"] or None)

# The mixed runs' two operations apart: the set's latency is what moves the mix's p99 (10% of the requests).
def add_mixed_ops(name, label):
    for op in ("get", "set"):
        add(f"{name} {op} latency p50 (ms)", "lower", label, lambda d, op=op: lat(d, op)["p50_us"] / 1000)
        add(f"{name} {op} latency p99 (ms)", "lower", label, lambda d, op=op: lat(d, op)["p99_us"] / 1000)

if "ops-mixed-32" in labels:
    add_mixed_ops("mixed (get=90,set=10), 32 sessions:", "ops-mixed-32")
# The same mix at one fixed rate on both servers (open loop): latency at equal load.
rate_label = "rate-mixed-32"
if any(l == rate_label for l, _ in runs):
    first = next(d for (l, _), ds in runs.items() if l == rate_label for _, d in ds)
    at = re.search(r"open loop at (\d+)/s", first.get("description", ""))
    name = f"mixed (get=90,set=10), 32 sessions, {at.group(1) + '/s' if at else 'fixed rate'} open loop:"
    add(f"{name} throughput (ops/s)", "higher", rate_label, lambda d: rate(d, "requests")["per_s"])
    add_latency(f"{name} latency", rate_label, "all")
    add_mixed_ops(name, rate_label)
    add(f"{name} generator's send lag p99 (ms)", "lower", rate_label,
        lambda d: lat(d, "send lag (open loop)")["p99_us"] / 1000)
    add_cpu(name, rate_label, "op", lambda d: rate(d, "requests")["count"])
    add(f"{name} errors", "lower", rate_label, lambda d: d["error_total"] or None)

add("sessions: established per s", "higher", "sessions", lambda d: rate(d, "established")["per_s"])
add_latency("sessions: establish", "sessions", "establish")
add("sessions: close p99 (ms)", "lower", "sessions", lambda d: lat(d, "close")["p99_us"] / 1000)
add_cpu("sessions:", "sessions", "session", lambda d: rate(d, "established")["count"])
add("sessions: errors", "lower", "sessions", lambda d: d["error_total"] or None)

add("watch: notifications per s", "higher", "watch", lambda d: rate(d, "notifications")["per_s"])
add_latency("watch: fan-out (last watcher)", "watch", "last arrival per write")
add_cpu("watch:", "watch", "notification", lambda d: rate(d, "notifications")["count"])

add_latency("expiry: lateness per ephemeral", "expiry", "lateness (per ephemeral)")
add("expiry: cleanup, close -> last NodeDeleted (ms)", "lower", "expiry",
    lambda d: lat(d, "cleanup: last NodeDeleted")["max_us"] / 1000)
add("expiry: cleanup, closeSession reply (ms)", "lower", "expiry",
    lambda d: lat(d, "cleanup: closeSession reply")["max_us"] / 1000)
add("expiry: errors", "lower", "expiry", lambda d: d["error_total"] or None)

add("idle: sessions connected per s", "higher", "idle", lambda d: rate(d, "connected")["per_s"])
add("idle: sessions held", "higher", "idle", lambda d: fig(d, "sessions held"))
add("idle: sessions alive at the end", "higher", "idle", lambda d: fig(d, "sessions alive at the end"))
add("idle: ping p99 (ms)", "lower", "idle", lambda d: lat(d, "ping")["p99_us"] / 1000)
add("idle: ping max (ms)", "lower", "idle", lambda d: lat(d, "ping")["max_us"] / 1000)
add("idle: server CPU per session (us/s)", "lower", "idle", lambda d: fig(d, "server cpu per session"))
add("idle: errors", "lower", "idle", lambda d: d["error_total"] or None)

add(f"nodes: bulk creates per s (32 x 32 in flight)", "higher", "nodes", lambda d: rate(d, "requests")["per_s"])
add("nodes: create p99 (ms)", "lower", "nodes", lambda d: lat(d)["p99_us"] / 1000)
add("nodes: server CPU per create (us)", "lower", "nodes", lambda d: cpu_per(d, rate(d, "requests")["count"]))
add("nodes: errors", "lower", "nodes", lambda d: d["error_total"] or None)

def mem_vals(metric, kind):
    return [v for _, v in sorted(mem.get((metric, kind), []))]

def mem_row(figure, metric, scale=1.0):
    vals = {k: [v * scale for v in mem_vals(metric, k)] for k in KINDS}
    if any(vals.values()):
        rows.append((figure, "lower", vals))

def growth(with_m, before_m, kind, per):
    w, b = dict(mem.get((with_m, kind), [])), dict(mem.get((before_m, kind), []))
    return [(w[p] - b[p]) * per for p in sorted(w) if p in b]

mem_row("memory: RSS at start (MiB)", "RSS at start (KiB)", 1 / 1024)
mem_row("memory: RSS before idle (MiB)", "RSS before idle (KiB)", 1 / 1024)
mem_row("memory: RSS with idle sessions (MiB)", "RSS with idle sessions (KiB)", 1 / 1024)
mem_row("memory: RSS after idle (MiB)", "RSS after idle (KiB)", 1 / 1024)
mem_row("memory: ZooKeeper live heap before idle (MiB)", "live heap before idle (KiB)", 1 / 1024)
mem_row("memory: ZooKeeper live heap with idle sessions (MiB)", "live heap with idle sessions (KiB)", 1 / 1024)
rows.append(("memory: RSS per idle session (B)", "lower",
             {k: growth("RSS with idle sessions (KiB)", "RSS before idle (KiB)", k, 1024 / idle_n) for k in KINDS}))
# The figure the targets use: oxkeeper's RSS growth, ZooKeeper's live-heap growth (its RSS is reserved heap).
IDLE_MEM = "memory: per idle session, ox RSS / zk live heap (B)"
rows.append((IDLE_MEM, "lower", {
    "oxkeeper": growth("RSS with idle sessions (KiB)", "RSS before idle (KiB)", "oxkeeper", 1024 / idle_n),
    "zookeeper": growth("live heap with idle sessions (KiB)", "live heap before idle (KiB)", "zookeeper",
                        1024 / idle_n),
}))
mem_row("memory: RSS before nodes (MiB)", "RSS before nodes (KiB)", 1 / 1024)
mem_row(f"memory: RSS with {nodes_n} nodes (MiB)", "RSS with nodes (KiB)", 1 / 1024)
mem_row(f"memory: ZooKeeper live heap with {nodes_n} nodes (MiB)", "live heap with nodes (KiB)", 1 / 1024)
per_m = 1e6 / nodes_n / 1024  # KiB per NODES -> MiB per 1M nodes
rows.append(("memory: RSS per 1M nodes (MiB)", "lower",
             {k: growth("RSS with nodes (KiB)", "RSS before nodes (KiB)", k, per_m) for k in KINDS}))
NODES_MEM = "memory: per 1M nodes, ox RSS / zk live heap (MiB)"
rows.append((NODES_MEM, "lower", {
    "oxkeeper": growth("RSS with nodes (KiB)", "RSS before nodes (KiB)", "oxkeeper", per_m),
    "zookeeper": growth("live heap with nodes (KiB)", "live heap before nodes (KiB)", "zookeeper", per_m),
}))

def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.01:
        return f"{v:.3g}" if a < 1 else f"{v:.2f}"
    return f"{v:.2g}" if v else "0"

def med(vs):
    return statistics.median(vs) if vs else None

width = max(len(r[0]) for r in rows) if rows else 20
print()
print("medians of the pairs; ratio = oxkeeper/ZooKeeper; better: which way is better")
print(f"{'figure':<{width}} {'oxkeeper':>10} {'ZooKeeper':>10} {'ox/zk':>7} {'better':>6}   runs ox | zk")
medians = {}
for figure, better, vals in rows:
    ox, zk = med(vals["oxkeeper"]), med(vals["zookeeper"])
    medians[figure] = (ox, zk)
    ratio = "-" if ox is None or not zk else f"{ox / zk:.2f}"
    runs_s = " ".join(fmt(v) for v in vals["oxkeeper"]) + " | " + " ".join(fmt(v) for v in vals["zookeeper"])
    print(f"{figure:<{width}} {fmt(ox):>10} {fmt(zk):>10} {ratio:>7} {better:>6}   {runs_s}")
failed = sorted(glob.glob(os.path.join(work, "runs", "*.failed")))
if failed:
    print("FAILED runs (not in the table): " + " ".join(os.path.basename(p) for p in failed))

# The targets of issue 6, read off the medians above.
print()
fsyncs, rtts = probes.get("fdatasync p50 (us)", []), probes.get("loopback round trip p50 (us)", [])

def fast(vs):
    """The fast end of the probes: their 10th percentile. Not the minimum, which one outlier sets (a round trip
    probe once read 17 us against ~60 us for all 30 others)."""
    return statistics.quantiles(vs, n=10, method="inclusive")[0] if len(vs) > 1 else vs[0]

fsync, rtt = med(fsyncs), med(rtts)
limit = 1e6 / (fsync + rtt) if fsync and rtt else None
if limit:
    print(f"probes before each server start: fdatasync p50 {' '.join(fmt(v) for v in fsyncs)} us (median {fsync:.0f};"
          f" 128 B into a preallocated file on the data disk; p99 {' '.join(fmt(v) for v in probes['fdatasync p99 (us)'])});"
          f" loopback round trip p50 {' '.join(fmt(v) for v in rtts)} us (Python)")
    print(f"1-session write limit: 1 / (median fdatasync + round trip) = {limit:.0f} ops/s; 80% = {0.8 * limit:.0f};"
          f" with the fast probes (10th percentile of each: {fast(fsyncs):.0f} + {fast(rtts):.0f} us):"
          f" {1e6 / (fast(fsyncs) + fast(rtts)):.0f} ops/s; the single fastest ({min(fsyncs):.0f} + {min(rtts):.0f} us):"
          f" {1e6 / (min(fsyncs) + min(rtts)):.0f} ops/s")

def ratio(figure):
    ox, zk = medians.get(figure, (None, None))
    return None if ox is None or not zk else ox / zk

# What a ceiling below shows about a goal: target figure -> (the tightest ratio a ceiling allows, which one).
# For a rate, a goal beyond it is out of reach on this machine (issue 6: "only with a measurement that shows
# the physical limit that blocks it"). For a p99 it is what the least server reaches, not a strict bound (see
# p99_lines): the target line says "beyond ...'s own", never "impossible".
limits = {}

def bound_by(figure, value, source, higher):
    old = limits.get(figure)
    if old is None or (value < old[0] if higher else value > old[0]):
        limits[figure] = (value, source)

def target(what, value, goal, ok, shown, figure=None):
    status = "-" if value is None else ("met" if ok(value) else "NOT met")
    if status == "NOT met" and figure in limits and not ok(limits[figure][0]):
        status += f"; beyond {limits[figure][1]}'s own {shown(limits[figure][0])}"
    print(f"  {what:<62} {shown(value) if value is not None else '-':>12}  goal {goal:<10} {status}")

# The ceiling: what the generator reaches against the null server (nothing kept, no disk).
ceiling = {}
for label in ("ops-get-32", "ops-mixed-32", "ops-set-32"):
    vs = values(label, "null", lambda d: rate(d, "requests")["per_s"])
    if vs:
        ceiling[label] = med(vs)
if ceiling:
    print("the machine's ceiling (the same runs against a null server: no state, no disk; generator and server share"
          " the cores):")
    for label, v in ceiling.items():
        _, op, n = label.split("-")
        name = f"{op}{' (get=90,set=10)' if op == 'mixed' else ''}, {n} session{'s' if n != '1' else ''}"
        zk = medians.get(f"{name}: throughput (ops/s)", (None, None))[1]
        ox = medians.get(f"{name}: throughput (ops/s)", (None, None))[0]
        print(f"  {name:<40} {v:>9.0f} ops/s = {v / zk if zk else float('nan'):.2f}x ZooKeeper"
              f" (oxkeeper reaches {100 * ox / v if ox else float('nan'):.0f}% of it)")
        if zk:
            bound_by(f"{name}: throughput (ops/s)", v / zk, "the null server", True)
    vs = values("sessions", "null", lambda d: rate(d, "established")["per_s"])
    if vs:
        v = med(vs)
        ox, zk = medians.get("sessions: established per s", (None, None))
        print(f"  {'sessions established':<40} {v:>9.0f} per s = {v / zk if zk else float('nan'):.2f}x ZooKeeper"
              f" (oxkeeper reaches {100 * ox / v if ox else float('nan'):.0f}% of it)")
        if zk:
            bound_by("sessions: established per s", v / zk, "the null server", True)

# The p99 the null servers themselves show in the same closed loop (32 requests in flight, the cores shared
# with the generator). Not a strict bound: a slower server can in principle have a tighter distribution. But a
# real server does all the null server does and more, so a goal below the null server's own p99 is not one
# this machine shows.
def p99_lines(kind, labels):
    lines = []
    for label in labels:
        _, op, n = label.split("-")
        name = f"{op}{' (get=90,set=10)' if op == 'mixed' else ''}, {n} sessions"
        vs = values(label, kind, lambda d: lat(d)["p99_us"] / 1000)
        ox, zk = medians.get(f"{name}: latency p99 (ms)", (None, None))
        if not vs or not zk:
            continue
        v = med(vs)
        who = "the null server" if kind == "null" else "the durable null server"
        verdict = ("the goal (0.5x) is below it: not shown on this machine" if v / zk > 0.5
                   else "the goal is above it: within reach")
        lines.append(f"  {name + ': p99':<40} {v:>9.3f} ms = {v / zk:.2f}x ZooKeeper's (oxkeeper {ox:.3f} ms):"
                     f" {verdict}")
        bound_by(f"{name}: latency p99 (ms)", v / zk, who, False)
    return lines

lines = p99_lines("null", ("ops-get-32",))
if lines:
    print("the p99 of the null server in the same runs (reads; median of its runs):")
    print("\n".join(lines))

# The ceiling with the log (Little's law): in a closed loop of N requests in flight, X = N / (the time a request
# takes, from the generator's send to its reply). Against the null server that time is N / X_null; a server that
# must make a write durable before its reply adds at least one fdatasync to each write's time, in series (the
# reply cannot leave before it, and the client sends nothing more before the reply). So X <= N / (N / X_null +
# k * fdatasync), with k the durable writes in one request's time: 1 for set; 2 for a session (createSession
# before the handshake's reply, closeSession before the close's). The fdatasync is the fast end of the probes
# (the bound most generous to the server).
LOG_BOUNDS = (  # label, rate's name, in flight, durable writes per request's time, goal, figure prefix
    ("ops-set-32", "requests", 32, 1, 2, "set, 32 sessions"),
    ("sessions", "established", 16, 2, 3, "sessions established"),
)
if fsyncs:
    lines = []
    for label, name, n, k, goal, prefix in LOG_BOUNDS:
        vs = values(label, "null", lambda d: rate(d, name)["per_s"])
        thr = f"{prefix}: throughput (ops/s)" if label.startswith("ops-") else "sessions: established per s"
        zk = medians.get(thr, (None, None))[1]
        if not vs or not zk:
            continue
        x_null = med(vs)
        bound = n / (n / x_null + k * fast(fsyncs) / 1e6)
        verdict = "the goal is below it" if bound >= goal * zk else f"the goal ({goal}x) is above it: out of reach here"
        bound_by(thr, bound / zk, "the log bound", True)
        lines.append(f"  {prefix:<40} {bound:>9.0f} per s = {bound / zk:.2f}x ZooKeeper ({n} in flight, {k} fdatasync"
                     f"{'s' if k > 1 else ''} of {fast(fsyncs):.0f} us each per request): {verdict}")
    if lines:
        print("the ceiling with the log: N in flight / (N / null server's rate + the request's fdatasyncs in series):")
        print("\n".join(lines))

# The ceiling with the log, measured: the same runs against the durable null server (null_server --log: keeps
# nothing but a log, syncs every write, new session and closeSession before the reply, with group commit). A
# goal below it is within reach of a server that syncs its writes on this disk and these cores; a goal above it
# and above the bound above is out of reach here.
DURABLE = (  # label, rate's name, goal (x ZooKeeper), name, throughput figure
    ("ops-set-32", "requests", 2, "set, 32 sessions", "set, 32 sessions: throughput (ops/s)"),
    ("ops-create-32", "requests", 2, "create, 32 sessions", "create, 32 sessions: throughput (ops/s)"),
    ("ops-mixed-32", "requests", 3, "mixed (get=90,set=10), 32 sessions",
     "mixed (get=90,set=10), 32 sessions: throughput (ops/s)"),
    ("sessions", "established", 3, "sessions established", "sessions: established per s"),
)
durable_lines = []
for label, name, goal, prefix, thr in DURABLE:
    vs = values(label, "nulllog", lambda d: rate(d, name)["per_s"])
    ox, zk = medians.get(thr, (None, None))
    if not vs or not zk:
        continue
    v = med(vs)
    if v >= goal * zk:
        verdict = "the goal is below it: within reach of a server that syncs its writes here"
    else:
        verdict = f"the goal ({goal}x) is above it"
    durable_lines.append(f"  {prefix:<40} {v:>9.0f} per s = {v / zk:.2f}x ZooKeeper (oxkeeper reaches"
                         f" {100 * ox / v if ox else float('nan'):.0f}% of it): {verdict}")
    bound_by(thr, v / zk, "the durable null server", True)
durable_lines += p99_lines("nulllog", ("ops-set-32", "ops-create-32", "ops-mixed-32"))
if durable_lines:
    print("the ceiling with the log, measured (a null server that keeps only a log: every write, new session and"
          " closeSession synced before its reply, group commit):")
    print("\n".join(durable_lines))

# The CPU a goal leaves the server: at the goal's rate the generator needs its CPU per op (as measured against
# the null server, where it is busiest) times the rate, and the generator and server together get at most the
# share of the machine they got in the null runs (everything but the other processes' CPU). What is left,
# divided by the rate, is what the server may spend per op; below what the null server spends, the goal is
# out of reach on this machine whatever the server does.
def null_med(label, f):
    vs = values(label, "null", f)
    return med(vs) if vs else None

BUDGETS = (  # label, rate's name, goal (x ZooKeeper), figure prefix in the table
    ("ops-set-32", "requests", 2, "set, 32 sessions"),
    ("ops-get-32", "requests", 3, "get, 32 sessions"),
    ("ops-mixed-32", "requests", 3, "mixed (get=90,set=10), 32 sessions"),
    ("sessions", "established", 3, "sessions"),
)
budget_lines = []
for label, name, goal, prefix in BUDGETS:
    thr = f"{prefix}: throughput (ops/s)" if label.startswith("ops-") else "sessions: established per s"
    cpu = f"{prefix}: server CPU per op (us)" if label.startswith("ops-") else "sessions: server CPU per session (us)"
    zk = medians.get(thr, (None, None))[1]
    ox_cpu = medians.get(cpu, (None, None))[0]
    share = null_med(label, lambda d: (d["cpu"]["machine_busy_pct"] - d["cpu"]["others_pct"]) / 100)
    gen = null_med(label, lambda d: d["cpu"]["generator_cpu_s"] * 1e6 / rate(d, name)["count"])
    srv = null_med(label, lambda d: cpu_per(d, rate(d, name)["count"]))
    if not zk or share is None or gen is None or srv is None or ox_cpu is None:
        continue
    goal_rate = goal * zk
    budget = share * 1e6 / goal_rate - gen
    if budget < srv:
        verdict = "out of reach: even the null server spends more"
    elif ox_cpu <= budget:
        verdict = "within it: what is missing is not CPU"
    else:
        verdict = (f"oxkeeper must spend {100 * (1 - budget / ox_cpu):.0f}% less: at most"
                   f" {budget - srv:.1f} us more than the null server")
    budget_lines.append(f"  {prefix:<40} {goal}x = {goal_rate:>7.0f}/s: {budget:5.1f} us per op"
                        f" (null server {srv:.1f}, oxkeeper {ox_cpu:.1f}): {verdict}")
if budget_lines:
    print("the CPU each goal leaves the server: (generator + server's share of the machine in the null runs) /"
          " goal rate - the generator's CPU per op there:")
    print("\n".join(budget_lines))
print("targets (issue 6):")
for op in ("set", "create"):
    thr = f"{op}, 32 sessions: throughput (ops/s)"
    target(f"writes, {op} 32 sessions: throughput ox/zk", ratio(thr), ">= 2x", lambda v: v >= 2,
           lambda v: f"{v:.2f}x", thr)
for label in ("get, 32 sessions", "mixed (get=90,set=10), 32 sessions"):
    thr = f"{label}: throughput (ops/s)"
    target(f"reads, {label}: throughput ox/zk", ratio(thr), ">= 3x", lambda v: v >= 3, lambda v: f"{v:.2f}x", thr)
for label in ("set, 32 sessions", "get, 32 sessions", "create, 32 sessions", "mixed (get=90,set=10), 32 sessions"):
    p99 = f"{label}: latency p99 (ms)"
    target(f"{label}: p99 ox/zk", ratio(p99), "<= 0.5x", lambda v: v <= 0.5, lambda v: f"{v:.2f}x", p99)
# Against the fast probes: the disk's own limit when nothing else uses it (the strictest reading).
best = 1e6 / (fast(fsyncs) + fast(rtts)) if fsyncs and rtts else None
for op in ("set", "create"):
    ox = medians.get(f"{op}, 1 session: throughput (ops/s)", (None, None))[0]
    target(f"1 session {op}: ox throughput / limit of the fast probes", ox / best if ox and best else None,
           ">= 80%", lambda v: v >= 0.8, lambda v: f"{100 * v:.0f}%")
    target(f"1 session {op}: ox throughput / limit of the median probes", ox / limit if ox and limit else None,
           ">= 80%", lambda v: v >= 0.8, lambda v: f"{100 * v:.0f}%")
target("session establishment ox/zk", ratio("sessions: established per s"), ">= 3x", lambda v: v >= 3,
       lambda v: f"{v:.2f}x", "sessions: established per s")
target(f"cleanup of a 10k-ephemeral session ox/zk", ratio("expiry: cleanup, close -> last NodeDeleted (ms)"),
       "<= 0.25x", lambda v: v <= 0.25, lambda v: f"{v:.2f}x")
target("memory per idle session, ox RSS / zk live heap", ratio(IDLE_MEM), "<= 0.33x", lambda v: v <= 1 / 3,
       lambda v: f"{v:.2f}x")
target("memory per 1M nodes, ox RSS / zk live heap", ratio(NODES_MEM), "<= 0.33x", lambda v: v <= 1 / 3,
       lambda v: f"{v:.2f}x")
held = values("idle", "oxkeeper", lambda d: fig(d, "sessions alive at the end"))
errs = values("idle", "oxkeeper", lambda d: d["error_total"])
target(f"ox idle sessions alive at the end, of {idle_n} (worst run)", min(held) if held else None,
       f"{idle_n}, 0 err", lambda v: v >= idle_n and not any(errs), lambda v: f"{v:.0f}, {max(errs)} err")

# The cross-check: the same ZooKeeper measured by the Java generator and by `oxkeeper bench`.
cross = []
for op in ("get", "set"):
    for n in ("1", "32"):
        try:
            with open(os.path.join(work, "runs", f"cross-java-{op}-{n}.txt")) as f:
                j = dict(kv.split("=") for kv in f.read().split())
        except (OSError, ValueError):
            j = None
        b = runs.get((f"cross-bench-{op}-{n}", "zookeeper"))
        if j or b:
            cross.append((op, n, j, b[0][1] if b else None))
if cross:
    print()
    print("cross-check, one fresh ZooKeeper: ZooKeeper's Java client (async API, closed loop) vs oxkeeper bench ops;")
    print("same sessions, 1 request in flight each, 1000 nodes of 100 B; latencies in ms")
    print(f"{'case':<18} {'generator':<15} {'ops/s':>8} {'p50':>7} {'p99':>7} {'p99.9':>7} {'max':>7}"
          f" {'gen CPU%':>8} {'zk CPU us/op':>12}")
    for op, n, j, b in cross:
        case = f"{op}, {n} session{'s' if n != '1' else ''}"
        if j:
            w, ops = float(j["window_s"]), int(j["ops"])
            print(f"{case:<18} {'Java client':<15} {float(j['ops_per_s']):>8.0f} {int(j['p50_us']) / 1e3:>7.3f}"
                  f" {int(j['p99_us']) / 1e3:>7.3f} {int(j['p999_us']) / 1e3:>7.3f} {int(j['max_us']) / 1e3:>7.2f}"
                  f" {100 * float(j['client_cpu_s']) / w:>8.0f} {float(j['server_cpu_s']) * 1e6 / max(ops, 1):>12.1f}")
        if b:
            l, r = lat(b), rate(b, "requests")
            print(f"{case:<18} {'oxkeeper bench':<15} {r['per_s']:>8.0f} {l['p50_us'] / 1e3:>7.3f}"
                  f" {l['p99_us'] / 1e3:>7.3f} {l['p999_us'] / 1e3:>7.3f} {l['max_us'] / 1e3:>7.2f}"
                  f" {b['cpu']['generator_pct']:>8.0f} {cpu_per(b, r['count']) or 0:>12.1f}")
        if j and b:
            print(f"{'':<18} {'bench/Java':<15} {rate(b, 'requests')['per_s'] / float(j['ops_per_s']):>8.2f}"
                  f" {lat(b)['p50_us'] / max(int(j['p50_us']), 1):>7.2f} {lat(b)['p99_us'] / max(int(j['p99_us']), 1):>7.2f}")
