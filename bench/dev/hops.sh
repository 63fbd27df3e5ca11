#!/usr/bin/env bash
# A hop trace of one `oxkeeper bench ops` run (the server built with `--features hoptrace`: see
# oxkeeper_storage::hoptrace), then its reading by hops.py.
#
#   cargo build --release -p oxkeeper --bin oxkeeper --features hoptrace --target-dir target/hop
#   bench/dev/hops.sh target/hop/release/oxkeeper /tmp/hops.txt --op set --sessions 1 --duration 20s
#
# The server writes the trace once it holds 400,000 hops: run long enough (a set at 1 session records ~10 hops).
# GEN: the generator (default BIN).
set -euo pipefail
here=$(dirname "$0")
# shellcheck source=bench/dev/lib.sh
. "$here/lib.sh"
bin=$1 trace=$2
shift 2
gen=${GEN:-$bin}
rm -f "$trace"
dev_start hops "$bin" OXK_HOPTRACE="$trace"
"$gen" bench --server "127.0.0.1:$DEV_PORT" --server-pid "$DEV_PID" --quiet ops "$@" | tail -3 || true
dev_stop
[[ -s $trace ]] || { echo "no trace written: fewer than 400,000 hops (run longer)" >&2; exit 1; }
python3 "$here/hops.py" "$trace"
