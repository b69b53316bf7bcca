#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md, on a fresh machine: builds the sentry_arroyo peer
# (its rdkafka needs cmake: installed from Debian when missing) in its own workspace,
# then runs `tidemark bench` with it. Extra arguments go to `tidemark bench`
# (default: --scaling --out bench-results).
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
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--scaling --out bench-results)
exec target/release/tidemark bench --peer-arroyo peers/arroyo/target/release/arroyo-peer "${args[@]}"
