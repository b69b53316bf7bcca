#!/usr/bin/env bash
# Jaeger v2 (an OpenTelemetry-native tracing backend: OTLP receiver, in-memory
# storage, query API), for the tracing tests. Built from the Go module proxy in a
# throwaway module (`go get -tool`; a few minutes on 2 cores), cached.
#   scripts/jaeger.sh install   build jaeger $VERSION into $JAEGER_HOME (installs Go
#                               with apt-get when missing); prints its path
#   scripts/jaeger.sh path      prints the binary's path (exit 1 when not installed)
set -euo pipefail
# v1.75.0 is the Go module tag of the Jaeger v2.12 release.
VERSION=v1.75.0
JAEGER_HOME="${JAEGER_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tidemark/jaeger-$VERSION}"
bin="$JAEGER_HOME/jaeger"

die() { echo "jaeger.sh: $*" >&2; exit 1; }

install() {
  if [ -x "$bin" ]; then echo "$bin"; return; fi
  if ! command -v go >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "Go is needed to build jaeger and apt-get is missing"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    echo "installing Go with apt-get..." >&2
    { $sudo apt-get install -y -qq golang-go >/dev/null 2>&1 \
      || { $sudo apt-get update -qq && $sudo apt-get install -y -qq golang-go >/dev/null; }; } \
      || die "apt-get could not install golang-go"
  fi
  # One build at a time (test.sh starts one in the background; a test may ask too).
  mkdir -p "$JAEGER_HOME"
  exec 9>"$JAEGER_HOME/.lock"
  flock 9
  if [ -x "$bin" ]; then echo "$bin"; return; fi
  echo "building jaeger $VERSION from the Go module proxy into $JAEGER_HOME..." >&2
  local src="$JAEGER_HOME/src"
  rm -rf "$src" && mkdir -p "$src"
  ( cd "$src" \
    && go mod init tidemark-jaeger >/dev/null 2>&1 \
    && GOFLAGS=-mod=mod go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$VERSION" >&2 \
    && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger >&2 ) \
    || die "building github.com/jaegertracing/jaeger/cmd/jaeger@$VERSION failed"
  mv "$bin.tmp" "$bin"
  rm -rf "$src"
  echo "$bin"
}

case "${1:-}" in
  install) install ;;
  path) [ -x "$bin" ] && echo "$bin" || exit 1 ;;
  *) sed -n '2,7p' "$0"; exit 2 ;;
esac
