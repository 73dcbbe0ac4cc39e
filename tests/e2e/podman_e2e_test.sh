#!/bin/bash
# nodeward on a real container runtime, installed as the DaemonSet says. Two nodes (network
# namespaces joined by a veth) each run podman with the CNI backend; the node's network is the
# Debian containernetworking-plugins' bridge + host-local, and the DaemonSet's init containers
# install nodeward-cni into it. The agent and nodeward-sds run from the `make image` image
# with the DaemonSet's mounts, capabilities and flags (tests/e2e/podman/node_plan.sh says the
# two flags it changes), against nodeward-fake-apiserver as the cluster's API. Pods are
# busybox containers; the fake API is told about them as the kubelet would.
#
# Checked: a pod of an enrolled namespace sends its first bytes (at process start) through
# mTLS (its marker never on the link between the nodes); pods of other namespaces, and one
# that opts out, are untouched; with the agent killed, pods of enrolled namespaces do not
# start, others do; an agent upgrade keeps running pods captured with nothing in plaintext
# meanwhile (the gap is measured); a namespace label flip enrolls and releases a running pod;
# a pod deleted while the agent is down is cleaned up when it comes back; deleting the
# DaemonSet uninstalls nodeward from the node (conflist as before, plugin gone, pins gone).
#   podman_e2e_test.sh BIN_DIR IMAGE_FILE SOURCE_DIR
set -u
bin_dir=$1
image=$(cat "$2")
source_dir=$3

if [ "$(id -u)" != 0 ]; then
  echo "SKIP: needs root (network namespaces, cgroups, BPF, containers)"
  exit 77
fi
for tool in podman runc kubectl python3 tcpdump curl nsenter /usr/lib/cni/bridge; do
  command -v "$tool" > /dev/null || [ -x "$tool" ] || { echo "FAIL: $tool is missing"; exit 1; }
done

name="pm$$"
cg="nodeward-e2e-$name"
work=$(mktemp -d "/tmp/nodeward-e2e-$name.XXXXXX")
started=$(date +%s)
background_pids=()
nodes=(node1 node2)
node_ip_node1=10.77.0.1
node_ip_node2=10.77.0.2
api="$node_ip_node1:6443"
source "$(dirname "$0")/e2e_common.sh"
source "$(dirname "$0")/podman/node_plan.sh"

ms() { echo $(($(date +%s%N) / 1000000)); }
netns_of() { echo "/run/netns/$name-$1"; }
# on_node NODE CMD...: CMD in the node's network namespace, with its podman configuration.
on_node() {
  local node=$1
  shift
  CONTAINERS_CONF="$work/$node/containers.conf" nsenter --net="$(netns_of "$node")" "$@"
}
pm() {
  local node=$1
  shift
  on_node "$node" podman "$@"
}

leftovers() {
  local found=0
  if [ -n "$(podman ps -aq --filter "label=nodeward-e2e=$name")" ]; then
    echo "left: containers $(podman ps -a --filter "label=nodeward-e2e=$name" --format '{{.Names}}')"
    found=1
  fi
  if ip netns list | grep -q "^$name-"; then echo "left: netns"; found=1; fi
  if compgen -G "/sys/fs/cgroup/*/$cg" > /dev/null; then
    echo "left: cgroups $(echo /sys/fs/cgroup/*/"$cg")"
    found=1
  fi
  if compgen -G "/sys/fs/bpf/$cg-*" > /dev/null; then echo "left: pins"; found=1; fi
  if compgen -G "/var/lib/cni/results/$name-*" > /dev/null; then echo "left: CNI cache"; found=1; fi
  if ps -eo stat=,args= | grep -v '^Z' | grep -F "$work/" | grep -vq grep; then
    echo "left: processes"
    found=1
  fi
  return $found
}

cleanup() {
  local code=$?
  local node pid ids
  if [ $failures -ne 0 ] || [ $code -ne 0 ]; then
    for node in "${nodes[@]}"; do
      for c in agent sds; do
        echo "---- $node $c"
        podman logs --tail 40 "$name-$node-$c" 2>&1 | cut -c1-400
      done
      [ -e "$work/$node/run/cni.log" ] && { echo "---- $node cni.log"; tail -n 20 "$work/$node/run/cni.log"; }
    done
  fi
  for node in "${nodes[@]}"; do
    ids=$(podman ps -aq --filter "label=nodeward-e2e=$name" --filter "label=nodeward-e2e-node=$node")
    [ -n "$ids" ] && pm "$node" rm --force --time 0 $ids > /dev/null 2>&1
  done
  for pid in "${background_pids[@]}"; do kill "$pid" 2> /dev/null; done
  for pid in "${background_pids[@]}"; do wait "$pid" 2> /dev/null; done
  for node in "${nodes[@]}"; do ip netns del "$name-$node" 2> /dev/null; done
  rm -f /var/lib/cni/results/"$name"-*
  local try
  for try in 1 2 3 4 5; do
    for h in /sys/fs/cgroup/*/"$cg"; do
      [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} \; 2> /dev/null
    done
    compgen -G "/sys/fs/cgroup/*/$cg" > /dev/null || break
    sleep 0.5
  done
  rm -rf /sys/fs/bpf/"$cg"-*
  rm -rf "$work"
  verdict "$code"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ---- the cluster's API, its CA, the service account token

mkdir -p "$work/sa" "$work/api"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=kube-apiserver \
  -addext "subjectAltName=IP:$node_ip_node1" -keyout "$work/api/key.pem" -out "$work/api/cert.pem" \
  2> /dev/null || { fail "API server certificate"; exit 1; }
cp "$work/api/cert.pem" "$work/sa/ca.crt"
head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$work/sa/token"
echo nodeward-system > "$work/sa/namespace"
"$source_dir/deploy/ca/create-ca-secret.sh" --out-dir "$work/ca" > /dev/null ||
  { fail "create-ca-secret.sh"; exit 1; }

# ---- two nodes: network namespaces, a link, a cgroup each, podman configured for them

for node in "${nodes[@]}"; do
  ip netns add "$name-$node"
  ip -n "$name-$node" link set lo up
  nsenter --net="$(netns_of "$node")" sysctl -qw net.ipv4.ip_forward=1
  mkdir -p "/sys/fs/cgroup/unified/$cg/$node" "$work/$node"/{net.d,bin,ipam,run,lib}
done
ip link add v1 netns "$name-node1" type veth peer v2 netns "$name-node2"
ip -n "$name-node1" addr add "$node_ip_node1/24" dev v1
ip -n "$name-node2" addr add "$node_ip_node2/24" dev v2
ip -n "$name-node1" link set v1 up
ip -n "$name-node2" link set v2 up
ip -n "$name-node1" route add 10.77.2.0/24 via "$node_ip_node2"
ip -n "$name-node2" route add 10.77.1.0/24 via "$node_ip_node1"
for i in 1 2; do
  node=node$i
  # The node's own CNI configuration, as its network plugin would have written it.
  cat > "$work/$node/net.d/10-pods.conflist" << EOF
{
  "cniVersion": "1.0.0",
  "name": "$name-$node",
  "plugins": [
    {"type": "bridge", "bridge": "nwbr0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.77.$i.0/24"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$work/$node/ipam"}}
  ]
}
EOF
  cp "$work/$node/net.d/10-pods.conflist" "$work/$node/original.conflist"
  # runc: crun refuses hybrid cgroups; rlimits below this machine's hard limits.
  cat > "$work/$node/containers.conf" << EOF
[containers]
default_ulimits = ["nofile=8192:8192", "nproc=8192:8192"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
[network]
network_backend = "cni"
cni_plugin_dirs = ["$work/$node/bin", "/usr/lib/cni"]
network_config_dir = "$work/$node/net.d"
EOF
done
# bpffs, as the sandbox does; the DaemonSet's mount-bpffs init container then finds it.
[ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ] || mount -t bpf bpf /sys/fs/bpf

nsenter --net="$(netns_of node1)" "$bin_dir/nodeward-fake-apiserver" --listen="$api" \
  --cert="$work/api/cert.pem" --key="$work/api/key.pem" --token-file="$work/sa/token" \
  > "$work/api/log" 2>&1 &
background_pids+=($!)
kube() {  # kube METHOD PATH [JSON]: the API as kubectl would use it; prints the HTTP status
  on_node node1 curl -s --http1.1 -o "$work/api/last" -w '%{http_code}' --cacert "$work/sa/ca.crt" \
    -H "Authorization: Bearer $(cat "$work/sa/token")" -H 'Content-Type: application/json' \
    -X "$1" "https://$api$2" ${3:+--data "$3"}
}
for i in $(seq 50); do [ "$(kube GET /api/v1/namespaces)" = 200 ] && break; sleep 0.1; done
namespace() {  # namespace NAME [LABELS-JSON]
  local body="{\"metadata\":{\"name\":\"$1\",\"labels\":${2:-{\}}}}"
  [ "$(kube PUT "/api/v1/namespaces/$1" "$body")" = 200 ] ||
    [ "$(kube POST /api/v1/namespaces "$body")" = 201 ] || fail "namespace $1: $(cat "$work/api/last")"
}
namespace nodeward-system '{"nodeward.io/dataplane-mode":"none"}'
namespace shop '{"nodeward.io/dataplane-mode":"enabled"}'
namespace legacy
namespace flip

# ---- the images: nodeward's (built by the fixture), the pods' (busybox)

pod_image="localhost/nodeward-e2e-pod:$(cat /bin/busybox "$(dirname "$0")/podman/pod-reply.sh" | sha256sum | cut -c1-12)"
if ! podman image exists "$pod_image"; then
  mkdir -p "$work/podroot/bin" "$work/podroot/srv" "$work/podroot/proc" "$work/podroot/tmp"
  cp /bin/busybox "$work/podroot/bin/"
  for tool in sh nc cat cut grep sleep echo tr date; do ln -s busybox "$work/podroot/bin/$tool"; done
  cp "$(dirname "$0")/podman/pod-reply.sh" "$work/podroot/srv/reply"
  tar -C "$work/podroot" -c . | podman import --quiet --change 'ENV PATH=/bin' - "$pod_image" > /dev/null ||
    { fail "pod image"; exit 1; }
fi
podman image exists "$image" || { fail "image $image (the test fixture builds it)"; exit 1; }

# ---- the DaemonSet on both nodes

kubectl kustomize "$source_dir/deploy" > "$work/manifests.yaml" || { fail "kubectl kustomize deploy"; exit 1; }
python3 -c 'import json, sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "DaemonSet": print(json.dumps(d))' "$work/manifests.yaml" > "$work/daemonset.json"
[ "$(kube POST /apis/apps/v1/namespaces/nodeward-system/daemonsets "$(cat "$work/daemonset.json")")" = 201 ] ||
  fail "DaemonSet into the API"

declare -A ready_url
# start_node NODE [CONTAINER]: the node's DaemonSet pod (init containers first), or one of its
# containers again; waits for the readiness probe.
start_node() {
  local node=$1 only=${2:-} kind cname rest
  node_plan "$node" "$work/manifests.yaml" > "$work/$node/plan" || { fail "plan for $node"; return 1; }
  while read -r kind cname rest; do
    case "$kind" in
      mkdir) [ -z "$only" ] && mkdir -p "$cname" ;;
      init | main)
        [ -n "$only" ] && [ "$only" != "$cname" ] && continue
        [ -n "$only" ] && [ "$kind" = init ] && continue
        eval "local argv=($rest)"
        if [ "$kind" = init ]; then
          pm "$node" run "${argv[@]}" > "$work/$node/init-$cname.log" 2>&1 ||
            { fail "$node init container $cname: $(cat "$work/$node/init-$cname.log")"; return 1; }
        else
          pm "$node" rm --force --time 0 "$name-$node-$cname" > /dev/null 2>&1
          pm "$node" run "${argv[@]}" > /dev/null || { fail "$node container $cname"; return 1; }
        fi
        ;;
      probe) [ "$rest" = "${rest#readiness }" ] || ready_url[$node]=${rest#readiness } ;;
    esac
  done < "$work/$node/plan"
  local i
  for i in $(seq 150); do
    on_node "$node" curl -sf "${ready_url[$node]}" > /dev/null && return 0
    sleep 0.1
  done
  fail "$node agent not ready: $(on_node "$node" curl -s "${ready_url[$node]}")"
  return 1
}
for node in "${nodes[@]}"; do start_node "$node" || exit 1; done
grep -q '"type":"nodeward-cni"' "$work/node1/net.d/10-pods.conflist" ||
  fail "install-cni did not add nodeward-cni to the node's conflist"
[ -x "$work/node1/bin/nodeward-cni" ] || fail "install-cni did not copy the plugin"
# The node's CNI rewrites its file (as flannel or Calico do when they restart): the agent puts
# nodeward-cni back.
cp "$work/node1/original.conflist" "$work/node1/net.d/10-pods.conflist"
for i in $(seq 50); do
  grep -q '"type":"nodeward-cni"' "$work/node1/net.d/10-pods.conflist" && break
  sleep 0.1
done
grep -q '"type":"nodeward-cni"' "$work/node1/net.d/10-pods.conflist" ||
  fail "nodeward-cni not put back into the rewritten conflist"

# ---- pods

declare -A pod_uid pod_node pod_ns
# start_pod NODE NS POD LABELS-JSON CMD: the pod into the API (scheduled on NODE), then its
# sandbox through podman and the node's CNI, then its status as the kubelet reports it.
# Returns podman's status; podman's output is in $work/pods/POD.
start_pod() {
  local node=$1 ns=$2 pod=$3 labels=$4 cmd=$5 uid t0 rc ip
  uid=$(cat /proc/sys/kernel/random/uuid)
  pod_uid[$pod]=$uid pod_node[$pod]=$node pod_ns[$pod]=$ns
  mkdir -p "$work/pods"
  local meta="{\"name\":\"$name-$pod\",\"namespace\":\"$ns\",\"uid\":\"$uid\",\"labels\":$labels}"
  local spec="{\"nodeName\":\"$node\",\"serviceAccountName\":\"$pod\",\"containers\":[{\"name\":\"app\",\"image\":\"busybox\"}]}"
  [ "$(kube POST "/api/v1/namespaces/$ns/pods" "{\"metadata\":$meta,\"spec\":$spec,\"status\":{\"phase\":\"Pending\"}}")" = 201 ] ||
    fail "pod $pod into the API: $(cat "$work/api/last")"
  t0=$(ms)
  CNI_ARGS="K8S_POD_NAMESPACE=$ns;K8S_POD_NAME=$name-$pod;K8S_POD_UID=$uid" pm "$node" run --detach \
    --name "$name-$pod" --label "nodeward-e2e=$name" --label "nodeward-e2e-node=$node" \
    --network "$name-$node" --cgroup-parent "/$cg/$node/pod$uid" "$pod_image" sh -c "$cmd" \
    > "$work/pods/$pod" 2>&1
  rc=$?
  echo "$pod $(($(ms) - t0))" >> "$work/podman-run-ms"
  [ $rc -eq 0 ] || return $rc
  ip=$(pm "$node" inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$name-$pod")
  eval "ip_$pod=$ip"
  [ "$(kube PUT "/api/v1/namespaces/$ns/pods/$name-$pod" "{\"metadata\":$meta,\"spec\":$spec,\"status\":{\"phase\":\"Running\",\"podIP\":\"$ip\",\"podIPs\":[{\"ip\":\"$ip\"}],\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}")" = 200 ] ||
    fail "pod $pod status: $(cat "$work/api/last")"
  return 0
}
remove_pod() {  # remove_pod POD: the sandbox (CNI DEL), then the object
  pm "${pod_node[$1]}" rm --force --time 0 "$name-$1" > /dev/null 2>&1
  kube DELETE "/api/v1/namespaces/${pod_ns[$1]}/pods/$name-$1" > /dev/null
}
logs_of() { podman logs "$name-$1" 2>&1; }
# wait_exit POD: until its process ended, then reported as the kubelet would (Succeeded).
wait_exit() {
  timeout 20 podman wait "$name-$1" > /dev/null 2>&1
  local meta="{\"name\":\"$name-$1\",\"namespace\":\"${pod_ns[$1]}\",\"uid\":\"${pod_uid[$1]}\"}"
  kube PUT "/api/v1/namespaces/${pod_ns[$1]}/pods/$name-$1" \
    "{\"metadata\":$meta,\"spec\":{\"nodeName\":\"${pod_node[$1]}\",\"serviceAccountName\":\"$1\"},\"status\":{\"phase\":\"Succeeded\"}}" > /dev/null
}
# cni_outcome POD: what nodeward-cni's ADD said for it (its last ADD).
cni_outcome() {
  grep -F "\"pod\":\"${pod_ns[$1]}/$name-$1\"" "$work/${pod_node[$1]}/run/cni.log" | grep '"command":"ADD"' |
    tail -n 1 | sed 's/.*"outcome":"\([a-z_]*\)".*/\1/'
}
# workloads NODE: the agent's view, from nodewardctl inside its container.
workloads() {
  podman exec "$name-$1-agent" nodewardctl --socket="$work/$1/run/admin.sock" workloads -o json 2> /dev/null
}
enrolled_by() {  # enrolled_by POD: how the agent of its node says it was enrolled ("" when not)
  workloads "${pod_node[$1]}" | python3 -c 'import json, sys
for w in json.load(sys.stdin).get("workloads", []):
    if w["name"] == sys.argv[1]: print(w["enrolled_by"])' "$name-$1" 2> /dev/null
}
wait_enrolled_by() {  # wait_enrolled_by POD PATTERN
  local i
  for i in $(seq 100); do [[ "$(enrolled_by "$1")" == $2 ]] && return 0; sleep 0.1; done
  return 1
}

start_capture() {
  nsenter --net="$(netns_of node1)" tcpdump -i v1 -n -U --immediate-mode -s 65535 -B 16384 -Z root \
    -w "$work/wire.pcap" > "$work/tcpdump.log" 2>&1 &
  capture_pid=$!
  background_pids+=("$capture_pid")
  for i in $(seq 100); do grep -q "listening on" "$work/tcpdump.log" && return 0; sleep 0.1; done
  fail "tcpdump is not capturing: $(cat "$work/tcpdump.log")"
}
on_wire() { grep -aqF "$1" "$work/wire.pcap"; }
start_capture

echo "== the server: shop/server on node2"
start_pod node2 shop server '{}' 'exec nc -ll -p 8080 -e /srv/reply' || fail "server did not start: $(cat "$work/pods/server")"
server="$ip_server:8080"
wait_enrolled_by server cni || fail "server not enrolled by cni: $(enrolled_by server)"
sleep 0.5  # its address reaches node1's agent over the watch

echo "== first bytes of an enrolled pod go through mTLS"
start_pod node1 shop first '{}' "echo FIRST-BYTES-$name | nc -w 5 $ip_server 8080" ||
  fail "shop/first did not start: $(cat "$work/pods/first")"
wait_exit first
[[ "$(logs_of first)" == *"got=FIRST-BYTES-$name"* ]] || fail "shop/first got no answer: $(logs_of first)"
[ "$(cni_outcome first)" = enrolled ] || fail "shop/first: nodeward-cni said '$(cni_outcome first)', not enrolled"
podman logs "$name-node1-agent" 2>&1 | grep -F "\"source_workload\":\"shop/$name-first\"" |
  grep -q '"mode":"hbone_mtls"' || fail "node1's access log has no hbone_mtls line for shop/first"

echo "== a pod of a namespace not enrolled is untouched"
start_pod node1 legacy plain '{}' "echo PLAIN-$name | nc -w 5 $ip_server 8080" || fail "legacy/plain did not start"
wait_exit plain
[[ "$(logs_of plain)" == *"got=PLAIN-$name"* ]] || fail "legacy/plain got no answer: $(logs_of plain)"
[ "$(cni_outcome plain)" = not_enrolled ] || fail "legacy/plain: nodeward-cni said '$(cni_outcome plain)'"

echo "== a pod that opts out is untouched"
start_pod node1 shop optout '{"nodeward.io/dataplane-mode":"none"}' "echo OPTOUT-$name | nc -w 5 $ip_server 8080" ||
  fail "shop/optout did not start"
wait_exit optout
[[ "$(logs_of optout)" == *"got=OPTOUT-$name"* ]] || fail "shop/optout got no answer: $(logs_of optout)"
[ "$(cni_outcome optout)" = not_enrolled ] || fail "shop/optout: nodeward-cni said '$(cni_outcome optout)'"

echo "== a running pod follows its namespace's label"
# A new connection every 100 ms, each with its number, for as long as the pod runs.
loop='i=0; while true; do i=$((i+1)); t=$(cut -d" " -f1 /proc/uptime); if echo "MARK-$i-" | nc -w 1 SERVER 8080 | grep -q got=; then echo "ok $i $t"; else echo "no $i $t"; fi; sleep 0.1; done'
loop=${loop//SERVER/$ip_server}
start_pod node1 flip flipper '{}' "${loop//MARK/FLIP-$name}" || fail "flip/flipper did not start"
last_sent() { logs_of "$1" | tail -n 1 | cut -d' ' -f2; }
sleep 1
namespace flip '{"nodeward.io/dataplane-mode":"enabled"}'
wait_enrolled_by flipper "label change" || fail "flip/flipper not enrolled on the label: '$(enrolled_by flipper)'"
on_from=$(($(last_sent flipper) + 2))
sleep 1.5
# Until the label goes, everything it sends is captured (the release may be seen late).
on_to=$(($(last_sent flipper) - 1))
namespace flip '{}'
for i in $(seq 100); do [ -z "$(enrolled_by flipper)" ] && break; sleep 0.1; done
[ -z "$(enrolled_by flipper)" ] || fail "flip/flipper still enrolled after the label went"
sleep 1
off_from=$(($(last_sent flipper) - 3))
logs_of flipper > "$work/flipper.log"
remove_pod flipper

echo "== the agent killed: pods of enrolled namespaces wait, others start"
podman kill --signal KILL "$name-node1-agent" > /dev/null
start_pod node1 shop waiting '{}' "echo WAITING-$name | nc -w 5 $ip_server 8080"
rc=$?
[ $rc -ne 0 ] || fail "shop/waiting started with the agent down"
grep -q "must not start uncaptured" "$work/pods/waiting" || fail "shop/waiting: no CNI 'try again' error: $(cat "$work/pods/waiting")"
pm node1 rm --force --time 0 "$name-waiting" > /dev/null 2>&1
start_pod node1 legacy meanwhile '{}' "echo MEANWHILE-$name | nc -w 5 $ip_server 8080" ||
  fail "legacy/meanwhile did not start with the agent down: $(cat "$work/pods/meanwhile")"
start_node node1 agent || exit 1
kube DELETE "/api/v1/namespaces/shop/pods/$name-waiting" > /dev/null
start_pod node1 shop waiting '{}' "echo WAITED-$name | nc -w 5 $ip_server 8080" ||
  fail "shop/waiting did not start with the agent back: $(cat "$work/pods/waiting")"
wait_exit waiting
[[ "$(logs_of waiting)" == *"got=WAITED-$name"* ]] || fail "shop/waiting got no answer: $(logs_of waiting)"

echo "== an upgrade: the agent replaced while a pod keeps connecting"
start_pod node1 shop steady '{}' "${loop//MARK/STEADY-$name}" || fail "shop/steady did not start"
sleep 1
upgrade_start=$(ms)
podman stop --time 30 "$name-node1-agent" > /dev/null
start_node node1 agent || exit 1
upgrade_ready=$(ms)
sleep 1.5
[ "$(enrolled_by steady)" = "cni (re-adopted at restart)" ] ||
  fail "shop/steady after the upgrade: enrolled by '$(enrolled_by steady)'"
gap=$(logs_of steady | awk '$1 == "ok" { if (down) { print int(($3 - last) * 1000); exit } last = $3 }
                             $1 == "no" && last { down = 1 }')
logs_of steady | grep -q '^ok' || fail "shop/steady never got through"
echo "restart gap: ${gap:-none} ms of new connections refused (agent down $((upgrade_ready - upgrade_start)) ms, drain included)"
remove_pod steady

echo "== a pod deleted while the agent is down is cleaned up when it starts"
start_pod node1 shop doomed '{}' 'exec sleep 600' || fail "shop/doomed did not start"
[ "$(enrolled_by doomed)" = cni ] || fail "shop/doomed not enrolled"
podman stop --time 30 "$name-node1-agent" > /dev/null
remove_pod doomed
start_node node1 agent || exit 1
[ -z "$(enrolled_by doomed)" ] || fail "shop/doomed still enrolled after the agent came back"
workloads node1 | python3 -c 'import json, sys; sys.exit(len(json.load(sys.stdin)["not_enrolled"]))' ||
  fail "node1 lists pods as not enrolled: $(workloads node1)"

echo "== the plugin as the runtime runs it: bad input, and a netns gone before capture"
plugin="$work/node1/bin/nodeward-cni"
conf=$(python3 -c 'import json, sys
c = json.load(open(sys.argv[1]))
p = c["plugins"][-1]
p.update(cniVersion=c["cniVersion"], name=c["name"], prevResult={"cniVersion": c["cniVersion"], "interfaces": [], "ips": []})
print(json.dumps(p))' "$work/node1/net.d/10-pods.conflist")
cni_call() {  # cni_call STDIN ENV...: the plugin's stdout in $out, its exit status in $cni_rc
  echo "$1" | env -i "${@:2}" "$plugin" > "$work/cni.out" 2> /dev/null
  cni_rc=$?
  out=$(cat "$work/cni.out")
}
cni_call '{"cniVersion":' CNI_COMMAND=ADD CNI_CONTAINERID=x CNI_NETNS=/run/netns/x CNI_IFNAME=eth0 \
  "CNI_ARGS=K8S_POD_NAMESPACE=shop;K8S_POD_NAME=x"
[ $cni_rc -ne 0 ] && [[ "$out" == *'"code":6'* ]] || fail "malformed stdin: exit $cni_rc, $out"
cni_call "$conf" CNI_COMMAND=ADD CNI_CONTAINERID=x CNI_NETNS=/run/netns/x CNI_IFNAME=eth0
[ $cni_rc -ne 0 ] && [[ "$out" == *'"code":4,"msg":"CNI_ARGS is not set'* ]] || fail "no CNI_ARGS: exit $cni_rc, $out"
cni_call "$conf" CNI_COMMAND=GC
[ $cni_rc -ne 0 ] && [[ "$out" == *'unknown CNI_COMMAND'* ]] || fail "unknown command: exit $cni_rc, $out"
uid=$(cat /proc/sys/kernel/random/uuid)
pod_node[vanished]=node1 pod_ns[vanished]=shop
kube POST /api/v1/namespaces/shop/pods "{\"metadata\":{\"name\":\"$name-vanished\",\"uid\":\"$uid\"},\"spec\":{\"nodeName\":\"node1\",\"serviceAccountName\":\"vanished\"},\"status\":{\"phase\":\"Pending\"}}" > /dev/null
cni_call "$conf" CNI_COMMAND=ADD CNI_CONTAINERID=vanished CNI_NETNS=/run/netns/$name-gone CNI_IFNAME=eth0 \
  "CNI_ARGS=K8S_POD_NAMESPACE=shop;K8S_POD_NAME=$name-vanished;K8S_POD_UID=$uid"
[ $cni_rc -ne 0 ] && [[ "$out" == *'"code":100'* && "$out" == *"$name-gone"* ]] ||
  fail "a netns gone before capture: exit $cni_rc, $out"
[ -z "$(enrolled_by vanished)" ] || fail "the pod whose netns was gone is enrolled"
before=$(podman exec "$name-node1-agent" nodewardctl --socket="$work/node1/run/admin.sock" bpf -o json |
  python3 -c 'import json, sys; print(len(json.load(sys.stdin).get("enrolled", [])))')
[ "$before" = 0 ] || fail "kernel state left for a pod never captured: $before enrolled netns"
kube DELETE "/api/v1/namespaces/shop/pods/$name-vanished" > /dev/null

echo "== time from container start to capture"
python3 - "$work/node1/run/cni.log" "$work/node2/run/cni.log" << 'EOF'
import json, statistics, sys
took = {}
for path in sys.argv[1:]:
    for line in open(path):
        entry = json.loads(line)
        if entry.get("command") == "ADD":
            took.setdefault(entry["outcome"], []).append(entry["tookMs"])
for outcome, values in sorted(took.items()):
    print(f"CNI ADD {outcome}: median {statistics.median(values)} ms, max {max(values)} ms, {len(values)} calls")
EOF
awk '{print "podman run " $1 ": " $2 " ms"}' "$work/podman-run-ms"

stop_capture() { sleep 0.3; kill "$capture_pid" 2> /dev/null; wait "$capture_pid" 2> /dev/null; }
stop_capture
on_wire "FIRST-BYTES-$name" && fail "the first bytes of shop/first crossed in plaintext"
on_wire "PLAIN-$name" || fail "legacy/plain's bytes did not cross in plaintext (was it captured?)"
on_wire "OPTOUT-$name" || fail "shop/optout's bytes did not cross in plaintext (was it captured?)"
on_wire "WAITED-$name" && fail "shop/waiting crossed in plaintext"
on_wire "STEADY-$name" && fail "shop/steady crossed in plaintext during the upgrade"
for i in $(seq "$on_from" "$on_to"); do
  on_wire "FLIP-$name-$i-" && fail "flip/flipper's connection $i crossed in plaintext while enrolled: $(grep " $i " "$work/flipper.log")"
done
on_wire "FLIP-$name-1-" || fail "flip/flipper's first connections were not plaintext"
on_wire "FLIP-$name-$off_from-" || fail "flip/flipper's connection $off_from, after release, was not plaintext"

echo "== resources of the DaemonSet's containers"
for c in agent sds; do
  id=$(podman inspect --format '{{.Id}}' "$name-node1-$c")
  dir=$(echo /sys/fs/cgroup/memory/"$cg"/node1-system/libpod-"$id"*)
  cpu=$(cat /sys/fs/cgroup/cpuacct/"$cg"/node1-system/libpod-"$id"*/cpuacct.usage 2> /dev/null)
  echo "$c: memory now $(($(cat "$dir/memory.usage_in_bytes") / 1048576)) MiB, peak $(($(cat "$dir/memory.max_usage_in_bytes") / 1048576)) MiB, CPU ${cpu:-0} ns since it started"
done

echo "== uninstall: the DaemonSet deleted, then its pods stopped"
[ "$(kube DELETE /apis/apps/v1/namespaces/nodeward-system/daemonsets/nodeward)" = 200 ] ||
  fail "DaemonSet delete"
for node in "${nodes[@]}"; do podman stop --time 30 "$name-$node-agent" "$name-$node-sds" > /dev/null; done
podman logs "$name-node1-agent" 2>&1 | grep -q "uninstalling from this node" || fail "node1's agent did not uninstall"
python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))' \
  "$work/node1/net.d/10-pods.conflist" "$work/node1/original.conflist" ||
  fail "node1's conflist is not as before: $(cat "$work/node1/net.d/10-pods.conflist")"
[ -e "$work/node1/bin/nodeward-cni" ] && fail "nodeward-cni left in node1's CNI bin directory"
compgen -G "/sys/fs/bpf/$cg-node1/*" > /dev/null && fail "pins left: $(ls /sys/fs/bpf/"$cg"-node1)"
start_pod node1 shop after '{}' 'exit 0' || fail "a pod could not start after the uninstall: $(cat "$work/pods/after")"
exit 0
