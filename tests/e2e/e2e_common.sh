# What every end-to-end test script shares, whatever it runs on: failure counting and the
# verdict at the end of its cleanup. Source it first; set `started` (date +%s) early.
failures=0

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# verdict CODE: after cleanup, checks nothing is left (the caller's `leftovers`), prints the
# time taken and PASS, and exits with the test's status.
verdict() {
  leftovers || { echo "FAIL: objects left after cleanup"; exit 1; }
  echo "took $(($(date +%s) - started))s"
  [ $failures -eq 0 ] && [ "$1" -eq 0 ] && echo "PASS" && exit 0
  exit 1
}
