#!/usr/bin/env bash
# The project's embedded PostgreSQL server, the default warehouse of scripts/run.sh:
#   bash scripts/postgres.sh start    install PostgreSQL if missing, create the server
#                                     (first time), start it, ensure its role and database
#   bash scripts/postgres.sh status   running or not, and how to connect
#   bash scripts/postgres.sh stop
# Data lives in .postgres/ (git-ignored) and is kept between runs; the port is chosen
# once. It listens on 127.0.0.1 only and trusts local connections (no password).
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` system
# user that the Debian package creates.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

RUN_AS="" # the OS user the server runs as; empty: the current user
if [ "$(id -u)" = "0" ]; then
  RUN_AS=postgres
fi

# Run a command as the server's OS user (from /, which that user can always enter).
as_server() {
  if [ -z "$RUN_AS" ]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    (cd / && runuser -u "$RUN_AS" -- "$@")
  else
    (cd / && su -s /bin/sh "$RUN_AS" -c "$(printf '%q ' "$@")")
  fi
}

# BINDIR: the server binaries, of the version that created the data folder if known.
find_bindir() {
  local version=""
  if [ -f "$PG_DATA/PG_VERSION" ]; then
    version="$(cat "$PG_DATA/PG_VERSION")"
    if [ -x "/usr/lib/postgresql/$version/bin/pg_ctl" ]; then
      BINDIR="/usr/lib/postgresql/$version/bin"
      return 0
    fi
  fi
  # Debian/Ubuntu keep the binaries off PATH, one folder per major version: the newest.
  local initdb newest=0
  BINDIR=""
  for initdb in /usr/lib/postgresql/*/bin/initdb; do
    version="${initdb#/usr/lib/postgresql/}"
    version="${version%%/*}"
    if [ -x "$initdb" ] && [[ "$version" =~ ^[0-9]+$ ]] && [ "$version" -gt "$newest" ]; then
      newest="$version"
      BINDIR="${initdb%/initdb}"
    fi
  done
  if [ -z "$BINDIR" ] && command -v pg_ctl >/dev/null 2>&1; then
    BINDIR="$(dirname "$(command -v pg_ctl)")"
  fi
  [ -n "$BINDIR" ]
}

install_postgres() {
  if find_bindir; then
    return
  fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing PostgreSQL from Debian packages..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    find_bindir || die "PostgreSQL was installed but initdb/pg_ctl were not found."
    return
  fi
  die "PostgreSQL is not installed: install it (Debian/Ubuntu: sudo apt-get install" \
    "postgresql; macOS: brew install postgresql) and re-run, or set TARGET_POSTGRES_HOST" \
    "in .env to use your own server."
}

# The data folder must be reachable by the server's OS user; as root, a checkout under
# a private folder (e.g. /root, mode 0700) is not. Name the folder that blocks it.
check_reachable() {
  [ -n "$RUN_AS" ] || return 0
  if as_server test -w "$PG_DIR" -a -x "$PG_DIR"; then
    return 0
  fi
  local path="" part blocked="$PG_DIR"
  IFS=/ read -ra parts <<<"${PG_DIR#/}"
  for part in "${parts[@]}"; do
    path="$path/$part"
    if ! as_server test -x "$path"; then
      blocked="$path"
      break
    fi
  done
  die "The embedded PostgreSQL server runs as the '$RUN_AS' user, which cannot enter" \
    "$blocked (mode $(stat -c %a "$blocked"), owner $(stat -c %U "$blocked")): move this" \
    "checkout under a folder it can reach (e.g. /srv or /opt), or run" \
    "\`chmod o+x $blocked\`, or use your own server (set TARGET_POSTGRES_HOST in .env)."
}

port_in_use() {
  python3 - "$1" <<'EOF'
import socket, sys
with socket.socket() as sock:
    # As PostgreSQL binds: connections of a stopped server (TIME_WAIT) do not block it.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        sys.exit(0)
sys.exit(1)
EOF
}

# A port outside Linux's ephemeral range (32768-60999), so that no outgoing
# connection holds it when the server restarts later.
choose_port() {
  local port
  for port in $(seq 15432 15531); do
    if ! port_in_use "$port"; then
      echo "$port"
      return
    fi
  done
  die "No free port between 15432 and 15531 for the embedded PostgreSQL server."
}

create_server() {
  if [ -f "$PG_DATA/PG_VERSION" ]; then
    return
  fi
  if [ -n "$RUN_AS" ] && ! id "$RUN_AS" >/dev/null 2>&1; then
    die "Running as root, but there is no '$RUN_AS' user to run PostgreSQL as: create" \
      "one, run as a normal user, or set TARGET_POSTGRES_HOST in .env to use your own server."
  fi
  mkdir -p "$PG_DIR"
  chmod 700 "$PG_DIR"
  [ -z "$RUN_AS" ] || chown "$RUN_AS:" "$PG_DIR"
  check_reachable
  echo "Creating the embedded PostgreSQL server in .postgres/ ..."
  # The C locale exists everywhere (a LANG naming a locale the machine lacks would
  # make initdb fail); UTF8 holds any text Asana sends.
  if ! as_server "$BINDIR/initdb" -D "$PG_DATA" -U "$PG_SUPERUSER" --auth=trust \
    --encoding=UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1; then
    die "initdb failed: $(tail -n1 "$PG_DIR/initdb.log") (full output in .postgres/initdb.log)."
  fi
  # Loopback TCP only, and no Unix socket (its default folder may not be writable,
  # and its path length is limited).
  as_server tee -a "$PG_DATA/postgresql.conf" >/dev/null <<'EOF'

# Added by scripts/postgres.sh (the port is passed at start, from ../port).
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
EOF
}

is_running() {
  [ -f "$PG_DATA/PG_VERSION" ] && as_server "$BINDIR/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

psql_command() {
  local psql=psql
  command -v psql >/dev/null 2>&1 || psql="$BINDIR/psql"
  echo "$psql \"$(embedded_postgres_url)\""
}

start() {
  install_postgres
  create_server
  check_reachable
  [ -f "$PG_PORT_FILE" ] || choose_port >"$PG_PORT_FILE"
  local port
  port="$(embedded_postgres_port)"
  if ! is_running; then
    if port_in_use "$port"; then
      die "Port $port of the embedded PostgreSQL server is taken by another program: stop" \
        "it, or write another port number into .postgres/port, then re-run."
    fi
    local log_size=0
    [ ! -f "$PG_LOG" ] || log_size="$(wc -c <"$PG_LOG")"
    if ! as_server "$BINDIR/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 -o "-p $port" \
      start >/dev/null 2>&1; then
      # What this attempt logged, up to its first FATAL, on one line: the cause often
      # comes just before it ('invalid value for parameter …', 'could not bind …').
      local reason
      reason="$(tail -c +$((log_size + 1)) "$PG_LOG" 2>/dev/null \
        | sed -E 's/^[0-9-]+ [0-9:.]+ [^ ]+ \[[0-9]+\] //' \
        | awk '/starting PostgreSQL|listening on|^(HINT|DETAIL):/ { next }
               { fatal = /^(FATAL|PANIC):/; sub(/^[A-Z]+: +/, "")
                 out = out (out ? "; " : "") $0; if (fatal) exit }
               END { print out }' || true)"
      die "The embedded PostgreSQL server did not start: ${reason:-no log} (see" \
        ".postgres/server.log)."
    fi
  fi
  # The loader's role and database; created again if someone dropped them.
  "$BINDIR/psql" -h "$PG_HOST" -p "$port" -U "$PG_SUPERUSER" -d postgres -qAt \
    -v ON_ERROR_STOP=1 >/dev/null <<EOF
SELECT 'CREATE ROLE $PG_USER LOGIN' WHERE NOT EXISTS
  (SELECT FROM pg_roles WHERE rolname = '$PG_USER')\gexec
SELECT 'CREATE DATABASE $PG_DATABASE OWNER $PG_USER' WHERE NOT EXISTS
  (SELECT FROM pg_database WHERE datname = '$PG_DATABASE')\gexec
EOF
  echo "Embedded PostgreSQL server running on $PG_HOST:$port (data in .postgres/)."
}

stop() {
  if ! embedded_postgres_created; then
    echo "This project has no embedded PostgreSQL server."
    return
  fi
  find_bindir || die "PostgreSQL binaries not found: cannot stop the server."
  if is_running; then
    as_server "$BINDIR/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
    echo "Stopped the embedded PostgreSQL server (data kept in .postgres/)."
  else
    echo "The embedded PostgreSQL server is not running."
  fi
}

# Exit status as pg_ctl's: 0 running, 3 not running.
status() {
  if ! embedded_postgres_created; then
    echo "This project has no embedded PostgreSQL server (bash scripts/run.sh creates it)."
    return 3
  fi
  find_bindir || die "PostgreSQL binaries not found."
  if is_running; then
    echo "The embedded PostgreSQL server is running on $PG_HOST:$(embedded_postgres_port)."
    echo "  psql:    $(psql_command)"
    echo "  URL:     $(embedded_postgres_url)  (schema asana by default)"
    echo "  server:  bash scripts/postgres.sh stop   (or start, status)"
    return 0
  fi
  echo "The embedded PostgreSQL server is not running: bash scripts/postgres.sh start"
  return 3
}

case "${1:-}" in
  start | stop | status) "$1" ;;
  *)
    echo "usage: bash scripts/postgres.sh start|stop|status" >&2
    exit 2
    ;;
esac
