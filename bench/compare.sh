#!/usr/bin/env bash
# oxkeeper against Apache ZooKeeper 3.8 (Debian package), every `oxkeeper bench` workload, on this machine.
# A benchmark, not a test: it runs each workload against both servers in alternating pairs (ox, zk, then zk, ox,
# ...) and prints a side-by-side table of medians with the ratio oxkeeper/ZooKeeper, then the issue-6 targets
# read off that table. Both servers run standalone on 127.0.0.1 (a free port, never 2181) with the same zoo.cfg:
# tickTime=2000, forceSync=yes, maxClientCnxns=0, clientPortListenBacklog=128, 4lw.commands.whitelist=*,
# admin.enableServer=false, data under one directory (same disk); one server at a time, each run of a pair on a
# fresh data directory. Once, at the end, ZooKeeper's figures are cross-checked with an independent load
# generator: a small closed-loop program on ZooKeeper's own Java client.
#
#   bench/compare.sh            # 5 pairs, 8 s runs, idle sessions up to the fd limit, 1M nodes (about 30 min)
#   QUICK=1 bench/compare.sh    # 1 pair, 2 s runs, 2000 idle sessions, 100k nodes (a smoke run, about 3 min)
#
# Settings (environment): PAIRS (5), DURATION (8s: each ops/sessions/watch run), WARMUP (5s: unmeasured load
# on each fresh server first, so that the JVM has compiled its hot paths), IDLE_SESSIONS (the generator's
# open-file hard limit minus 1000: 19000 here), IDLE_DURATION (45s: how long they are held), IDLE_SETTLE (30, seconds:
# how long after the server counts them all the memory is read: every session has then pinged, every third
# of its 30 s timeout, and is in the state an idle session spends its life in, and what the connections'
# set-up freed has gone back to the system, jemalloc's 10 s decay), IDLE_HEAP_DURATION (45s: the hold of
# ZooKeeper's second idle run, the one for its live heap), NODES (1000000 small nodes, bulk
# created with 32 sessions x 32 in flight, for the memory per node), NODE_SIZE (32 bytes), CLEANUP_EPHEMERALS
# (10000), WATCHERS (100), MIXED_RATE (30000: requests per second of the open-loop mixed run, the same load
# on both servers, below either's closed-loop rate here), CROSSCHECK (1; 0 skips it), CROSS_DURATION
# (DURATION), ZK_JAVA_OPTS (extra JVM flags for the server; default none, as Debian's
# /etc/zookeeper/conf/environment), BENCH_DIR (default
# /tmp/oxk-compare-<date>: every run's JSON, the server logs and the summary; kept afterwards, the data
# directories are removed), SKIP_INSTALL=1 (do not run the installer).
#
# The generator and the server share the machine's cores: every JSON keeps the generator's CPU beside the
# server's and the rest of the machine's (cpu.generator_pct, cpu.server_pct, cpu.others_pct); the table shows
# them, and the header the load average, sampled at every server start.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    : "${PAIRS:=1}" "${DURATION:=2s}" "${WARMUP:=1s}" "${IDLE_SESSIONS:=2000}" "${IDLE_DURATION:=40s}"
    : "${IDLE_HEAP_DURATION:=40s}" "${NODES:=100000}" "${CROSS_DURATION:=2s}"
fi
PAIRS=${PAIRS:-5}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-5s}
IDLE_SESSIONS=${IDLE_SESSIONS:-$(($(ulimit -Hn) - 1000))}
IDLE_DURATION=${IDLE_DURATION:-45s}
IDLE_SETTLE=${IDLE_SETTLE:-30}
IDLE_HEAP_DURATION=${IDLE_HEAP_DURATION:-45s}
NODES=${NODES:-1000000}
NODE_SIZE=${NODE_SIZE:-32}
CLEANUP_EPHEMERALS=${CLEANUP_EPHEMERALS:-10000}
WATCHERS=${WATCHERS:-100}
MIXED_RATE=${MIXED_RATE:-30000}
CROSSCHECK=${CROSSCHECK:-1}
CROSS_DURATION=${CROSS_DURATION:-$DURATION}
TICK_MS=2000
# oxkeeper listens with a fixed backlog of 128 (tokio's TcpListener::bind, as Rust's std); ZooKeeper's default
# (-1) would be Java's 50, so it is given 128 too. The backlog each server really has is logged (ss).
LISTEN_BACKLOG=128
ZK_CLASSPATH=/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar
ZK_CLIENT_CLASSPATH=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-nop.jar
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# SUMMARY_ONLY=1 BENCH_DIR=<an earlier run's directory>: no run, the summary of that run printed again (by the
# bench/summarize.py of this tree, so a change of its reading applies to old data); its header is kept.
if [[ ${SUMMARY_ONLY:-0} == 1 ]]; then
    old=${BENCH_DIR:?SUMMARY_ONLY needs BENCH_DIR, the directory of an earlier run}/summary.txt
    [[ -f $old ]] || { echo "compare: $old not found" >&2; exit 1; }
    header=$(sed '/^$/q' "$old" | sed '$ {/^$/d}')
    idle_n=$(sed -n 's/.*idle: \([0-9]*\) sessions held.*/\1/p' <<<"$header" | head -1)
    nodes_n=$(sed -n 's/.*nodes: \([0-9]*\) x .*/\1/p' <<<"$header" | head -1)
    summary=$(
        echo "$header"
        python3 bench/summarize.py "$BENCH_DIR" "${idle_n:-$IDLE_SESSIONS}" "${nodes_n:-$NODES}"
        echo
        echo "(summary printed again on $(date -u '+%F %H:%M') UTC from $BENCH_DIR/runs by bench/summarize.py of" \
            "$(git describe --always --dirty 2>/dev/null || echo '?'))"
    )
    cp "$old" "$old.before-$(date +%s)"
    echo "$summary" | tee "$old"
    exit 0
fi

if [[ ${SKIP_INSTALL:-0} != 1 ]]; then
    log "installing what is missing (tests/clients/install.sh) ..."
    tests/clients/install.sh >&2
fi
for need in /usr/share/java/zookeeper.jar /usr/share/java/slf4j-simple.jar /usr/share/java/slf4j-nop.jar; do
    [[ -f $need ]] || { echo "compare: $need missing after tests/clients/install.sh" >&2; exit 1; }
done
for cmd in java javac jcmd python3 ss; do
    command -v "$cmd" >/dev/null || { echo "compare: $cmd not found" >&2; exit 1; }
done

log "building (release) ..."
cargo build --release --locked -q -p oxkeeper --bin oxkeeper
cargo build --release --locked -q -p oxkeeper-bench --example null_server
REVISION=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')

WORK=${BENCH_DIR:-/tmp/oxk-compare-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$WORK/bin" "$WORK/runs" "$WORK/java"
# A copy, so that a build in this tree during the run cannot swap the binary between pairs.
cp "$REPO/target/release/oxkeeper" "$REPO/target/release/examples/null_server" "$WORK/bin/"
OX_BIN=$WORK/bin/oxkeeper
NULL_BIN=$WORK/bin/null_server
MEM=$WORK/memory.tsv     # kind, pair, metric, value: what the script measures itself (jcmd, /proc)
PROBES=$WORK/probes.tsv  # when, metric, value: the disk's fdatasync latency and the loopback round trip
LOADS=$WORK/loadavg.tsv  # when, 1-min, 5-min, 15-min load average: at the start of each server
: >"$MEM"; : >"$PROBES"; : >"$LOADS"
SCRIPT_START=$(date +%s)

SERVER_PID=
IDLE_PID=
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n $IDLE_PID ]] && kill -0 "$IDLE_PID" 2>/dev/null; then
        kill -KILL "$IDLE_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'echo "compare: interrupted by a signal" >&2; exit 130' INT TERM HUP
trap 'echo "compare: failed at line $LINENO (exit status $?)" >&2' ERR

loadavg() { echo "$(date +%T) $(cut -d' ' -f1-3 /proc/loadavg)" | tr ' ' '\t' >>"$LOADS"; }

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

# The physical limit of one closed-loop writer: one fdatasync on the data disk plus one loopback round trip,
# probed before every server start (the other users of the disk change it: a build's writes slow every
# fdatasync down, the servers' too). fdatasync: 128-byte writes, one 4 KiB page apart, into a preallocated,
# already synced file (as ZooKeeper's preallocated log), 100 unmeasured then 500 measured; the round trip:
# 1-byte ping-pong over TCP between two Python processes (an upper bound: Python's own per-call cost is in it).
probe_limits() { # label
    sync
    python3 - "$WORK" "$1" >>"$PROBES" <<'EOF'
import os, socket, statistics, sys, time

work, label = sys.argv[1], sys.argv[2]
path = os.path.join(work, "fdatasync-probe")
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"\0" * (16 << 20))
os.fsync(fd)
buf = b"x" * 128
lat = []
for i in range(600):
    t = time.perf_counter_ns()
    os.pwrite(fd, buf, i * 4096)
    os.fdatasync(fd)
    if i >= 100:
        lat.append((time.perf_counter_ns() - t) / 1000)
os.close(fd)
os.unlink(path)
lat.sort()
print(f"{label}\tfdatasync p50 (us)\t{statistics.median(lat):.0f}")
print(f"{label}\tfdatasync p99 (us)\t{lat[int(len(lat) * 0.99)]:.0f}")

srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
if os.fork() == 0:
    c, _ = srv.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (b := c.recv(1)):
        c.sendall(b)
    os._exit(0)
c = socket.create_connection(("127.0.0.1", port))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtt = []
for i in range(6000):
    t = time.perf_counter_ns()
    c.sendall(b"p")
    c.recv(1)
    if i >= 1000:
        rtt.append((time.perf_counter_ns() - t) / 1000)
c.close()
os.wait()
print(f"{label}\tloopback round trip p50 (us)\t{statistics.median(rtt):.1f}")
EOF
}

write_cfg() { # dir
    cat >"$1/zoo.cfg" <<EOF
tickTime=$TICK_MS
dataDir=$1/data
clientPort=$PORT
clientPortAddress=127.0.0.1
clientPortListenBacklog=$LISTEN_BACKLOG
maxClientCnxns=0
forceSync=yes
admin.enableServer=false
4lw.commands.whitelist=*
EOF
}

start_server() { # kind dir; sets SERVER_PID, waits until `srvr` reports a mode (serving)
    local kind=$1 dir=$2 i
    loadavg
    probe_limits "$kind-$PAIR"
    if [[ $kind == oxkeeper ]]; then
        (cd "$dir" && RUST_LOG=info,openraft=warn exec "$OX_BIN" --config zoo.cfg >>server.log 2>&1) &
    else
        # Debian's JVM settings (none: the JVM's defaults, G1 and a quarter of the memory as the maximum
        # heap), plus a GC log.
        # shellcheck disable=SC2086 # ZK_JAVA_OPTS is a list of flags
        (cd "$dir" && exec java ${ZK_JAVA_OPTS:-} -Xlog:gc:file=gc.log:time \
            -cp "$ZK_CLASSPATH" org.apache.zookeeper.server.ZooKeeperServerMain ./zoo.cfg >>server.log 2>&1) &
    fi
    SERVER_PID=$!
    disown "$SERVER_PID"
    for ((i = 0; i < 600; i++)); do # 60 s
        if four srvr | grep -q '^Mode:'; then
            # A listening socket's Send-Q is its backlog.
            echo "listen backlog: $(ss -ltnH "sport = :$PORT" | awk '{print $3}' | head -1)" >>"$dir/server.log"
            return 0
        fi
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
    if ! bench "$@" --plot "${out%.json}.svg" >"$out.tmp" 2>"$WORK/runs/$label.$kind.$PAIR.stderr"; then
        log "warning: $kind $label failed (exit status $?); see $WORK/runs/$label.$kind.$PAIR.stderr"
        mv "$out.tmp" "$out.failed"
        return 0
    fi
    mv "$out.tmp" "$out"
}

mem() { printf '%s\t%s\t%s\t%s\n' "$1" "$PAIR" "$2" "$3" >>"$MEM"; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }

# The RSS once the allocator has given back what a burst freed (jemalloc returns dirty pages over its 10 s
# decay): the counterpart of ZooKeeper's live heap after a full GC. First a wait past that decay (two readings a
# second apart can agree before it has begun: 159 MiB then, 137 MiB 15 s later, with 1M nodes), then polled
# each second until two readings are within 0.5%, for at most 30 s more.
settled_rss_kib() {
    local last now i
    sleep 11
    last=$(rss_kib)
    for ((i = 0; i < 30; i++)); do
        sleep 1
        now=$(rss_kib)
        if ((now * 1000 >= last * 995 && now * 1000 <= last * 1005)); then break; fi
        last=$now
    done
    echo "$now"
}

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
# zk_num_alive_connections, which counts its own connection too; read IDLE_SETTLE seconds after they are all
# counted, once each has pinged), and after the run (the sessions closed).
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
    # Without the ERR trap in the background: the run's own exit status is read by `wait` below.
    (trap - ERR; bench idle --sessions "$n" --duration "$duration") >"$out.tmp" 2>"${out%.json}.stderr" &
    IDLE_PID=$!
    conns=0
    for ((i = 0; i < 1200; i++)); do # 120 s
        conns=$(four mntr | awk '$1 == "zk_num_alive_connections" {print $2}')
        ((${conns:-0} > n)) && break
        kill -0 "$IDLE_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ((${conns:-0} > n)) && kill -0 "$IDLE_PID" 2>/dev/null; then
        sleep "$IDLE_SETTLE"
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

# Stops the server and starts the same kind again on an empty data directory (same port and zoo.cfg).
restart_fresh() { # kind dir
    local kind=$1 dir=$2
    stop_server
    rm -rf "$dir/data"
    mkdir -p "$dir/data"
    start_server "$kind" "$dir"
    sleep 1
}

# Memory per node, on a fresh server: RSS (and ZooKeeper's live heap) when it starts, then after NODES small
# nodes bulk-created by 32 sessions x 32 requests in flight (kept: the server is stopped afterwards). oxkeeper's
# RSS with the nodes is read once settled (settled_rss_kib), as ZooKeeper's live heap is read after a full GC.
run_nodes() { # kind dir
    local kind=$1 dir=$2
    restart_fresh "$kind" "$dir"
    mem "$kind" "RSS before nodes (KiB)" "$(rss_kib)"
    [[ $kind == zookeeper ]] && mem "$kind" "live heap before nodes (KiB)" "$(zk_live_heap_kib)"
    run "$kind" nodes ops --op create --sessions 32 --depth 32 --requests "$NODES" --value-size "$NODE_SIZE" --keep
    sleep 1
    if [[ $kind == oxkeeper ]]; then
        mem "$kind" "RSS with nodes (KiB)" "$(settled_rss_kib)"
    else
        mem "$kind" "RSS with nodes (KiB)" "$(rss_kib)"
    fi
    [[ $kind == zookeeper ]] && mem "$kind" "live heap with nodes (KiB)" "$(zk_live_heap_kib)"
    return 0
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
    # The same mix at the same fixed rate on both servers (open loop: latency from each request's intended
    # send time): closed loop, each server runs at its own rate, and the faster one loads the shared cores more.
    run "$kind" "rate-mixed-32" ops --op mixed --mix get=90,set=10 --sessions 32 --rate "$MIXED_RATE" \
        --duration "$DURATION"
    run "$kind" sessions sessions --duration "$DURATION"
    run "$kind" watch watch --watchers "$WATCHERS" --duration "$DURATION"
    run "$kind" expiry expiry --cleanup-ephemerals "$CLEANUP_EPHEMERALS"
    # On a fresh server: an RSS growth measured after the workloads above depends on what they left (the
    # allocator reuses their freed memory, or not), not on what the sessions cost (bench/README.md, Memory).
    log "$kind (pair $PAIR): $IDLE_SESSIONS idle sessions on a fresh server"
    restart_fresh "$kind" "$dir"
    run_idle "$kind" idle "$IDLE_SESSIONS" "$IDLE_DURATION"
    if [[ $kind == zookeeper ]]; then run_idle "$kind" idle-heap "$IDLE_SESSIONS" "$IDLE_HEAP_DURATION"; fi
    log "$kind (pair $PAIR): $NODES nodes on a fresh server"
    run_nodes "$kind" "$dir"
    stop_server
    rm -rf "$dir/data"
}

# The machine's ceiling: the same ops runs against a server that keeps nothing and answers at once
# (crates/bench/examples/null_server.rs). No real server can be faster here, so `null / ZooKeeper` is the
# largest ratio this machine can show; the targets below are read against it.
start_null() { # name log-file null_server-arguments...; sets PORT and SERVER_PID, waits until it listens
    local name=$1 out=$2 i
    shift 2
    PORT=$(free_port)
    log "$name (pair $PAIR): starting on 127.0.0.1:$PORT"
    "$NULL_BIN" --listen "127.0.0.1:$PORT" "$@" >"$out" 2>&1 &
    SERVER_PID=$!
    disown "$SERVER_PID"
    for ((i = 0; i < 300; i++)); do # 30 s: a durable one zeroes its log file first
        grep -q '^listening on' "$out" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "compare: the $name exited at start; see $out" >&2; exit 1; }
        sleep 0.1
    done
    echo "compare: the $name not listening after 30 s; see $out" >&2
    exit 1
}

run_null() {
    start_null "null server" "$WORK/null-$PAIR.log"
    # 32 sessions only: one session is bound by round trips and thread hand-offs, not by the cores.
    for op in get set; do
        run null "ops-$op-32" ops --op "$op" --sessions 32 --duration "$DURATION"
    done
    run null "ops-mixed-32" ops --op mixed --mix get=90,set=10 --sessions 32 --duration "$DURATION"
    # Session establishment and close (the null server answers a ConnectRequest at once and logs nothing).
    run null sessions sessions --duration "$DURATION"
    stop_server
    # The durable null server: the same, but every write, new session and closeSession is appended to a log
    # on the data disk and synced (group commit, one logger thread) before its reply. What it reaches is what
    # a server that syncs its writes can reach on this disk and these cores with nothing else to do.
    start_null "durable null server" "$WORK/nulllog-$PAIR.log" --log "$WORK/null-log"
    for op in set create; do
        run nulllog "ops-$op-32" ops --op "$op" --sessions 32 --duration "$DURATION"
    done
    run nulllog "ops-mixed-32" ops --op mixed --mix get=90,set=10 --sessions 32 --duration "$DURATION"
    run nulllog sessions sessions --duration "$DURATION"
    stop_server
    rm -f "$WORK/null-log"
}

# The independent load generator: closed-loop getData/setData through ZooKeeper's own Java client (its
# asynchronous API: each session sends its next request from the callback of the last), N sessions with one
# request in flight each over 1000 nodes of 100 bytes, as `oxkeeper bench ops` does by default. It reads the
# server's CPU from /proc over its measured window.
write_java_generator() {
    cat >"$WORK/java/ZkLoad.java" <<'EOF'
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.zookeeper.AsyncCallback;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.Stat;

// java ZkLoad host:port get|set sessions warmup_s duration_s value_bytes keys server_pid clk_tck
// Prints one line: ops= window_s= ops_per_s= p50_us= p99_us= p999_us= max_us= errors= client_cpu_s= server_cpu_s=
public class ZkLoad {
    static volatile int phase; // 0 warm-up, 1 measured, 2 stopping

    static final class Loop implements AsyncCallback.DataCallback, AsyncCallback.StatCallback {
        final ZooKeeper zk;
        final boolean set;
        final String root;
        final byte[] data;
        final int keys, stride;
        final CountDownLatch stopped = new CountDownLatch(1);
        int next;
        long sent, errors;
        long[] lat = new long[1 << 16]; // microseconds, measured window only
        int count;

        Loop(ZooKeeper zk, boolean set, String root, byte[] data, int keys, int index, int stride) {
            this.zk = zk; this.set = set; this.root = root; this.data = data; this.keys = keys;
            this.next = index; this.stride = stride;
        }

        void issue() {
            String path = root + "/k" + (next % keys);
            next += stride;
            sent = System.nanoTime();
            if (set) zk.setData(path, data, -1, this, null);
            else zk.getData(path, false, this, null);
        }

        void reply(int rc) {
            long now = System.nanoTime();
            int p = phase;
            if (p == 1) {
                if (count == lat.length) lat = Arrays.copyOf(lat, count * 2);
                lat[count++] = (now - sent) / 1000;
                if (rc != 0) errors++;
            }
            if (p == 2) stopped.countDown();
            else issue();
        }

        public void processResult(int rc, String path, Object ctx, byte[] d, Stat stat) { reply(rc); }
        public void processResult(int rc, String path, Object ctx, Stat stat) { reply(rc); }
    }

    static long cpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
            .getProcessCpuTime();
    }

    static long serverTicks(String pid) throws Exception {
        String stat = new String(Files.readAllBytes(Paths.get("/proc/" + pid + "/stat")));
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        return Long.parseLong(f[11]) + Long.parseLong(f[12]); // utime + stime
    }

    public static void main(String[] a) throws Exception {
        String hostPort = a[0];
        boolean set = a[1].equals("set");
        int n = Integer.parseInt(a[2]);
        double warmup = Double.parseDouble(a[3]), seconds = Double.parseDouble(a[4]);
        byte[] data = new byte[Integer.parseInt(a[5])];
        int keys = Integer.parseInt(a[6]);
        String serverPid = a[7];
        double clkTck = Double.parseDouble(a[8]);

        ZooKeeper[] zks = new ZooKeeper[n];
        for (int i = 0; i < n; i++) {
            CountDownLatch up = new CountDownLatch(1);
            zks[i] = new ZooKeeper(hostPort, 30000, e -> {
                if (e.getState() == Watcher.Event.KeeperState.SyncConnected) up.countDown();
            });
            if (!up.await(30, TimeUnit.SECONDS)) throw new IllegalStateException("session " + i + " not connected");
        }
        String root = "/zkload-" + System.nanoTime();
        zks[0].create(root, new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        CountDownLatch created = new CountDownLatch(keys);
        for (int k = 0; k < keys; k++) {
            zks[0].create(root + "/k" + k, data, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT,
                (rc, path, ctx, name) -> created.countDown(), null);
        }
        created.await();

        Loop[] loops = new Loop[n];
        for (int i = 0; i < n; i++) loops[i] = new Loop(zks[i], set, root, data, keys, i, n);
        for (Loop l : loops) l.issue();
        Thread.sleep((long) (warmup * 1000));
        long cpu0 = cpuNanos(), srv0 = serverTicks(serverPid), t0 = System.nanoTime();
        phase = 1;
        Thread.sleep((long) (seconds * 1000));
        phase = 2;
        long t1 = System.nanoTime(), cpu1 = cpuNanos(), srv1 = serverTicks(serverPid);
        for (Loop l : loops) {
            if (!l.stopped.await(30, TimeUnit.SECONDS)) throw new IllegalStateException("a request never answered");
        }

        int total = 0;
        long errors = 0;
        for (Loop l : loops) { total += l.count; errors += l.errors; }
        long[] all = new long[total];
        int at = 0;
        for (Loop l : loops) { System.arraycopy(l.lat, 0, all, at, l.count); at += l.count; }
        Arrays.sort(all);
        double window = (t1 - t0) / 1e9;
        System.out.printf("ops=%d window_s=%.3f ops_per_s=%.0f p50_us=%d p99_us=%d p999_us=%d max_us=%d errors=%d"
                + " client_cpu_s=%.3f server_cpu_s=%.3f%n",
            total, window, total / window, pct(all, 50), pct(all, 99), pct(all, 99.9), all[total - 1], errors,
            (cpu1 - cpu0) / 1e9, (srv1 - srv0) / clkTck);

        CountDownLatch deleted = new CountDownLatch(keys);
        for (int k = 0; k < keys; k++) zks[0].delete(root + "/k" + k, -1, (rc, path, ctx) -> deleted.countDown(), null);
        deleted.await();
        zks[0].delete(root, -1);
        for (ZooKeeper zk : zks) zk.close();
    }

    // The smallest value that at least p% of the values do not exceed (as an HDR histogram reads it).
    static long pct(long[] sorted, double p) {
        int i = (int) Math.ceil(p / 100 * sorted.length) - 1;
        return sorted[Math.max(0, Math.min(sorted.length - 1, i))];
    }
}
EOF
    javac -nowarn -d "$WORK/java" -cp "$ZK_CLIENT_CLASSPATH" "$WORK/java/ZkLoad.java"
}

# Once, on a fresh ZooKeeper: for get and set at 1 and 32 sessions, the Java generator and `oxkeeper bench ops`
# one after the other (the order alternates from case to case), each with the same sessions, depth (1), keys
# and value size.
crosscheck() {
    local dir=$WORK/zookeeper-crosscheck op n i=0 out secs warm
    secs=$(sed 's/s$//' <<<"$CROSS_DURATION")
    warm=$(sed 's/s$//' <<<"$WARMUP")
    log "cross-check: compiling the Java generator"
    write_java_generator
    PAIR=x
    mkdir -p "$dir/data"
    PORT=$(free_port)
    write_cfg "$dir"
    start_server zookeeper "$dir"
    bench ops --op mixed --mix get=50,set=50 --sessions 32 --duration "$WARMUP" >/dev/null 2>&1 || true
    for op in get set; do
        for n in 1 32; do
            local order="java bench"
            ((i++ % 2)) && order="bench java"
            for gen in $order; do
                log "cross-check: $gen, $op, $n session(s)"
                if [[ $gen == java ]]; then
                    out=$WORK/runs/cross-java-$op-$n.txt
                    java -cp "$WORK/java:$ZK_CLIENT_CLASSPATH" ZkLoad "127.0.0.1:$PORT" "$op" "$n" "$warm" "$secs" \
                        100 1000 "$SERVER_PID" "$CLK_TCK" >"$out" 2>"${out%.txt}.stderr" ||
                        log "warning: the Java generator failed; see ${out%.txt}.stderr"
                else
                    run zookeeper "cross-bench-$op-$n" ops --op "$op" --sessions "$n" --duration "$CROSS_DURATION"
                fi
            done
        done
    done
    stop_server
    rm -rf "$dir/data"
}

log "results and server logs in $WORK"
for ((PAIR = 1; PAIR <= PAIRS; PAIR++)); do
    if ((PAIR % 2)); then order="oxkeeper zookeeper"; else order="zookeeper oxkeeper"; fi
    for kind in $order; do run_instance "$kind"; done
    run_null
done
[[ $CROSSCHECK == 1 ]] && crosscheck
loadavg

{
    echo "oxkeeper $REVISION vs Apache ZooKeeper" \
        "$(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo '3.8')" \
        "($(java -version 2>&1 | head -1)); ZooKeeper's JVM flags:" \
        "${ZK_JAVA_OPTS:-none (the JVM's defaults, as Debian's)} + -Xlog:gc"
    echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))," \
        "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) memory;" \
        "data on $(df -P "$WORK" | awk 'NR == 2 {print $1}') ($(findmnt -n -o FSTYPE --target "$WORK" 2>/dev/null || echo '?'));" \
        "open files: $(ulimit -Sn) soft, $(ulimit -Hn) hard"
    echo "load average (1 min) at each server start: $(cut -f2 "$LOADS" | paste -sd' '); 1/5/15 min at the end:" \
        "$(tail -1 "$LOADS" | cut -f2- | tr '\t' ' ')"
    echo "$PAIRS pair(s); runs of $DURATION after a $WARMUP warm-up per server; idle: $IDLE_SESSIONS sessions" \
        "held $IDLE_DURATION; nodes: $NODES x $NODE_SIZE B; expiry cleanup: $CLEANUP_EPHEMERALS ephemerals;" \
        "watch: $WATCHERS watchers; listen backlog: $(grep -h '^listen backlog' "$WORK"/*-1/server.log | sort -u | cut -d' ' -f3 | paste -sd/)" \
        "(ox/zk); generator and server share the cores"
    python3 "$REPO/bench/summarize.py" "$WORK" "$IDLE_SESSIONS" "$NODES"
    echo
    echo "total time: $(($(date +%s) - SCRIPT_START)) s; every run's JSON: $WORK/runs"
} | tee "$WORK/summary.txt"
