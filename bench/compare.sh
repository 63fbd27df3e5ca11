#!/usr/bin/env bash
# oxkeeper against Apache ZooKeeper 3.8 (Debian package), every `oxkeeper bench` workload, on this machine.
# A benchmark, not a test: it runs each workload against both servers in alternating pairs (ox, zk, then zk, ox,
# ...) and prints a side-by-side table of medians with the ratio oxkeeper/ZooKeeper. Both servers run
# standalone on 127.0.0.1 (a free port, never 2181) with the same zoo.cfg: tickTime=2000, forceSync=yes,
# maxClientCnxns=0, 4lw.commands.whitelist=*, admin.enableServer=false, data under one temporary directory
# (same disk); one server at a time, on a fresh data directory for each run of a pair.
#
#   bench/compare.sh            # 5 pairs, 10 s runs, 19000 idle sessions (about 25 minutes on 2 cores)
#   QUICK=1 bench/compare.sh    # 1 pair, 2 s runs, 2000 idle sessions (a smoke run, a few minutes)
#
# Settings (environment): PAIRS (5), DURATION (10s: each ops/sessions/watch run), WARMUP (5s: unmeasured load
# on each fresh server first, so that the JVM has compiled its hot paths), IDLE_SESSIONS (19000; the
# generator's file-descriptor hard limit bounds it), IDLE_DURATION (30s: how long they are held),
# IDLE_HEAP_DURATION (10s: the hold of ZooKeeper's second idle run, the one for its live heap),
# CLEANUP_EPHEMERALS (10000), WATCHERS (100), ZK_JAVA_OPTS (extra JVM flags; default none, as Debian's
# scripts), BENCH_DIR (default /tmp/oxk-compare-<timestamp>: every run's JSON, the server logs and the
# summary; kept afterwards, the data directories are removed), SKIP_INSTALL=1 (do not run the installer).
#
# The generator and the server share the machine's cores: every JSON keeps the generator's CPU beside the
# server's (cpu.generator_pct, cpu.server_pct, cpu.machine_busy_pct), and the table shows the generator's share.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    : "${PAIRS:=1}" "${DURATION:=2s}" "${WARMUP:=1s}" "${IDLE_SESSIONS:=2000}" "${IDLE_DURATION:=8s}"
    : "${IDLE_HEAP_DURATION:=5s}"
fi
PAIRS=${PAIRS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-5s}
IDLE_SESSIONS=${IDLE_SESSIONS:-19000}
IDLE_DURATION=${IDLE_DURATION:-30s}
IDLE_HEAP_DURATION=${IDLE_HEAP_DURATION:-10s}
CLEANUP_EPHEMERALS=${CLEANUP_EPHEMERALS:-10000}
WATCHERS=${WATCHERS:-100}
TICK_MS=2000
ZK_CLASSPATH=/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

if [[ ${SKIP_INSTALL:-0} != 1 ]]; then
    log "installing what is missing (tests/clients/install.sh) ..."
    tests/clients/install.sh >&2
fi
for need in /usr/share/java/zookeeper.jar /usr/share/java/slf4j-simple.jar; do
    [[ -f $need ]] || { echo "compare: $need missing after tests/clients/install.sh" >&2; exit 1; }
done
for cmd in java jcmd python3; do
    command -v "$cmd" >/dev/null || { echo "compare: $cmd not found" >&2; exit 1; }
done

log "building (release) ..."
cargo build --release --locked -q -p oxkeeper --bin oxkeeper
REVISION=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')

WORK=${BENCH_DIR:-/tmp/oxk-compare-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$WORK/bin" "$WORK/runs"
# A copy, so that a build in this tree during the run cannot swap the binary between pairs.
cp "$REPO/target/release/oxkeeper" "$WORK/bin/"
OX_BIN=$WORK/bin/oxkeeper
MEM=$WORK/memory.tsv # kind, pair, metric, value: the measurements taken here (jcmd, /proc), not by the generator
: >"$MEM"
SCRIPT_START=$(date +%s)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n ${IDLE_PID:-} ]] && kill -0 "$IDLE_PID" 2>/dev/null; then
        kill -KILL "$IDLE_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'echo "compare: interrupted by a signal" >&2; exit 130' INT TERM HUP
trap 'echo "compare: failed at line $LINENO (exit status $?)" >&2' ERR

free_port() {
    python3 - <<'EOF'
import socket
while True:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    if port != 2181:
        print(port)
        break
EOF
}

# One four-letter word, its answer on stdout ("" when the server does not answer).
four() { # word
    python3 - "$PORT" "$1" <<'EOF' 2>/dev/null || true
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    s.sendall(sys.argv[2].encode())
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
    sys.stdout.write(out.decode(errors="replace"))
except OSError:
    pass
EOF
}

write_cfg() { # dir
    cat >"$1/zoo.cfg" <<EOF
tickTime=$TICK_MS
dataDir=$1/data
clientPort=$PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
forceSync=yes
admin.enableServer=false
4lw.commands.whitelist=*
EOF
}

start_server() { # kind dir; sets SERVER_PID, waits until `srvr` reports a mode (serving)
    local kind=$1 dir=$2 i
    if [[ $kind == oxkeeper ]]; then
        (cd "$dir" && RUST_LOG=info,openraft=warn exec "$OX_BIN" --config zoo.cfg >>server.log 2>&1) &
    else
        # shellcheck disable=SC2086 # ZK_JAVA_OPTS is a list of flags
        (cd "$dir" && exec java ${ZK_JAVA_OPTS:-} -Xlog:gc:file=gc.log:time \
            -cp "$ZK_CLASSPATH" org.apache.zookeeper.server.ZooKeeperServerMain ./zoo.cfg >>server.log 2>&1) &
    fi
    SERVER_PID=$!
    disown "$SERVER_PID"
    for ((i = 0; i < 600; i++)); do # 60 s
        if four srvr | grep -q '^Mode:'; then return 0; fi
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "compare: $kind exited at start; see $dir/server.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "compare: $kind not serving after 60 s; see $dir/server.log" >&2
    exit 1
}

stop_server() {
    local polls=0
    kill -TERM "$SERVER_PID"
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        if ((polls == 3000)); then # 30 s
            log "server $SERVER_PID still running 30 s after SIGTERM: killing it"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        sleep 0.01
        polls=$((polls + 1))
    done
    SERVER_PID=
}

bench() { # bench arguments...
    "$OX_BIN" bench --server "127.0.0.1:$PORT" --server-pid "$SERVER_PID" --json --quiet "$@"
}

run() { # kind label bench-arguments...; keeps the JSON as runs/<label>.<kind>.<pair>.json
    local kind=$1 label=$2 out
    shift 2
    out=$WORK/runs/$label.$kind.$PAIR.json
    log "$kind (pair $PAIR): $label"
    if ! bench "$@" >"$out.tmp" 2>"$WORK/runs/$label.$kind.$PAIR.stderr"; then
        log "warning: $kind $label failed (exit status $?); see $WORK/runs/$label.$kind.$PAIR.stderr"
        mv "$out.tmp" "$out.failed"
        return 0
    fi
    mv "$out.tmp" "$out"
}

mem() { printf '%s\t%s\t%s\t%s\n' "$1" "$PAIR" "$2" "$3" >>"$MEM"; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }

# ZooKeeper's live heap: a full GC (jcmd GC.run), then the sum of the heap's "used" (KiB) from GC.heap_info.
zk_live_heap_kib() {
    jcmd "$SERVER_PID" GC.run >/dev/null
    jcmd "$SERVER_PID" GC.heap_info | python3 -c '
import re, sys
used = 0
for line in sys.stdin:
    m = re.match(r"^\s*(.*?)\s+total (\d+)K, used (\d+)K", line)
    if m and not m.group(1).lower().startswith(("metaspace", "class space")):
        used += int(m.group(3))
print(used)'
}

# An idle run with the memory around it: before, while all the sessions are held (polled with mntr's
# zk_num_alive_connections, which counts its own connection too), and after the run (the sessions closed).
# Label "idle": the measured run; RSS only, from /proc (no forced GC: it would add to ZooKeeper's CPU and ping
# latency, and the G1 collector gives heap back to the system after it, which lowers the RSS). Label
# "idle-heap" (ZooKeeper only): a second, shorter run for the live heap, after a full GC each time.
run_idle() { # kind label sessions duration
    local kind=$1 label=$2 n=$3 duration=$4 i conns heap=0 out
    out=$WORK/runs/$label.$kind.$PAIR.json
    [[ $label == idle-heap ]] && heap=1
    log "$kind (pair $PAIR): $label ($n sessions held $duration)"
    if ((heap)); then mem "$kind" "live heap before idle (KiB)" "$(zk_live_heap_kib)"; else
        mem "$kind" "RSS before idle (KiB)" "$(rss_kib)"; fi
    bench idle --sessions "$n" --duration "$duration" >"$out.tmp" 2>"${out%.json}.stderr" &
    IDLE_PID=$!
    conns=0
    for ((i = 0; i < 1200; i++)); do # 120 s
        conns=$(four mntr | awk '$1 == "zk_num_alive_connections" {print $2}')
        ((${conns:-0} > n)) && break
        kill -0 "$IDLE_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ((${conns:-0} > n)) && kill -0 "$IDLE_PID" 2>/dev/null; then
        if ((heap)); then mem "$kind" "live heap with idle sessions (KiB)" "$(zk_live_heap_kib)"; else
            mem "$kind" "RSS with idle sessions (KiB)" "$(rss_kib)"; fi
        kill -0 "$IDLE_PID" 2>/dev/null || log "warning: $kind: the $label run ended before the measurement did"
    else
        log "warning: $kind: the server never counted $n idle connections (last: ${conns:-?})"
    fi
    if wait "$IDLE_PID"; then mv "$out.tmp" "$out"; else
        log "warning: $kind $label failed; see ${out%.json}.stderr"
        mv "$out.tmp" "$out.failed"
    fi
    IDLE_PID=
    sleep 1 # the closes reach the server
    if ((heap)); then mem "$kind" "live heap after idle (KiB)" "$(zk_live_heap_kib)"; else
        mem "$kind" "RSS after idle (KiB)" "$(rss_kib)"; fi
}

run_instance() { # kind
    local kind=$1 dir n op
    dir=$WORK/$kind-$PAIR
    mkdir -p "$dir/data"
    PORT=$(free_port)
    write_cfg "$dir"
    log "$kind (pair $PAIR): starting on 127.0.0.1:$PORT"
    start_server "$kind" "$dir"
    mem "$kind" "RSS at start (KiB)" "$(rss_kib)"
    # Not measured: the JVM compiles its hot paths (both servers get the same).
    bench ops --op mixed --mix get=50,set=50 --sessions 32 --duration "$WARMUP" >/dev/null 2>&1 ||
        log "warning: $kind warm-up failed"
    for op in set get create; do
        for n in 1 32; do
            run "$kind" "ops-$op-$n" ops --op "$op" --sessions "$n" --duration "$DURATION"
        done
    done
    run "$kind" "ops-mixed-32" ops --op mixed --mix get=90,set=10 --sessions 32 --duration "$DURATION"
    run "$kind" sessions sessions --duration "$DURATION"
    run "$kind" watch watch --watchers "$WATCHERS" --duration "$DURATION"
    run "$kind" expiry expiry --cleanup-ephemerals "$CLEANUP_EPHEMERALS"
    run_idle "$kind" idle "$IDLE_SESSIONS" "$IDLE_DURATION"
    if [[ $kind == zookeeper ]]; then run_idle "$kind" idle-heap "$IDLE_SESSIONS" "$IDLE_HEAP_DURATION"; fi
    stop_server
    rm -rf "$dir/data"
}

log "results and server logs in $WORK"
for ((PAIR = 1; PAIR <= PAIRS; PAIR++)); do
    if ((PAIR % 2)); then order="oxkeeper zookeeper"; else order="zookeeper oxkeeper"; fi
    for kind in $order; do run_instance "$kind"; done
done
LOAD_AT_END=$(cut -d' ' -f1-3 /proc/loadavg)

{
    echo "oxkeeper $REVISION vs Apache ZooKeeper" \
        "$(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo '3.8')" \
        "($(java -version 2>&1 | head -1)), JVM flags: ${ZK_JAVA_OPTS:-JVM defaults} (+ GC log)"
    echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))," \
        "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) memory" \
        "($(awk '/MemAvailable/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) available at end);" \
        "data on $(df -P "$WORK" | awk 'NR == 2 {print $1}')"
    echo "load average at start: $LOAD_AT_START; at end: $LOAD_AT_END"
    echo "$PAIRS pair(s); runs of $DURATION after a $WARMUP warm-up per server; idle: $IDLE_SESSIONS sessions" \
        "held $IDLE_DURATION; expiry cleanup: $CLEANUP_EPHEMERALS ephemerals; watch: $WATCHERS watchers;" \
        "generator and server share the cores"
    python3 - "$WORK" "$IDLE_SESSIONS" <<'PYEOF'
import glob, json, os, statistics, sys

work, idle_n = sys.argv[1], int(sys.argv[2])
KINDS = ("oxkeeper", "zookeeper")
runs = {}  # (label, kind) -> [json, ...] in pair order
for path in sorted(glob.glob(os.path.join(work, "runs", "*.json"))):
    label, kind, pair = os.path.basename(path)[: -len(".json")].rsplit(".", 2)
    with open(path) as f:
        runs.setdefault((label, kind), []).append((int(pair), json.load(f)))
mem = {}  # (metric, kind) -> [value, ...]
with open(os.path.join(work, "memory.tsv")) as f:
    for line in f:
        kind, pair, metric, value = line.rstrip("\n").split("\t")
        if value:
            mem.setdefault((metric, kind), []).append((int(pair), float(value)))

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

def add(figure, better, label, f):
    vals = {}
    for kind in KINDS:
        vs = []
        for _, d in runs.get((label, kind), []):
            try:
                v = f(d)
            except (KeyError, TypeError, ZeroDivisionError, IndexError):
                v = None
            if v is not None:
                vs.append(v)
        vals[kind] = vs
    if any(vals.values()):
        rows.append((figure, better, vals))

def add_latency(prefix, label, name=None):
    for q, key in (("p50", "p50_us"), ("p99", "p99_us"), ("max", "max_us")):
        add(f"{prefix} {q} (ms)", "lower", label, lambda d, key=key: lat(d, name)[key] / 1000)

def cpu_per(d, count):
    s = d["cpu"].get("server_cpu_s")
    return None if s is None or not count else s * 1e6 / count

labels = sorted({l for l, _ in runs if l.startswith("ops-")},
                key=lambda l: (["set", "get", "create", "mixed"].index(l.split("-")[1]), int(l.split("-")[2])))
for label in labels:
    _, op, n = label.split("-")
    name = f"{op}{' (get=90,set=10)' if op == 'mixed' else ''}, {n} session{'s' if n != '1' else ''}:"
    add(f"{name} throughput (ops/s)", "higher", label, lambda d: rate(d, "requests")["per_s"])
    add_latency(f"{name} latency", label)
    add(f"{name} server CPU per op (us)", "lower", label, lambda d: cpu_per(d, rate(d, "requests")["count"]))
    add(f"{name} server RSS (MiB)", "lower", label, lambda d: d["server_rss_kib"] / 1024)
    add(f"{name} generator CPU (% of a core)", "-", label, lambda d: d["cpu"]["generator_pct"])
    add(f"{name} other processes' CPU (% of a core)", "-", label, lambda d: d["cpu"]["others_pct"])
    add(f"{name} errors", "lower", label, lambda d: d["error_total"] or None)

add("sessions: established per s", "higher", "sessions", lambda d: rate(d, "established")["per_s"])
add_latency("sessions: establish", "sessions", "establish")
add("sessions: close p99 (ms)", "lower", "sessions", lambda d: lat(d, "close")["p99_us"] / 1000)
add("sessions: server CPU per session (us)", "lower", "sessions",
    lambda d: cpu_per(d, rate(d, "established")["count"]))
add("sessions: generator CPU (% of a core)", "-", "sessions", lambda d: d["cpu"]["generator_pct"])
add("sessions: errors", "lower", "sessions", lambda d: d["error_total"] or None)

add("watch: notifications per s", "higher", "watch", lambda d: rate(d, "notifications")["per_s"])
add_latency("watch: fan-out (last watcher)", "watch", "last arrival per write")
add("watch: server CPU per notification (us)", "lower", "watch",
    lambda d: cpu_per(d, rate(d, "notifications")["count"]))
add("watch: generator CPU (% of a core)", "-", "watch", lambda d: d["cpu"]["generator_pct"])

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
add("idle: server CPU per session (us/s)", "lower", "idle", lambda d: fig(d, "server cpu per session"))
add("idle: server RSS per session, generator's samples (B)", "lower", "idle", lambda d: fig(d, "server rss per session"))
add("idle: errors", "lower", "idle", lambda d: d["error_total"] or None)

def mem_vals(metric, kind):
    return [v for _, v in sorted(mem.get((metric, kind), []))]

def mem_row(figure, metric, scale=1.0):
    vals = {k: [v * scale for v in mem_vals(metric, k)] for k in KINDS}
    if any(vals.values()):
        rows.append((figure, "lower", vals))

mem_row("memory: RSS at start (MiB)", "RSS at start (KiB)", 1 / 1024)
mem_row("memory: RSS before idle (MiB)", "RSS before idle (KiB)", 1 / 1024)
mem_row("memory: RSS with idle sessions (MiB)", "RSS with idle sessions (KiB)", 1 / 1024)
mem_row("memory: RSS after idle (MiB)", "RSS after idle (KiB)", 1 / 1024)
mem_row("memory: ZooKeeper live heap before idle (MiB)", "live heap before idle (KiB)", 1 / 1024)
mem_row("memory: ZooKeeper live heap with idle sessions (MiB)", "live heap with idle sessions (KiB)", 1 / 1024)
mem_row("memory: ZooKeeper live heap after idle (MiB)", "live heap after idle (KiB)", 1 / 1024)

def per_session(with_m, before_m, kind):
    w, b = dict(mem.get((with_m, kind), [])), dict(mem.get((before_m, kind), []))
    return [(w[p] - b[p]) * 1024 / idle_n for p in sorted(w) if p in b]

rows.append(("memory: RSS per idle session (B)", "lower",
             {k: per_session("RSS with idle sessions (KiB)", "RSS before idle (KiB)", k) for k in KINDS}))
# The figure the targets use: oxkeeper's RSS growth, ZooKeeper's live-heap growth (its RSS is reserved heap).
rows.append(("memory: idle memory per session, ox RSS / zk live heap (B)", "lower", {
    "oxkeeper": per_session("RSS with idle sessions (KiB)", "RSS before idle (KiB)", "oxkeeper"),
    "zookeeper": per_session("live heap with idle sessions (KiB)", "live heap before idle (KiB)", "zookeeper"),
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
print("medians of the pairs; ratio = oxkeeper/ZooKeeper; better: which way is better")
print(f"{'figure':<{width}} {'oxkeeper':>10} {'ZooKeeper':>10} {'ox/zk':>7} {'better':>6}   runs ox | zk")
for figure, better, vals in rows:
    ox, zk = med(vals["oxkeeper"]), med(vals["zookeeper"])
    ratio = "-" if ox is None or not zk else f"{ox / zk:.2f}"
    runs_s = " ".join(fmt(v) for v in vals["oxkeeper"]) + " | " + " ".join(fmt(v) for v in vals["zookeeper"])
    print(f"{figure:<{width}} {fmt(ox):>10} {fmt(zk):>10} {ratio:>7} {better:>6}   {runs_s}")
# The generator's CPU and the server's are both measured; anything else busy on the machine skews a run.
busy = []
for (label, kind), ds in sorted(runs.items()):
    for pair, d in ds:
        o = d.get("cpu", {}).get("others_pct")
        if o is not None and o > 25:
            busy.append(f"{label}.{kind}.{pair} ({o:.0f}%)")
if busy:
    print("WARNING: other processes used more than a quarter of a core during: " + ", ".join(busy))
failed = sorted(glob.glob(os.path.join(work, "runs", "*.failed")))
if failed:
    print("FAILED runs (not in the table): " + " ".join(os.path.basename(p) for p in failed))
PYEOF
    echo "total time: $(($(date +%s) - SCRIPT_START)) s; every run's JSON: $WORK/runs"
} | tee "$WORK/summary.txt"
