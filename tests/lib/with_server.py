"""Run a command against a freshly started server: `with_server.py oxkeeper|zookeeper -- cmd args...`.

The server's host:port is appended to the command's arguments and exported as OXK_TEST_SERVER.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers  # noqa: E402


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: with_server.py oxkeeper|zookeeper -- command [args...]")
    kind, cmd = sys.argv[1], sys.argv[3:]
    with servers.start(kind) as srv:
        env = dict(os.environ, OXK_TEST_SERVER=srv.hostport)
        rc = subprocess.call(cmd + [srv.hostport], env=env)
        if rc != 0:
            log = os.path.join(srv.workdir, "server.log")
            if os.path.exists(log):
                print(f"--- last lines of {kind}'s log ---", file=sys.stderr)
                with open(log) as f:
                    print("".join(f.readlines()[-40:]), file=sys.stderr)
    sys.exit(rc)


if __name__ == "__main__":
    main()
