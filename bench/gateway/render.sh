#!/usr/bin/env bash
# Renders a peer configuration template of bench/gateway: every @NAME@ replaced by the value
# given as NAME=VALUE; fails, naming them, when tokens are left without a value.
#
#   bench/gateway/render.sh TEMPLATE NAME=VALUE... > CONFIG
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 TEMPLATE NAME=VALUE..." >&2; exit 2; }
template=$1
shift
text=$(cat "$template")
for pair in "$@"; do
  name=${pair%%=*}
  value=${pair#*=}
  [[ "$name" =~ ^[A-Z_]+$ ]] || { echo "render: bad name in '$pair'" >&2; exit 2; }
  text=${text//@"$name"@/$value}
done
left=$(grep -o '@[A-Z_]*@' <<<"$text" | sort -u | tr '\n' ' ' || true)
if [ -n "$left" ]; then
  echo "render: $template: no value for $left" >&2
  exit 1
fi
printf '%s\n' "$text"
