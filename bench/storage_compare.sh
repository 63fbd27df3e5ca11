#!/usr/bin/env bash
# oxkeeper against Apache ZooKeeper 3.8 (Debian package) on this machine: acknowledged writes per second and
# latency, restart time and RSS at 1,000,000 nodes, and the write latency while snapshots are taken.
# A benchmark, not a test: it prints a table of medians over alternating pairs (ox, zk, then zk, ox, ...), with
# the ratio oxkeeper/ZooKeeper. Both servers run standalone on 127.0.0.1 with forceSync=yes and tickTime=2000,
# data under the same temporary directory (same disk), one at a time. Needs what tests/install.sh installs.
#
#   bench/storage_compare.sh            # 3 pairs, 1,000,000 nodes (about 10 minutes on 2 cores)
#   QUICK=1 bench/storage_compare.sh    # 1 pair, 100,000 nodes, shorter runs (a smoke run, about 1 minute)
#
# Settings (environment): PAIRS, DIRS x PER_DIR nodes, WRITERS ("1 8 64"), OPS ("set create"), WRITE_SECS,
# WARMUP_SECS, STALL_SECS, SERVER_WARMUP_SECS, SETTLE_SECS, OX_LOAD_SNAPCOUNT, STALL_SNAPCOUNT, ZK_JAVA_OPTS
# (extra JVM flags; default none, as Debian's scripts), BENCH_DIR (where the binaries, logs and results go;
# kept afterwards, the data directories are removed).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    : "${PAIRS:=1}" "${PER_DIR:=100}" "${WRITE_SECS:=2}" "${WARMUP_SECS:=0.5}" "${STALL_SECS:=3}" "${OPS:=set}"
    : "${SERVER_WARMUP_SECS:=1}" "${SETTLE_SECS:=1}"
fi
PAIRS=${PAIRS:-3}
DIRS=${DIRS:-1000}
PER_DIR=${PER_DIR:-1000}
WRITERS=${WRITERS:-1 8 64}
OPS=${OPS:-set create}
WRITE_SECS=${WRITE_SECS:-5}
WARMUP_SECS=${WARMUP_SECS:-1}
STALL_SECS=${STALL_SECS:-8}
SERVER_WARMUP_SECS=${SERVER_WARMUP_SECS:-3}
SETTLE_SECS=${SETTLE_SECS:-5}
TICK_MS=2000
# ZooKeeper's default snapCount (100000 transactions: a snapshot after 50,000-100,000 of them), for both servers
# during the write runs: oxkeeper counts log entries, but a closed-loop writer's write is one entry of its own.
WRITE_SNAPCOUNT=100000
# The pipelined load puts tens of creates in each of oxkeeper's entries; one snapshot every 2500 entries at a
# million nodes gives it about as many snapshots during the load as ZooKeeper takes with 100000 (both counts
# are printed).
ZK_LOAD_SNAPCOUNT=100000
OX_LOAD_SNAPCOUNT=${OX_LOAD_SNAPCOUNT:-$((DIRS * PER_DIR / 400))}
# Snapshots as often as possible under the one closed-loop writer (one write per entry for oxkeeper too).
STALL_SNAPCOUNT=${STALL_SNAPCOUNT:-2000}
# No snapshot during the baseline run.
QUIET_SNAPCOUNT=100000000
ZK_CLASSPATH=/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar
NODES=$((DIRS * PER_DIR))

for need in /usr/share/java/zookeeper.jar /usr/share/java/slf4j-simple.jar; do
    [[ -f $need ]] || { echo "storage_compare: $need missing: run tests/install.sh first" >&2; exit 1; }
done
command -v java >/dev/null || { echo "storage_compare: java not found: run tests/install.sh first" >&2; exit 1; }

echo "building (release) ..." >&2
cargo build --release --locked -q -p oxkeeper --bin oxkeeper
cargo build --release --locked -q -p oxkeeper-server --example storage_bench
REVISION=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')

WORK=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/storage-compare-XXXXXX")}
mkdir -p "$WORK/bin"
# Copies, so that a build in this tree during the run cannot swap the binaries between pairs.
cp "$REPO/target/release/oxkeeper" "$REPO/target/release/examples/storage_bench" "$WORK/bin/"
OX_BIN=$WORK/bin/oxkeeper
BENCH=$WORK/bin/storage_bench
RAW=$WORK/results.tsv     # kind, metric, value: one line per measurement
ORDER=$WORK/metrics.txt   # metric names in the order they are first measured
DETAILS=$WORK/details.txt # every RESULT and SLOW line of the load generator, with context
: >"$RAW"; : >"$ORDER"; : >"$DETAILS"
CLK_TCK=$(getconf CLK_TCK)
SCRIPT_START=$(date +%s)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

SERVER_PID=
START_NS=
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'echo "storage_compare: interrupted by a signal" >&2; exit 130' INT TERM HUP
trap 'echo "storage_compare: failed at line $LINENO (exit status $?)" >&2' ERR

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
note() { echo "$*" >>"$DETAILS"; }

record() { # kind metric value
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RAW"
    grep -qxF -- "$2" "$ORDER" || echo "$2" >>"$ORDER"
}

field() { # RESULT-line key
    sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"
}

write_cfg() { # dir snapCount
    cat >"$1/zoo.cfg" <<EOF
tickTime=$TICK_MS
dataDir=$1/data
clientPort=$PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
forceSync=yes
snapCount=$2
admin.enableServer=false
4lw.commands.whitelist=*
EOF
}

start_server() { # kind dir; sets SERVER_PID and START_NS (the clock just before the process starts)
    local kind=$1 dir=$2
    START_NS=$(date +%s%N)
    if [[ $kind == oxkeeper ]]; then
        (cd "$dir" && RUST_LOG=info,openraft=warn exec "$OX_BIN" --config zoo.cfg >>server.log 2>&1) &
    else
        # Logging only: timestamps on log lines and a GC log, to line up latency spikes with snapshots and GC.
        # shellcheck disable=SC2086 # ZK_JAVA_OPTS is a list of flags
        (cd "$dir" && exec java ${ZK_JAVA_OPTS:-} -Xlog:gc:file=gc.log:time \
            -Dorg.slf4j.simpleLogger.showDateTime=true \
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSXXX" \
            -cp "$ZK_CLASSPATH" org.apache.zookeeper.server.ZooKeeperServerMain zoo.cfg >>server.log 2>&1) &
    fi
    SERVER_PID=$!
    disown "$SERVER_PID" # no job-control notice when it is killed; stop_server polls it instead of waiting
}

# Waits until the server answers getData(path); prints the RESULT line.
ready() { # path
    "$BENCH" ready "127.0.0.1:$PORT" --path "$1" --since-ns "$START_NS" --deadline 300
}

stop_server() { # signal; sets STOP_MS (from the signal to the process's exit)
    local t0 polls=0
    t0=$(date +%s%N)
    kill "-$1" "$SERVER_PID"
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        if ((polls == 6000)); then # 60 s
            log "server $SERVER_PID still running 60 s after SIG$1: killing it"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        sleep 0.01
        polls=$((polls + 1))
    done
    STOP_MS=$((($(date +%s%N) - t0) / 1000000))
    SERVER_PID=
}

rss_mb() { # VmRSS of the running server, MiB
    awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$SERVER_PID/status"
}

server_cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"
}

# Snapshot lines each server logs: oxkeeper "snapshot written ... took_ms=N", ZooKeeper "Snapshot taken in N ms".
snapshots_since() { # dir byte-offset; prints "count max_ms"
    tail -c +"$(($2 + 1))" "$1/server.log" | awk '
        /snapshot written/ { n++; for (i = 1; i <= NF; i++) if ($i ~ /^took_ms=/) { v = substr($i, 9) + 0; if (v > m) m = v } }
        /Snapshot taken in/ { n++; for (i = 1; i <= NF; i++) if ($i == "in") { v = $(i + 1) + 0; if (v > m) m = v } }
        END { printf "%d %d\n", n, m }'
}

log_size() { wc -c <"$1/server.log"; }

# Snapshot intervals logged since the offset, one "start_ms end_ms" (epoch) per line. oxkeeper logs the end
# with took_ms (serialization and write; the hand-off copy before it is not included); ZooKeeper logs the
# start ("Snapshotting:") and the end ("Snapshot taken in N ms").
snapshot_intervals() { # dir byte-offset
    tail -c +"$(($2 + 1))" "$1/server.log" | while read -r line; do
        local ts took end
        case $line in
        *"snapshot written"*)
            ts=${line%% *} took=${line##*took_ms=} took=${took%% *} ;;
        *"Snapshot taken in "*)
            ts=${line%% *} took=${line##*Snapshot taken in } took=${took%% *} ;;
        *) continue ;;
        esac
        end=$(date -d "$ts" +%s%3N 2>/dev/null) || continue
        echo "$((end - took)) $end"
    done
}

# How many of the SLOW lines (the 5 slowest operations) were sent while a snapshot was being taken, or
# within 20 ms before one started (the hand-off copy).
slow_in_snapshots() { # bench-output intervals
    awk 'NR == FNR { s[NR] = $1; e[NR] = $2; n = NR; next }
        /^SLOW/ { split($2, kv, "="); t = kv[2]; hit = 0
            for (i = 1; i <= n; i++) if (t >= s[i] - 20 && t <= e[i]) hit = 1
            total++; hits += hit }
        END { print hits + 0 }' <(echo "$2") <(echo "$1")
}

run_write() { # kind op writers label
    local kind=$1 op=$2 writers=$3 label=$4 r cpu0 cpu1 ops
    cpu0=$(server_cpu_ticks)
    r=$("$BENCH" write "127.0.0.1:$PORT" --op "$op" --writers "$writers" --secs "$WRITE_SECS" \
        --warmup "$WARMUP_SECS" --size 100 --root "/wb-$op-$writers")
    cpu1=$(server_cpu_ticks)
    note "$kind pair $PAIR: $r"
    ops=$(field "$(head -1 <<<"$r")" ops)
    r=$(head -1 <<<"$r")
    record "$kind" "$label ops/s" "$(field "$r" ops_per_s)"
    record "$kind" "$label p50 ms" "$(field "$r" p50_ms)"
    record "$kind" "$label p99 ms" "$(field "$r" p99_ms)"
    # Server CPU per acknowledged write over the whole run (warm-up included, so divide by all its writes).
    local secs_total
    secs_total=$(awk -v a="$WRITE_SECS" -v b="$WARMUP_SECS" 'BEGIN {print a + b}')
    record "$kind" "$label server CPU us/op" "$(awk -v c=$((cpu1 - cpu0)) -v t="$CLK_TCK" -v n="$ops" \
        -v s="$secs_total" -v w="$WRITE_SECS" 'BEGIN {printf "%.0f", c / t * 1e6 / (n * s / w)}')"
    record "$kind" "$label bench CPU %" "$(awk -v c="$(field "$r" bench_cpu_s)" -v w="$(field "$r" wall_s)" \
        'BEGIN {printf "%.0f", 100 * c / w}')"
}

run_stall() { # kind dir label
    local kind=$1 dir=$2 label=$3 r out off intervals
    off=$(log_size "$dir")
    out=$("$BENCH" write "127.0.0.1:$PORT" --op set-random --writers 1 --secs "$STALL_SECS" --warmup 1 \
        --size 32 --dirs "$DIRS" --per-dir "$PER_DIR")
    intervals=$(snapshot_intervals "$dir" "$off")
    note "$kind pair $PAIR $label $out"
    note "$kind pair $PAIR $label snapshot intervals (epoch ms): $(paste -sd, <<<"$intervals")"
    r=$(head -1 <<<"$out")
    record "$kind" "$label ops/s" "$(field "$r" ops_per_s)"
    record "$kind" "$label p99 ms" "$(field "$r" p99_ms)"
    record "$kind" "$label p99.9 ms" "$(field "$r" p999_ms)"
    record "$kind" "$label max ms" "$(field "$r" max_ms)"
    record "$kind" "$label snapshots in window" "$(grep -c . <<<"$intervals" || true)"
    if [[ -n $intervals ]]; then
        record "$kind" "$label longest snapshot (ms)" \
            "$(awk '{d = $2 - $1; if (d > m) m = d} END {print m}' <<<"$intervals")"
        record "$kind" "$label of 5 slowest ops, in a snapshot" "$(slow_in_snapshots "$out" "$intervals")"
    fi
}

# One server through every phase, on a fresh data directory.
run_instance() { # kind
    local kind=$1 dir r off snaps
    dir=$WORK/$kind-$PAIR
    mkdir -p "$dir/data"
    PORT=$("$BENCH" free-port)
    local load_snap=$ZK_LOAD_SNAPCOUNT
    [[ $kind == oxkeeper ]] && load_snap=$OX_LOAD_SNAPCOUNT

    log "$kind (pair $PAIR): writes"
    write_cfg "$dir" "$WRITE_SNAPCOUNT"
    start_server "$kind" "$dir"
    r=$(ready /)
    record "$kind" "start, empty (ms)" "$(field "$r" ready_ms)"
    # Not measured: lets the JVM compile its hot paths, so the runs below see a warmed-up ZooKeeper.
    "$BENCH" write "127.0.0.1:$PORT" --op set --writers 8 --secs "$SERVER_WARMUP_SECS" --warmup 0 \
        --root /warmup >/dev/null
    for op in $OPS; do
        for w in $WRITERS; do
            local name=setData
            [[ $op == create ]] && name=create
            run_write "$kind" "$op" "$w" "$name $w writer(s)"
        done
    done

    log "$kind (pair $PAIR): loading $NODES nodes"
    stop_server TERM
    write_cfg "$dir" "$load_snap"
    start_server "$kind" "$dir"
    ready / >/dev/null
    off=$(log_size "$dir")
    r=$("$BENCH" load "127.0.0.1:$PORT" --dirs "$DIRS" --per-dir "$PER_DIR" --size 32 --sessions 4 --window 200)
    note "$kind pair $PAIR: $r"
    record "$kind" "load: pipelined creates/s" "$(field "$r" creates_per_s)"
    snaps=$(snapshots_since "$dir" "$off")
    record "$kind" "load: snapshots taken" "${snaps% *}"
    [[ ${snaps% *} != 0 ]] || log "warning: $kind took no snapshot during the load: its restart replays the whole log"
    # A snapshot still being written when the server stops is discarded at restart (an older one and a
    # longer log are read instead): let one in progress finish, for both servers alike.
    sleep "$SETTLE_SECS"
    note "$kind pair $PAIR: snapshot files after load: $(find "$dir/data" -name 'snapshot.*' -printf '%f(%s B) ' | tr '\n' ' ')"

    log "$kind (pair $PAIR): restarts"
    stop_server TERM
    record "$kind" "SIGTERM to exit, ${NODES} nodes (ms)" "$STOP_MS"
    start_server "$kind" "$dir"
    r=$(ready /last)
    note "$kind pair $PAIR after SIGTERM: $r"
    record "$kind" "restart after SIGTERM (ms)" "$(field "$r" ready_ms)"
    record "$kind" "RSS after SIGTERM restart (MiB)" "$(rss_mb)"
    stop_server KILL
    write_cfg "$dir" "$QUIET_SNAPCOUNT"
    start_server "$kind" "$dir"
    r=$(ready /last)
    note "$kind pair $PAIR after SIGKILL: $r"
    record "$kind" "restart after SIGKILL (ms)" "$(field "$r" ready_ms)"
    record "$kind" "RSS after SIGKILL restart (MiB)" "$(rss_mb)"

    log "$kind (pair $PAIR): writer latency without, then with snapshots"
    run_stall "$kind" "$dir" "1 writer, no snapshots:"
    stop_server TERM
    write_cfg "$dir" "$STALL_SNAPCOUNT"
    start_server "$kind" "$dir"
    ready /last >/dev/null
    run_stall "$kind" "$dir" "1 writer, snapshots:"
    stop_server TERM
    rm -rf "$dir/data"
}

log "results and server logs in $WORK"
for ((PAIR = 1; PAIR <= PAIRS; PAIR++)); do
    if ((PAIR % 2)); then order="oxkeeper zookeeper"; else order="zookeeper oxkeeper"; fi
    for kind in $order; do run_instance "$kind"; done
done

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
values() { awk -F'\t' -v k="$1" -v m="$2" '$1 == k && $2 == m {print $3}' "$RAW"; }

echo
echo "oxkeeper $REVISION vs Apache ZooKeeper" \
    "$(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo '3.8')" \
    "($(java -version 2>&1 | head -1)), JVM flags: ${ZK_JAVA_OPTS:-JVM defaults} (+ GC and timestamp logging)"
echo "load average at start: $LOAD_AT_START; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), data in $WORK" \
    "($(df -P "$WORK" | awk 'NR == 2 {print $1}')); $PAIRS pair(s); $NODES nodes (+$DIRS dirs);" \
    "writes ${WRITE_SECS}s after ${WARMUP_SECS}s warm-up; snapCount zk/ox: writes $WRITE_SNAPCOUNT/$WRITE_SNAPCOUNT," \
    "load $ZK_LOAD_SNAPCOUNT/$OX_LOAD_SNAPCOUNT," \
    "stall $STALL_SNAPCOUNT/$STALL_SNAPCOUNT"
echo "medians; ratio = oxkeeper/ZooKeeper (ops/s: higher is better; ms, MiB, CPU: lower is better)"
printf '%-52s %11s %11s %7s   %-24s %s\n' metric oxkeeper zookeeper ratio "oxkeeper runs" "zookeeper runs"
while IFS= read -r metric; do
    ox=$(values oxkeeper "$metric" | median)
    zk=$(values zookeeper "$metric" | median)
    ratio=$(awk -v a="$ox" -v b="$zk" 'BEGIN {if (b + 0 == 0 || a == "-") print "-"; else printf "%.2f", a / b}')
    printf '%-52s %11s %11s %7s   %-24s %s\n' "$metric" "$ox" "$zk" "$ratio" \
        "$(values oxkeeper "$metric" | paste -sd' ')" "$(values zookeeper "$metric" | paste -sd' ')"
done <"$ORDER"
echo "total time: $(($(date +%s) - SCRIPT_START)) s; details (slowest operations, snapshot files): $DETAILS"
