#!/bin/bash
# End to end for nodewardctl: a two-node sandbox of its own, one mTLS call across the nodes and
# one connection held open, then every nodewardctl command against node1's admin socket (and
# once over node1's loopback 127.0.0.1:15000), node1's metrics and readiness endpoints, and the
# exit codes scripts rely on (2 usage, 3 no agent). Cleanup runs on every exit path (trap).
#   nodewardctl_e2e_test.sh NODEWARD_SANDBOX BIN_DIR NODEWARDCTL
set -u

sandbox_bin=$1
bin_dir=$2
ctl_bin=$3
prefix=ct
source "$(dirname "$0")/e2e_lib.sh"
socket="$run_dir/node1/admin.sock"
node1_netns="/run/netns/nws-$name-node1"

client_id="spiffe://cluster.local/ns/shop/sa/client"
server_id="spiffe://cluster.local/ns/shop/sa/server"
server_ip=10.241.2.2         # first pod of node2
hold_port=7070               # a listener that never answers: the held connection

# ctl ARGS...: nodewardctl against node1's socket; output in $out, exit code in $rc.
ctl() {
  out=$("$ctl_bin" --socket="$socket" "$@" 2>&1)
  rc=$?
}

# expect_ok WHAT: the last ctl call exited 0; prints its output either way.
expect_ok() {
  echo "$out"
  [ "$rc" -eq 0 ] || fail "$1: exit $rc"
}

is_json() {
  python3 -c 'import json,sys; json.load(sys.stdin)' <<< "$1"
}

# in_node1 CMD...: run CMD in node1's network namespace (the agent's loopback endpoints).
in_node1() {
  nsenter --net="$node1_netns" "$@"
}

mkdir -p "$work/config"
cat > "$work/sandbox.yaml" <<YAML
name: $name
nodes: [node1, node2]
pods:
- {name: client, namespace: shop, serviceAccount: client, node: node1, labels: {app: client}}
- {name: server, namespace: shop, serviceAccount: server, node: node2, ports: [8080], labels: {app: server}}
- {name: neighbor, namespace: shop, serviceAccount: neighbor, node: node2, labels: {app: neighbor}}
config: config
YAML
cat > "$work/config/shop.yaml" <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    nodeward.io/dataplane-mode: enabled
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: shop-strict
  namespace: shop
spec:
  mtls:
    mode: STRICT
YAML

echo "== up"
if ! "$sandbox_bin" up "$work/sandbox.yaml" --bin-dir="$bin_dir"; then
  fail "up"
  exit 1
fi
for _ in $(seq 100); do
  [ -S "$socket" ] && break
  sleep 0.1
done
if [ ! -S "$socket" ]; then
  fail "node1's agent serves no admin socket at $socket"
  exit 1
fi

echo "== one mTLS call across the nodes"
out=$("$sandbox_bin" exec "$name" client -- "$sandbox_bin" app call --to=$server_ip:8080 --send=hello)
rc=$?
echo "$out"
{ [ $rc -eq 0 ] && [[ "$out" == *"got=hello"* ]]; } || fail "call client -> server: rc=$rc"

echo "== one connection held open (client -> server:$hold_port, nobody answers)"
"$sandbox_bin" exec "$name" server -- socat -u TCP-LISTEN:$hold_port,reuseaddr,fork OPEN:/dev/null \
  > "$work/listener.log" 2>&1 &
background_pids+=($!)
for _ in $(seq 50); do
  "$sandbox_bin" exec "$name" server -- ss -Hltn "sport = :$hold_port" 2> /dev/null | grep -q . && break
  sleep 0.1
done
"$sandbox_bin" exec "$name" client -- \
  bash -c "exec 3<>/dev/tcp/$server_ip/$hold_port && echo connected && exec sleep 300" \
  > "$work/holder.log" 2>&1 &
background_pids+=($!)

echo "== connections: the held connection, as hbone_mtls"
held=""
for _ in $(seq 50); do
  ctl connections
  held=$(grep -E "$server_ip:$hold_port" <<< "$out")
  [ -n "$held" ] && break
  sleep 0.2
done
expect_ok connections
[ -n "$held" ] || fail "connections: no connection to $server_ip:$hold_port (holder: $(cat "$work/holder.log"))"
[[ "$held" == outbound* ]] || fail "connections: the held connection is not outbound: $held"
[[ "$held" == *hbone_mtls* ]] || fail "connections: the held connection is not hbone_mtls: $held"
[[ "$held" == *"$client_id"* && "$held" == *"$server_id"* ]] ||
  fail "connections: principals missing: $held"

echo "== workloads"
ctl workloads
expect_ok workloads
head -n 1 <<< "$out" |
  grep -q '^NAMESPACE  *NAME  *SERVICE-ACCOUNT  *ENROLLED-BY  *IPS  *NETNS-COOKIE' ||
  fail "workloads: header"
# The sandbox enrolls its pods through the enrollment API.
grep -Eq '^shop +client +client +api +10\.241\.1\.2 +[0-9]+' <<< "$out" ||
  fail "workloads: shop/client with service account client, enrolled by api, 10.241.1.2 and a netns cookie"
grep -q 'SHOULD BE ENROLLED' <<< "$out" && fail "workloads: a pod enrolled by the API listed as missing"
grep -q 'server' <<< "$out" && fail "workloads: node2's pod listed on node1"

echo "== certs"
ctl certs
expect_ok certs
grep -Eq "^$client_id +ready " <<< "$out" || fail "certs: $client_id not ready"
grep -q '^TRUST ROOTS' <<< "$out" || fail "certs: no trust roots section"

echo "== policy explain (outbound to a STRICT destination)"
ctl policy explain --from shop/client --to $server_ip:8080
expect_ok "policy explain"
grep -Eq '^ACTION +HBONE$' <<< "$out" || fail "policy explain: action is not HBONE"
grep -Eq "^EXPECTED-PEER-IDENTITY +$server_id$" <<< "$out" ||
  fail "policy explain: expected peer identity is not $server_id"
grep -Eq '^MTLS-MODE .*effective=STRICT' <<< "$out" || fail "policy explain: effective mode not STRICT"
grep -q 'shop-strict' <<< "$out" || fail "policy explain: PeerAuthentication shop-strict not named"
grep -q '^TRACE' <<< "$out" || fail "policy explain: no trace"

echo "== policy explain (inbound plaintext to the STRICT pod is asked of node2's agent)"
out=$("$ctl_bin" --socket="$run_dir/node2/admin.sock" policy explain --inbound shop/server:8080 --plaintext 2>&1)
rc=$?
expect_ok "policy explain --inbound"
grep -Eq '^ACTION +REFUSE$' <<< "$out" || fail "policy explain --inbound --plaintext: not REFUSE under STRICT"

echo "== policy explain (to a pod of the same node: what node2's data plane does)"
out=$("$ctl_bin" --socket="$run_dir/node2/admin.sock" policy explain --from shop/neighbor --to $server_ip:8080 2>&1)
rc=$?
expect_ok "policy explain same node"
grep -Eq '^ACTION +SAME_NODE$' <<< "$out" || fail "policy explain: a pod of the same node is not SAME_NODE"
grep -q 'served by this node' <<< "$out" || fail "policy explain: the same-node step is not in the trace"
reply=$("$sandbox_bin" exec "$name" neighbor -- "$sandbox_bin" app call --to=$server_ip:8080 --send=CTL-SAME-NODE)
[[ "$reply" == *"got=CTL-SAME-NODE"* ]] || fail "the same-node call failed: $reply"
grep '"direction":"outbound"' "$run_dir/node2/access.log" | grep -q '"mode":"same_node"' ||
  fail "node2's access log has no same_node line for what explain said"

echo "== tunnels"
ctl tunnels
expect_ok tunnels
grep -E '^client ' <<< "$out" | grep -q "$server_id" ||
  fail "tunnels: no client tunnel to $server_id"

echo "== bpf"
ctl bpf
expect_ok bpf
cookie=$("$ctl_bin" --socket="$socket" workloads -o json |
  python3 -c 'import json,sys; print(next(w["netns_cookie"] for w in json.load(sys.stdin)["workloads"] if w["name"] == "client"))')
echo "client's netns cookie: $cookie"
sed -n '/^ENROLLED NETNS/,/^$/p' <<< "$out" | grep -Eq "^${cookie:-none} " ||
  fail "bpf: the client's netns ($cookie) is not among the enrolled"

echo "== config dump"
ctl config dump
expect_ok "config dump"
grep -Eq '^PeerAuthentication +shop +shop-strict ' <<< "$out" ||
  fail "config dump: PeerAuthentication shop/shop-strict missing"

echo "== -o json parses, -o yaml too"
for command in workloads certs connections tunnels bpf "config dump" \
               "policy explain --from=shop/client --to=$server_ip:8080"; do
  # shellcheck disable=SC2086  # the command's words
  ctl $command -o json
  [ "$rc" -eq 0 ] || fail "$command -o json: exit $rc: $out"
  is_json "$out" || fail "$command -o json does not parse: $out"
done
ctl config dump -o json
python3 -c 'import json,sys; d=json.load(sys.stdin); assert any(o["kind"]=="PeerAuthentication" and o["name"]=="shop-strict" for o in d["objects"])' <<< "$out" ||
  fail "config dump -o json: no shop-strict object"
if python3 -c 'import yaml' 2> /dev/null; then
  ctl workloads -o yaml
  python3 -c 'import yaml,sys; d=yaml.safe_load(sys.stdin); assert d["workloads"][0]["service_account"]=="client"' <<< "$out" ||
    fail "workloads -o yaml: $out"
fi

echo "== the admin API over node1's loopback 127.0.0.1:15000"
out=$(in_node1 "$ctl_bin" --address=127.0.0.1:15000 workloads 2>&1)
rc=$?
expect_ok "--address=127.0.0.1:15000 workloads"
grep -q '^shop  *client' <<< "$out" || fail "workloads over TCP: shop/client missing"

echo "== log-level"
ctl log-level debug
expect_ok "log-level debug"
ctl log-level info
expect_ok "log-level info"

echo "== metrics and readiness (node1's loopback)"
metrics=$(in_node1 curl -s --max-time 5 http://127.0.0.1:15020/metrics)
grep -E '^istio_tcp_connections_opened_total(\{| )' <<< "$metrics" | head -n 5
grep -Eq '^istio_tcp_connections_opened_total(\{.*\})? +[1-9]' <<< "$metrics" ||
  fail "metrics: no istio_tcp_connections_opened_total > 0 on :15020/metrics"
ready=$(in_node1 curl -s --max-time 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:15021/healthz/ready)
echo "healthz/ready: $ready"
[ "$ready" = 200 ] || fail "readiness: :15021/healthz/ready answered $ready, want 200"

grep -E '^istio_tcp_connections_opened_total\{' <<< "$metrics" | grep -F "source_principal=\"$client_id\"" |
  grep -F "destination_principal=\"$server_id\"" | grep -F 'connection_security_policy="mutual_tls"' |
  grep -q 'reporter="source"' ||
  fail "metrics: no opened-connections series with the client and server principals, mutual_tls, reporter=source"
grep -Eq '^nodeward_sds_connected 1$' <<< "$metrics" || fail "metrics: nodeward_sds_connected is not 1"

echo "== readiness flips when node1's SDS server stops"
sds_pid=$(awk '$1 == "process" && $2 == "sds" && $3 == "node1" { print $4 }' "$run_dir/objects" | tail -n 1)
if [ -z "$sds_pid" ]; then
  fail "no SDS process of node1 in $run_dir/objects"
else
  kill "$sds_pid"
  for i in $(seq 50); do
    ready=$(in_node1 curl -s --max-time 2 -o "$work/ready.body" -w '%{http_code}' \
      http://127.0.0.1:15021/healthz/ready)
    [ "$ready" = 503 ] && break
    sleep 0.2
  done
  echo "healthz/ready after the SDS server stopped: $ready $(cat "$work/ready.body")"
  [ "$ready" = 503 ] || fail "readiness: still $ready with node1's SDS server stopped, want 503"
  grep -qi sds "$work/ready.body" || fail "readiness: the 503 does not name SDS"
  metrics=$(in_node1 curl -s --max-time 5 http://127.0.0.1:15020/metrics)
  grep -Eq '^nodeward_sds_connected 0$' <<< "$metrics" ||
    fail "metrics: nodeward_sds_connected is not 0 with the SDS server stopped"
fi

echo "== exit codes"
ctl policy explain --from shop/nope --to $server_ip:8080
echo "$out (exit $rc)"
[ "$rc" -eq 1 ] || { [ "$rc" -eq 0 ] && grep -Eq '^ACTION +REFUSE$' <<< "$out"; } ||
  fail "policy explain of a pod not on this node: exit $rc, want 1 (or a REFUSE answer)"
ctl policy explain --from shop/client --to $server_ip
echo "$out (exit $rc)"
[ "$rc" -eq 2 ] || fail "--to without a port: exit $rc, want 2"
ctl workloads --no-such-flag
[ "$rc" -eq 2 ] || fail "unknown flag: exit $rc, want 2"
out=$("$ctl_bin" --socket="$work/no-agent.sock" workloads 2>&1)
rc=$?
echo "$out (exit $rc)"
[ "$rc" -eq 3 ] || fail "missing socket: exit $rc, want 3"
[[ "$out" == *"$work/no-agent.sock"* ]] || fail "missing socket: message does not name the socket"

echo "== drain (last: node1 refuses new connections afterwards)"
ctl drain --grace=1s
expect_ok drain
