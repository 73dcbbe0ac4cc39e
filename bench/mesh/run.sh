#!/usr/bin/env bash
# make bench: nodeward against direct TCP and peer mTLS tunnels (nginx stream, HAProxy,
# stunnel), in one run, on one two-node sandbox (bench/mesh/mesh.yaml). Root only.
#
#   bench/mesh/run.sh [BIN_DIR]      (default build/release/bin)
#
# Rows: direct TCP pa -> pb (pods outside the mesh, same nodes and links as the mesh path);
# nodeward client -> server (both agents, HBONE mTLS); per peer, a client-side proxy in pa
# (plaintext in on 127.0.0.1) and a server-side proxy in pb, mutual TLS 1.3 between them with
# the same ECDSA P-256 certificates (made by `mesh_bench certs`), session resumption on;
# tcp-relay: a HAProxy pair placed like the peers but without TLS, a reference for what the
# extra relays and hops cost before any encryption (not a peer: never the "best peer").
# Figures are medians of RUNS runs; the rows take turns within a run. Everything created
# (sandbox, processes, temp dir) is removed at the end, also on failure.
#
# Knobs (environment): RUNS=3 BYTES=1073741824 ROUND_TRIPS=20000 CLIENTS=16 RATE_SECONDS=3 IDLE=1000
set -euo pipefail

BIN_DIR=$(realpath "${1:-build/release/bin}")
HERE=$(cd "$(dirname "$0")" && pwd)
RUNS=${RUNS:-3}
BYTES=${BYTES:-1073741824}
ROUND_TRIPS=${ROUND_TRIPS:-20000}
CLIENTS=${CLIENTS:-16}
RATE_SECONDS=${RATE_SECONDS:-3}
IDLE=${IDLE:-1000}
TIMEOUT=180

SANDBOX="$BIN_DIR/nodeward-sandbox"
MB="$BIN_DIR/mesh_bench"
NAME="mb$$"
NAME=${NAME:0:12}
RUN_DIR="/run/nodeward-sandbox/$NAME"

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: needs root (network namespaces, cgroups, BPF)" >&2
  exit 1
fi
for binary in "$SANDBOX" "$MB" "$BIN_DIR/nodeward-agent" "$BIN_DIR/nodeward-sds"; do
  [ -x "$binary" ] || { echo "bench: $binary is missing: run make build" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/nodeward-bench.XXXXXX)
STARTED=()        # pids of every process this script started (outside `sandbox exec`)
SANDBOX_UP=0

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$SANDBOX_UP" = 1 ]; then
    "$SANDBOX" down "$NAME" >"$WORK/down.log" 2>&1 || cat "$WORK/down.log" >&2
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }

# Starts a process in a pod's network namespace only (never `ip netns exec`: it remounts /sys).
start_in() {
  local netns=$1 out=$2
  shift 2
  nsenter --net="/run/netns/$netns" "$@" >"$out" 2>&1 &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}

# ---- the sandbox and the servers ----

log "sandbox $NAME up"
SANDBOX_UP=1
"$SANDBOX" up "$HERE/mesh.yaml" --name="$NAME" --bin-dir="$BIN_DIR" >"$WORK/up.log" 2>&1 || {
  cat "$WORK/up.log" >&2
  exit 1
}
pod_ip() { awk -v pod="$1" '$2 == pod { print $4 }' "$RUN_DIR/pods"; }
CLIENT_IP=$(pod_ip client)
SERVER_IP=$(pod_ip server)
PB_IP=$(pod_ip pb)
AGENTS=$(awk '$1 == "process" && $2 == "agent" { printf "%s%s", sep, $4; sep = "," }' \
  "$RUN_DIR/objects")
[ -n "$SERVER_IP" ] && [ -n "$PB_IP" ] && [ -n "$CLIENT_IP" ] && [ -n "$AGENTS" ] || {
  log "cannot read the sandbox's pods and agents"
  exit 1
}

start_in "nws-$NAME-server" "$WORK/serve-server.log" "$MB" serve --port=9000
start_in "nws-$NAME-pb" "$WORK/serve-pb.log" "$MB" serve --port=9000

mkdir -p "$WORK/certs"
"$MB" certs --dir="$WORK/certs" || { log "certificates failed"; exit 1; }
C=$WORK/certs
chmod 600 "$C"/*.key "$C"/*.pem

# ---- peers: each a client-side proxy in pa and a server-side proxy in pb ----

declare -A TO PIDS_OF
ROWS=(direct nodeward)
TO[direct]="$PB_IP:9000"
TO[nodeward]="$SERVER_IP:9000"
PIDS_OF[nodeward]=$AGENTS
SKIPPED=()

# Children of a process (nginx's workers).
children() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -v '^$' || true; }

# TLS 1.3 only, AES-128-GCM first (what BoringSSL, hence nodeward, picks on AES hardware).
SUITES=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256

setup_nginx() {
  local module=/usr/lib/nginx/modules/ngx_stream_module.so
  command -v nginx >/dev/null && [ -f "$module" ] || return 1
  local side
  for side in client server; do
    mkdir -p "$WORK/nginx-$side/logs"
    {
      echo "load_module $module;"
      echo "daemon off; master_process on; worker_processes auto; worker_rlimit_nofile 20000;"
      echo "pid $WORK/nginx-$side/nginx.pid; error_log $WORK/nginx-$side/logs/error.log warn;"
      echo "events { worker_connections 8192; }"
      echo "stream {"
      if [ "$side" = client ]; then
        echo "  server {"
        echo "    listen 127.0.0.1:10001 backlog=4096;"
        echo "    proxy_pass $PB_IP:10443;"
        echo "    proxy_ssl on; proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on;"
        echo "    proxy_ssl_conf_command Ciphersuites $SUITES;"
        echo "    proxy_ssl_certificate $C/client.crt; proxy_ssl_certificate_key $C/client.key;"
        echo "    proxy_ssl_trusted_certificate $C/ca.pem; proxy_ssl_verify on;"
        echo "    proxy_ssl_name server.bench; proxy_ssl_server_name on;"
        echo "  }"
      else
        echo "  ssl_session_cache shared:bench:10m; ssl_session_tickets on;"
        echo "  server {"
        echo "    listen 10443 ssl backlog=4096;"
        echo "    ssl_protocols TLSv1.3; ssl_conf_command Ciphersuites $SUITES;"
        echo "    ssl_certificate $C/server.crt; ssl_certificate_key $C/server.key;"
        echo "    ssl_client_certificate $C/ca.pem; ssl_verify_client on;"
        echo "    proxy_pass 127.0.0.1:9000;"
        echo "  }"
      fi
      echo "}"
    } >"$WORK/nginx-$side/nginx.conf"
  done
  local a b
  start_in "nws-$NAME-pa" "$WORK/nginx-client/out.log" \
    nginx -p "$WORK/nginx-client" -c "$WORK/nginx-client/nginx.conf" -e "$WORK/nginx-client/logs/error.log"
  a=$LAST_PID
  start_in "nws-$NAME-pb" "$WORK/nginx-server/out.log" \
    nginx -p "$WORK/nginx-server" -c "$WORK/nginx-server/nginx.conf" -e "$WORK/nginx-server/logs/error.log"
  b=$LAST_PID
  TO[nginx]="127.0.0.1:10001"
  PIDS_OF[nginx]="$a,$b"  # the workers are added once they are up
}

# write_haproxy ROW CLIENT_PORT SERVER_PORT CLIENT_SSL SERVER_SSL: a HAProxy pair in TCP mode,
# 127.0.0.1:CLIENT_PORT in pa to PB_IP:SERVER_PORT to the server in pb, with the given `server`
# and `bind` TLS options (empty: plain TCP).
write_haproxy() {
  local row=$1 client_port=$2 server_port=$3 client_ssl=$4 server_ssl=$5 side
  for side in client server; do
    {
      echo "global"
      echo "  maxconn 8000"
      echo "  ssl-default-server-ciphersuites $SUITES"
      echo "  ssl-default-bind-ciphersuites $SUITES"
      echo "defaults"
      echo "  mode tcp"
      echo "  timeout connect 5s"
      echo "  timeout client 1h"
      echo "  timeout server 1h"
      echo "frontend in"
      echo "  default_backend out"
      if [ "$side" = client ]; then
        echo "  bind 127.0.0.1:$client_port backlog 4096"
        echo "backend out"
        echo "  server peer $PB_IP:$server_port $client_ssl"
      else
        echo "  bind :$server_port $server_ssl backlog 4096"
        echo "backend out"
        echo "  server app 127.0.0.1:9000"
      fi
    } >"$WORK/$row-$side.cfg"
  done
  local a b
  start_in "nws-$NAME-pa" "$WORK/$row-client.log" haproxy -db -f "$WORK/$row-client.cfg"
  a=$LAST_PID
  start_in "nws-$NAME-pb" "$WORK/$row-server.log" haproxy -db -f "$WORK/$row-server.cfg"
  b=$LAST_PID
  TO[$row]="127.0.0.1:$client_port"
  PIDS_OF[$row]="$a,$b"
}

setup_haproxy() {
  command -v haproxy >/dev/null || return 1
  write_haproxy haproxy 10002 10444 \
    "ssl ssl-min-ver TLSv1.3 crt $C/client.pem ca-file $C/ca.pem verify required verifyhost server.bench sni str(server.bench)" \
    "ssl ssl-min-ver TLSv1.3 crt $C/server.pem ca-file $C/ca.pem verify required"
}

# Not a peer: the same two relays and three TCP hops with no TLS at all, what any tunnel in this
# topology costs before it encrypts a byte (reported, left out of "best peer").
setup_tcp-relay() {
  command -v haproxy >/dev/null || return 1
  write_haproxy tcp-relay 10004 10446 "" ""
}

setup_stunnel() {
  local binary
  binary=$(command -v stunnel4 || command -v stunnel) || return 1
  cat >"$WORK/stunnel-client.conf" <<EOF
foreground = yes
pid =
[bench]
client = yes
accept = 127.0.0.1:10003
connect = $PB_IP:10445
cert = $C/client.crt
key = $C/client.key
CAfile = $C/ca.pem
verifyChain = yes
checkHost = server.bench
sni = server.bench
sslVersionMin = TLSv1.3
ciphersuites = $SUITES
EOF
  cat >"$WORK/stunnel-server.conf" <<EOF
foreground = yes
pid =
[bench]
accept = 10445
connect = 127.0.0.1:9000
cert = $C/server.crt
key = $C/server.key
CAfile = $C/ca.pem
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
ciphersuites = $SUITES
EOF
  local a b
  start_in "nws-$NAME-pa" "$WORK/stunnel-client.log" "$binary" "$WORK/stunnel-client.conf"
  a=$LAST_PID
  start_in "nws-$NAME-pb" "$WORK/stunnel-server.log" "$binary" "$WORK/stunnel-server.conf"
  b=$LAST_PID
  TO[stunnel]="127.0.0.1:10003"
  PIDS_OF[stunnel]="$a,$b"
}

# Runs mesh_bench for a row in the right place: the nodeward client in the client pod's netns
# and its node's cgroup (so the agent captures it), the others in pa.
client() {
  local row=$1
  shift
  if [ "$row" = nodeward ]; then
    timeout "$TIMEOUT" "$SANDBOX" exec "$NAME" client -- "$MB" "$@" --to="${TO[$row]}"
  else
    timeout "$TIMEOUT" nsenter --net="/run/netns/nws-$NAME-pa" "$MB" "$@" --to="${TO[$row]}"
  fi
}

# A row is ready once a ping-pong goes through it end to end.
ready() {
  local row=$1
  for _ in $(seq 100); do
    client "$row" pingpong --round-trips=10 --size=8 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

for peer in nginx haproxy stunnel tcp-relay; do
  if ! "setup_$peer"; then
    log "$peer: not installed, left out (tools/install-deps.sh installs it)"
    SKIPPED+=("$peer (not installed)")
    continue
  fi
  if ! ready direct || ! ready "$peer"; then
    log "$peer: the tunnel does not carry traffic, left out; its logs:"
    cat "$WORK/$peer"*.log "$WORK/$peer"-*/logs/* 2>/dev/null | tail -20 >&2 || true
    SKIPPED+=("$peer (failed to start)")
    continue
  fi
  if [ "$peer" = nginx ]; then
    pids=${PIDS_OF[nginx]}
    for parent in ${pids//,/ }; do
      for child in $(children "$parent"); do pids="$pids,$child"; done
    done
    PIDS_OF[nginx]=$pids
  fi
  ROWS+=("$peer")
done
ready nodeward || { log "nodeward: client -> server does not go through"; exit 1; }

# ---- measurements ----

R=$WORK/results
mkdir -p "$R"
# measure ROW TEST RUN ARGS...: one result line into $R/ROW.TEST.RUN, or nothing on failure.
measure() {
  local row=$1 test=$2 run=$3
  shift 3
  if ! client "$row" "$test" "$@" >"$R/$row.$test.$run" 2>"$R/$row.$test.$run.err"; then
    log "$row $test run $run failed: $(tail -1 "$R/$row.$test.$run.err")"
    rm -f "$R/$row.$test.$run"
  fi
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date +%s)
# Memory first, once, while every tunnel process is fresh: later the bulk runs have grown each
# heap, and connections held then reuse that memory instead of showing what they cost. The same
# test after the runs is reported below the table.
for row in "${ROWS[@]}"; do
  [ -n "${PIDS_OF[$row]:-}" ] || continue
  log "memory, fresh: $row"
  measure "$row" idle 1 --count="$IDLE" --pids="${PIDS_OF[$row]}"
  sleep 1
done
for run in $(seq "$RUNS"); do
  for row in "${ROWS[@]}"; do
    pids=()
    [ -n "${PIDS_OF[$row]:-}" ] && pids=(--pids="${PIDS_OF[$row]}")
    log "run $run/$RUNS: $row"
    measure "$row" bulk "$run" --bytes="$BYTES" "${pids[@]}"
    measure "$row" pingpong "$run" --round-trips="$ROUND_TRIPS"
    measure "$row" connrate "$run" --clients="$CLIENTS" --seconds="$RATE_SECONDS"
    sleep 1  # one row's teardown is not the next row's business
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
# Idle past the agents' 10 s trim interval first: "idle again" is what an operator sees between
# bursts, not the moment the last one ends.
log "memory, after the runs (15 s idle first): nodeward"
sleep 15
measure nodeward idle after --count="$IDLE" --pids="${PIDS_OF[nodeward]}"

# Evidence that the nodeward row really was HBONE mTLS through both agents.
MTLS=$(grep -c '"mode":"hbone_mtls"' "$RUN_DIR/node1/access.log" 2>/dev/null || true)

# ---- the table ----

# median ROW TEST KEY: the median over the runs, or "-".
median() {
  local row=$1 test=$2 key=$3
  { cat "$R/$row.$test".[0-9] "$R/$row.$test".[0-9][0-9] 2>/dev/null || true; } | tr ' ' '\n' | awk -F= -v k="$key" '$1 == k { print $2 }' | sort -g |
     awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A F
FIGS=(gbit cpu p50 p99 conns pss perconn)
for row in "${ROWS[@]}"; do
  F[$row.gbit]=$(median "$row" bulk gbit_per_s)
  F[$row.cpu]=$(median "$row" bulk cpu_s_per_gb)
  F[$row.p50]=$(median "$row" pingpong p50_us)
  F[$row.p99]=$(median "$row" pingpong p99_us)
  F[$row.conns]=$(median "$row" connrate conn_per_s)
  F[$row.pss]=$(median "$row" idle idle_pss_kib)
  F[$row.perconn]=$(median "$row" idle per_conn_kib)
  F[$row.maxpss]=$(median "$row" idle max_pss_kib)
  if [ "$row" = direct ]; then F[$row.cpu]="-"; F[$row.pss]="-"; F[$row.perconn]="-"; fi
done

# ratio A B: A/B with two decimals, or "-".
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
cell() {  # value (ratio to direct)
  local row=$1 fig=$2 value=${F[$1.$2]}
  local shown=$value
  case $fig in
    gbit) shown=$(awk -v v="$value" 'BEGIN { if (v == "-") print v; else printf "%.2f", v }') ;;
    cpu) shown=$(awk -v v="$value" 'BEGIN { if (v == "-") print v; else printf "%.2f", v }') ;;
    pss) shown=$(awk -v v="$value" 'BEGIN { if (v == "-") print v; else printf "%.1f", v / 1024 }') ;;
    perconn) shown=$(awk -v v="$value" 'BEGIN { if (v == "-") print v; else printf "%.1f", v }') ;;
    p50 | p99) shown=$(awk -v v="$value" 'BEGIN { if (v == "-") print v; else printf "%.0f", v }') ;;
    conns) shown=$(awk -v v="$value" 'BEGIN { if (v == "-") print v; else printf "%.0f", v }') ;;
  esac
  case $fig in
    gbit | p50 | p99 | conns)
      if [ "$row" != direct ] && [ "$shown" != "-" ]; then
        shown="$shown ($(ratio "$value" "${F[direct.$fig]}")x)"
      fi ;;
  esac
  echo "$shown"
}

# The best peer per figure: highest throughput and conn/s, lowest of the rest.
best_peer() {
  local fig=$1 best="-" row
  for row in "${ROWS[@]}"; do
    case $row in direct | nodeward | tcp-relay) continue ;; esac
    local v=${F[$row.$fig]}
    [ "$v" = "-" ] && continue
    if [ "$best" = "-" ]; then best=$v; continue; fi
    case $fig in
      gbit | conns) best=$(awk -v a="$best" -v b="$v" 'BEGIN { print (b > a) ? b : a }') ;;
      *) best=$(awk -v a="$best" -v b="$v" 'BEGIN { print (b < a) ? b : a }') ;;
    esac
  done
  echo "$best"
}

echo
echo "nodeward mesh benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), medians of $RUNS runs," \
  "$(nproc) cores, load average $LOAD_BEFORE before / $LOAD_AFTER after ($(($(date +%s) - START)) s)"
echo "bulk: $((BYTES / 1048576)) MiB on one connection; CPU: utime+stime of the tunnel processes" \
  "(both agents / both proxies) per GB; latency: $ROUND_TRIPS round trips of 64 B on one" \
  "connection; conn/s: a new connection per 32 B request, $CLIENTS clients; memory: PSS of the" \
  "tunnel processes (both sides) idle, and per idle proxied connection ($IDLE held), measured" \
  "once on fresh processes before the other tests"
echo
{
  echo "row|Gbit/s (vs direct)|CPU s/GB|p50 us (vs direct)|p99 us (vs direct)|conn/s (vs direct)|PSS idle MiB|KiB/idle conn"
  for row in "${ROWS[@]}"; do
    line=$row
    for fig in "${FIGS[@]}"; do line="$line|$(cell "$row" "$fig")"; done
    echo "$line"
  done
  line="nodeward/best peer"
  for fig in "${FIGS[@]}"; do line="$line|$(ratio "${F[nodeward.$fig]}" "$(best_peer "$fig")")x"; done
  echo "$line"
} | column -t -s '|' -o ' | '
[ ${#SKIPPED[@]} -eq 0 ] || echo "left out: ${SKIPPED[*]}"
echo "nodeward row: $MTLS connections logged as hbone_mtls by node1's agent"
after_max=$(tr ' ' '\n' < "$R/nodeward.idle.after" 2>/dev/null | awk -F= '$1 == "max_pss_kib" { print $2 }')
after_conn=$(tr ' ' '\n' < "$R/nodeward.idle.after" 2>/dev/null | awk -F= '$1 == "per_conn_kib" { print $2 }')
if [ -n "$after_max" ]; then
  echo "nodeward after the runs, idle again: largest agent $(awk -v v="$after_max" 'BEGIN { printf "%.1f", v / 1024 }') MiB;" \
    "$IDLE more idle connections: $after_conn KiB each (held in memory the bulk runs already grew)"
fi

# The targets, in the same units.
echo
check() { if [ "$(awk "BEGIN { print ($2) ? 1 : 0 }")" = 1 ]; then echo "  met     $1"; else echo "  NOT met $1"; fi; }
n_gbit=${F[nodeward.gbit]} n_cpu=${F[nodeward.cpu]} n_p50=${F[nodeward.p50]} n_p99=${F[nodeward.p99]}
b_gbit=$(best_peer gbit) b_p50=$(best_peer p50) b_p99=$(best_peer p99)
echo "targets:"
if [ "$b_gbit" != "-" ] && [ "$n_gbit" != "-" ] && [ "$n_cpu" != "-" ]; then
  check "throughput >= 1.5x best peer ($n_gbit vs $b_gbit Gbit/s) at <= 1.5 CPU s/GB ($n_cpu)" \
    "$n_gbit >= 1.5 * $b_gbit && $n_cpu <= 1.5"
fi
if [ "${F[nodeward.conns]}" != "-" ] && [ "${F[direct.conns]}" != "-" ]; then
  check "new conn/s >= 0.5x direct (${F[nodeward.conns]} vs ${F[direct.conns]})" \
    "${F[nodeward.conns]} >= 0.5 * ${F[direct.conns]}"
fi
if [ "$b_p50" != "-" ] && [ "$n_p50" != "-" ]; then
  check "kept-connection p50 <= 0.8x best peer ($n_p50 vs $b_p50 us)" "$n_p50 <= 0.8 * $b_p50"
  check "p99 no worse than best peer ($n_p99 vs $b_p99 us)" "$n_p99 <= $b_p99"
fi
if [ "${F[nodeward.maxpss]}" != "-" ]; then
  # Idle means fresh and also idle again after the runs: the larger of the two counts.
  idle_max=$(awk -v a="${F[nodeward.maxpss]}" -v b="${after_max:-0}" 'BEGIN { print (b > a) ? b : a }')
  check "agent PSS idle <= 20 MiB (largest agent: $(awk -v v="${F[nodeward.maxpss]}" 'BEGIN { printf "%.1f", v / 1024 }') MiB fresh, $(awk -v v="${after_max:-0}" 'BEGIN { printf "%.1f", v / 1024 }') MiB idle after the runs)" \
    "$idle_max <= 20 * 1024"
fi
if [ "${F[nodeward.perconn]}" != "-" ]; then
  # Each proxied connection has a side in both agents; the target is per agent.
  check "<= 8 KiB per idle proxied connection per agent (both agents together: ${F[nodeward.perconn]} KiB)" \
    "${F[nodeward.perconn]} / 2 <= 8"
fi
