#!/bin/bash
# The image the runtime end-to-end test runs, built once per test run by `make image`'s script
# from this build's binaries, named by their content so builds of other trees on the machine
# do not replace it. Writes the image's name to OUT_FILE.
#   build_test_image.sh BIN_DIR SOURCE_DIR OUT_FILE
set -euo pipefail
bin_dir=$1
source_dir=$2
out=$3
if [ "$(id -u)" != 0 ]; then
  echo "SKIP: needs root (podman)"
  exit 77
fi
binaries=$(grep -v '^#' "$source_dir/deploy/image/binaries" | sed "s|^|$bin_dir/|")
hash=$(cat $binaries "$source_dir/deploy/image/packages" | sha256sum | cut -c1-12)
started=$(date +%s)
"$source_dir/deploy/image/build-image.sh" "$bin_dir" "localhost/nodeward:e2e-$hash" > "$out"
echo "image $(cat "$out") ready in $(($(date +%s) - started)) s"
