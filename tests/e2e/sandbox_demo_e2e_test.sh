#!/bin/bash
# End to end through `nodeward-sandbox demo`: the demo cluster of sandbox/demo/demo.yaml, its
# traffic matrix under tcpdump between the nodes, every result as its `expect:` says and no mTLS
# marker readable on the wire (exit 0); then a wrong expectation must fail the demo, and both
# runs must leave nothing behind.
#   sandbox_demo_e2e_test.sh NODEWARD_SANDBOX BIN_DIR DEMO_FILE
set -u

sandbox_bin=$1
bin_dir=$2
demo_file=$3
prefix=dm
source "$(dirname "$0")/e2e_lib.sh"

echo "== demo"
run_demo "$demo_file"
grep -q "mTLS (server saw spiffe://cluster.local/ns/frontend/sa/web)" "$work/out" ||
  fail "no mTLS row with the server's view of web"
grep -q "refused: " "$work/out" || fail "no refused row"
leftovers || fail "objects left after the demo"

echo "== a wrong expectation fails the demo and still tears down"
mkdir -p "$work/wrong"
cp -r "$(dirname "$demo_file")/config" "$work/wrong/"
sed -e '/^traffic:/,$d' "$demo_file" > "$work/wrong/demo.yaml"
cat >> "$work/wrong/demo.yaml" <<'YAML'
traffic:
- {from: old, to: api, port: 8080, expect: mtls}
YAML
"$sandbox_bin" demo "$work/wrong/demo.yaml" --bin-dir "$bin_dir" --name="$name" > "$work/out2"
rc=$?
cat "$work/out2"
[ "$rc" -ne 0 ] || fail "a wrong expectation passed"
grep -q "FAIL: expected mtls" "$work/out2" || fail "the table does not name the wrong expectation"
leftovers || fail "objects left after a failed demo"
