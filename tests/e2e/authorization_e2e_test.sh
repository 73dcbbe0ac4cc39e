#!/bin/bash
# L4 AuthorizationPolicy end to end (tests/e2e/authorization/authorization.yaml): a namespace
# allowed on one port of cart, one principal denied on ledger, kiosk open to one address only.
# Each refusal is checked at the caller (refused at once, nothing served), in the server
# node's access log (the deciding policy) and in its metrics (reason="authorization").
#   authorization_e2e_test.sh NODEWARD_SANDBOX BIN_DIR
set -u
sandbox_bin=$1
bin_dir=$2
prefix=az
source "$(dirname "$0")/e2e_lib.sh"

"$sandbox_bin" up "$(dirname "$0")/authorization/authorization.yaml" --bin-dir "$bin_dir" \
  --name="$name" > "$work/up.log" || { cat "$work/up.log"; fail "up"; exit 1; }
cart=10.241.2.2 ledger=10.241.2.3 kiosk=10.241.2.4

# call FROM IP PORT: prints the reply (or error=...).
call() { in_pod "$1" "$sandbox_bin" app call --to="$2:$3" --send="AZ-$1-$2-$3" --timeout=4s; }
expect_served() {
  local reply
  reply=$(call "$1" "$2" "$3")
  [[ "$reply" == *"got=AZ-$1-$2-$3"* ]] && echo "ok: $1 -> $2:$3 served" ||
    fail "$1 -> $2:$3 should be served: $reply"
}
# expect_denied FROM IP PORT POLICY
expect_denied() {
  local reply
  reply=$(call "$1" "$2" "$3")
  if [[ "$reply" == *"got="* ]]; then
    fail "$1 -> $2:$3 must be denied: $reply"
    return
  fi
  local line
  line=$(grep '"direction":"inbound"' "$run_dir/node2/access.log" |
    grep -F "\"destination_address\":\"$2:$3\"" | grep '"refusal":"authorization"' | tail -1)
  [[ "$line" == *"AuthorizationPolicy $4"* ]] && echo "ok: $1 -> $2:$3 denied by $4" ||
    fail "$1 -> $2:$3: no inbound refusal naming $4 in node2's access log (reply: $reply)"
}

expect_served front $cart 8080
expect_denied admin $cart 8080 shop/cart-from-web   # not in web
expect_denied front $cart 9090 shop/cart-from-web   # not the allowed port
expect_served front $ledger 8080
expect_denied admin $ledger 8080 shop/ledger-not-admin
expect_served outsider $kiosk 8080                  # plaintext from the allowed address
expect_denied admin $kiosk 8080 shop/kiosk-by-address
expect_denied front $kiosk 8080 shop/kiosk-by-address

metrics=$(nsenter --net="/run/netns/nws-$name-node2" curl -s --max-time 5 http://127.0.0.1:15020/metrics)
denials=$(grep -E '^nodeward_connections_refused_total\{direction="inbound",reason="authorization"\}' <<< "$metrics" | awk '{print $2}')
echo "node2 authorization denials: ${denials:-none}"
[ "${denials:-0}" -ge 5 ] || fail "nodeward_connections_refused_total{reason=\"authorization\"} is ${denials:-absent}, want 5"
# The client side of a denied mesh call says the peer refused it.
grep '"direction":"outbound"' "$run_dir/node1/access.log" | grep -q '"refusal":"refused_by_peer"' ||
  fail "node1 did not record the peer's refusal"
