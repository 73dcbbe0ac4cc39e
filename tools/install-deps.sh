#!/usr/bin/env bash
# Installs every Debian package nodeward needs to build, test and run its sandbox.
# Idempotent: quiet and quick when everything is already there.
#   install-deps.sh         everything (make test, make bench, make image)
#   install-deps.sh build   only what building the binaries needs (deploy/Dockerfile)
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang llvm lld libclang-rt-14-dev
  # eBPF
  libbpf-dev bpftool libelf-dev zlib1g-dev
  # libraries
  liburing-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev libnghttp2-dev libyaml-cpp-dev
  # the agent: the system's roots, for TLS origination without caCertificates
  ca-certificates
  # fetching BoringSSL's source
  dpkg-dev
)
if [ "${1:-all}" != build ]; then
  PACKAGES+=(
    # tests and the sandbox: namespaces, traffic, captures
    iproute2 socat tcpdump procps util-linux curl openssl bsdextrautils python3 python3-yaml
    # make bench: the peer mTLS tunnels nodeward is measured against
    stunnel4 haproxy nginx libnginx-mod-stream
    # make image and the container runtime end-to-end test: a Debian root filesystem without a
    # registry, podman with its CNI backend (runc: crun refuses hybrid cgroups), the CNI
    # plugins the node's network is made of, busybox for the test pods
    mmdebstrap podman runc containernetworking-plugins busybox-static
  )
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root to install them" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
