#!/usr/bin/env bash
# Short fuzzing runs of every fuzz target (cargo-fuzz with --sanitizer none builds on the stable toolchain).
#   tests/fuzz.sh [seconds per target, default 30]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-30}"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-0}"
for target in decode_request apply; do
    echo "fuzz: $target for ${secs}s"
    cargo fuzz run "$target" --sanitizer none --release -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 \
        | grep -E "^(#[0-9]+ +DONE|==|SUMMARY|Done|INFO: Running|thread)" | tail -5
    test "${PIPESTATUS[0]}" -eq 0
done
