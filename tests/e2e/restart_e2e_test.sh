#!/bin/bash
# Agent restart: node1's agent is killed (SIGKILL, as in a crash: its pinned capture stays)
# and started again by `nodeward-sandbox restart`. While it is down, a call from the enrolled
# pod on node1 must fail and its text must not cross the wire in plaintext (fail closed);
# once it is back, the same call works again as HBONE mTLS.
#   restart_e2e_test.sh NODEWARD_SANDBOX BIN_DIR
set -u
sandbox_bin=$1
bin_dir=$2
prefix=rs
source "$(dirname "$0")/e2e_lib.sh"

up_mesh
server=10.241.2.2:8080

# The last line node1's agent logged for a call.
last_outbound() { grep '"direction":"outbound"' "$run_dir/node1/access.log" | tail -1; }

reply=$(in_pod client "$sandbox_bin" app call --to=$server --send=RESTART-BEFORE)
echo "before: $reply"
[[ "$reply" == *"got=RESTART-BEFORE"* ]] || fail "the call before the restart failed"
start_capture || exit 1

"$sandbox_bin" restart "$name" node1 --down-for=4s > "$work/restart.log" 2>&1 &
restart=$!
background_pids+=("$restart")
for i in $(seq 100); do grep -q killed "$work/restart.log" && break; sleep 0.05; done
grep -q killed "$work/restart.log" || fail "restart did not kill the agent: $(cat "$work/restart.log")"
down_started=$(($(date +%s%N) / 1000000))
reply=$(in_pod client "$sandbox_bin" app call --to=$server --send=RESTART-WHILE-DOWN --timeout=2s)
rc=$?
echo "while down (exit $rc): $reply"
[ $rc -ne 0 ] || fail "a call succeeded while the agent was down"
[[ "$reply" == *"got=RESTART-WHILE-DOWN"* ]] && fail "the server received the call made while down"
# The call must have been made while the agent was really down.
[ $(($(date +%s%N) / 1000000 - down_started)) -lt 4000 ] ||
  fail "the call while down took too long to say anything"

wait "$restart"
rc=$?
cat "$work/restart.log"
[ $rc -eq 0 ] || fail "restart exited $rc"
"$sandbox_bin" status "$name" | grep -q "DEAD .* node1 .*nodeward-agent" &&
  echo "(the killed agent shows as DEAD, as expected)"

ok=0
back_started=$(($(date +%s%N) / 1000000))
for i in $(seq 100); do   # the restarted agent may need a moment to take its pods back
  reply=$(in_pod client "$sandbox_bin" app call --to=$server --send=RESTART-AFTER-$i --timeout=1s)
  if [[ "$reply" == *"got=RESTART-AFTER-$i"* ]]; then ok=1; break; fi
  sleep 0.05
done
echo "after: $reply"
echo "served again $(($(date +%s%N) / 1000000 - back_started)) ms after the agent was started again"
[ $ok -eq 1 ] || fail "the call after the restart failed"
line=$(last_outbound)
echo "node1: $line"
[[ "$line" == *'"mode":"hbone_mtls"'* && "$line" == *'"result":"ok"'* ]] ||
  fail "the call after the restart was not HBONE mTLS"
stop_capture
on_wire RESTART-WHILE-DOWN && fail "the call made while the agent was down leaked in plaintext"
on_wire RESTART-AFTER && fail "the call after the restart is readable on the wire"
on_wire RESTART- || echo "no marker on the wire"
