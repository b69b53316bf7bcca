#!/usr/bin/env bash
# Toxiproxy (Shopify's TCP proxy with faults: latency, blackholes, resets), for the
# network-fault tests. Built from the Go module proxy (about a minute), cached.
#   scripts/toxiproxy.sh install   build toxiproxy-server $VERSION into $TOXIPROXY_HOME
#                                  (installs Go with apt-get when missing); prints its path
#   scripts/toxiproxy.sh path      prints the server's path (exit 1 when not installed)
set -euo pipefail
VERSION=v2.12.0
TOXIPROXY_HOME="${TOXIPROXY_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tidemark/toxiproxy-$VERSION}"
bin="$TOXIPROXY_HOME/toxiproxy-server"

die() { echo "toxiproxy.sh: $*" >&2; exit 1; }

install() {
  if [ -x "$bin" ]; then echo "$bin"; return; fi
  if ! command -v go >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "Go is needed to build toxiproxy and apt-get is missing"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    echo "installing Go with apt-get..." >&2
    { $sudo apt-get install -y -qq golang-go >/dev/null 2>&1 \
      || { $sudo apt-get update -qq && $sudo apt-get install -y -qq golang-go >/dev/null; }; } \
      || die "apt-get could not install golang-go"
  fi
  echo "building toxiproxy $VERSION from the Go module proxy into $TOXIPROXY_HOME..." >&2
  mkdir -p "$TOXIPROXY_HOME"
  GOBIN="$TOXIPROXY_HOME" GOFLAGS=-mod=mod go install "github.com/Shopify/toxiproxy/v2/cmd/server@$VERSION" >&2 \
    || die "go install github.com/Shopify/toxiproxy/v2/cmd/server@$VERSION failed"
  mv "$TOXIPROXY_HOME/server" "$bin"
  echo "$bin"
}

case "${1:-}" in
  install) install ;;
  path) [ -x "$bin" ] && echo "$bin" || exit 1 ;;
  *) sed -n '2,7p' "$0"; exit 2 ;;
esac
