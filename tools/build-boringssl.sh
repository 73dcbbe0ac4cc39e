#!/usr/bin/env bash
# Builds and installs static BoringSSL into CACHE_DIR/install, once. Later calls return at
# once, so a fresh clone on the same machine reuses it.
set -euo pipefail

cache_dir="${1:?usage: build-boringssl.sh CACHE_DIR}"
here="$(cd "$(dirname "$0")" && pwd)"
install_dir="$cache_dir/install"
stamp="$install_dir/.built-$(sha256sum "$here/boringssl/CMakeLists.txt" | cut -c1-16)"

if [ -f "$stamp" ]; then
  exit 0
fi

source_dir="$("$here/fetch-boringssl.sh" "$cache_dir/src")"
echo "build-boringssl: building static BoringSSL from $source_dir"
rm -rf "$cache_dir/build" "$install_dir"
cmake -G Ninja -S "$here/boringssl" -B "$cache_dir/build" \
  -DCMAKE_BUILD_TYPE=Release -DBORINGSSL_SOURCE="$source_dir" \
  -DCMAKE_INSTALL_PREFIX="$install_dir" >/dev/null
cmake --build "$cache_dir/build" -j "$(nproc)" >/dev/null
cmake --install "$cache_dir/build" >/dev/null
touch "$stamp"
