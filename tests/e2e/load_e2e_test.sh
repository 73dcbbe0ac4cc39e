#!/bin/bash
# 1,000 connections at once from one pod, through its node's agent and HBONE mTLS to a pod
# on the other node: every one must get its own reply, and the agents must be healthy after.
#   load_e2e_test.sh NODEWARD_SANDBOX BIN_DIR
set -u
sandbox_bin=$1
bin_dir=$2
prefix=ld
source "$(dirname "$0")/e2e_lib.sh"

up_mesh
server=10.241.2.2:8080

begin=$(($(date +%s%N) / 1000000))
in_pod client "$sandbox_bin" app load --to=$server --send=LOAD --connections=1000 \
  --timeout=60s | tee "$work/load.log"
rc=${PIPESTATUS[0]}
echo "load took $(($(date +%s%N) / 1000000 - begin)) ms"
[ "$rc" -eq 0 ] || fail "app load exited $rc"
grep -q "load: 1000 of 1000 connections ok" "$work/load.log" || fail "not every connection succeeded"

# Every connection went through both agents as mTLS.
sleep 0.5
outbound=$(grep '"direction":"outbound"' "$run_dir/node1/access.log" |
  grep '"mode":"hbone_mtls"' | grep -c '"result":"ok"')
inbound=$(grep '"direction":"inbound"' "$run_dir/node2/access.log" |
  grep '"mode":"hbone_mtls"' | grep -c '"result":"ok"')
echo "access log: $outbound outbound mTLS on node1, $inbound inbound mTLS on node2"
[ "$outbound" -ge 1000 ] || fail "node1 logged $outbound mTLS connections, not 1000"
[ "$inbound" -ge 1000 ] || fail "node2 logged $inbound mTLS connections, not 1000"

# Healthy after: alive, ready, and a plain call still works.
"$sandbox_bin" status "$name" > "$work/status"
grep -q "DEAD" "$work/status" && { cat "$work/status"; fail "a process of the sandbox died"; }
for node in node1 node2; do
  code=$(ip netns exec "nws-$name-$node" curl -s -o /dev/null -w '%{http_code}' \
    --max-time 3 http://127.0.0.1:15021/healthz/ready)
  echo "$node readiness: $code"
  [ "$code" = 200 ] || fail "$node's agent is not ready after the load"
done
reply=$(in_pod client "$sandbox_bin" app call --to=$server --send=LOAD-AFTER)
echo "after: $reply"
[[ "$reply" == *"got=LOAD-AFTER"* ]] || fail "a call after the load failed"
