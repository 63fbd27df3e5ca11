#!/usr/bin/env bash
# Installs everything the tests need on a machine that has only the Rust toolchain, Python 3.11, Java 17
# and apt: Debian's zookeeper packages (Apache ZooKeeper 3.8, zkCli.sh, the C client), kazoo and pytest,
# and cargo-fuzz. Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/clients/install.sh
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "install.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi
