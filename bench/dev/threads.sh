#!/usr/bin/env bash
# The server's CPU per request by thread (from /proc/PID/task/*/stat) during one `oxkeeper bench ops` run on a
# fresh server: which thread pays for a request (the apply thread, the runtime's workers, the log's thread...).
#
#   bench/dev/threads.sh BIN --op set --sessions 1 --duration 8s
#
# GEN: the generator (an `oxkeeper` binary; default BIN).
set -euo pipefail
here=$(dirname "$0")
# shellcheck source=bench/dev/lib.sh
. "$here/lib.sh"
bin=$1
shift
gen=${GEN:-$bin}
dev_start threads "$bin"
"$gen" bench --server "127.0.0.1:$DEV_PORT" --quiet ops --op mixed --mix get=50,set=50 --sessions 32 \
    --duration 2s >/dev/null 2>&1 || true
snap() { for t in /proc/"$DEV_PID"/task/*; do echo "$(tr ' ' _ <"$t/comm") $(awk '{print $14 + $15}' "$t/stat")"; done; }
before=$(snap)
json=$("$gen" bench --server "127.0.0.1:$DEV_PORT" --server-pid "$DEV_PID" --json --quiet ops "$@" || true)
after=$(snap)
dev_stop
[[ -n $json ]] || { echo "threads.sh: the workload produced no report" >&2; exit 1; }
python3 - "$before" "$after" "$json" "$(getconf CLK_TCK)" <<'PY'
import collections, json, sys
def load(text):
    c = collections.Counter()
    for line in text.splitlines():
        name, ticks = line.split()
        c[name] += int(ticks)
    return c
before, after = load(sys.argv[1]), load(sys.argv[2])
report, hz = json.loads(sys.argv[3]), int(sys.argv[4])
count = report["rates"][0]["count"]
print(f"{count} requests ({report['rates'][0]['per_s']:.0f}/s); server CPU per request by thread:")
for name in sorted(after, key=lambda k: before.get(k, 0) - after[k]):
    ticks = after[name] - before.get(name, 0)
    if ticks > 0:
        print(f"  {name:20s} {ticks / hz * 1e6 / count:8.1f} us")
PY
