#!/usr/bin/env bash
# The topology of deploy/compose.yaml without containers: a throwaway
# PostgreSQL, `sp-hub migrate` once, then two `sp-hub serve` replicas on that
# one database, each on its own loopback port.
#
# Usage: deploy/run-local-topology.sh           run until Ctrl-C
#        deploy/run-local-topology.sh --check   start, check that both
#                                               replicas answer /healthz and
#                                               /readyz with 200, stop
#
# Environment:
#   SP_HUB_BIN  the sp-hub binary (default target/release/sp-hub, else
#               target/debug/sp-hub)
#   PG_BIN      directory holding initdb and pg_ctl (found on PATH or under
#               /usr/lib/postgresql/*/bin otherwise)
#
# Everything (database, logs) lives in one mktemp directory that is removed,
# with every process this script started, on exit, failure or Ctrl-C.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

CHECK=0
case "${1:-}" in
"") ;;
--check) CHECK=1 ;;
*)
	echo "usage: deploy/run-local-topology.sh [--check]" >&2
	exit 2
	;;
esac

log() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'run-local-topology: error: %s\n' "$*" >&2
	exit 1
}

command -v curl >/dev/null 2>&1 || die "curl is needed to probe the replicas"
command -v python3 >/dev/null 2>&1 || die "python3 is needed to find free ports"

# --- the binary ---------------------------------------------------------------
if [[ -n ${SP_HUB_BIN:-} ]]; then
	BIN="$SP_HUB_BIN"
elif [[ -x target/release/sp-hub ]]; then
	BIN="target/release/sp-hub"
else
	BIN="target/debug/sp-hub"
fi
[[ -x $BIN ]] || die "no sp-hub binary at $BIN (cargo build --release -p sp-hub, or set SP_HUB_BIN)"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

# --- PostgreSQL (the same search as tests/run.sh) -----------------------------
find_pg_bindir() {
	local initdb d
	if initdb="$(command -v initdb 2>/dev/null)" && command -v pg_ctl >/dev/null 2>&1; then
		d="$(dirname "$(readlink -f "$initdb")")"
		if [[ -x $d/pg_ctl ]]; then
			printf '%s\n' "$d"
			return 0
		fi
	fi
	while IFS= read -r d; do
		if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
			printf '%s\n' "$d"
			return 0
		fi
	done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -t/ -k5,5 -V -r)
	return 1
}
if [[ -n ${PG_BIN:-} ]]; then
	[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] || die "PG_BIN=$PG_BIN does not hold initdb and pg_ctl"
else
	PG_BIN="$(find_pg_bindir)" || die "PostgreSQL (initdb, pg_ctl) not found; install it or set PG_BIN"
fi

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sp-hub-topology.XXXXXX")"
PG_DIR="$WORK_DIR/pg"
PG_STARTED=0
PIDS=()

# PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
as_pg() {
	if ((!IS_ROOT)); then
		"$@"
	elif command -v runuser >/dev/null 2>&1; then
		(cd "$PG_DIR" && runuser -u postgres -- "$@")
	else
		(cd "$PG_DIR" && su -s /bin/bash postgres -c "$(printf '%q ' "$@")")
	fi
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if ((PG_STARTED)); then
		as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null 2>&1 || true
	fi
	rm -rf "$WORK_DIR"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start_postgres() {
	mkdir -p "$PG_DIR"
	if ((IS_ROOT)); then
		id -u postgres >/dev/null 2>&1 ||
			useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres
		chmod 711 "$WORK_DIR" # let the postgres user reach $PG_DIR
		chown postgres: "$PG_DIR"
	fi
	chmod 700 "$PG_DIR"
	if ! as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust \
		--encoding=UTF8 --locale=C --no-sync >"$WORK_DIR/initdb.log" 2>&1; then
		cat "$WORK_DIR/initdb.log" >&2
		die "initdb failed"
	fi
	local attempt port
	for attempt in 1 2 3; do
		port="$(free_port)"
		# Appending keeps the file's owner. Loopback only; throwaway data.
		cat >>"$PG_DIR/data/postgresql.conf" <<EOF

# --- deploy/run-local-topology.sh (attempt $attempt) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_DIR'
fsync = off
EOF
		PG_STARTED=1
		if as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 start >/dev/null 2>&1; then
			PG_PORT="$port"
			return 0
		fi
		log "PostgreSQL did not start on port $port (attempt $attempt)"
		tail -n 20 "$PG_DIR/postgres.log" >&2 || true
		as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
		PG_STARTED=0
	done
	die "could not start PostgreSQL"
}

# Starts replica $1 on a loopback port of its own (port 0: the system picks
# a free one); sets URL_$1 from the `sp-hub listening on http://…` line it
# prints on stdout.
start_replica() {
	local n="$1" out="$WORK_DIR/sp-hub-$1.out" line i
	: >"$out" # exists before the first read below
	SP_HUB_LISTEN="127.0.0.1:0" "$BIN" serve >"$out" 2>"$WORK_DIR/sp-hub-$n.log" &
	PIDS+=("$!")
	for ((i = 0; i < 300; i++)); do
		if IFS= read -r line <"$out" && [[ $line =~ ^sp-hub\ listening\ on\ (http://[^[:space:]]+)$ ]]; then
			printf -v "URL_$n" '%s' "${BASH_REMATCH[1]}"
			return 0
		fi
		kill -0 "${PIDS[-1]}" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 30 "$WORK_DIR/sp-hub-$n.log" >&2 || true
	die "replica $n did not start"
}

# The HTTP status of GET $1 ("000" when nothing answers).
status_of() {
	curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" || true
}

# Waits up to 30 s for GET $1 to answer 200.
wait_200() {
	local i
	for ((i = 0; i < 300; i++)); do
		[[ $(status_of "$1") == 200 ]] && return 0
		sleep 0.1
	done
	return 1
}

log "PostgreSQL from $PG_BIN, sp-hub from $BIN"
start_postgres
export SP_HUB_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export SP_HUB_LOG="${SP_HUB_LOG:-info}"

# Once, before the replicas, as the compose `migrate` service does.
"$BIN" migrate >/dev/null || die "sp-hub migrate failed"
log "migrations applied"

URL_1=""
URL_2=""
start_replica 1
start_replica 2
for url in "$URL_1" "$URL_2"; do
	wait_200 "$url/readyz" ||
		die "$url/readyz answered $(status_of "$url/readyz"), not 200 (404: $BIN is a build older than the probes)"
done

if ((CHECK)); then
	failed=0
	for url in "$URL_1" "$URL_2"; do
		for probe in healthz readyz; do
			code="$(status_of "$url/$probe")"
			if [[ $code == 200 ]]; then
				echo "  ok    $url/$probe"
			else
				echo "  FAIL  $url/$probe answered $code"
				failed=$((failed + 1))
			fi
		done
	done
	echo "run-local-topology: $((4 - failed)) passed, $failed failed"
	exit $((failed > 0))
fi

echo "PostgreSQL: $SP_HUB_DATABASE_URL"
echo "replica 1:  $URL_1"
echo "replica 2:  $URL_2"
echo "logs:       $WORK_DIR (removed on exit)"
echo "Ctrl-C stops everything."
# Until Ctrl-C, or until a replica exits on its own.
wait -n "${PIDS[@]}" || true
die "a replica exited; its log: $(tail -n 5 "$WORK_DIR"/sp-hub-*.log)"
