#!/usr/bin/env python3
"""Start a throw-away server (via tests/lib/servers.py), run a command against it, stop the server.

    tests/clients/with_server.py [--kind zookeeper|oxkeeper] [--cfg key=value ...] [--jvm key=value ...] -- tests/clients/run.sh {} [which...]

Every `{}` in the command is replaced by the server's host:port; it is also exported as OXK_TEST_SERVER.
With no command, the server is started and kept until Ctrl-C / SIGTERM (its host:port is printed).
The exit status is the command's.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import servers  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", default="zookeeper", choices=["zookeeper", "oxkeeper"])
    ap.add_argument("--cfg", action="append", default=[], metavar="KEY=VALUE",
                    help="a zoo.cfg line for the server (repeatable)")
    ap.add_argument("--jvm", action="append", default=[], metavar="KEY=VALUE",
                    help="a Java system property for ZooKeeper (repeatable; e.g. znode.container.checkIntervalMs)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    stop = []

    def on_term(*_):
        stop.append(1)
        if cmd:
            raise SystemExit(143)   # runs the finally below, which stops the server

    signal.signal(signal.SIGTERM, on_term)
    extra = dict(kv.split("=", 1) for kv in a.cfg)
    kw = {"extra_cfg": extra}
    if a.jvm:
        if a.kind != "zookeeper":
            ap.error("--jvm is for --kind zookeeper (oxkeeper reads these keys from zoo.cfg: use --cfg)")
        kw["jvm_props"] = dict(kv.split("=", 1) for kv in a.jvm)
    srv = servers.start(a.kind, **kw)
    try:
        if not cmd:
            print(srv.hostport, flush=True)
            try:
                while not stop and srv.proc.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
            return 0
        cmd = [c.replace("{}", srv.hostport) for c in cmd]
        env = dict(os.environ, OXK_TEST_SERVER=srv.hostport)
        print(f"[with_server] {a.kind} on {srv.hostport}: {' '.join(cmd)}", flush=True)
        p = subprocess.Popen(cmd, env=env, start_new_session=True)
        try:
            return p.wait()
        except BaseException:
            # interrupted: stop the whole command (its own process group), then the server
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
            raise
    finally:
        srv.stop()


if __name__ == "__main__":
    sys.exit(main())
