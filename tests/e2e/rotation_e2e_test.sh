#!/bin/bash
# Certificate rotation under a long-lived connection: workload certificates live 6 s (renewed
# at about half), one mTLS connection between the nodes carries a line every 0.6 s for about
# 9 s, across at least two rotations, and must keep working; the certificate the server's
# agent presents to new handshakes must change meanwhile, new connections must work after the
# rotations, and no line may be readable on the wire.
#   rotation_e2e_test.sh NODEWARD_SANDBOX BIN_DIR [NODEWARDCTL]
set -u
sandbox_bin=$1
bin_dir=$2
ctl=${3:-}
prefix=ro
source "$(dirname "$0")/e2e_lib.sh"

up_mesh "certLifetime: 6s"
server=10.241.2.2

# The serial of the certificate the server's agent presents on its HBONE port (TLS 1.3 sends
# it before asking for the client's, so a client without a certificate still sees it).
server_serial() {
  ip netns exec "nws-$name-node1" timeout 3 openssl s_client -connect "$server:15008" \
    -alpn h2 < /dev/null 2> /dev/null | openssl x509 -noout -serial 2> /dev/null | cut -d= -f2
}
# The client agent's certificate serials, when nodewardctl is there.
client_serials() {
  [ -n "$ctl" ] && [ -x "$ctl" ] || return 0
  "$ctl" --socket="$run_dir/node1/admin.sock" certs -o json 2> /dev/null |
    grep -o '"serial": *"[0-9A-Fa-f:]*"' | sort -u | tr '\n' ' '
}

# The echo server in the server pod (not one of its ports: no other app answers there).
in_pod server "$sandbox_bin" app serve --port=7000 --echo-lines > "$work/echo.log" 2>&1 &
background_pids+=($!)
for i in $(seq 50); do grep -q listening "$work/echo.log" && break; sleep 0.1; done
start_capture || exit 1

first=$(server_serial)
[ -n "$first" ] || fail "no certificate from the server's agent on $server:15008"
client_first=$(client_serials)
echo "server agent certificate serial at start: $first"

in_pod client "$sandbox_bin" app chat --to="$server:7000" --send=ROTATION-LINE --lines=15 \
  --interval=0.6s --timeout=3s > "$work/chat.log" 2>&1 &
chat=$!
background_pids+=("$chat")
declare -A seen=([$first]=1)
while kill -0 "$chat" 2> /dev/null; do
  serial=$(server_serial)
  [ -n "$serial" ] && seen[$serial]=1
  sleep 0.5
done
wait "$chat"
chat_rc=$?
cat "$work/chat.log"
[ $chat_rc -eq 0 ] || fail "the long-lived connection broke (exit $chat_rc)"
grep -q "chat ok: 15 lines" "$work/chat.log" || fail "not every line came back"
echo "server agent certificate serials seen: ${!seen[*]}"
[ ${#seen[@]} -ge 3 ] || fail "expected at least two rotations (3 serials), saw ${#seen[@]}"
client_last=$(client_serials)
if [ -n "$client_first" ]; then
  echo "client agent serials: before [$client_first] after [$client_last]"
  [ "$client_first" != "$client_last" ] || fail "the client agent's certificate did not change"
fi

# New connections after the rotations.
for i in 1 2 3; do
  reply=$(in_pod client "$sandbox_bin" app call --to="$server:8080" --send="ROTATION-NEW-$i")
  echo "$reply"
  [[ "$reply" == *"got=ROTATION-NEW-$i"* ]] || fail "a new connection after rotation failed"
done
last=$(server_serial)
[ -n "$last" ] && [ "$last" != "$first" ] || fail "the server's agent presents its first certificate still"
stop_capture
on_wire ROTATION-LINE && fail "a chat line is readable on the wire"
on_wire ROTATION-NEW && fail "a new call's text is readable on the wire"
grep -q '"mode":"hbone_mtls"' "$run_dir/node2/access.log" ||
  fail "no hbone_mtls line in node2's access log"
