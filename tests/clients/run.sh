#!/usr/bin/env bash
# Real-client compatibility checks against a running ZooKeeper-compatible server.
#
#   tests/clients/run.sh <host:port> [java|zkcli|cli_mt|c|kazoo ...]     (default: all of them)
#
# Exits non-zero if any selected client check fails; prints a short summary per client. Full logs go
# to $OXK_CLIENTS_OUT (default: a fresh /tmp/oxk-clients.XXXXXX, printed at the end).
#
#   java    tests/clients/java/ZkApiCheck.java, the Java client API (run with the NIO and the Netty socket)
#   zkcli   tests/clients/zkcli/check_zkcli.py, ZooKeeper's zkCli.sh
#   cli_mt  tests/clients/climt/check_climt.py, the C client's sample shell cli_mt
#   c       tests/clients/c/zkc_check.c, the C client library API (multi, create2, ACLs, watches...)
#   kazoo   kazoo's own test suite through tests/clients/kazoo/oxk_kazoo_plugin.py; it fails if any test
#           in tests/clients/kazoo_expected_pass.txt does not pass
#
# Environment:
#   OXK_KAZOO_RECORD=<file>   also write the ids of the kazoo tests that passed to <file>
#                             (how tests/clients/kazoo_expected_pass.txt was produced against ZooKeeper)
#   OXK_KAZOO_ARGS="..."      extra pytest arguments for the kazoo run, split on spaces (e.g. "-k test_lock")
#   OXK_KAZOO_TIMEOUT=<s>     cap for the whole kazoo run (default 1500)
#   OXK_JAVA_KEEP_GOING=1     the Java check reports every failing section instead of stopping at the first mismatch
#
# Needs what tests/clients/install.sh installs. Start a throw-away server and run everything with:
#   tests/clients/with_server.py --kind zookeeper -- tests/clients/run.sh {}
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -lt 1 ] || [[ "$1" != *:* ]]; then
    echo "usage: $0 <host:port> [java|zkcli|cli_mt|c|kazoo ...]" >&2
    exit 2
fi
HP="$1"
shift
WHICH=("$@")
[ ${#WHICH[@]} -eq 0 ] && WHICH=(java zkcli cli_mt c kazoo)
for w in "${WHICH[@]}"; do
    case "$w" in java|zkcli|cli_mt|c|kazoo) ;; *) echo "unknown client '$w' (java zkcli cli_mt c kazoo)" >&2; exit 2 ;; esac
done

OUT="${OXK_CLIENTS_OUT:-$(mktemp -d /tmp/oxk-clients.XXXXXX)}"
mkdir -p "$OUT"
ZKJAR=/usr/share/java/zookeeper.jar
JAVA_CP_EXTRA=/usr/share/java/slf4j-nop.jar
NETTY_CP=/usr/share/java/netty-resolver.jar:/usr/share/java/netty-codec.jar

host="${HP%:*}"
port="${HP##*:}"
if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    echo "cannot connect to $HP" >&2
    exit 2
fi

declare -a SUMMARY=()
FAILED=0

# run_one <name> <logfile> <cmd...>: run, time it, keep the log, record PASS/FAIL
run_one() {
    local name="$1" log="$2"
    shift 2
    local t0 t1 rc
    t0=$(date +%s)
    "$@" >"$log" 2>&1
    rc=$?
    t1=$(date +%s)
    local last
    last="$(grep -E '^(java|zkcli|cli_mt|c): |^kazoo ' "$log" | tail -1)"
    if [ $rc -eq 0 ]; then
        SUMMARY+=("PASS  $name  ($((t1 - t0)) s)  ${last}")
    else
        FAILED=1
        SUMMARY+=("FAIL  $name  ($((t1 - t0)) s, exit $rc)  ${last}  -> $log")
        echo "---- $name FAILED (exit $rc); failing checks from $log:"
        grep -E '^FAIL|^ERROR ' "$log" | head -20
        echo "----"
    fi
    return $rc
}

for w in "${WHICH[@]}"; do
    case "$w" in
    java)
        mkdir -p "$OUT/java-classes"
        if ! javac -nowarn -d "$OUT/java-classes" -cp "$ZKJAR" "$HERE/java/ZkApiCheck.java" >"$OUT/java-build.log" 2>&1; then
            FAILED=1
            SUMMARY+=("FAIL  java  (javac failed) -> $OUT/java-build.log")
            cat "$OUT/java-build.log"
            continue
        fi
        echo "== java (NIO client socket) against $HP"
        run_one "java (ClientCnxnSocketNIO)" "$OUT/java-nio.log" \
            java -cp "$OUT/java-classes:$ZKJAR:$JAVA_CP_EXTRA" ZkApiCheck "$HP" ${OXK_JAVA_KEEP_GOING:+--keep-going}
        echo "== java (Netty client socket) against $HP"
        run_one "java (ClientCnxnSocketNetty)" "$OUT/java-netty.log" \
            java -Dzookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty \
                -cp "$OUT/java-classes:$ZKJAR:$NETTY_CP:$JAVA_CP_EXTRA" ZkApiCheck "$HP" ${OXK_JAVA_KEEP_GOING:+--keep-going}
        ;;
    zkcli)
        echo "== zkcli against $HP"
        run_one "zkcli" "$OUT/zkcli.log" python3 "$HERE/zkcli/check_zkcli.py" "$HP"
        ;;
    cli_mt)
        echo "== cli_mt against $HP"
        run_one "cli_mt" "$OUT/cli_mt.log" python3 "$HERE/climt/check_climt.py" "$HP"
        ;;
    c)
        echo "== c (libzookeeper_mt API) against $HP"
        if ! gcc -O1 -DTHREADED -o "$OUT/zkc_check" "$HERE/c/zkc_check.c" -I/usr/include/zookeeper -lzookeeper_mt -lpthread >"$OUT/c-build.log" 2>&1; then
            FAILED=1
            SUMMARY+=("FAIL  c  (gcc failed) -> $OUT/c-build.log")
            cat "$OUT/c-build.log"
            continue
        fi
        run_one "c" "$OUT/c.log" "$OUT/zkc_check" "$HP"
        ;;
    kazoo)
        echo "== kazoo test suite against $HP (takes ~2-3 minutes)"
        rec=()
        [ -n "${OXK_KAZOO_RECORD:-}" ] && rec=(--oxk-record "$OXK_KAZOO_RECORD")
        # shellcheck disable=SC2086
        # 60 s per test (the slowest takes ~10 s); the whole run is interrupted (SIGINT: pytest still prints
        # its summary) after ${OXK_KAZOO_TIMEOUT:-1500} s, e.g. when every setUp waits for a dead server.
        run_one "kazoo" "$OUT/kazoo.log" timeout -s INT -k 60 "${OXK_KAZOO_TIMEOUT:-1500}" \
            env OXK_TEST_SERVER="$HP" PYTHONPATH="$HERE/kazoo${PYTHONPATH:+:$PYTHONPATH}" \
            python3 -m pytest -p oxk_kazoo_plugin -p no:cacheprovider --pyargs kazoo.tests \
                -q -rfE --disable-warnings --timeout=60 \
                --oxk-expected "$HERE/kazoo_expected_pass.txt" "${rec[@]}" ${OXK_KAZOO_ARGS:-}
        sed -n '/oxk kazoo summary/,$p' "$OUT/kazoo.log" | head -40
        ;;
    esac
done

echo
echo "==== client compatibility summary against $HP (logs in $OUT)"
for s in "${SUMMARY[@]}"; do echo "$s"; done
exit $FAILED
