#!/usr/bin/env bash
# Fetches BoringSSL's source from Debian (package android-libboringssl) into a cache folder
# outside git. Enables deb-src entries when the machine has none. Prints the source root.
set -euo pipefail

cache_dir="${1:?usage: fetch-boringssl.sh CACHE_DIR}"
mkdir -p "$cache_dir"

existing=$(find "$cache_dir" -maxdepth 2 -name android-sources.cmake -printf '%h\n' 2>/dev/null | head -n1)
if [ -n "$existing" ]; then
  echo "$existing"
  exit 0
fi

sources=/etc/apt/sources.list.d/debian.sources
if ! apt-get source --print-uris android-libboringssl >/dev/null 2>&1; then
  if [ -f "$sources" ] && ! grep -q '^Types:.*deb-src' "$sources"; then
    echo "fetch-boringssl: enabling deb-src in $sources" >&2
    sed -i 's/^Types: deb$/Types: deb deb-src/' "$sources"
  elif [ -f /etc/apt/sources.list ] && ! grep -q '^deb-src' /etc/apt/sources.list; then
    echo "fetch-boringssl: enabling deb-src in /etc/apt/sources.list" >&2
    sed -n 's/^deb \(.*\)/deb-src \1/p' /etc/apt/sources.list >>/etc/apt/sources.list
  fi
  apt-get update -qq
fi

(cd "$cache_dir" && apt-get source -qq android-libboringssl >/dev/null 2>&1) || {
  echo "fetch-boringssl: apt-get source android-libboringssl failed" >&2
  exit 1
}
root=$(find "$cache_dir" -maxdepth 2 -name android-sources.cmake -printf '%h\n' | head -n1)
[ -n "$root" ] || { echo "fetch-boringssl: no android-sources.cmake in the source package" >&2; exit 1; }
echo "$root"
