#!/usr/bin/env bash
# Short fuzzing runs of every fuzz target (cargo-fuzz with --sanitizer none builds on the stable toolchain).
#   tests/fuzz.sh [seconds per target, default 30]
# Prints a few summary lines per target; when a target fails (it does not build, or it finds a crash), the
# end of its whole output too: the fuzz crate is outside the workspace, so nothing else builds it first.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-30}"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-0}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for target in decode_request apply; do
    echo "fuzz: $target for ${secs}s"
    status=0
    cargo fuzz run "$target" --sanitizer none --release -- -max_total_time="$secs" -rss_limit_mb=2048 \
        > "$out" 2>&1 || status=$?
    grep -E "^(#[0-9]+ +DONE|==|SUMMARY|Done|INFO: Running|thread)" "$out" | tail -5 || true
    if [ "$status" -ne 0 ]; then
        if grep -q "^error" "$out"; then
            echo "fuzz: $target does not build:"
            grep -E -A 12 "^error" "$out" | head -n 80
        else
            echo "fuzz: $target failed (exit status $status); the end of its output:"
            tail -n 40 "$out"
        fi
        exit "$status"
    fi
done
