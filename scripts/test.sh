#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (Apache Kafka
# from Maven Central, a JDK + Maven, PostgreSQL and promtool with apt-get when missing;
# Toxiproxy and Jaeger from the Go module proxy),
# starts one Kafka broker and one PostgreSQL server that the whole run shares (each test
# uses its own topics, groups and tables; a test that stops its broker or database
# starts its own), runs every test of the workspace, and stops both. The embedded mock
# cluster runs in-process.
set -euo pipefail
cd "$(dirname "$0")/.."
# librdkafka is built with OpenSSL (rdkafka's `ssl` feature: TLS, SCRAM, OAUTHBEARER):
# its headers and pkg-config, with apt-get when missing.
if ! pkg-config --exists openssl 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing libssl-dev and pkg-config with apt-get..."
  { $sudo apt-get install -y -qq libssl-dev pkg-config >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq libssl-dev pkg-config >/dev/null; }; } \
    || echo "libssl-dev could not be installed: the build will fail" >&2
fi
scripts/kafka.sh install
# The other broker versions of the version matrix (below), resolved from Maven
# Central in the background while the tests compile and run (a lock per version).
if [ $# -eq 0 ]; then
  versions_log="$(mktemp -t tidemark-versions-install.XXXXXX)"
  scripts/versions.sh --install-only >"$versions_log" 2>&1 &
fi
scripts/postgres.sh install
# Toxiproxy for the network-fault tests (built from the Go module proxy, cached).
scripts/toxiproxy.sh install >/dev/null
# Jaeger v2 for the tracing tests (crates/tidemark-cli/tests/tracing.rs), built from
# the Go module proxy in the background while the rest installs and the tests
# compile (a few minutes on 2 cores, cached); the test waits for it (a lock).
jaeger_log="$(mktemp -t tidemark-jaeger-build.XXXXXX)"
scripts/jaeger.sh install >"$jaeger_log" 2>&1 &
# promtool (Debian's prometheus package) checks the /metrics exposition in
# crates/tidemark-cli/tests/metrics.rs.
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing promtool (prometheus) with apt-get..."
  { $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; } \
    || echo "promtool could not be installed: the exposition check will fail" >&2
fi
read -r port pid dir < <(KAFKA_WATCH_PID=$$ scripts/kafka.sh start)
# The secured node of the security tests (crates/tidemark-cli/tests/secured.rs):
# SASL_SSL, mTLS and ACLs, certificates made with openssl.
read -r _ _ _ spid sdir < <(KAFKA_WATCH_PID=$$ scripts/kafka.sh start-secured)
read -r pg_port _ pg_dir < <(PG_WATCH_PID=$$ scripts/postgres.sh start)
trap 'scripts/kafka.sh stop "$pid"; rm -rf "$dir"; scripts/kafka.sh stop "$spid"; rm -rf "$sdir"; scripts/postgres.sh stop "$pg_dir"; rm -rf "$pg_dir"' EXIT
export TIDEMARK_KAFKA_BROKERS="127.0.0.1:$port"
export TIDEMARK_SECURED_KAFKA_DIR="$sdir"
export TIDEMARK_POSTGRES_URL="postgresql://postgres@127.0.0.1:$pg_port/postgres"
echo "apache kafka for this run: $TIDEMARK_KAFKA_BROKERS (pid $pid, log $dir/broker.log)"
echo "secured apache kafka for this run: $sdir (pid $spid)"
echo "postgresql for this run: $TIDEMARK_POSTGRES_URL (log $pg_dir/server.log)"
status=0
# The broker- and database-backed tests are behind the feature `broker-tests`
# (plain `cargo test` runs the unit tests, the fakes and the embedded cluster only).
features=(--features "tidemark/broker-tests tidemark-cli/broker-tests")
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo test --workspace --doc "${features[@]}"
  # Broker-backed tests run one at a time (.config/nextest.toml); unit tests two.
  cargo nextest run --workspace "${features[@]}" --no-fail-fast --test-threads 2 "$@" || status=$?
else
  # Without nextest: one test at a time, so broker-backed tests never overlap.
  cargo test --workspace "${features[@]}" --no-fail-fast "$@" -- --test-threads 1 || status=$?
fi
# The long runs with short settings (the documented commands run them in full),
# built with the same packages and features as the run above so nothing compiles
# again (`-p` alone unifies dependencies' features differently: minutes here): the
# soak for 1 minute on its own three-node cluster, and the core tests on the other
# broker versions (end to end, exactly-once, idle stop on 3.9.1 and 4.4.0).
if [ $# -eq 0 ]; then
  TIDEMARK_SOAK_MINUTES="${TIDEMARK_SOAK_MINUTES:-1}" \
    cargo test --workspace "${features[@]}" --test soak -- --ignored --nocapture || status=$?
  TIDEMARK_VERSIONS_QUICK="${TIDEMARK_VERSIONS_QUICK:-1}" scripts/versions.sh || status=$?
fi
exit $status
