#!/usr/bin/env bash
# The gateway rows of `make bench`: nodeward-gateway against nginx (stream module) and HAProxy
# doing the same two jobs, in one run, on one sandbox (bench/gateway/gateway.yaml). Root only.
#
#   bench/gateway/run.sh [BIN_DIR]      (default build/release/bin)
#
# The load (mesh_bench over TLS, server.bench, every handshake a full one) runs in the
# sandbox's outside network. Jobs (README.md draws the placement):
#   simple:      the gateway terminates the client's TLS, then carries the bytes into the
#                destination pod: nodeward with HBONE mTLS to the destination's agent, the
#                peers with mutual TLS 1.3 to a hop proxy in their destination pod;
#   passthrough: the gateway routes by SNI without terminating, to the destination's own TLS
#                server (the same nginx for every row): nodeward inside HBONE mTLS (double
#                encryption on the node link), the peers over plain TCP, as they are deployed;
#                nodeward-plain is nodeward's gateway doing the peers' exact job: the same
#                passthrough to a destination outside the mesh, so over plain TCP.
# direct-tls is the reference: the client's TLS straight to that TLS server, no gateway.
# Figures per job and row: new TLS connections/s (a new connection and full handshake per
# 32 B request, CLIENTS clients), bulk Gbit/s over one TLS connection, and the gateway's CPU
# (gateway process, plus what it needs on the destination node: the agent or the hop proxy)
# per GB and per new connection. Medians of RUNS runs; the rows take turns within a run.
#
# Knobs (environment): RUNS=3 BYTES=536870912 CLIENTS=16 RATE_SECONDS=3, ONLY="ROW ..." to
# measure only those rows (direct-tls, the reference, always runs).
set -euo pipefail

BIN_DIR=$(realpath "${1:-build/release/bin}")
HERE=$(cd "$(dirname "$0")" && pwd)
RUNS=${RUNS:-3}
BYTES=${BYTES:-536870912}
CLIENTS=${CLIENTS:-16}
RATE_SECONDS=${RATE_SECONDS:-3}
ONLY=${ONLY:-}
TIMEOUT=180
MODULE=/usr/lib/nginx/modules/ngx_stream_module.so

SANDBOX="$BIN_DIR/nodeward-sandbox"
MB="$BIN_DIR/mesh_bench"
NAME="gb$$"
NAME=${NAME:0:12}
RUN_DIR="/run/nodeward-sandbox/$NAME"

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: needs root (network namespaces, cgroups, BPF)" >&2
  exit 1
fi
for binary in "$SANDBOX" "$MB" "$BIN_DIR/nodeward-agent" "$BIN_DIR/nodeward-sds" \
  "$BIN_DIR/nodeward-gateway"; do
  [ -x "$binary" ] || { echo "bench: $binary is missing: run make build" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/nodeward-gateway-bench.XXXXXX)
STARTED=()
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

start_in() {
  local netns=$1 out=$2
  shift 2
  nsenter --net="/run/netns/$netns" "$@" >"$out" 2>&1 &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}
children() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -v '^$' || true; }

# ---- certificates, configuration, the sandbox ----

mkdir -p "$WORK/certs"
"$MB" certs --dir="$WORK/certs" || { log "certificates failed"; exit 1; }
C=$WORK/certs
chmod 600 "$C"/*.key "$C"/*.pem
cp -r "$HERE/gateway.yaml" "$HERE/config" "$WORK/"
{
  echo "apiVersion: v1"
  echo "kind: Secret"
  echo "metadata: {name: bench-cert, namespace: istio-ingress}"
  echo "type: kubernetes.io/tls"
  echo "data:"
  echo "  tls.crt: $(base64 -w0 <"$C/server.crt")"
  echo "  tls.key: $(base64 -w0 <"$C/server.key")"
} >"$WORK/config/secret.yaml"

log "sandbox $NAME up"
SANDBOX_UP=1
"$SANDBOX" up "$WORK/gateway.yaml" --name="$NAME" --bin-dir="$BIN_DIR" >"$WORK/up.log" 2>&1 || {
  cat "$WORK/up.log" >&2
  exit 1
}
pod_ip() { awk -v pod="$1" '$2 == pod { print $4 }' "$RUN_DIR/pods"; }
process_pid() { awk -v role="$1" -v node="$2" '$1 == "process" && $2 == role && $3 == node { print $4 }' "$RUN_DIR/objects"; }
GW_IP=$(pod_ip gw)
SERVER_IP=$(pod_ip server)
PB_IP=$(pod_ip pb)
GATEWAY_PID=$(process_pid gateway node1)
AGENT2_PID=$(process_pid agent node2)
[ -n "$GW_IP" ] && [ -n "$SERVER_IP" ] && [ -n "$PB_IP" ] && [ -n "$GATEWAY_PID" ] &&
  [ -n "$AGENT2_PID" ] || { log "cannot read the sandbox's pods and processes"; exit 1; }

# The application and the destinations' own TLS server, in both destination pods.
render() { "$HERE/render.sh" "$@"; }
for pod in server pb; do
  start_in "nws-$NAME-$pod" "$WORK/serve-$pod.log" "$MB" serve --port=9000
  mkdir -p "$WORK/destination-$pod"
  render "$HERE/nginx-destination.conf.in" NGINX_STREAM_MODULE="$MODULE" \
    WORK="$WORK/destination-$pod" DESTINATION_TLS_PORT=9443 APP_PORT=9000 \
    GATEWAY_CRT="$C/server.crt" GATEWAY_KEY="$C/server.key" >"$WORK/destination-$pod/nginx.conf"
  start_in "nws-$NAME-$pod" "$WORK/destination-$pod/out.log" nginx -p "$WORK/destination-$pod" \
    -c "$WORK/destination-$pod/nginx.conf" -e "$WORK/destination-$pod/error.log"
done

# ---- the peers: a gateway in the gateway pod, a hop proxy in pb ----

# ROW.JOB -> the port the client dials on the gateway pod; ROW -> the pids whose CPU counts.
declare -A PORT PIDS
ROWS=(direct-tls nodeward nodeward-plain)
PORT[nodeward.simple]=8443
PORT[nodeward.passthrough]=9443
PORT[nodeward-plain.passthrough]=9444
PIDS[nodeward.simple]="$GATEWAY_PID,$AGENT2_PID"
PIDS[nodeward.passthrough]="$GATEWAY_PID,$AGENT2_PID"
PIDS[nodeward-plain.passthrough]="$GATEWAY_PID"
SKIPPED=()

peer_values() {  # the template values of a peer whose ports start at $1
  local base=$1
  echo NGINX_STREAM_MODULE="$MODULE" CA="$C/ca.pem" SNI=server.bench APP_PORT=9000 \
    SIMPLE_PORT="$base" PASSTHROUGH_PORT="$((base + 1))" HOP_PORT="$((base + 2))" \
    HOP_ADDRESS="$PB_IP:$((base + 2))" HOP_NAME=server.bench \
    GATEWAY_CRT="$C/server.crt" GATEWAY_KEY="$C/server.key" GATEWAY_PEM="$C/server.pem" \
    HOP_CLIENT_CRT="$C/client.crt" HOP_CLIENT_KEY="$C/client.key" HOP_CLIENT_PEM="$C/client.pem" \
    HOP_SERVER_CRT="$C/server.crt" HOP_SERVER_KEY="$C/server.key" HOP_SERVER_PEM="$C/server.pem" \
    DESTINATION_TLS_ADDRESS="$PB_IP:9443" DESTINATION_TLS_PORT=9443
}

setup_nginx() {
  command -v nginx >/dev/null && [ -f "$MODULE" ] || return 1
  local side a b
  for side in gateway hop; do
    mkdir -p "$WORK/nginx-$side"
    # shellcheck disable=SC2046
    render "$HERE/nginx-$side.conf.in" WORK="$WORK/nginx-$side" $(peer_values 10443) \
      >"$WORK/nginx-$side/nginx.conf"
  done
  start_in "nws-$NAME-gw" "$WORK/nginx-gateway/out.log" nginx -p "$WORK/nginx-gateway" \
    -c "$WORK/nginx-gateway/nginx.conf" -e "$WORK/nginx-gateway/error.log"
  a=$LAST_PID
  start_in "nws-$NAME-pb" "$WORK/nginx-hop/out.log" nginx -p "$WORK/nginx-hop" \
    -c "$WORK/nginx-hop/nginx.conf" -e "$WORK/nginx-hop/error.log"
  b=$LAST_PID
  PORT[nginx.simple]=10443
  PORT[nginx.passthrough]=10444
  PIDS[nginx.simple]="$a,$b"
  PIDS[nginx.passthrough]="$a"
}

setup_haproxy() {
  command -v haproxy >/dev/null || return 1
  local side a b
  for side in gateway hop; do
    # shellcheck disable=SC2046
    render "$HERE/haproxy-$side.cfg.in" $(peer_values 11443) >"$WORK/haproxy-$side.cfg"
  done
  start_in "nws-$NAME-gw" "$WORK/haproxy-gateway.log" haproxy -db -f "$WORK/haproxy-gateway.cfg"
  a=$LAST_PID
  start_in "nws-$NAME-pb" "$WORK/haproxy-hop.log" haproxy -db -f "$WORK/haproxy-hop.cfg"
  b=$LAST_PID
  PORT[haproxy.simple]=11443
  PORT[haproxy.passthrough]=11444
  PIDS[haproxy.simple]="$a,$b"
  PIDS[haproxy.passthrough]="$a"
}

jobs_of() {  # the jobs a row takes part in
  case $1 in
    direct-tls) echo simple ;;
    nodeward-plain) echo passthrough ;;
    *) echo simple passthrough ;;
  esac
}
is_peer() { case $1 in direct-tls | nodeward | nodeward-plain) return 1 ;; esac; }

# client ROW JOB TEST ARGS...: mesh_bench over TLS from the outside network.
client() {
  local row=$1 job=$2
  shift 2
  local to="$GW_IP:${PORT[$row.$job]:-}"
  [ "$row" = direct-tls ] && to="$PB_IP:9443"
  timeout "$TIMEOUT" "$SANDBOX" exec "$NAME" outside -- "$MB" "$@" --to="$to" \
    --tls-sni=server.bench --tls-ca="$C/ca.pem"
}

ready() {
  local row=$1 job
  for job in $(jobs_of "$row"); do
    local ok=0
    for _ in $(seq 100); do
      client "$row" "$job" pingpong --round-trips=10 --size=8 >/dev/null 2>&1 && { ok=1; break; }
      sleep 0.2
    done
    [ "$ok" = 1 ] || return 1
  done
}

ready direct-tls || { log "direct TLS to pb does not go through"; exit 1; }
for row in nodeward nodeward-plain; do
  ready "$row" || {
    log "nodeward-gateway does not carry the bench's $row traffic; its log:"
    tail -20 "$RUN_DIR/node1/gateway-gw.log" >&2
    exit 1
  }
done
for peer in nginx haproxy; do
  if ! "setup_$peer"; then
    log "$peer: not installed, left out (tools/install-deps.sh installs it)"
    SKIPPED+=("$peer (not installed)")
    continue
  fi
  if ! ready "$peer"; then
    log "$peer: does not carry traffic, left out; its logs:"
    cat "$WORK/$peer"*.log "$WORK/$peer"-*/*.log 2>/dev/null | tail -20 >&2 || true
    SKIPPED+=("$peer (failed to start)")
    continue
  fi
  if [ "$peer" = nginx ]; then
    for job in simple passthrough; do
      pids=${PIDS[nginx.$job]}
      for parent in ${pids//,/ }; do
        for child in $(children "$parent"); do pids="$pids,$child"; done
      done
      PIDS[nginx.$job]=$pids
    done
  fi
  ROWS+=("$peer")
done

if [ -n "$ONLY" ]; then
  kept=(direct-tls)
  for row in "${ROWS[@]}"; do
    [[ " $ONLY " == *" $row "* && $row != direct-tls ]] && kept+=("$row")
  done
  ROWS=("${kept[@]}")
fi

# ---- measurements ----

R=$WORK/results
mkdir -p "$R"
measure() {  # ROW JOB TEST RUN ARGS...
  local row=$1 job=$2 test=$3 run=$4
  shift 4
  if ! client "$row" "$job" "$test" "$@" >"$R/$row.$job.$test.$run" 2>"$R/$row.$job.$test.$run.err"; then
    log "$row $job $test run $run failed: $(tail -1 "$R/$row.$job.$test.$run.err")"
    rm -f "$R/$row.$job.$test.$run"
  fi
}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date +%s)
for run in $(seq "$RUNS"); do
  for row in "${ROWS[@]}"; do
    for job in $(jobs_of "$row"); do
      pids=()
      [ -n "${PIDS[$row.$job]:-}" ] && pids=(--pids="${PIDS[$row.$job]}")
      log "run $run/$RUNS: $row $job"
      measure "$row" "$job" bulk "$run" --bytes="$BYTES" "${pids[@]}"
      measure "$row" "$job" connrate "$run" --clients="$CLIENTS" --seconds="$RATE_SECONDS" \
        "${pids[@]}"
      sleep 1
    done
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
MTLS=$(grep -c '"mode":"hbone_mtls"' "$RUN_DIR/node1/gateway-gw-access.log" 2>/dev/null || true)

# ---- the table ----

median() {  # ROW JOB TEST KEY
  { cat "$R/$1.$2.$3".[0-9] 2>/dev/null || true; } | tr ' ' '\n' |
    awk -F= -v k="$4" '$1 == k { print $2 }' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "-") print v; else printf f, v }'; }

measured() { [[ " ${ROWS[*]} " == *" $1 "* ]]; }
declare -A F
for row in "${ROWS[@]}"; do
  for job in simple passthrough; do
    F[$row.$job.gbit]=$(median "$row" "$job" bulk gbit_per_s)
    F[$row.$job.cpu]=$(median "$row" "$job" bulk cpu_s_per_gb)
    F[$row.$job.conns]=$(median "$row" "$job" connrate conn_per_s)
    F[$row.$job.cpuconn]=$(median "$row" "$job" connrate cpu_us_per_conn)
  done
done
best_peer() {  # JOB FIG: highest Gbit/s and conn/s, lowest CPU
  local job=$1 fig=$2 best="-" row v
  for row in "${ROWS[@]}"; do
    is_peer "$row" || continue
    v=${F[$row.$job.$fig]:--}
    [ "$v" = "-" ] && continue
    if [ "$best" = "-" ]; then best=$v; continue; fi
    case $fig in
      cpu | cpuconn) best=$(awk -v a="$best" -v b="$v" 'BEGIN { print (b < a) ? b : a }') ;;
      *) best=$(awk -v a="$best" -v b="$v" 'BEGIN { print (b > a) ? b : a }') ;;
    esac
  done
  echo "$best"
}

echo
echo "nodeward gateway benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), medians of $RUNS runs," \
  "$(nproc) cores, load average $LOAD_BEFORE before / $LOAD_AFTER after ($(($(date +%s) - START)) s)"
echo "clients outside the cluster, TLS 1.3 to server.bench, no resumption; bulk: $((BYTES / 1048576))" \
  "MiB on one connection; conn/s: a new connection and full handshake per 32 B request," \
  "$CLIENTS clients; CPU: the gateway process and its destination-side half (nodeward: the" \
  "destination's agent; peers: the hop proxy) per GB; direct-tls: the same TLS server, no gateway"
echo
{
  echo "job|row|Gbit/s (vs direct-tls)|CPU s/GB|TLS conn/s (vs direct-tls)|CPU µs/conn"
  for job in simple passthrough; do
    for row in "${ROWS[@]}"; do
      [[ " $(jobs_of "$row") " == *" $job "* ]] || continue
      g=${F[$row.$job.gbit]} c=${F[$row.$job.conns]}
      gs=$(fmt "$g" "%.2f") cs=$(fmt "$c" "%.0f")
      if [ "$row" != direct-tls ]; then
        [ "$gs" != "-" ] && gs="$gs ($(ratio "$g" "${F[direct-tls.simple.gbit]}")x)"
        [ "$cs" != "-" ] && cs="$cs ($(ratio "$c" "${F[direct-tls.simple.conns]}")x)"
      fi
      cpu=$(fmt "${F[$row.$job.cpu]}" "%.2f") cpuconn=$(fmt "${F[$row.$job.cpuconn]}" "%.0f")
      [ "$row" = direct-tls ] && cpu="-" cpuconn="-"
      echo "$job|$row|$gs|$cpu|$cs|$cpuconn"
    done
    for row in nodeward nodeward-plain; do
      measured "$row" && [[ " $(jobs_of "$row") " == *" $job "* ]] || continue
      line="$job|$row/best peer"
      for fig in gbit cpu conns cpuconn; do
        r=$(ratio "${F[$row.$job.$fig]}" "$(best_peer "$job" "$fig")")
        [ "$r" = "-" ] && line+="|-" || line+="|${r}x"
      done
      echo "$line"
    done
  done
} | column -t -s '|' -o ' | '
[ ${#SKIPPED[@]} -eq 0 ] || echo "left out: ${SKIPPED[*]}"
echo "nodeward rows: $MTLS connections logged as hbone_mtls by the gateway; passthrough rows:" \
  "nodeward adds mesh mTLS on the node link that the peers, as usually deployed, do not;" \
  "nodeward-plain does the peers' job (a destination outside the mesh, plain TCP)"

echo
check() { if [ "$(awk "BEGIN { print ($2) ? 1 : 0 }")" = 1 ]; then echo "  met     $1"; else echo "  NOT met $1"; fi; }
echo "targets (at least the best peer in every figure, doing the same job):"
for pair in simple:nodeward passthrough:nodeward-plain passthrough:nodeward; do
  job=${pair%%:*} row=${pair#*:}
  measured "$row" || continue
  what="$job $row"
  [ "$row" = nodeward ] && [ "$job" = passthrough ] && what="$what (plus mesh mTLS, not the peers' job)"
  for fig in gbit conns cpu cpuconn; do
    n=${F[$row.$job.$fig]:--} b=$(best_peer "$job" "$fig")
    [ "$n" = "-" ] || [ "$b" = "-" ] && continue
    case $fig in
      cpu) check "$what CPU s/GB <= best peer ($n vs $b)" "$n <= $b" ;;
      cpuconn) check "$what CPU µs/conn <= best peer ($n vs $b)" "$n <= $b" ;;
      gbit) check "$what Gbit/s >= best peer ($n vs $b)" "$n >= $b" ;;
      conns) check "$what TLS conn/s >= best peer ($n vs $b)" "$n >= $b" ;;
    esac
  done
done
