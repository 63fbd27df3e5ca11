# shellcheck shell=bash
# Shared by the scripts in bench/dev (sourced): a server on a free port with compare.sh's zoo.cfg settings
# (its TICK_MS, LISTEN_BACKLOG and write_cfg: keep the two in step).
# Data under ${OXK_DEV_DATA:-${TMPDIR:-/tmp}/oxk-dev}, one directory per server, removed when it stops.

OXK_DEV_DATA=${OXK_DEV_DATA:-${TMPDIR:-/tmp}/oxk-dev}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# dev_start NAME BIN [ENV=VALUE...]: starts BIN --config zoo.cfg in a fresh directory; sets DEV_PORT, DEV_PID,
# DEV_DIR; waits (30 s at most) until `srvr` answers.
dev_start() {
    local name=$1 bin=$2 i
    shift 2
    DEV_DIR=$OXK_DEV_DATA/$name
    rm -rf "$DEV_DIR"
    mkdir -p "$DEV_DIR/data"
    DEV_PORT=$(free_port)
    cat >"$DEV_DIR/zoo.cfg" <<CFG
tickTime=2000
dataDir=$DEV_DIR/data
clientPort=$DEV_PORT
clientPortAddress=127.0.0.1
clientPortListenBacklog=128
maxClientCnxns=0
forceSync=yes
admin.enableServer=false
4lw.commands.whitelist=*
CFG
    (cd "$DEV_DIR" && exec env RUST_LOG=warn "$@" "$bin" --config zoo.cfg >server.log 2>&1) &
    DEV_PID=$!
    for ((i = 0; i < 300; i++)); do
        if python3 - "$DEV_PORT" 2>/dev/null <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"srvr")
sys.exit(0 if b"Mode" in s.recv(4096) else 1)
PY
        then
            return 0
        fi
        kill -0 "$DEV_PID" 2>/dev/null || { echo "$bin exited at start: $DEV_DIR/server.log" >&2; return 1; }
        sleep 0.1
    done
    echo "$bin not serving after 30 s: $DEV_DIR/server.log" >&2
    kill -KILL "$DEV_PID" 2>/dev/null
    return 1
}

dev_stop() {
    kill -TERM "$DEV_PID" 2>/dev/null
    wait "$DEV_PID" 2>/dev/null
    rm -rf "$DEV_DIR"
}
