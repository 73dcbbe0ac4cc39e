#!/bin/bash
# The inbound side, tried as a user and as an attacker would (tests/e2e/inbound/inbound.yaml):
#  - a service bound to 127.0.0.1 in an enrolled pod stays private to the pod: no mesh client
#    (HBONE or same node), no non-mesh pod, no node reaches it;
#  - services bound to the pod's address or to every address (dual-stack "::") are reached as
#    the pod's policy says (PERMISSIVE: mesh and plaintext; STRICT: mesh only), and the
#    application sees the client's own address as the source, over HBONE, plaintext and on
#    the same node;
#  - every other address of a STRICT pod is refused to plaintext and logged: its IPv6
#    link-local address, and addresses added after enrollment (IPv4 and IPv6); a PERMISSIVE
#    pod's link-local address is served through the agent;
#  - plaintext to the agent's own ports (15006 and the rest) is refused at once, and trying it
#    again and again leaves the agent's descriptor count flat;
#  - a STRICT pod listening on 13 more ports refuses plaintext on each of them from every
#    source outside the mesh (pods on both nodes, both nodes' own namespaces);
#  - 200 connections to a pod's 15008 that never start TLS: beyond one source's share (64) they
#    are reset at once, the rest at the handshake timeout (10 s), each counted in
#    nodeward_handshakes_dropped_total, while mesh clients are served meanwhile.
#   inbound_e2e_test.sh NODEWARD_SANDBOX BIN_DIR
set -u
sandbox_bin=$1
bin_dir=$2
prefix=ib
source "$(dirname "$0")/e2e_lib.sh"

"$sandbox_bin" up "$(dirname "$0")/inbound/inbound.yaml" --bin-dir "$bin_dir" --name="$name" \
  > "$work/up.log" || { cat "$work/up.log"; fail "up"; exit 1; }

client=10.241.1.2 outsider=10.241.1.3 near=10.241.1.4
open=10.241.2.2 vault=10.241.2.3 stranger=10.241.2.4
node2_netns="nws-$name-node2"

# serve POD PORT ADDRESS: an extra application listener in POD, gone with the sandbox.
serve() {
  in_pod "$1" "$sandbox_bin" app serve --port="$2" --listen="$3" > "$work/serve-$1-$2.log" 2>&1 &
  background_pids+=("$!")
}
for pod in open vault near; do
  serve $pod 9555 127.0.0.1
  serve $pod 9557 ::
done
serve open 9556 $open
serve vault 9556 $vault
serve near 9556 $near
# Named, not globbed: a background listener may not have created its log yet.
for log in "$work"/serve-{open,vault,near}-{9555,9557,9556}.log; do
  for i in $(seq 50); do grep -q "listening on" "$log" 2> /dev/null && break; sleep 0.1; done
  grep -q "listening on" "$log" || fail "a listener did not start: $log: $(cat "$log")"
done

# expect_reach FROM TO_IP PORT SOURCE: the call gets through and the application saw SOURCE.
expect_reach() {
  local reply
  reply=$(in_pod "$1" "$sandbox_bin" app call --to="$2:$3" --send="IB-$1-$2-$3")
  if [[ "$reply" != *"got=IB-$1-$2-$3"* ]]; then
    fail "$1 -> $2:$3 should be served: $reply"
  elif [[ "$reply" != from=$4:* && "$reply" != "from=[::ffff:$4]:"* ]]; then
    fail "$1 -> $2:$3: the application saw the wrong source (want $4): $reply"
  else
    echo "ok: $1 -> $2:$3 served, the application saw $4"
  fi
}
# expect_blocked FROM TO_IP PORT: the call fails, quickly, and nothing reached an application.
expect_blocked() {
  local reply started took
  started=$(date +%s%N)
  reply=$(in_pod "$1" "$sandbox_bin" app call --to="$2:$3" --send="IB-$1-$2-$3" --timeout=4s)
  took=$((($(date +%s%N) - started) / 1000000))
  if [[ "$reply" == *"got="* ]]; then
    fail "$1 -> $2:$3 must not be served: $reply"
  elif [ "$took" -gt 3000 ]; then
    fail "$1 -> $2:$3 was not refused at once (${took} ms): $reply"
  else
    echo "ok: $1 -> $2:$3 refused in ${took} ms ($reply)"
  fi
}

echo "== loopback-only services stay private"
for from in client outsider; do
  expect_blocked $from $open 9555
  expect_blocked $from $vault 9555
  expect_blocked $from $near 9555
done
expect_blocked stranger $open 9555
expect_blocked stranger $vault 9555

echo "== services on the pod's address and on every address"
for port in 9556 9557; do
  expect_reach client $open $port $client    # HBONE
  expect_reach client $vault $port $client   # HBONE into STRICT
  expect_reach client $near $port $client    # same node
  expect_reach outsider $open $port $outsider  # plaintext, PERMISSIVE
  expect_reach stranger $open $port $stranger  # plaintext from the same node
  expect_blocked outsider $vault $port         # STRICT refuses plaintext
  expect_blocked stranger $vault $port
done

# call_from_node2 ADDRESS PORT: a plaintext call from node2's own network namespace (where
# host-network pods live), scoped addresses included; prints the reply or error=...
call_from_node2() {
  nsenter --net="/run/netns/$node2_netns" python3 - "$1" "$2" << 'EOF'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(info[0], socket.SOCK_STREAM) as s:
        s.settimeout(4)
        s.connect(info[4])
        s.sendall(b"IB-NODE2\n")
        print(s.recv(4096).decode(errors="replace").strip() or "error=closed without a reply")
except OSError as e:
    print(f"error={e}")
EOF
}
# The node-side end of a pod's veth in node2's netns.
veth_of() { ip -n "$node2_netns" route get "$1" | sed -n 's/.* dev \([^ ]*\).*/\1/p'; }
# An IPv6 link-local address of a pod, scoped to the node's veth toward it.
link_local_of() {
  local pod_netns="nws-$name-$1" address
  address=$(ip -n "$pod_netns" -6 addr show dev eth0 scope link | sed -n 's/.*inet6 \(fe80[^/]*\).*/\1/p')
  echo "$address%$(veth_of "$2")"
}

echo "== every address of a pod is under its policy"
# Link-local addresses are usable once duplicate address detection is over (a second or two).
tentative() {
  local netns
  for netns in "$node2_netns" "nws-$name-vault" "nws-$name-open"; do
    ip -n "$netns" -6 addr | grep -q tentative && return 0
  done
  return 1
}
for i in $(seq 100); do tentative || break; sleep 0.1; done
vault_link=$(link_local_of vault $vault)
open_link=$(link_local_of open $open)
[[ "$vault_link" == fe80* && "$open_link" == fe80* ]] ||
  fail "no link-local addresses ($vault_link, $open_link)"
reply=$(call_from_node2 "$vault_link" 9557)
[[ "$reply" == error=* ]] || fail "plaintext reached STRICT vault over $vault_link: $reply"
echo "node2 -> [$vault_link]:9557: $reply"
reply=$(call_from_node2 $vault 9557)
[[ "$reply" == error=* ]] || fail "plaintext reached STRICT vault from node2: $reply"
reply=$(call_from_node2 "$open_link" 9557)
[[ "$reply" == *"got=IB-NODE2"* ]] || fail "PERMISSIVE open over $open_link was not served: $reply"
echo "node2 -> [$open_link]:9557: $reply"
reply=$(call_from_node2 "$open_link" 9555)
[[ "$reply" == error=* ]] || fail "open's loopback-only service answered over link-local: $reply"

# Addresses the pod gets after it was enrolled: the agent follows them.
ip -n "nws-$name-vault" addr add 10.241.99.9/32 dev eth0
ip -n "nws-$name-vault" -6 addr add fd99::9/128 dev eth0 nodad
ip -n "$node2_netns" route add 10.241.99.9/32 dev "$(veth_of $vault)"
ip -n "$node2_netns" -6 route add fd99::9/128 dev "$(veth_of $vault)"
for i in $(seq 50); do
  grep -q "pod=vault/vault new address fd99::9 steered" "$run_dir/node2/agent.log" &&
    grep -q "pod=vault/vault new address 10.241.99.9 steered" "$run_dir/node2/agent.log" && break
  sleep 0.1
done
grep -q "pod=vault/vault new address 10.241.99.9 steered" "$run_dir/node2/agent.log" ||
  fail "the agent did not steer the address added to vault"
for address in 10.241.99.9 fd99::9; do
  reply=$(call_from_node2 $address 9557)
  [[ "$reply" == error=* ]] || fail "plaintext reached STRICT vault over $address: $reply"
  echo "node2 -> $address:9557 (added after enrollment): $reply"
done
refusals=$(grep '"direction":"inbound"' "$run_dir/node2/access.log" |
  grep '"destination_workload":"vault/vault"' | grep '"result":"refused"' |
  grep -c 'STRICT')
echo "node2 logged $refusals STRICT refusals for vault"
for address in "${vault_link%\%*}" 10.241.99.9 fd99::9; do
  grep '"direction":"inbound"' "$run_dir/node2/access.log" | grep '"result":"refused"' |
    grep -qF "\"destination_address\":\"[$address" ||
    grep '"direction":"inbound"' "$run_dir/node2/access.log" | grep '"result":"refused"' |
    grep -qF "\"destination_address\":\"$address:" ||
    fail "no access-log refusal for a plaintext call to vault at $address"
done

echo "== the agent's own ports are never delivered to"
agent_pid=$("$sandbox_bin" status "$name" | awk '$1 == "alive" && $3 == "node2" && $4 == "nodeward-agent" {print $2}')
[ -n "$agent_pid" ] || fail "no node2 agent"
before=$(ls "/proc/$agent_pid/fd" | wc -l)
for port in 15006 15001 15008 15000 15020 15021; do expect_blocked outsider $open $port; done
for i in $(seq 50); do
  in_pod outsider "$sandbox_bin" app call --to=$open:15006 --send=LOOP --timeout=2s > /dev/null
done
sleep 0.5
after=$(ls "/proc/$agent_pid/fd" | wc -l)
echo "node2 agent descriptors: $before before, $after after 56 calls to its own ports"
[ "$after" -le $((before + 8)) ] || fail "the agent's descriptors grew from $before to $after"
grep -q "plaintext to the agent's own port refused" "$run_dir/node2/agent.log" ||
  fail "the refusals at the agent's own port were not logged"
reply=$(in_pod client "$sandbox_bin" app call --to=$open:8080 --send=IB-AFTER-LOOP)
[[ "$reply" == *"got=IB-AFTER-LOOP"* ]] || fail "the agent no longer serves after the loop attempts: $reply"

echo "== connections that never finish their handshake are bounded"
before=$(ls "/proc/$agent_pid/fd" | wc -l)
# Holds 200 bare TCP connections to vault's 15008; prints how many the agent closed within
# 2 s, then within 14 s.
in_pod outsider python3 "$(dirname "$0")/stall_clients.py" $vault 15008 200 > "$work/stall.log" 2>&1 &
stall=$!
background_pids+=("$stall")
for i in $(seq 40); do grep -q "within 2s" "$work/stall.log" && break; sleep 0.1; done
during=$(ls "/proc/$agent_pid/fd" | wc -l)
pending=$(nsenter --net="/run/netns/$node2_netns" curl -s --max-time 5 http://127.0.0.1:15020/metrics |
  awk '/^nodeward_handshakes_pending / {print $2}')
echo "node2 handshakes pending while stalled: ${pending:-none}"
[ "${pending:-0}" -eq 64 ] || fail "nodeward_handshakes_pending is ${pending:-absent}, want 64"
reply=$(in_pod client "$sandbox_bin" app call --to=$vault:8080 --send=IB-DURING-STALL)
[[ "$reply" == *"got=IB-DURING-STALL"* ]] || fail "a mesh client was not served while others stalled: $reply"
for i in $(seq 150); do grep -q "closed within [0-9]*s: 200" "$work/stall.log" && break; sleep 0.1; done
cat "$work/stall.log"
quick=$(awk '/within 2s/ {print $NF}' "$work/stall.log")
[ "${quick:-0}" -ge 136 ] || fail "only ${quick:-none} of 200 stalled connections were refused at once"
grep -qE "closed within ([0-9]|1[0-3])s: 200" "$work/stall.log" ||
  fail "the stalled connections were not all closed by the handshake timeout"
echo "node2 agent descriptors: $before before, $during while 200 connections stalled"
[ "$during" -le $((before + 80)) ] || fail "the agent held $during descriptors (from $before)"
metrics=$(nsenter --net="/run/netns/$node2_netns" curl -s --max-time 5 http://127.0.0.1:15020/metrics)
grep '^nodeward_handshakes_dropped_total' <<< "$metrics"
per_source=$(awk '/^nodeward_handshakes_dropped_total\{reason="pending_per_source_limit"\}/ {print $2}' <<< "$metrics")
timeouts=$(awk '/^nodeward_handshakes_dropped_total\{reason="timeout"\}/ {print $2}' <<< "$metrics")
[ "${per_source:-0}" -ge 136 ] && [ "${timeouts:-0}" -ge 1 ] ||
  fail "dropped handshakes not counted: per source ${per_source:-none}, timeout ${timeouts:-none}"
kill "$stall" 2> /dev/null

echo "== every port of a STRICT pod refuses every source outside the mesh"
sweep_ports=(22 80 443 1433 3306 5432 6379 8000 8443 9000 9090 11211 27017)
for port in "${sweep_ports[@]}"; do serve vault "$port" ::; done
for port in "${sweep_ports[@]}"; do
  log="$work/serve-vault-$port.log"
  for i in $(seq 50); do grep -q "listening on" "$log" 2> /dev/null && break; sleep 0.1; done
  grep -q "listening on" "$log" || fail "vault did not listen on $port: $(cat "$log")"
done
# from_node NODE TO_IP PORT: a plaintext call from a node's own network namespace.
from_node() {
  nsenter --net="/run/netns/nws-$name-$1" "$sandbox_bin" app call --to="$2:$3" \
    --send="IB-$1-$2-$3" --timeout=2s
}
served=0 refused=0
for port in "${sweep_ports[@]}"; do
  reply=$(in_pod client "$sandbox_bin" app call --to="$vault:$port" --send="IB-SWEEP-$port")
  [[ "$reply" == *"got=IB-SWEEP-$port"* ]] && served=$((served + 1)) ||
    fail "the mesh client was not served on vault:$port: $reply"
  for from in outsider stranger; do
    reply=$(in_pod $from "$sandbox_bin" app call --to="$vault:$port" --send="IB-$from-$port" --timeout=2s)
    [[ "$reply" == *"got="* ]] && fail "$from -> vault:$port served in plaintext: $reply" ||
      refused=$((refused + 1))
  done
  for node in node1 node2; do
    reply=$(from_node $node $vault $port)
    [[ "$reply" == *"got="* ]] && fail "$node -> vault:$port served in plaintext: $reply" ||
      refused=$((refused + 1))
  done
done
echo "13 ports of vault: $served served to the mesh client, $refused plaintext calls refused"
[ $refused -eq 52 ] || fail "want 52 refusals (13 ports x 4 sources), got $refused"
logged=0
for port in "${sweep_ports[@]}"; do
  n=$(grep -F "\"destination_address\":\"$vault:$port\"" "$run_dir/node2/access.log" |
    grep -c '"refusal":"strict_requires_mtls"')
  logged=$((logged + n))
done
echo "node2 logged $logged of them as refused by STRICT"
[ $logged -ge 52 ] || fail "only $logged of the 52 plaintext calls were logged as STRICT refusals"
