#!/usr/bin/env bash
# Installs every Debian package nodeward needs to build, test and run its sandbox.
# Idempotent: quiet and quick when everything is already there.
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
  # tests and the sandbox: namespaces, traffic, captures
  iproute2 socat tcpdump procps util-linux curl openssl bsdextrautils python3 python3-yaml
  # make bench: the peer mTLS tunnels nodeward is measured against
  stunnel4 haproxy nginx libnginx-mod-stream
)

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
