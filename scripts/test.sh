#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (Apache Kafka
# from Maven Central, and a JDK + Maven with apt-get when missing), starts one Kafka
# broker that the whole run shares (each test uses its own topics and groups; a test
# that stops its broker starts its own), runs every test of the workspace, and stops
# the broker. The embedded mock cluster runs in-process.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/kafka.sh install
read -r port pid dir < <(KAFKA_WATCH_PID=$$ scripts/kafka.sh start)
trap 'scripts/kafka.sh stop "$pid"; rm -rf "$dir"' EXIT
export TIDEMARK_KAFKA_BROKERS="127.0.0.1:$port"
echo "apache kafka for this run: $TIDEMARK_KAFKA_BROKERS (pid $pid, log $dir/broker.log)"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo test --workspace --doc
  # Broker-backed tests run one at a time (.config/nextest.toml); unit tests two.
  # (Last, so the run closes on nextest's summary of every test.)
  cargo nextest run --workspace --no-fail-fast --test-threads 2 "$@"
else
  # Without nextest: one test at a time, so broker-backed tests never overlap.
  cargo test --workspace --no-fail-fast "$@" -- --test-threads 1
fi
