#!/usr/bin/env bash
# Renders every peer template of bench/gateway with throwaway certificates and has nginx and
# HAProxy check the result (nginx -t, haproxy -c), so a template that would not start is found
# before a benchmark run. Needs nginx (with its stream module), haproxy and openssl.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
for tool in nginx haproxy openssl; do
  command -v "$tool" >/dev/null || { echo "check_templates: $tool is not installed" >&2; exit 1; }
done
[ -f "$MODULE" ] || { echo "check_templates: $MODULE is missing (libnginx-mod-stream)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/nodeward-gateway-templates.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# A P-256 CA and two leaves, as bench/mesh's `mesh_bench certs` lays them out.
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/ca.key" 2>/dev/null
openssl req -x509 -new -key "$WORK/ca.key" -subj /CN=bench-ca -days 1 -out "$WORK/ca.pem" 2>/dev/null
for name in server.bench client.bench; do
  openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/$name.key" 2>/dev/null
  openssl req -new -key "$WORK/$name.key" -subj "/CN=$name" -out "$WORK/$name.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$name" >"$WORK/$name.ext"
  openssl x509 -req -in "$WORK/$name.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 1 -extfile "$WORK/$name.ext" -out "$WORK/$name.crt" 2>/dev/null
  cat "$WORK/$name.crt" "$WORK/$name.key" >"$WORK/$name.pem"
done

VALUES=(
  NGINX_STREAM_MODULE="$MODULE" WORK="$WORK" CA="$WORK/ca.pem"
  SIMPLE_PORT=18443 PASSTHROUGH_PORT=18444 HOP_PORT=18445 DESTINATION_TLS_PORT=18446 APP_PORT=9000
  GATEWAY_CRT="$WORK/server.bench.crt" GATEWAY_KEY="$WORK/server.bench.key"
  GATEWAY_PEM="$WORK/server.bench.pem" SNI=server.bench
  HOP_ADDRESS=10.0.0.2:18445 HOP_NAME=server.bench
  HOP_CLIENT_CRT="$WORK/client.bench.crt" HOP_CLIENT_KEY="$WORK/client.bench.key"
  HOP_CLIENT_PEM="$WORK/client.bench.pem"
  HOP_SERVER_CRT="$WORK/server.bench.crt" HOP_SERVER_KEY="$WORK/server.bench.key"
  HOP_SERVER_PEM="$WORK/server.bench.pem"
  DESTINATION_TLS_ADDRESS=10.0.0.2:18446
)

failed=0
for template in "$HERE"/*.in; do
  name=$(basename "$template" .in)
  "$HERE/render.sh" "$template" "${VALUES[@]}" >"$WORK/$name"
  case "$name" in
    nginx-*) check=(nginx -t -q -p "$WORK" -e "$WORK/$name.check.log" -c "$WORK/$name") ;;
    haproxy-*) check=(haproxy -c -f "$WORK/$name") ;;
    *) echo "check_templates: no checker for $name" >&2; failed=1; continue ;;
  esac
  if ! "${check[@]}" >"$WORK/$name.out" 2>&1; then
    echo "check_templates: $name does not pass ${check[0]}:" >&2
    cat "$WORK/$name.out" >&2
    failed=1
  fi
done
exit "$failed"
