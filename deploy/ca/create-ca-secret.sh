#!/usr/bin/env bash
# Makes the mesh's root CA for the built-in CA and prints it as the Secret nodeward-ca (in
# nodeward-system) that every node's nodeward-sds signs with:
#   deploy/ca/create-ca-secret.sh | kubectl apply -f -
#   deploy/ca/create-ca-secret.sh --from-dir DIR | kubectl apply -f -   # an existing CA:
#                                                        # DIR/ca-cert.pem and DIR/ca-key.pem
# Options: --trust-domain TD (cluster.local), --days N (3650), --out-dir DIR (also keep the
# files there, for a second cluster or a backup). The key is written nowhere else.
set -euo pipefail

trust_domain=cluster.local
days=3650
from_dir=
out_dir=
while [ $# -gt 0 ]; do
  case "$1" in
    --trust-domain) trust_domain=${2:?}; shift 2 ;;
    --days) days=${2:?}; shift 2 ;;
    --from-dir) from_dir=${2:?}; shift 2 ;;
    --out-dir) out_dir=${2:?}; shift 2 ;;
    *) echo "create-ca-secret: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v openssl > /dev/null || { echo "create-ca-secret: needs openssl" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077
if [ -n "$from_dir" ]; then
  cp "$from_dir/ca-cert.pem" "$from_dir/ca-key.pem" "$work/"
else
  # As the built-in CA makes its own root: ECDSA P-256, O=<trust domain>, CA:TRUE.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -subj "/O=$trust_domain" -keyout "$work/ca-key.pem" -out "$work/ca-cert.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2> "$work/openssl.log" ||
    { cat "$work/openssl.log" >&2; exit 1; }
fi
openssl x509 -in "$work/ca-cert.pem" -noout 2> /dev/null ||
  { echo "create-ca-secret: ca-cert.pem is not a certificate" >&2; exit 1; }
if [ -n "$out_dir" ]; then
  mkdir -p "$out_dir"
  cp "$work/ca-cert.pem" "$work/ca-key.pem" "$out_dir/"
fi
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: nodeward-ca
  namespace: nodeward-system
type: Opaque
data:
  ca-cert.pem: $(base64 -w0 < "$work/ca-cert.pem")
  ca-key.pem: $(base64 -w0 < "$work/ca-key.pem")
YAML
