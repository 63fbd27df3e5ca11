#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs every test. Exits non-zero on any failure.
# QUICK=1 shortens the differential run for development.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "install test dependencies"
tests/install.sh

step "format and lint"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

step "build"
cargo build --release --locked --bin oxkeeper
export OXKEEPER_BIN="$PWD/target/release/oxkeeper"

step "unit and integration tests"
# `--workspace` here and below: every test build then resolves features alike (dev-dependencies such as
# divan and proptest add features to clap, rand, regex), so the steps below compile nothing again.
cargo test --workspace --locked --release --all-targets

step "load test: 10,000 sessions x 100 ephemerals expire at once beside a live client"
cargo test --workspace --locked --release --test mass_expiry_load -- --ignored --nocapture

step "end-to-end tests (raw protocol, bad input, four-letter words)"
python3 -m pytest -q tests/e2e

step "real clients against oxkeeper (Java, zkCli.sh, cli_mt, kazoo's suite)"
python3 tests/clients/with_server.py --kind oxkeeper -- tests/clients/run.sh {}

step "the Rust client's integration and recipe suites against Apache ZooKeeper 3.8 (they ran against oxkeeper above)"
# Short ticks so the suite's short session timeouts are allowed (min is 2 ticks), as its in-process server.
# Containers reaped every 100 ms, as in the in-process server: the recipes must cope with their directory gone.
python3 tests/clients/with_server.py --kind zookeeper --cfg tickTime=100 --cfg maxSessionTimeout=30000 \
    --jvm znode.container.checkIntervalMs=100 -- \
    env OXK_CLIENT_TEST_SERVER={} cargo test --workspace --release --locked --test client --test recipes
OXK_CLIENT_TEST_KIND=zookeeper cargo test --workspace --release --locked --test restart

step "differential test against Apache ZooKeeper 3.8"
if [ "${QUICK:-0}" = 1 ]; then export DIFF_SEEDS=3 DIFF_OPS=2000; fi
python3 -m pytest -q tests/differential

step "fuzzing (short runs)"
tests/fuzz.sh 30

echo
echo "all tests passed"
