#!/usr/bin/env bash
# Fails when any given binary has an SSL_, EVP_ or X509_ symbol in its dynamic symbol table,
# defined or undefined: either would let OpenSSL and BoringSSL bind to each other.
set -uo pipefail
status=0
for bin in "$@"; do
  if [ ! -f "$bin" ]; then
    echo "missing binary: $bin"
    status=1
    continue
  fi
  hits=$(nm -D "$bin" 2>/dev/null | grep -E ' (SSL|EVP|X509)_' || true)
  if [ -n "$hits" ]; then
    echo "$bin has TLS symbols in its dynamic table:"
    echo "$hits" | head -n 10
    status=1
  fi
done
[ $status -eq 0 ] && echo "checked $# binaries: no SSL_/EVP_/X509_ dynamic symbols"
exit $status
