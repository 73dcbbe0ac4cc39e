#!/bin/bash
# The ingress gateway as clients outside the cluster see it (tests/e2e/gateway/gateway.yaml):
# nodeward-gateway in istio-ingress/gw on node1, the real openssl and curl in the sandbox's
# outside network, destinations in backend (STRICT) on node2.
#  1. SIMPLE: curl --cacert and openssl s_client with SNI reach backend/api; the application
#     answers, the destination's agent saw the gateway's SPIFFE ID over HBONE mTLS, and no
#     marker crossed the wire between the nodes readable;
#  2. two hosts on port 443 served by SNI with their own certificates; an unknown SNI and no
#     SNI are refused at the handshake;
#  3. MUTUAL: no client certificate, one from another CA: refused; the right one: served;
#     ISTIO_MUTUAL: only a certificate of the mesh CA with a SPIFFE ID is served;
#  4. PASSTHROUGH: the certificate the client sees is the destination pod's own, and SNI routes
#     between two destinations;
#  5. a TCP server route;
#  6. the Secret rotated under traffic: no call fails, new connections get the new certificate;
#  7. backend/api is STRICT: the same outside client dialling it directly is refused;
#  nodewardctl against the gateway: listeners, certificates (the rotated one), policy explain
#  --gateway; Istio's metrics with reporter="source" and the gateway's workload;
#  bad input: a ClientHello sent a byte at a time is served; a truncated one, plaintext on a
#  TLS port and an oversized SNI are closed and counted by reason; 100 clients that never
#  send a byte hold no more than their share of pending handshakes while others are served.
#   gateway_e2e_test.sh NODEWARD_SANDBOX BIN_DIR
set -u
sandbox_bin=$1
bin_dir=$2
prefix=gw
source "$(dirname "$0")/e2e_lib.sh"

gw=10.241.1.2 api=10.241.2.2
pki="$work/pki"
mkdir -p "$pki"

# ca NAME: a CA certificate and key, pki/NAME.pem and pki/NAME.key.
ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$1" -keyout "$pki/$1.key" -out "$pki/$1.pem" 2> /dev/null ||
    { fail "openssl: CA $1"; exit 1; }
}
# leaf NAME CA DNS_NAME: pki/NAME.pem (+ .key) for DNS_NAME (subject and SAN), signed by pki/CA.
leaf() {
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$3" \
    -addext "subjectAltName=DNS:$3" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2> /dev/null &&
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/$2.pem" -CAkey "$pki/$2.key" \
      -CAcreateserial -days 1 -copy_extensions copy -out "$pki/$1.pem" 2> /dev/null ||
    { fail "openssl: certificate $1"; exit 1; }
}
ca outside-ca
ca client-ca
ca rogue-ca
for host in api web secure pass-a pass-b; do leaf $host outside-ca "$host.example.com"; done
leaf client client-ca client.example.com
leaf rogue rogue-ca client.example.com

b64() { base64 -w0 < "$1"; }
# tls_secret NAME CERT [CA]: a kubernetes.io/tls Secret in istio-ingress.
tls_secret() {
  printf -- '---\napiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: istio-ingress}\n' "$1"
  printf 'type: kubernetes.io/tls\ndata:\n  tls.crt: %s\n  tls.key: %s\n' \
    "$(b64 "$pki/$2.pem")" "$(b64 "$pki/$2.key")"
  [ $# -lt 3 ] || printf '  ca.crt: %s\n' "$(b64 "$pki/$3.pem")"
}

cp -r "$(dirname "$0")/gateway/." "$work/"
{
  tls_secret api-cert api
  tls_secret web-cert web
  tls_secret secure-cert secure client-ca
} > "$work/config/secrets.yaml"
"$sandbox_bin" up "$work/gateway.yaml" --bin-dir "$bin_dir" --name="$name" > "$work/up.log" ||
  { cat "$work/up.log"; fail "up"; exit 1; }

outside() { "$sandbox_bin" exec "$name" outside -- "$@"; }

# s_client PORT SNI TEXT [ARGS...]: TEXT sent over TLS from outside, the reply on stdout, the
# handshake's complaints in $work/s_client.err; the server verified against $s_client_ca.
s_client() {
  local port=$1 sni=$2 text=$3
  shift 3
  (printf '%s\n' "$text"; sleep 2) |
    outside timeout 10 openssl s_client -connect "$gw:$port" ${sni:+-servername "$sni"} \
      -CAfile "${s_client_ca:-$pki/outside-ca.pem}" -verify_return_error -quiet "$@" 2> "$work/s_client.err"
}
# served_subject PORT SNI: the subject of the certificate served for SNI.
served_subject() {
  outside timeout 10 openssl s_client -connect "$gw:$1" -servername "$2" < /dev/null 2> /dev/null |
    openssl x509 -noout -subject 2> /dev/null
}
metrics() { in_pod gw curl -s http://127.0.0.1:15020/metrics; }

# The gateway serves once it has its configuration, its certificate and its ports.
for i in $(seq 100); do
  in_pod gw curl -sf http://127.0.0.1:15021/healthz/ready > /dev/null && break
  sleep 0.2
done
ready=$(in_pod gw curl -s http://127.0.0.1:15021/healthz/ready)
[ "$ready" = ready ] || fail "gateway not ready: $ready"

# 1. SIMPLE, through the mesh, with curl and openssl.
start_capture
reply=$(outside curl -sS --http0.9 --max-time 10 --cacert "$pki/outside-ca.pem" \
  --resolve "api.example.com:443:$gw" https://api.example.com/GW-MARKER-CURL 2>&1)
[[ "$reply" == "from=$gw:"*"got=GET /GW-MARKER-CURL"* ]] &&
  echo "ok: curl --cacert reached backend/api through the gateway: $reply" ||
  fail "curl through the gateway: $reply"
reply=$(s_client 443 api.example.com GW-MARKER-SIMPLE)
[[ "$reply" == *"got=GW-MARKER-SIMPLE"* ]] &&
  echo "ok: openssl s_client -servername api.example.com served" ||
  fail "s_client api.example.com: $reply $(cat "$work/s_client.err")"
stop_capture
if on_wire GW-MARKER-SIMPLE || on_wire GW-MARKER-CURL; then
  fail "a marker crossed the wire between the nodes readable"
else
  echo "ok: no marker readable on the wire between the nodes"
fi
gateway_id=spiffe://cluster.local/ns/istio-ingress/sa/gateway
for i in $(seq 20); do
  grep -q "\"source_principal\":\"$gateway_id\"" "$run_dir/node2/access.log" && break
  sleep 0.1
done
if grep "\"source_principal\":\"$gateway_id\"" "$run_dir/node2/access.log" |
  grep -q '"mode":"hbone_mtls"'; then
  echo "ok: backend/api's agent saw $gateway_id over HBONE mTLS"
else
  fail "node2 saw no HBONE connection from $gateway_id: $(tail -n 3 "$run_dir/node2/access.log")"
fi

# 2. Two hosts on 443 by SNI; unknown SNI and no SNI refused.
subject=$(served_subject 443 api.example.com)
[[ "$subject" == *"CN = api.example.com"* ]] || fail "api.example.com served $subject"
subject=$(served_subject 443 web.example.com)
[[ "$subject" == *"CN = web.example.com"* ]] &&
  echo "ok: port 443 serves api.example.com and web.example.com with their own certificates" ||
  fail "web.example.com served $subject"
reply=$(s_client 443 web.example.com GW-WEB)
[[ "$reply" == "from=$gw:"*"got=GW-WEB"* ]] || fail "web.example.com not served: $reply"
reply=$(s_client 443 unknown.example.com GW-UNKNOWN)
[[ "$reply" != *"got="* ]] && echo "ok: an unknown SNI is refused" ||
  fail "unknown.example.com was served: $reply"
reply=$(s_client 443 "" GW-NOSNI -noservername)
[[ "$reply" != *"got="* ]] && echo "ok: no SNI is refused" || fail "a client without SNI was served"

# 3. MUTUAL.
reply=$(s_client 8443 secure.example.com GW-NOCERT)
[[ "$reply" != *"got="* ]] && echo "ok: MUTUAL without a client certificate refused" ||
  fail "MUTUAL served a client without a certificate"
reply=$(s_client 8443 secure.example.com GW-ROGUE -cert "$pki/rogue.pem" -key "$pki/rogue.key")
[[ "$reply" != *"got="* ]] && echo "ok: MUTUAL with a certificate of another CA refused" ||
  fail "MUTUAL served a certificate of another CA"
reply=$(s_client 8443 secure.example.com GW-CLIENT -cert "$pki/client.pem" -key "$pki/client.key")
[[ "$reply" == *"got=GW-CLIENT"* ]] && echo "ok: MUTUAL with the right client certificate served" ||
  fail "MUTUAL refused the right client certificate: $reply $(cat "$work/s_client.err")"

# 3b. ISTIO_MUTUAL: only a mesh workload's certificate (the mesh CA's, with a SPIFFE ID); the
# gateway presents its own mesh certificate.
mesh_leaf() {  # NAME SAN: pki/NAME.pem (+ .key) for SAN, signed by the sandbox's mesh CA
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/O=$1" \
    -addext "subjectAltName=$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2> /dev/null &&
    openssl x509 -req -in "$pki/$1.csr" -CA "$run_dir/ca/ca-cert.pem" \
      -CAkey "$run_dir/ca/ca-key.pem" -CAcreateserial -CAserial "$pki/mesh.srl" -days 1 \
      -copy_extensions copy -out "$pki/$1.pem" 2> /dev/null || fail "openssl: mesh certificate $1"
}
mesh_leaf mesh-workload URI:spiffe://cluster.local/ns/shop/sa/web
mesh_leaf mesh-dns-only DNS:mesh.example.com
s_client_ca=$run_dir/ca/ca-cert.pem
reply=$(s_client 15443 mesh.example.com GW-MESH-NOCERT)
[[ "$reply" != *"got="* ]] && echo "ok: ISTIO_MUTUAL without a client certificate refused" ||
  fail "ISTIO_MUTUAL served a client without a certificate"
reply=$(s_client 15443 mesh.example.com GW-MESH-OUTSIDE -cert "$pki/client.pem" \
  -key "$pki/client.key")
[[ "$reply" != *"got="* ]] && echo "ok: ISTIO_MUTUAL with a certificate of another CA refused" ||
  fail "ISTIO_MUTUAL served a certificate of another CA"
reply=$(s_client 15443 mesh.example.com GW-MESH-DNS -cert "$pki/mesh-dns-only.pem" \
  -key "$pki/mesh-dns-only.key")
[[ "$reply" != *"got="* ]] &&
  echo "ok: ISTIO_MUTUAL with a mesh CA certificate without a SPIFFE ID refused" || fail "ISTIO_MUTUAL served a certificate without a SPIFFE ID"
reply=$(s_client 15443 mesh.example.com GW-MESH -cert "$pki/mesh-workload.pem" \
  -key "$pki/mesh-workload.key")
[[ "$reply" == *"got=GW-MESH"* ]] &&
  echo "ok: ISTIO_MUTUAL served a mesh workload, the gateway's mesh certificate verified" ||
  fail "ISTIO_MUTUAL refused a mesh workload: $reply $(cat "$work/s_client.err")"
unset s_client_ca

# 4. PASSTHROUGH: the destination's own certificate, chosen by SNI.
for host in pass-a pass-b; do
  subject=$(served_subject 9443 $host.example.com)
  [[ "$subject" == *"CN = $host.example.com"* ]] &&
    echo "ok: PASSTHROUGH $host.example.com: the client sees the destination's own certificate" ||
    fail "PASSTHROUGH $host.example.com saw $subject"
  reply=$(s_client 9443 $host.example.com "GW-$host")
  [[ "$reply" == *"got=GW-$host"* ]] || fail "PASSTHROUGH $host not served: $reply"
done

# 5. TCP.
reply=$(outside "$sandbox_bin" app call --to="$gw:9000" --send=GW-TCP)
[[ "$reply" == "from=$gw:"*"got=GW-TCP"* ]] && echo "ok: the TCP server route reaches backend/api" ||
  fail "TCP route: $reply"

# 7. STRICT: the outside client cannot skip the gateway.
reply=$(outside "$sandbox_bin" app call --to="$api:8080" --send=GW-DIRECT)
[[ "$reply" != *"got="* ]] && echo "ok: backend/api refuses the outside client dialling it directly" ||
  fail "the outside client reached the STRICT pod directly: $reply"

# 6. Rotation under traffic.
leaf api-next outside-ca api.example.com
before=$(served_subject 443 api.example.com)
: > "$work/rotation.log"
(
  for i in $(seq 12); do
    r=$(s_client 443 api.example.com "GW-ROT-$i")
    [[ "$r" == *"got=GW-ROT-$i"* ]] && echo ok >> "$work/rotation.log" ||
      echo "fail $i: $r" >> "$work/rotation.log"
  done
) &
traffic=$!
background_pids+=("$traffic")
sleep 3
tls_secret api-cert api-next > "$work/api-next.yaml"
sed -i "s|tls.crt: $(b64 "$pki/api.pem")|tls.crt: $(b64 "$pki/api-next.pem")|;
        s|tls.key: $(b64 "$pki/api.key")|tls.key: $(b64 "$pki/api-next.key")|" \
  "$run_dir/config/secrets.yaml"
wait "$traffic"
[ "$(grep -c '^ok' "$work/rotation.log")" = 12 ] &&
  echo "ok: 12 calls while the Secret was replaced, none failed" ||
  fail "calls failed during rotation: $(grep -v '^ok' "$work/rotation.log")"
serial_next=$(openssl x509 -in "$pki/api-next.pem" -noout -serial)
for i in $(seq 50); do
  served=$(outside timeout 10 openssl s_client -connect "$gw:443" -servername api.example.com \
    < /dev/null 2> /dev/null | openssl x509 -noout -serial 2> /dev/null)
  [ "$served" = "$serial_next" ] && break
  sleep 0.2
done
[ "$served" = "$serial_next" ] && echo "ok: new connections get the rotated certificate" ||
  fail "after the Secret changed the gateway serves $served, not $serial_next"

# Seeing into it: nodewardctl in the gateway's pod, its metrics.
ctl() { in_pod gw "$bin_dir/nodewardctl" "$@"; }
listeners=$(ctl gateway listeners)
echo "$listeners"
for row in "443 *TLS *ok *api.example.com *SIMPLE" "443 *TLS *ok *web.example.com *SIMPLE" \
  "8443 *TLS *ok *secure.example.com *MUTUAL" "15443 *TLS *ok *mesh.example.com *ISTIO_MUTUAL" \
  "9443 *TLS *ok *pass-a.example.com *PASSTHROUGH" \
  "9000 *TCP *ok"; do
  grep -qE "^$row" <<< "$listeners" || fail "gateway listeners has no row like '$row'"
done
certs=$(ctl gateway certs)
echo "$certs"
serial_hex=$(openssl x509 -in "$pki/api-next.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
grep "api.example.com" <<< "$certs" | grep -q "serving" &&
  grep -q "CN=api.example.com" <<< "$certs" || fail "gateway certs does not show api.example.com serving"
ctl gateway certs -o json | tr 'A-F' 'a-f' | grep -q "\"serial\": \"0*${serial_hex#0}\"" ||
  fail "gateway certs -o json does not show the rotated certificate's serial $serial_hex"
explain=$(ctl policy explain --gateway=9443 --sni=pass-a.example.com)
echo "$explain"
grep -q "^ACTION  *PASSTHROUGH" <<< "$explain" && grep -q "^UPSTREAM  *HBONE" <<< "$explain" &&
  grep -q "double encryption" <<< "$explain" ||
  fail "policy explain --gateway=9443 does not say PASSTHROUGH inside HBONE"
explain=$(ctl policy explain --gateway=443 --sni=nobody.example.com)
grep -q "^ACTION  *REFUSE" <<< "$explain" && grep -q "no_filter_chain" <<< "$explain" ||
  fail "policy explain of an unknown SNI: $explain"
opened=$(metrics | grep '^istio_tcp_connections_opened_total' | grep 'reporter="source"' |
  grep 'source_workload="gw"' | grep 'destination_workload="api"' |
  grep 'connection_security_policy="mutual_tls"')
[ -n "$opened" ] && echo "ok: $opened" ||
  fail "no istio_tcp_connections_opened_total from the gateway (reporter=source) to api"

# Bad input.
# hello.py MODE: a real ClientHello (Python's ssl, SNI api.example.com or the one given) sent to
# the gateway's 443 as MODE says; prints what came back.
cat > "$work/hello.py" <<'EOF'
import socket, ssl, sys, time
host, ca, mode = sys.argv[1], sys.argv[2], sys.argv[3]
sni = sys.argv[4] if len(sys.argv) > 4 else "api.example.com"
context = ssl.create_default_context(cafile=ca)
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = outgoing.read()
sock = socket.create_connection((host, 443), timeout=10)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def closed():
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
if mode == "truncated":  # half of it, then the end of the stream
    sock.sendall(hello[: len(hello) // 2])
    sock.shutdown(socket.SHUT_WR)
    print("closed" if closed() else "open")
    sys.exit()
if mode == "whole":  # the hello in one piece: the gateway answers or closes
    sock.sendall(hello)
    print("closed" if closed() else "answered")
    sys.exit()
for byte in hello:  # "split": one byte at a time, then the handshake and a call
    sock.send(bytes([byte]))
    time.sleep(0.003)
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        if pending := outgoing.read():
            sock.sendall(pending)
        data = sock.recv(65536)
        if not data:
            sys.exit("closed during the handshake")
        incoming.write(data)
tls.write(b"GW-SPLIT\n")
sock.sendall(outgoing.read())
reply = b""
while b"got=" not in reply:
    data = sock.recv(65536)
    if not data:
        break
    incoming.write(data)
    try:
        reply += tls.read()
    except ssl.SSLWantReadError:
        pass
print(reply.decode(errors="replace"), "in", len(hello), "one-byte segments")
EOF
hello() { outside timeout 20 python3 "$work/hello.py" "$gw" "$pki/outside-ca.pem" "$@" 2>&1; }
reply=$(hello split)
[[ "$reply" == *"got=GW-SPLIT"* ]] && echo "ok: a ClientHello sent a byte at a time is served: $reply" ||
  fail "a split ClientHello: $reply"
reply=$(hello truncated)
[ "$reply" = closed ] && echo "ok: a truncated ClientHello is closed" || fail "truncated: $reply"
long_sni="$(printf 'a%.0s' $(seq 60)).$(printf 'b%.0s' $(seq 60)).$(printf 'c%.0s' $(seq 60))"
long_sni="$long_sni.$(printf 'd%.0s' $(seq 60)).example.com"  # 255 bytes: over DNS's 253
reply=$(hello whole "$long_sni")
[ "$reply" = closed ] && echo "ok: an SNI of ${#long_sni} bytes is closed" || fail "long SNI: $reply"
reply=$(outside "$sandbox_bin" app call --to="$gw:443" --send="GET / HTTP/1.1")
[[ "$reply" != *"got="* ]] && echo "ok: plaintext on a TLS port is closed" ||
  fail "plaintext on 443 was carried: $reply"
counters=$(metrics | grep '^nodeward_gateway_client_hello_failures_total')
echo "$counters"
for reason in truncated sni_too_long not_tls; do
  grep -q "reason=\"$reason\"} [1-9]" <<< "$counters" || fail "no ClientHello failure counted as $reason"
done
counters=$(metrics | grep -E '^nodeward_gateway_(refusals|tls_handshake_failures)_total')
echo "$counters"
grep -q 'refusals_total{reason="no_filter_chain"} [1-9]' <<< "$counters" ||
  fail "the unknown SNI was not counted as no_filter_chain"
for reason in client_certificate_required client_certificate_untrusted; do
  grep -q "handshake_failures_total{reason=\"$reason\"} [1-9]" <<< "$counters" ||
    fail "MUTUAL's refusal not counted as $reason"
done

# 100 clients that connect and never send a byte: beyond one source's 64 they are reset at
# once, the rest when the handshake timeout (10 s) passes; others are served meanwhile.
outside python3 "$(dirname "$0")/stall_clients.py" $gw 443 100 > "$work/stall.log" 2>&1 &
stall=$!
background_pids+=("$stall")
for i in $(seq 40); do grep -q "within 2s" "$work/stall.log" && break; sleep 0.1; done
pending=$(metrics | awk '/^nodeward_handshakes_pending / {print $2}')
echo "gateway handshakes pending while stalled: ${pending:-none}"
[ "${pending:-0}" -eq 64 ] || fail "nodeward_handshakes_pending is ${pending:-absent}, want 64"
reply=$(nsenter --net="/run/netns/nws-$name-node2" timeout 10 openssl s_client -connect "$gw:443" -servername api.example.com \
  -CAfile "$pki/outside-ca.pem" -verify_return_error -quiet < <(printf 'GW-DURING-STALL\n'; sleep 2) 2>&1)
[[ "$reply" == *"got=GW-DURING-STALL"* ]] ||
  fail "another client was not served while 64 stalled: $reply"
for i in $(seq 150); do grep -q "closed within [0-9]*s: 100" "$work/stall.log" && break; sleep 0.1; done
cat "$work/stall.log"
quick=$(awk '/within 2s/ {print $NF}' "$work/stall.log")
[ "${quick:-0}" -ge 36 ] || fail "only ${quick:-none} of 100 stalled connections were refused at once"
grep -qE "closed within ([0-9]|1[0-3])s: 100" "$work/stall.log" ||
  fail "the stalled connections were not all closed by the handshake timeout"
kill "$stall" 2> /dev/null
dropped=$(metrics | grep '^nodeward_handshakes_dropped_total')
echo "$dropped"
grep -q 'reason="timeout"} [1-9]' <<< "$dropped" || fail "no handshake timeout counted"
