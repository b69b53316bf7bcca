#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md, on a fresh machine: builds the peers — sentry_arroyo
# in its own workspace (its rdkafka needs cmake: installed from Debian when missing)
# and Confluent's Parallel Consumer with Maven (peers/parallel-consumer) — then runs
# `tidemark bench` on the embedded cluster (--scaling, into bench-results/) and on
# an Apache Kafka broker it starts itself (into bench-results/kafka/, with both
# peers; then the scale and memory runs into bench-results/kafka-scale/). With arguments, runs only `tidemark bench ARGS` (with the arroyo peer).
set -euo pipefail
cd "$(dirname "$0")/.."
# sentry_arroyo builds librdkafka with cmake, which also wants curl's headers.
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || need+=(libcurl4-openssl-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (for the sentry_arroyo peer)" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y "${need[@]}"
fi
cargo build --release --manifest-path peers/arroyo/Cargo.toml
cargo build --release -p tidemark-cli
arroyo=(--peer-arroyo peers/arroyo/target/release/arroyo-peer)
if [ $# -gt 0 ]; then
  exec target/release/tidemark bench "${arroyo[@]}" "$@"
fi
scripts/kafka.sh install   # also a JDK and Maven, for the Parallel Consumer peer
mvn -q -B -f peers/parallel-consumer/pom.xml package -DskipTests
target/release/tidemark bench "${arroyo[@]}" --scaling --out bench-results
read -r port pid dir < <(KAFKA_WATCH_PID=$$ scripts/kafka.sh start)
trap 'scripts/kafka.sh stop "$pid"; rm -rf "$dir"' EXIT
sleep 20   # the broker's JVM settles before the bench calibrates its CPU work
target/release/tidemark bench --brokers "127.0.0.1:$port" --records 100000 --every-record-records 2000 \
  "${arroyo[@]}" --peer-parallel-consumer peers/parallel-consumer/target/pc-peer.jar --out bench-results/kafka
target/release/tidemark bench --brokers "127.0.0.1:$port" --scale --out bench-results/kafka-scale
