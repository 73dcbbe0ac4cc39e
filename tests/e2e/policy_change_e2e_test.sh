#!/bin/bash
# Live connections follow policy changes: three long-lived connections to one server pod
# (mTLS from `client`, mTLS from `other`, plaintext from the non-mesh `outsider`) are open
# when the server's namespace turns STRICT and an AuthorizationPolicy starts denying
# `client`. The server's agent must close the two that are now refused within a few seconds,
# each with its reason in the access log and in
# nodeward_connections_closed_by_policy_total, and leave `other`'s connection untouched.
#   policy_change_e2e_test.sh NODEWARD_SANDBOX BIN_DIR
set -u
sandbox_bin=$1
bin_dir=$2
prefix=pc
source "$(dirname "$0")/e2e_lib.sh"

mkdir -p "$work/config"
cat > "$work/cluster.yaml" <<YAML
name: polchange
nodes: [node1, node2]
pods:
- {name: client, namespace: app, serviceAccount: client, node: node1, labels: {app: client}}
- {name: other, namespace: app, serviceAccount: other, node: node1, labels: {app: other}}
- {name: outsider, namespace: plain, serviceAccount: outsider, node: node1, labels: {app: outsider}}
- {name: server, namespace: app, serviceAccount: server, node: node2, ports: [8080], labels: {app: server}}
config: config
YAML
cat > "$work/config/namespaces.yaml" <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {nodeward.io/dataplane-mode: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
YAML
"$sandbox_bin" up "$work/cluster.yaml" --bin-dir "$bin_dir" --name="$name" > "$work/up.log" ||
  { cat "$work/up.log"; fail "up"; exit 1; }
server=10.241.2.2

in_pod server "$sandbox_bin" app serve --port=7000 --echo-lines > "$work/echo.log" 2>&1 &
background_pids+=($!)
for i in $(seq 50); do grep -q listening "$work/echo.log" && break; sleep 0.1; done

# chat POD: a line every 0.5 s for 12 s over one connection, in the background.
declare -A chat_pid
for pod in client other outsider; do
  in_pod $pod "$sandbox_bin" app chat --to="$server:7000" --send="PC-$pod" --lines=24 \
    --interval=0.5s --timeout=3s > "$work/chat-$pod.log" 2>&1 &
  chat_pid[$pod]=$!
  background_pids+=($!)
done
# All three carried before the change.
for i in $(seq 50); do
  open=0
  for pod in client other outsider; do grep -q "echo=PC-$pod" "$work/chat-$pod.log" && open=$((open + 1)); done
  [ $open -eq 3 ] && break
  sleep 0.1
done
[ $open -eq 3 ] || fail "not every chat started: $(cat "$work"/chat-*.log)"

changed=$(date +%s%N)
cat > "$run_dir/config/policy.yaml.tmp" <<YAML
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: app}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-client, namespace: app}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/app/sa/client]}}]
YAML
mv "$run_dir/config/policy.yaml.tmp" "$run_dir/config/policy.yaml"

declare -A rc
for pod in client outsider; do
  wait "${chat_pid[$pod]}"
  rc[$pod]=$?
  ended_ms=$((($(date +%s%N) - changed) / 1000000))
  echo "$pod: exit ${rc[$pod]} ${ended_ms} ms after the change: $(tail -1 "$work/chat-$pod.log")"
  [ "${rc[$pod]}" -ne 0 ] || fail "$pod's connection outlived a policy that refuses it"
  [ $ended_ms -lt 5000 ] || fail "$pod's connection was closed only after ${ended_ms} ms"
done
wait "${chat_pid[other]}"
other_rc=$?
echo "other: exit $other_rc: $(tail -1 "$work/chat-other.log")"
[ $other_rc -eq 0 ] && grep -q "chat ok: 24 lines" "$work/chat-other.log" ||
  fail "other's connection, still allowed, did not carry every line"

# closed POD REFUSAL POLICY: node2's access log closed POD's connection by the policy change.
closed() {
  local line
  line=$(grep '"closed_by":"policy_change"' "$run_dir/node2/access.log" | grep -F "$1" | tail -1)
  echo "node2: $line"
  [[ "$line" == *"\"refusal\":\"$2\""* && "$line" == *"policy changed"* && "$line" == *"$3"* ]] ||
    fail "no access-log line closing $1's connection as $2 by $3"
}
closed "sa/client" authorization "AuthorizationPolicy app/no-client"
closed '"source_address":"10.241.1.4:' strict_requires_mtls "PeerAuthentication app/default"
grep '"closed_by":"policy_change"' "$run_dir/node2/access.log" | grep -q "sa/other" &&
  fail "other's connection is logged as closed by the change"

metrics=$(nsenter --net="/run/netns/nws-$name-node2" curl -s --max-time 5 http://127.0.0.1:15020/metrics)
grep '^nodeward_connections_closed_by_policy_total' <<< "$metrics"
for reason in authorization strict_requires_mtls; do
  grep -qE "^nodeward_connections_closed_by_policy_total\{direction=\"inbound\",reason=\"$reason\"\} 1$" <<< "$metrics" ||
    fail "nodeward_connections_closed_by_policy_total{reason=\"$reason\"} is not 1"
done

# New connections follow the new policy too.
reply=$(in_pod other "$sandbox_bin" app call --to="$server:8080" --send=PC-NEW --timeout=4s)
[[ "$reply" == *"got=PC-NEW"* ]] || fail "other's new call failed: $reply"
reply=$(in_pod client "$sandbox_bin" app call --to="$server:8080" --send=PC-DENIED --timeout=4s)
[[ "$reply" == *"got="* ]] && fail "client's new call was served: $reply"
exit 0
