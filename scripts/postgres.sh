#!/usr/bin/env bash
# PostgreSQL, the database the PostgreSQL sink's tests and benchmark run against.
#   scripts/postgres.sh install      install Debian's postgresql package with apt-get when no
#                                    server binaries are found (/usr/lib/postgresql/*/bin)
#   scripts/postgres.sh start        initialise a fresh data directory and start a server on a free
#                                    loopback port (trust authentication for loopback, user postgres,
#                                    database postgres); waits until it accepts connections and
#                                    prints "PORT PID DIR" (log in DIR/server.log)
#   scripts/postgres.sh stop DIR     stop it (fast shutdown) and leave the data directory
#   scripts/postgres.sh restart DIR  start the server of DIR again on the same port and data
# With PG_WATCH_PID set, `start` also stops the server once that process has exited. The server
# refuses to run as root: as root, initdb and pg_ctl run as the `postgres` system user.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install() {
  if bindir >/dev/null; then echo "postgresql already installed in $(bindir)"; return; fi
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is needed and apt-get is missing"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "installing postgresql with apt-get..."
  { $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }; } \
    || die "apt-get could not install postgresql"
  bindir >/dev/null || die "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
  echo "postgresql installed in $(bindir)"
}

# Runs a server binary as the postgres system user when we are root.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

launch() {
  local dir="$1" port
  port=$(cat "$dir/port")
  as_owner "$(bindir)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 $(cat "$dir/options" 2>/dev/null)" start >/dev/null \
    || { tail -20 "$dir/server.log" >&2; die "the server of $dir did not start"; }
  local pid; pid=$(head -1 "$dir/data/postmaster.pid")
  echo "$port $pid $dir"
}

start() {
  local bin; bin=$(bindir) || die "postgresql is not installed: run $0 install"
  local dir; dir=$(mktemp -d "${TMPDIR:-/tmp}/tidemark-postgres.XXXXXX")
  chmod 755 "$dir"
  free_port >"$dir/port"
  [ "$(id -u)" -eq 0 ] && { id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres; chown postgres "$dir"; }
  as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  [ -n "${PG_TLS:-}" ] && tls "$dir"
  local line; line=$(launch "$dir")
  if [ -n "${PG_WATCH_PID:-}" ]; then
    # Stop the server when the process that started it is gone (a test binary).
    ( while kill -0 "$PG_WATCH_PID" 2>/dev/null && [ -f "$dir/data/postmaster.pid" ]; do sleep 1; done
      stop "$dir" ) </dev/null >/dev/null 2>&1 &
  fi
  echo "$line"
}

# PG_TLS=1: TLS on (a test CA in DIR/tls: ca.pem, and other-ca.pem that nobody
# trusts; the server's certificate for localhost and 127.0.0.1), and the role
# `tidemark` may connect over TLS only (hostnossl … reject); others as before.
tls() {
  local dir="$1" t="$1/tls"
  mkdir -p "$t"
  (
    cd "$t"
    openssl req -x509 -newkey rsa:2048 -noenc -keyout ca.key -out ca.pem -days 30 -subj "/CN=tidemark-pg-ca"
    openssl req -x509 -newkey rsa:2048 -noenc -keyout other-ca.key -out other-ca.pem -days 30 -subj "/CN=untrusted"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
    openssl req -newkey rsa:2048 -noenc -keyout server.key -out server.csr -subj "/CN=localhost"
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.crt -days 30 -extfile server.ext
  ) >"$t/openssl.log" 2>&1 || { cat "$t/openssl.log" >&2; die "making the TLS certificates failed"; }
  chmod 600 "$t/server.key"
  [ "$(id -u)" -eq 0 ] && chown -R postgres "$t"
  chmod 755 "$t"; chmod 644 "$t/ca.pem" "$t/other-ca.pem"
  echo "-c ssl=on -c ssl_cert_file=$t/server.crt -c ssl_key_file=$t/server.key" >"$dir/options"
  local hba="$dir/data/pg_hba.conf"
  { echo "hostssl all all 127.0.0.1/32 trust"; echo "hostnossl all tidemark 127.0.0.1/32 reject"; cat "$hba"; } >"$hba.new"
  mv "$hba.new" "$hba"; [ "$(id -u)" -eq 0 ] && chown postgres "$hba"
  return 0
}

stop() {
  local dir="${1:?DIR}"
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_owner "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) shift; stop "$@" ;;
  restart) shift; launch "${1:?DIR}" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
