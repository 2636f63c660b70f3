#!/usr/bin/env bash
# The one command that runs the whole sp-hub test suite on a fresh machine:
#
#   1. makes sure PostgreSQL (initdb, pg_ctl, createdb) and Chromium (the
#      dashboard page test) are available, installing the distribution
#      packages when they are not;
#   2. starts a throwaway PostgreSQL cluster on 127.0.0.1 and exports
#      SP_HUB_TEST_PG_URL for the Rust tests (each Rust test runs on both the
#      SQLite and the PostgreSQL backend);
#   3. builds and runs the Rust test suite (cargo nextest when installed,
#      cargo test otherwise); extra arguments go to that test runner. It
#      includes the reliability tests (tests/reliability.rs: 2,000 referrals
#      each sent twice by 16 clients, kill -9 under write load, 100 If-Match
#      updates of one version; under a minute) and proptest property tests
#      of the parsers, the Task state machine and Bundle reference rewriting;
#   4. runs the independent Python FHIR client checks against a real
#      `sp-hub serve`, each on its own fresh SQLite file:
#      tests/python/check_fhirclient.py (fhir.resources validates what the
#      server writes) and tests/python/check_fhirpy.py (the fhirpy client
#      drives search: chaining, _has, _include/_revinclude, paging, ...),
#      tests/python/check_export.py (on the example PCN: a Bulk Data export
#      read with requests, every NDJSON line parsed by fhir.resources, the
#      counts checked against the API's), tests/python/check_notify.py (a
#      standard-library webhook receiver verifies the signed notifications,
#      fhir.resources validates them), tests/python/check_contract.py
#      (schemathesis generates requests from openapi.yaml, a fixed seed and
#      a few examples per operation: no 5xx, and every response's status,
#      media type, headers and body are the ones the document gives),
#      and tests/python/check_profiles.py (offline: the profiles, code
#      systems and examples in fhir-profiles/ are valid R4 and agree); each
#      server gets an admin client whose token tests/python/sp_hub_auth.py
#      obtains (PyJWT, RS384);
#   5. checks deploy/: tests/python/check_deploy.py (the Kubernetes and
#      compose files, offline) and deploy/run-local-topology.sh --check (a
#      PostgreSQL of its own, `sp-hub migrate`, two replicas answering).
#
# Everything temporary lives in one mktemp directory that is removed on exit,
# together with the PostgreSQL cluster and the server, even on failure or
# Ctrl-C. Exits non-zero if anything failed.
#
# Usage: tests/run.sh [extra test-runner arguments]
#   e.g. tests/run.sh -E 'binary(rest)'   (nextest)   or   tests/run.sh --test rest (cargo test)
#
# Environment:
#   SP_HUB_TEST_PG_URL  use this PostgreSQL server (its user must be allowed to
#                       create databases) instead of starting a throwaway one
#   PG_BIN              directory holding initdb, pg_ctl and createdb
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

export DEBIAN_FRONTEND=noninteractive

log() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'tests/run.sh: error: %s\n' "$*" >&2
	exit 1
}

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

# ---------------------------------------------------------------------------
# System packages (only when something is missing)
# ---------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
	local sudo=()
	if ((!IS_ROOT)); then
		command -v sudo >/dev/null 2>&1 ||
			die "need to install '$*' but not root and sudo is not available; install them and re-run"
		sudo=(sudo -n)
	fi
	command -v apt-get >/dev/null 2>&1 ||
		die "need '$*' but apt-get is not available; install them and re-run"
	log "installing system packages: $*"
	if ((!APT_UPDATED)); then
		"${sudo[@]}" apt-get update -qq
		APT_UPDATED=1
	fi
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH (install a Rust toolchain)"

if ! command -v python3 >/dev/null 2>&1; then
	apt_install python3 python3-venv
fi
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
	apt_install python3-venv
fi

# Headless Chromium for the dashboard page test (tests/dashboard_page.rs).
if ! command -v chromium >/dev/null 2>&1; then
	apt_install chromium
fi

# Directory holding initdb/pg_ctl/createdb of one PostgreSQL installation.
find_pg_bindir() {
	local initdb d
	if initdb="$(command -v initdb 2>/dev/null)" && command -v pg_ctl >/dev/null 2>&1; then
		# Resolve symlinks so that we get the real bin dir, which also holds
		# the matching createdb (not the Debian pg_wrapper one).
		d="$(dirname "$(readlink -f "$initdb")")"
		if [[ -x $d/pg_ctl && -x $d/createdb ]]; then
			printf '%s\n' "$d"
			return 0
		fi
	fi
	# Debian/Ubuntu: /usr/lib/postgresql/<version>/bin, newest version first.
	while IFS= read -r d; do
		if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/createdb ]]; then
			printf '%s\n' "$d"
			return 0
		fi
	done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -t/ -k5,5 -V -r)
	return 1
}

if [[ -n ${PG_BIN:-} ]]; then
	[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/createdb ]] ||
		die "PG_BIN=$PG_BIN does not hold initdb, pg_ctl and createdb"
elif ! PG_BIN="$(find_pg_bindir)"; then
	apt_install postgresql
	PG_BIN="$(find_pg_bindir)" || die "PostgreSQL installed but initdb/pg_ctl not found under /usr/lib/postgresql/*/bin"
fi
export PATH="$PG_BIN:$PATH"
log "using PostgreSQL from $PG_BIN ($("$PG_BIN/postgres" --version))"

# ---------------------------------------------------------------------------
# Temporary directory, cleanup
# ---------------------------------------------------------------------------
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sp-hub-tests.XXXXXX")"
PG_DIR="$WORK_DIR/pg" # data directory, socket and log; owned by the server's user
PG_STARTED=0
SERVER_PID=""

# Runs a command as the PostgreSQL server's user: the `postgres` system user
# when we are root (the server refuses to run as root), ourselves otherwise.
as_pg() {
	if ((!IS_ROOT)); then
		"$@"
	elif command -v runuser >/dev/null 2>&1; then
		(cd "$PG_DIR" && runuser -u postgres -- "$@")
	else
		(cd "$PG_DIR" && su -s /bin/bash postgres -c "$(printf '%q ' "$@")")
	fi
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $SERVER_PID ]]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	if ((PG_STARTED)); then
		as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
	fi
	rm -rf "$WORK_DIR"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Throwaway PostgreSQL cluster
# ---------------------------------------------------------------------------
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
		# Appending keeps the file's owner. A throwaway cluster needs no
		# durability; every test server opens a pool of connections.
		cat >>"$PG_DIR/data/postgresql.conf" <<EOF

# --- tests/run.sh (attempt $attempt) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_DIR'
max_connections = 500
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
		PG_STARTED=1
		if as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 start >/dev/null 2>&1; then
			PG_PORT="$port"
			return 0
		fi
		log "PostgreSQL did not start on port $port (attempt $attempt):"
		tail -n 20 "$PG_DIR/postgres.log" >&2 || true
		as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
		PG_STARTED=0
	done
	die "could not start PostgreSQL"
}

if [[ -n ${SP_HUB_TEST_PG_URL:-} ]]; then
	log "using the PostgreSQL server given by SP_HUB_TEST_PG_URL"
else
	start_postgres
	export SP_HUB_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
	log "PostgreSQL running: SP_HUB_TEST_PG_URL=$SP_HUB_TEST_PG_URL"
fi

# ---------------------------------------------------------------------------
# Rust test suite
# ---------------------------------------------------------------------------
LOCKED=()
[[ -f Cargo.lock ]] && LOCKED=(--locked)

# --workspace takes every member; the load benchmark (bench/) is one but
# never part of the suite.
if cargo nextest --version >/dev/null 2>&1; then
	RUNNER=nextest
	RUST_CMD=(cargo nextest run --workspace --exclude sp-hub-bench --no-fail-fast "${LOCKED[@]}" "$@")
else
	RUNNER=cargo-test
	RUST_CMD=(cargo test --workspace --exclude sp-hub-bench --no-fail-fast "${LOCKED[@]}" "$@")
fi

log "running: ${RUST_CMD[*]}"
RUST_LOG_FILE="$WORK_DIR/rust-tests.log"
set +e
"${RUST_CMD[@]}" 2>&1 | tee "$RUST_LOG_FILE"
RUST_RC=${PIPESTATUS[0]}
set -e

# Counts from the runner's own summary; empty when they cannot be read.
RUST_PASSED=""
RUST_FAILED=""
if [[ $RUNNER == nextest ]]; then
	# e.g. "     Summary [  12.345s] 120 tests run: 118 passed, 2 failed, 0 skipped"
	summary="$(sed 's/\x1b\[[0-9;]*m//g' "$RUST_LOG_FILE" |
		grep -E '^ *Summary \[.*\] [0-9]+ tests? run: [0-9]+ passed' | tail -n 1 || true)"
	if [[ $summary =~ \]\ ([0-9]+)\ tests?\ run:\ ([0-9]+)\ passed ]]; then
		RUST_PASSED="${BASH_REMATCH[2]}"
		RUST_FAILED=$((BASH_REMATCH[1] - BASH_REMATCH[2]))
	fi
else
	# one "test result: ok. 12 passed; 0 failed; ..." line per test binary
	results="$(sed 's/\x1b\[[0-9;]*m//g' "$RUST_LOG_FILE" | grep -E '^test result: ' || true)"
	if [[ -n $results ]]; then
		RUST_PASSED=0
		RUST_FAILED=0
		while IFS= read -r line; do
			[[ $line =~ ([0-9]+)\ passed\;\ ([0-9]+)\ failed ]] || continue
			RUST_PASSED=$((RUST_PASSED + BASH_REMATCH[1]))
			RUST_FAILED=$((RUST_FAILED + BASH_REMATCH[2]))
		done <<<"$results"
	fi
fi
# A failing exit status with no failed test means the counts are not the
# whole story (build error, cancelled run, ...): do not report them.
if ((RUST_RC != 0)) && [[ ${RUST_FAILED:-0} -eq 0 ]]; then
	RUST_PASSED=""
	RUST_FAILED=""
fi

# ---------------------------------------------------------------------------
# Independent FHIR client checks (Python: fhir.resources, fhirpy) against
# sp-hub serve
# ---------------------------------------------------------------------------
VENV="$REPO_ROOT/target/py-venv"
REQS="$REPO_ROOT/tests/python/requirements.txt"

setup_venv() {
	local stamp="$VENV/.requirements.sha256" want
	want="$(cat "$REQS" <(python3 --version 2>&1) | sha256sum | cut -d' ' -f1)"
	if [[ -x $VENV/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		return 0
	fi
	log "creating Python virtualenv in target/py-venv"
	rm -rf "$VENV"
	mkdir -p "$(dirname "$VENV")"
	python3 -m venv "$VENV"
	"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
	printf '%s\n' "$want" >"$stamp"
}

# Starts `sp-hub serve` on a new SQLite file, so each check gets a fresh,
# empty server (further arguments go to `serve`, e.g. --demo; it runs in
# the work directory, where --demo writes its clients' keys); sets
# SERVER_PID, SERVER_URL and SERVER_ERR (its stderr), or returns 1 after
# printing why.
start_server() {
	local name="$1" bin="$REPO_ROOT/target/debug/sp-hub" out="$WORK_DIR/server-$1.out"
	shift
	local line i
	SERVER_URL=""
	SERVER_ERR="$WORK_DIR/server-$name.err"
	: >"$out"
	# An admin client with a key made here, registered before the server starts.
	"$VENV/bin/python" "$REPO_ROOT/tests/python/sp_hub_auth.py" keygen "$WORK_DIR" "check-$name" &&
		"$bin" client add --database-url "$WORK_DIR/$name.db" --id "check-$name" \
			--organization Organization/hub-operator --role admin --scope 'system/*.*' \
			--jwks "$WORK_DIR/check-$name.jwks.json" >/dev/null || return 1
	(cd "$WORK_DIR" && exec "$bin" serve --listen 127.0.0.1:0 --database-url "$WORK_DIR/$name.db" "$@") \
		>"$out" 2>"$SERVER_ERR" &
	SERVER_PID=$!
	for ((i = 0; i < 300; i++)); do
		if IFS= read -r line <"$out" && [[ $line =~ ^sp-hub\ listening\ on\ (http://[^[:space:]]+)$ ]]; then
			SERVER_URL="${BASH_REMATCH[1]}"
			return 0
		fi
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	log "sp-hub serve did not report 'sp-hub listening on http://...' on stdout; stdout:"
	head -n 5 "$out" >&2 || true
	log "stderr (last 30 lines):"
	tail -n 30 "$SERVER_ERR" >&2 || true
	stop_server
	return 1
}

stop_server() {
	if [[ -n $SERVER_PID ]]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
		SERVER_PID=""
	fi
}

# The virtualenv and the server binary both checks need.
prepare_python_checks() {
	setup_venv || {
		log "could not set up the Python virtualenv"
		return 1
	}
	# Normally already built by the test run above; a no-op then.
	cargo build --quiet -p sp-hub "${LOCKED[@]}" || {
		log "cargo build -p sp-hub failed"
		return 1
	}
}

# Runs tests/python/<script> against its own fresh server.
run_python_check() {
	local name="$1" script="$2" rc=0
	shift 2
	start_server "$name" "$@" || return 1
	log "running tests/python/$script against $SERVER_URL"
	SP_HUB_TOKEN="$("$VENV/bin/python" "$REPO_ROOT/tests/python/sp_hub_auth.py" token \
		"$SERVER_URL" "check-$name" "$WORK_DIR/check-$name.key.pem" 'system/*.*')" || rc=$?
	if ((rc == 0)); then
		SP_HUB_TOKEN="$SP_HUB_TOKEN" "$VENV/bin/python" "$REPO_ROOT/tests/python/$script" "$SERVER_URL" || rc=$?
	fi
	stop_server
	if ((rc != 0)); then
		log "server stderr (last 30 lines):"
		tail -n 30 "$SERVER_ERR" >&2 || true
	fi
	return "$rc"
}

FHIRCLIENT_RC=0
FHIRPY_RC=0
PROFILES_RC=0
DEPLOY_RC=0
EXPORT_RC=0
NOTIFY_RC=0
CONTRACT_RC=0
if prepare_python_checks; then
	run_python_check fhirclient check_fhirclient.py || FHIRCLIENT_RC=$?
	run_python_check fhirpy check_fhirpy.py || FHIRPY_RC=$?
	# Bulk Data export of the example PCN, read by an independent client.
	run_python_check export check_export.py --demo || EXPORT_RC=$?
	# Push notifications received and verified by a standard-library
	# webhook receiver, the way the README tells a VCS to.
	run_python_check notify check_notify.py --allow-loopback-subscriptions || NOTIFY_RC=$?
	# The API contract: schemathesis against openapi.yaml, bounded (fixed
	# seed, few examples); thousands of requests, so no rate limit, and a
	# token that outlives the run.
	run_python_check contract check_contract.py --rate-limit 0 --token-lifetime 3600 || CONTRACT_RC=$?
	# Offline: the profiles, code systems and examples in fhir-profiles/,
	# read by fhir.resources and checked code by code, reference by reference.
	log "running tests/python/check_profiles.py"
	"$VENV/bin/python" "$REPO_ROOT/tests/python/check_profiles.py" || PROFILES_RC=$?
	# Offline: every YAML file in deploy/ parses; the Kubernetes manifests,
	# the compose file and the Dockerfile have what the deploy issue asks.
	log "running tests/python/check_deploy.py"
	"$VENV/bin/python" "$REPO_ROOT/tests/python/check_deploy.py" || DEPLOY_RC=$?
else
	FHIRCLIENT_RC=1
	FHIRPY_RC=1
	PROFILES_RC=1
	DEPLOY_RC=1
	EXPORT_RC=1
	NOTIFY_RC=1
	CONTRACT_RC=1
fi

# The compose topology without containers: its own throwaway PostgreSQL,
# `sp-hub migrate`, two replicas; both must answer /healthz and /readyz.
TOPOLOGY_RC=0
log "running deploy/run-local-topology.sh --check"
SP_HUB_BIN="$REPO_ROOT/target/debug/sp-hub" PG_BIN="$PG_BIN" \
	"$REPO_ROOT/deploy/run-local-topology.sh" --check || TOPOLOGY_RC=$?

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------
echo
if ((RUST_RC == 0)); then
	echo "rust tests ($RUNNER): ok"
else
	echo "rust tests ($RUNNER): FAILED (exit status $RUST_RC)"
fi
PY_PASSED=0
PY_TOTAL=0
for check in fhirclient:$FHIRCLIENT_RC fhirpy:$FHIRPY_RC profiles:$PROFILES_RC deploy:$DEPLOY_RC export:$EXPORT_RC notify:$NOTIFY_RC contract:$CONTRACT_RC; do
	PY_TOTAL=$((PY_TOTAL + 1))
	if [[ ${check#*:} == 0 ]]; then
		echo "python ${check%%:*} check: ok"
		PY_PASSED=$((PY_PASSED + 1))
	else
		echo "python ${check%%:*} check: FAILED"
	fi
done
PY_TOTAL=$((PY_TOTAL + 1))
if ((TOPOLOGY_RC == 0)); then
	echo "deploy topology check: ok"
	PY_PASSED=$((PY_PASSED + 1))
else
	echo "deploy topology check: FAILED"
fi
if [[ -n $RUST_PASSED ]]; then
	# Each Python check, and the topology check, counts as one test.
	echo "$((RUST_PASSED + PY_PASSED)) passed, $((RUST_FAILED + PY_TOTAL - PY_PASSED)) failed"
fi

if ((RUST_RC != 0 || FHIRCLIENT_RC != 0 || FHIRPY_RC != 0 || PROFILES_RC != 0 || DEPLOY_RC != 0 || EXPORT_RC != 0 || NOTIFY_RC != 0 || CONTRACT_RC != 0 || TOPOLOGY_RC != 0)); then
	exit 1
fi
