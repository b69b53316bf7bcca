#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (Tansu), then
# runs every test of the workspace. Brokers are started by the tests themselves on free
# loopback ports (embedded mock cluster in-process; Tansu through tidemark-testkit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tansu.sh install
export TANSU_BIN="${TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo test --workspace --doc
  # Two cores: the broker-backed tests load the machine, so run two at a time.
  # (Last, so the run closes on nextest's summary of every test.)
  cargo nextest run --workspace --no-fail-fast --test-threads 2 "$@"
else
  cargo test --workspace --no-fail-fast "$@" -- --test-threads 2
fi
