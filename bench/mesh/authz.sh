#!/usr/bin/env bash
# What L4 AuthorizationPolicy costs the data plane: new connections per second (mesh_bench
# connrate) and round-trip p50 (pingpong) from client to server through both agents, on one
# sandbox (bench/mesh/mesh.yaml), taking turns between two configurations loaded live:
#   none:     the mesh STRICT, no AuthorizationPolicy (the check is skipped);
#   policies: 30 policies in the server's scope, as a namespace accumulates them (a mesh-wide
#             DENY, an ALLOW for the client's principal on port 9000, 28 for other workloads
#             by selector), every connection checked against them.
# Prints each turn and the medians with the ratio policies/none. Root only.
#
#   bench/mesh/authz.sh [BIN_DIR]      (default build/release/bin)
# Knobs (environment): TURNS=5 CLIENTS=16 RATE_SECONDS=3 ROUND_TRIPS=5000
set -euo pipefail

BIN_DIR=$(realpath "${1:-build/release/bin}")
HERE=$(cd "$(dirname "$0")" && pwd)
TURNS=${TURNS:-5}
CLIENTS=${CLIENTS:-16}
RATE_SECONDS=${RATE_SECONDS:-3}
ROUND_TRIPS=${ROUND_TRIPS:-5000}
SANDBOX="$BIN_DIR/nodeward-sandbox"
MB="$BIN_DIR/mesh_bench"
NAME="az$$"
NAME=${NAME:0:12}
RUN_DIR="/run/nodeward-sandbox/$NAME"

[ "$(id -u)" -eq 0 ] || { echo "authz bench: needs root" >&2; exit 1; }
WORK=$(mktemp -d /tmp/nodeward-authz-bench.XXXXXX)
SERVER_PID=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  "$SANDBOX" down "$NAME" >/dev/null 2>&1 || echo "authz bench: down failed" >&2
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$SANDBOX" up "$HERE/mesh.yaml" --name="$NAME" --bin-dir="$BIN_DIR" >"$WORK/up.log" 2>&1 ||
  { cat "$WORK/up.log" >&2; exit 1; }
SERVER_IP=$(awk '$2 == "server" { print $4 }' "$RUN_DIR/pods")
nsenter --net="/run/netns/nws-$NAME-server" "$MB" serve --port=9000 >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
sleep 0.5

generation() {
  nsenter --net="/run/netns/nws-$NAME-node2" curl -s --max-time 3 http://127.0.0.1:15020/metrics |
    awk '/^nodeward_config_generation/ { print $2 }'
}
# load CONFIG: writes (or removes) the policies and waits until node2's agent uses them.
load() {
  local before
  before=$(generation)
  if [ "$1" = none ]; then
    echo "# no AuthorizationPolicy" >"$RUN_DIR/config/authz.yaml.tmp"
  else
    {
      printf 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n'
      printf 'metadata: {name: deny-outsiders, namespace: istio-system}\n'
      printf 'spec:\n  action: DENY\n  rules:\n  - from: [{source: {notNamespaces: [mesh, plain]}}]\n'
      printf -- '---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n'
      printf 'metadata: {name: server-from-client, namespace: mesh}\n'
      printf 'spec:\n  action: ALLOW\n  rules:\n'
      printf '  - from: [{source: {principals: [cluster.local/ns/mesh/sa/client]}}]\n'
      printf '    to: [{operation: {ports: ["9000", "8080"]}}]\n'
      for i in $(seq 28); do
        printf -- '---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n'
        printf 'metadata: {name: app-%d, namespace: mesh}\n' "$i"
        printf 'spec:\n  selector: {matchLabels: {app: app-%d}}\n  action: ALLOW\n  rules:\n' "$i"
        printf '  - from: [{source: {principals: [cluster.local/ns/mesh/sa/caller-%d]}}]\n' "$i"
        printf '    to: [{operation: {ports: ["8%03d"]}}]\n' "$i"
      done
    } >"$RUN_DIR/config/authz.yaml.tmp"
  fi
  mv "$RUN_DIR/config/authz.yaml.tmp" "$RUN_DIR/config/authz.yaml"
  for _ in $(seq 100); do [ "$(generation)" != "$before" ] && return 0; sleep 0.1; done
  echo "authz bench: node2's agent did not load the $1 configuration" >&2
  exit 1
}
in_client() { "$SANDBOX" exec "$NAME" client -- "$MB" "$@"; }
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }

declare -A RATES P50S
for turn in $(seq "$TURNS"); do
  for config in none policies; do
    load "$config"
    rate=$(in_client connrate --to="$SERVER_IP:9000" --clients="$CLIENTS" --seconds="$RATE_SECONDS")
    failed=$(field failed <<<"$rate")
    [ "$failed" = 0 ] || { echo "authz bench: $config: $rate" >&2; exit 1; }
    ping=$(in_client pingpong --to="$SERVER_IP:9000" --round-trips="$ROUND_TRIPS")
    RATES[$config]+="$(field conn_per_s <<<"$rate") "
    P50S[$config]+="$(field p50_us <<<"$ping") "
    echo "turn $turn $config: $rate; $ping"
  done
done
# The denial path is real: a principal the ALLOW does not name is refused.
grep -q '"refusal":"authorization"' "$RUN_DIR/node2/access.log" && {
  echo "authz bench: a benchmark connection was denied" >&2
  exit 1
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
none_rate=$(median <<<"${RATES[none]}")
policies_rate=$(median <<<"${RATES[policies]}")
none_p50=$(median <<<"${P50S[none]}")
policies_p50=$(median <<<"${P50S[policies]}")
awk -v nr="$none_rate" -v pr="$policies_rate" -v np="$none_p50" -v pp="$policies_p50" 'BEGIN {
  printf "median conn/s: none %s, policies %s (%.3fx)\n", nr, pr, pr / nr
  printf "median p50 us: none %s, policies %s (%.3fx)\n", np, pp, pp / np
}'
