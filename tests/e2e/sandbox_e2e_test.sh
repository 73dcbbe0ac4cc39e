#!/bin/bash
# End to end through nodeward-sandbox: a two-node cluster with the real agents and SDS servers,
# a pod-to-pod call across nodes, exit codes through `exec`, and `down` leaving nothing behind,
# also after a failed `up`. Cleanup runs on every exit path (trap), so a failing check never
# leaves network namespaces, cgroups or BPF pins on the machine.
#   sandbox_e2e_test.sh NODEWARD_SANDBOX BIN_DIR
set -u

sandbox_bin=$1
bin_dir=$2
prefix=se
source "$(dirname "$0")/e2e_lib.sh"

mkdir -p "$work/config"
cat > "$work/sandbox.yaml" <<YAML
name: $name
nodes: [n1, n2]
pods:
- {name: client, namespace: shop, serviceAccount: client, node: n1, labels: {app: client}}
- {name: server, namespace: shop, serviceAccount: server, node: n2, ports: [8080], labels: {app: server}}
- {name: plain, namespace: outside, node: n2, ports: [9000]}
config: config
YAML
cat > "$work/config/namespaces.yaml" <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    nodeward.io/dataplane-mode: enabled
YAML

echo "== up"
if ! "$sandbox_bin" up "$work/sandbox.yaml" --bin-dir="$bin_dir"; then
  fail "up"
  exit 1
fi
"$sandbox_bin" status "$name" || fail "status"

echo "== client (n1) -> server (n2), captured"
out=$("$sandbox_bin" exec "$name" client -- "$sandbox_bin" app call --to=10.241.2.2:8080 --send=hello)
rc=$?
echo "$out"
[ $rc -eq 0 ] || fail "call across nodes exited $rc"
[[ "$out" == *"got=hello"* ]] || fail "call across nodes: no got=hello in reply"

echo "== client (n1) -> plain (n2, not enrolled)"
out=$("$sandbox_bin" exec "$name" shop/client -- "$sandbox_bin" app call --to=10.241.2.3:9000 --send=hi)
rc=$?
echo "$out"
[ $rc -eq 0 ] && [[ "$out" == *"got=hi"* ]] || fail "call to a pod outside the mesh"

echo "== nothing listens: exit 1 with error="
out=$("$sandbox_bin" exec "$name" client -- "$sandbox_bin" app call --to=10.241.2.2:7 --send=x --timeout=2s)
rc=$?
echo "$out"
[ $rc -eq 1 ] && [[ "$out" == error=* ]] || fail "call to a closed port: rc=$rc out=$out"

echo "== exit code and stdio through exec"
"$sandbox_bin" exec "$name" server -- sh -c 'exit 7'
rc=$?
[ $rc -eq 7 ] || fail "exec exit code: $rc, want 7"
out=$(echo piped | "$sandbox_bin" exec "$name" server -- cat)
[ "$out" = piped ] || fail "exec stdin/stdout: got '$out'"
out=$("$sandbox_bin" exec "$name" server -- cat /proc/self/cgroup)
[[ "$out" == *"nodeward-sandbox-$name/n2"* ]] || fail "exec not in the node cgroup: $out"

access_log="/run/nodeward-sandbox/$name/n1/access.log"
if [ -e "$access_log" ]; then
  # Both pods are enrolled: the agents carry the call in an HBONE mTLS tunnel.
  grep '10.241.2.2:8080' "$access_log" | grep -q 'hbone_mtls' ||
    fail "the call is not in n1's access log as mTLS: $(cat "$access_log")"
fi

echo "== down"
"$sandbox_bin" down "$name" || fail "down"
leftovers || fail "objects left after down"
"$sandbox_bin" down "$name" || fail "second down is not a no-op"

echo "== failed up (an agent that exits at once) leaves nothing"
mkdir -p "$work/broken-bin"
ln -s "$bin_dir/nodeward-sds" "$bin_dir/nodeward-enroll" "$work/broken-bin/"
ln -s /bin/false "$work/broken-bin/nodeward-agent"
if "$sandbox_bin" up "$work/sandbox.yaml" --bin-dir="$work/broken-bin" --ready-timeout=10s; then
  fail "up with a broken agent succeeded"
fi
leftovers || fail "objects left after a failed up"

echo "== failed up kept for inspection, then down"
"$sandbox_bin" up "$work/sandbox.yaml" --bin-dir="$work/broken-bin" --keep-on-failure \
  --ready-timeout=10s && fail "up with a broken agent succeeded"
ip netns list | grep -q "^nws-$name-" || fail "--keep-on-failure removed the namespaces"
"$sandbox_bin" down "$name" || fail "down after a failed up"
leftovers || fail "objects left after down of a failed up"
