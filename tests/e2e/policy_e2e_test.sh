#!/bin/bash
# Istio's policy semantics end to end (tests/e2e/policy/policy.yaml through
# `nodeward-sandbox demo`): PERMISSIVE by default with auto mTLS, STRICT, PeerAuthentication
# DISABLE, port-level modes through named target ports, DestinationRule DISABLE toward STRICT,
# ISTIO_MUTUAL toward a pod outside the mesh, and SIMPLE TLS origination with the right and a
# wrong subjectAltName, with a caCrl that revokes the server and without caCertificates (the
# system's roots, which do not trust the sandbox's CA). Each call is checked on the wire, in
# what the server received and in the access log.
#   policy_e2e_test.sh NODEWARD_SANDBOX BIN_DIR
set -u
sandbox_bin=$1
bin_dir=$2
prefix=po
source "$(dirname "$0")/e2e_lib.sh"

# The file and its configuration, with a fresh CA and server certificate for ext.
cp -r "$(dirname "$0")/policy/." "$work/"
"$sandbox_bin" pki --out="$work/pki" --dns=ext.external.svc.cluster.local ||
  { fail "pki"; exit 1; }
sed -i "s|@PKI_DIR@|$work/pki|g" "$work/config/destination-rules.yaml"

run_demo "$work/policy.yaml"
grep -q "mTLS (server saw spiffe://cluster.local/ns/mesh-a/sa/client)" "$work/out" ||
  fail "no mTLS row with the server's view of the client"
