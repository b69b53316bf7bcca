#!/usr/bin/env bash
# Tansu, the Kafka-compatible broker the tests run against.
#   scripts/tansu.sh install        install tansu 0.6.0 (dynostore) unless `tansu --version` answers
#   scripts/tansu.sh start [PORT]   start a broker on 127.0.0.1:PORT (a free port if omitted);
#                                   prints "PORT PID"; logs to target/tansu-PORT.log
#   scripts/tansu.sh stop PID       stop it
# The tests start their own brokers through tidemark-testkit (TansuBroker); this script is
# for installing it and for trying the CLI by hand.
set -euo pipefail
VERSION=0.6.0
BIN="${TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}"

installed() {
  [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$VERSION"
}

case "${1:-}" in
  install)
    if installed; then
      echo "tansu $VERSION already installed at $BIN"
    else
      echo "installing tansu $VERSION (about 11 minutes cold on 2 cores)..."
      cargo install tansu --version "$VERSION" --features dynostore --locked
    fi
    ;;
  start)
    installed || { echo "tansu is not installed: run $0 install" >&2; exit 1; }
    port="${2:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
    mkdir -p target
    url="tcp://127.0.0.1:$port"
    nohup "$BIN" broker --storage-engine memory://tansu/ --listener-url "$url" \
      --advertised-listener-url "$url" >"target/tansu-$port.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port $pid"; exit 0; fi
      kill -0 "$pid" 2>/dev/null || { cat "target/tansu-$port.log" >&2; exit 1; }
      sleep 0.1
    done
    echo "tansu did not listen on $port" >&2; kill "$pid"; exit 1
    ;;
  stop)
    kill "${2:?PID}" 2>/dev/null || true
    ;;
  *)
    sed -n '2,8p' "$0"; exit 2
    ;;
esac
