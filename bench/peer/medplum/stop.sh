#!/usr/bin/env bash
# Stops the Medplum peer: the server (by its recorded process id), then Redis,
# then PostgreSQL. Parts that are not running are skipped.
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if pid="$(server_pid)"; then
  kill -TERM "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "server $pid did not stop within 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi
rm -f "$RUN_DIR/server.pid"

if [ -f "$STATE_DIR/secrets.env" ] && redis_running; then
  redis_cli shutdown nosave >/dev/null 2>&1 || true
  for _ in $(seq 1 50); do redis_running || break; sleep 0.2; done
fi

[ -f "$PGDATA_DIR/PG_VERSION" ] && pg_stop
log "stopped"
