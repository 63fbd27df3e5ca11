#!/usr/bin/env bash
# Install what tests/clients/run.sh needs, on a Debian 12 machine that has Python 3.11, Java 17 and apt.
# Idempotent and quick when everything is there: apt-get update/install run only if a package is missing.
#
#   apt:  zookeeper (3.8.0: jars in /usr/share/java, zkCli.sh; pulls libzookeeper-java, libslf4j-java,
#         libnetty-java), zookeeper-bin (cli_mt), libzookeeper-mt-dev (C headers + libzookeeper_mt),
#         gcc + libc6-dev (to build tests/clients/c), openjdk-17-jdk-headless only if javac is missing.
#   pip:  kazoo==2.11.0 (its wheel ships kazoo/tests), pytest, pytest-timeout, objgraph (test_cache),
#         gevent and eventlet (kazoo's gevent/eventlet handler tests).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

APT_PKGS=(zookeeper zookeeper-bin libzookeeper-mt-dev gcc libc6-dev)
command -v javac >/dev/null 2>&1 || APT_PKGS+=(openjdk-17-jdk-headless)

missing=()
for p in "${APT_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: apt packages missing: ${missing[*]}"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
else
    echo "install.sh: apt packages present"
fi

for f in /usr/share/java/zookeeper.jar /usr/share/java/slf4j-nop.jar /usr/share/java/netty-resolver.jar \
         /usr/share/java/netty-codec.jar /usr/share/zookeeper/bin/zkCli.sh /usr/lib/zookeeper/bin/cli_mt \
         /usr/include/zookeeper/zookeeper.h; do
    [ -e "$f" ] || { echo "install.sh: expected $f after installing the apt packages" >&2; exit 1; }
done

PY=python3
if $PY - <<'EOF' 2>/dev/null
import importlib.util
import kazoo.version
assert kazoo.version.__version__ == "2.11.0", kazoo.version.__version__
for m in ("kazoo.tests.test_client", "pytest", "pytest_timeout", "objgraph", "gevent", "eventlet"):
    assert importlib.util.find_spec(m) is not None, m
EOF
then
    echo "install.sh: python packages present"
else
    echo "install.sh: installing python packages"
    if ! $PY -m pip --version >/dev/null 2>&1; then
        $SUDO apt-get update
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends python3-pip
    fi
    pipi() {
        # A Debian system Python refuses plain pip installs (PEP 668); fall back to --break-system-packages.
        $PY -m pip install --quiet "$@" || $PY -m pip install --quiet --break-system-packages "$@"
    }
    pipi "kazoo==2.11.0" pytest pytest-timeout objgraph gevent eventlet
    # kazoo's own tests ship in its wheel; if this copy of kazoo lacks them, build it from the sdist.
    if ! $PY -c "import importlib.util as u; assert u.find_spec('kazoo.tests.test_client')" 2>/dev/null; then
        pipi --force-reinstall --no-deps --no-binary kazoo "kazoo==2.11.0"
    fi
    $PY -c "import importlib.util as u, pytest_timeout, objgraph, gevent, eventlet; assert u.find_spec('kazoo.tests.test_client')" \
        || { echo "install.sh: python packages still missing" >&2; exit 1; }
fi
echo "install.sh: ready"
