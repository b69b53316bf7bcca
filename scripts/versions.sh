#!/usr/bin/env bash
# The core suite against the Apache Kafka releases users run besides the default one
# (scripts/kafka.sh's VERSION, which scripts/test.sh runs everything on):
#   scripts/versions.sh [VERSION...]     default: 3.9.1 (the last 3.x line) and 4.4.0
# For each version: installs it (Maven Central, cached), starts a single node, runs
# the core tests of the library against it (end to end, sink, exactly-once, commit
# metadata and the offset map, the idle stop, group rebalances with KIP-848 where the
# broker has it: 4.0 and later), stops it. With TIDEMARK_VERSIONS_QUICK=1 (what
# scripts/test.sh runs in CI) only end to end, exactly-once and the idle stop.
# Extra arguments for cargo test go in TIDEMARK_VERSIONS_CARGO_ARGS.
#   scripts/versions.sh --install-only   installs the default versions, runs nothing
set -euo pipefail
cd "$(dirname "$0")/.."
install_only=0
if [ "${1:-}" = --install-only ]; then install_only=1; shift; fi
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.9.1 4.4.0)
if [ $install_only = 1 ]; then
  for v in "${versions[@]}"; do KAFKA_VERSION="$v" scripts/kafka.sh install; done
  exit 0
fi
if [ "${TIDEMARK_VERSIONS_QUICK:-0}" = 1 ]; then
  tests=(end_to_end exactly_once idle_stop)
else
  tests=(end_to_end sink exactly_once commit_metadata offset_map idle_stop kafka_groups)
fi
test_args=()
for t in "${tests[@]}"; do test_args+=(--test "$t"); done
failed=()
for v in "${versions[@]}"; do
  echo "=== Apache Kafka $v: ${tests[*]}"
  KAFKA_VERSION="$v" scripts/kafka.sh install
  read -r port pid dir < <(KAFKA_VERSION="$v" KAFKA_WATCH_PID=$$ scripts/kafka.sh start)
  skip=()
  case "$v" in
    3.*) skip=(--skip kip848_consumer_protocol) ;;  # KIP-848 is generally available from 4.0
  esac
  # The workspace with scripts/test.sh's features, so that after it nothing compiles
  # again (the CLI's idle_stop test runs on the version's broker too).
  # shellcheck disable=SC2086
  if TIDEMARK_KAFKA_BROKERS="127.0.0.1:$port" cargo test --workspace \
       --features "tidemark/broker-tests tidemark-cli/broker-tests" ${TIDEMARK_VERSIONS_CARGO_ARGS:-} \
       "${test_args[@]}" -- --test-threads 1 "${skip[@]}"; then
    echo "=== Apache Kafka $v: passed"
  else
    echo "=== Apache Kafka $v: FAILED"; failed+=("$v")
  fi
  scripts/kafka.sh stop "$pid"; rm -rf "$dir"
done
[ ${#failed[@]} -eq 0 ] || { echo "failed on Apache Kafka ${failed[*]}"; exit 1; }
echo "passed on Apache Kafka ${versions[*]}"
