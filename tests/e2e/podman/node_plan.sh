# How the runtime end-to-end test runs the DaemonSet on one of its nodes, shared with
# deploy_render_test.sh so the two cannot drift: node_plan NODE MANIFESTS prints daemonset.py's
# plan. It moves the node's paths into the test's work directory and changes exactly two flags
# of the agent: the cgroup it attaches to (the test's own, never the machine's root) and its
# pin directory (one per test node). Everything else is the DaemonSet as rendered.
# Needs: name (the test's unique name), work, image, api (HOST:PORT), node_ip_NODE.
node_plan() {
  local node=$1 manifests=$2 ip_var="node_ip_$1"
  python3 "$(dirname "${BASH_SOURCE[0]}")/daemonset.py" --manifests "$manifests" \
    --node "$node" --node-ip "${!ip_var}" --prefix "$name" --image "$image" --api "$api" \
    --token-dir "$work/sa" --cgroup-parent "/nodeward-e2e-$name/$node-system" \
    --host-path "/var/run/nodeward=$work/$node/run" --host-path "/var/lib/nodeward=$work/$node/lib" \
    --host-path "/etc/cni/net.d=$work/$node/net.d" --host-path "/opt/cni/bin=$work/$node/bin" \
    --arg "agent:attach-cgroup=/host/sys/fs/cgroup/unified/nodeward-e2e-$name/$node" \
    --arg "agent:bpf-pin-path=/sys/fs/bpf/nodeward-e2e-$name-$node" \
    --secret "nodeward-ca=$work/ca"
}
