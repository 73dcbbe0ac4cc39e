# Shared by the data-plane end-to-end tests: root check, a unique sandbox name, a work
# directory, failure counting and a cleanup trap that removes the sandbox and checks that
# nothing of it is left. Source it after setting sandbox_bin and bin_dir; `prefix` (two
# letters) names the sandbox.
if [ "$(id -u)" != 0 ]; then
  echo "SKIP: needs root (network namespaces, cgroups, BPF)"
  exit 77
fi

source "$(dirname "${BASH_SOURCE[0]}")/e2e_common.sh"
name="${prefix}$$"
work=$(mktemp -d "/tmp/nodeward-e2e-$name.XXXXXX")
started=$(date +%s)
# Background processes of the test itself, stopped by pid in cleanup.
background_pids=()

# Everything of the sandbox that could remain on the machine; prints what it finds.
leftovers() {
  local found=0
  if ip netns list | grep -q "^nws-$name-"; then
    echo "left: netns $(ip netns list | grep "^nws-$name-" | tr '\n' ' ')"
    found=1
  fi
  if [ -e "/sys/fs/cgroup/unified/nodeward-sandbox-$name" ]; then
    echo "left: cgroup /sys/fs/cgroup/unified/nodeward-sandbox-$name"
    found=1
  fi
  if compgen -G "/sys/fs/bpf/nodeward-sandbox-$name-*" > /dev/null; then
    echo "left: pins $(echo /sys/fs/bpf/nodeward-sandbox-$name-*)"
    found=1
  fi
  if [ -e "/run/nodeward-sandbox/$name" ]; then
    echo "left: /run/nodeward-sandbox/$name"
    found=1
  fi
  # Live processes started for the sandbox (zombies of a non-reaping init do not count).
  if ps -eo stat=,args= | grep -v '^Z' | grep -F "/run/nodeward-sandbox/$name/" | grep -vq grep; then
    echo "left: processes"
    ps -eo pid=,stat=,args= | grep -F "/run/nodeward-sandbox/$name/" | grep -v grep
    found=1
  fi
  return $found
}

cleanup() {
  local code=$?
  local pid
  for pid in "${background_pids[@]}"; do kill "$pid" 2> /dev/null; done
  if [ $failures -ne 0 ] || [ $code -ne 0 ]; then
    for log in "/run/nodeward-sandbox/$name"/*/*.log; do
      [ -e "$log" ] && { echo "---- $log"; tail -n 30 "$log"; }
    done
  fi
  "$sandbox_bin" down "$name" > /dev/null || echo "FAIL: down in cleanup"
  for pid in "${background_pids[@]}"; do wait "$pid" 2> /dev/null; done
  rm -rf "$work"
  verdict "$code"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

run_dir="/run/nodeward-sandbox/$name"

# up_mesh [LINE...]: the shared two-node topology (tests/e2e/mesh) up as $name, each LINE
# appended to its mesh.yaml first.
up_mesh() {
  cp -r "$(dirname "$0")/mesh/." "$work/"
  local line
  for line in "$@"; do echo "$line" >> "$work/mesh.yaml"; done
  "$sandbox_bin" up "$work/mesh.yaml" --bin-dir "$bin_dir" --name="$name" > "$work/up.log" ||
    { cat "$work/up.log"; fail "up"; exit 1; }
}

# run_demo FILE: `nodeward-sandbox demo FILE` as $name, its output also in $work/out; a failure
# unless it exits 0 and says PASS.
run_demo() {
  "$sandbox_bin" demo "$1" --bin-dir "$bin_dir" --name="$name" | tee "$work/out"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || fail "demo exited $rc"
  grep -q "^demo: PASS" "$work/out" || fail "no 'demo: PASS'"
}

# in_pod POD CMD...: CMD inside POD (netns and node cgroup).
in_pod() {
  local pod=$1
  shift
  "$sandbox_bin" exec "$name" "$pod" -- "$@"
}

# Starts tcpdump on the wire between the nodes (the fabric netns), writing $work/wire.pcap.
start_capture() {
  ip netns exec "nws-$name-fabric" tcpdump -i any -n -U --immediate-mode -s 65535 -B 16384 \
    -Z root -w "$work/wire.pcap" > "$work/tcpdump.log" 2>&1 &
  capture_pid=$!
  background_pids+=("$capture_pid")
  local i
  for i in $(seq 100); do
    grep -q "listening on" "$work/tcpdump.log" && return 0
    sleep 0.1
  done
  fail "tcpdump is not capturing: $(cat "$work/tcpdump.log")"
  return 1
}

stop_capture() {
  sleep 0.3
  kill "$capture_pid" 2> /dev/null
  wait "$capture_pid" 2> /dev/null
}

# on_wire TEXT: the capture holds TEXT.
on_wire() { grep -aqF "$1" "$work/wire.pcap"; }
