#!/usr/bin/env bash
# Starts the Medplum peer on loopback: its PostgreSQL cluster, its Redis and
# the server, waits until the server answers, and prints the FHIR base URL
# (the only line on stdout). Already running parts are left as they are.
#   MEDPLUM_START_TIMEOUT  seconds to wait for the server (default 600: the
#                          very first start also migrates and seeds)
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ -f "$STATE_DIR/medplum.config.json" ] && [ -f "$SERVER_DIR/dist/index.js" ] \
  || die "not set up: run $PEER_DIR/setup.sh first"
NODE="$(node_bin)"
mkdir -p "$LOG_DIR" "$RUN_DIR"

pg_start

if ! redis_running; then
  redis-server "$STATE_DIR/redis.conf" >&2
  for _ in $(seq 1 50); do redis_running && break; sleep 0.2; done
  redis_running || die "Redis did not start: see $LOG_DIR/redis.log"
fi

if ! server_pid >/dev/null; then
  # NODE_ENV=production as in Medplum's own container image. The server is
  # started in a session of its own so that it outlives the calling shell;
  # stop.sh ends it by the process id recorded here.
  (
    cd "$SERVER_DIR"
    NODE_ENV=production setsid "$NODE" --import "$PEER_DIR/loopback.mjs" dist/index.js \
      "file:$STATE_DIR/medplum.config.json" >>"$LOG_DIR/server.log" 2>&1 </dev/null &
    echo $! > "$RUN_DIR/server.pid"
  )
fi

deadline=$(( $(date +%s) + ${MEDPLUM_START_TIMEOUT:-600} ))
until server_ready; do
  server_pid >/dev/null || { tail -n 20 "$LOG_DIR/server.log" >&2; die "the server exited: see $LOG_DIR/server.log"; }
  [ "$(date +%s)" -lt "$deadline" ] || die "the server did not answer within ${MEDPLUM_START_TIMEOUT:-600}s"
  sleep 1
done
echo "$BASE_URL/fhir/R4"
