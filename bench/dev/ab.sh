#!/usr/bin/env bash
# Alternating rounds of one `oxkeeper bench` workload against two or more server builds, each run on a fresh
# server (warmed up by 2 s of a get/set mix), in order A B, then B A, ... Prints each run as it ends, then the
# medians and the per-pair ratios against the first build (the way to compare builds on a noisy machine: a
# ratio of medians hides which rounds the machine was slow in).
#
#   bench/dev/ab.sh ROUNDS BIN_A BIN_B [BIN_C...]
#   OP=create S=32 DUR=5s bench/dev/ab.sh 6 /tmp/oxk-before target/release/oxkeeper
#
# A BIN may be a wrapper script that sets environment variables and execs the binary. Environment: OP (set,
# create, get, mixed, sessions; default set), S (sessions, 32), DUR (5s), GEN (the generator: an `oxkeeper`
# binary, default the first BIN), EXTRA (more `ops` arguments), OUT (the runs' JSON, default a new directory).
set -euo pipefail
here=$(dirname "$0")
# shellcheck source=bench/dev/lib.sh
. "$here/lib.sh"
rounds=$1
shift
bins=("$@")
((${#bins[@]} >= 2)) || { echo "usage: ab.sh ROUNDS BIN_A BIN_B [BIN...]" >&2; exit 2; }
op=${OP:-set} sessions=${S:-32} dur=${DUR:-5s} gen=${GEN:-${bins[0]}}
out=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/oxk-ab.XXXXXX")}
mkdir -p "$out"
echo "runs in $out"
n=${#bins[@]}
for ((r = 0; r < rounds; r++)); do
    for ((k = 0; k < n; k++)); do
        if ((r % 2 == 0)); then i=$k; else i=$((n - 1 - k)); fi
        dev_start "ab-$i" "${bins[$i]}"
        "$gen" bench --server "127.0.0.1:$DEV_PORT" --quiet ops --op mixed --mix get=50,set=50 --sessions 32 \
            --duration 2s >/dev/null 2>&1 || true
        if [[ $op == sessions ]]; then
            # shellcheck disable=SC2086 # EXTRA is a list of arguments
            "$gen" bench --server "127.0.0.1:$DEV_PORT" --server-pid "$DEV_PID" --json --quiet sessions \
                --duration "$dur" ${EXTRA:-} >"$out/$r.$i.json" || true
        else
            # shellcheck disable=SC2086
            "$gen" bench --server "127.0.0.1:$DEV_PORT" --server-pid "$DEV_PID" --json --quiet ops --op "$op" \
                --sessions "$sessions" --duration "$dur" ${EXTRA:-} >"$out/$r.$i.json" || true
        fi
        dev_stop
        python3 "$here/ratios.py" --one "$out/$r.$i.json" "round $r, build $i ($(basename "${bins[$i]}"))"
    done
done
python3 "$here/ratios.py" "$out" "$n"
