#!/usr/bin/env bash
# Prints a bearer token (only the token, on stdout) for the benchmark's
# ClientApplication, got by the OAuth2 client-credentials grant. The client is
# a member of the benchmark's own project with no access policy, so it may
# create, read, update and search every resource type the scenarios use.
# Tokens last 12 hours (set on the client at setup).
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ -f "$STATE_DIR/client.env" ] || die "no client yet: run $PEER_DIR/setup.sh first"
# shellcheck disable=SC1091
. "$STATE_DIR/client.env"
response="$(curl -fsS --max-time 30 -X POST "$BASE_URL/oauth2/token" \
  --data-urlencode grant_type=client_credentials \
  --data-urlencode "client_id=$CLIENT_ID" \
  --data-urlencode "client_secret=$CLIENT_SECRET")" || die "token request failed (is the peer started?)"
printf '%s' "$response" | "$(node_bin)" -e '
let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
  const t = JSON.parse(s).access_token;
  if (!t) { console.error("no access_token in: " + s); process.exit(1); }
  process.stdout.write(t + "\n");
});'
