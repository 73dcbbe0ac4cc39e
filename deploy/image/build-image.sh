#!/usr/bin/env bash
# make image: the image deploy/Dockerfile describes, built here without a registry. The base is
# a Debian 12 root filesystem of deploy/image/packages made with mmdebstrap from the machine's
# apt sources, cached in $CACHE/image (outside the tree; keyed by the package list and the
# sources) and imported into podman once; the binaries of BIN_DIR go on top with `podman build`.
# Older images built from the same BIN_DIR are removed. Prints the image's name.
#   build-image.sh BIN_DIR [TAG]
set -euo pipefail

bin_dir=$(realpath "${1:?usage: build-image.sh BIN_DIR [TAG]}")
tag=${2:-localhost/nodeward:0.1.0}
here=$(cd "$(dirname "$0")" && pwd)
cache=${CACHE:-/var/cache/nodeward}/image
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
for tool in mmdebstrap podman; do
  command -v "$tool" > /dev/null || { echo "build-image: $tool is missing (tools/install-deps.sh)" >&2; exit 1; }
done
packages=$(grep -v '^#' "$here/packages" | xargs)
binaries=$(grep -v '^#' "$here/binaries" | xargs)
for binary in $binaries; do
  [ -x "$bin_dir/$binary" ] || { echo "build-image: $bin_dir/$binary is missing (make build)" >&2; exit 1; }
done

key=$( (echo "$packages"; cat "$sources"; mmdebstrap --version) | sha256sum | cut -c1-16)
base=localhost/nodeward-base:$key
mkdir -p "$cache"
# Several worktrees build at once: one makes the base, the others wait for it.
exec 9> "$cache/lock"
flock 9
if ! podman image exists "$base"; then
  rootfs=$cache/rootfs-$key.tar
  if [ ! -s "$rootfs" ]; then
    echo "build-image: making the Debian 12 root filesystem (once; about 30 s)" >&2
    started=$(date +%s)
    mmdebstrap --quiet --variant=essential --include="${packages// /,}" \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      bookworm "$cache/partial-$key.tar" "$sources" >&2
    mv "$cache/partial-$key.tar" "$rootfs"
    echo "build-image: root filesystem made in $(($(date +%s) - started)) s" >&2
    # Older ones are of package lists or sources no longer used.
    find "$cache" -name 'rootfs-*.tar' ! -name "rootfs-$key.tar" -delete
  fi
  podman import --quiet --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$rootfs" "$base" > /dev/null
fi
flock -u 9

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir "$context/bin"
for binary in $binaries; do cp "$bin_dir/$binary" "$context/bin/"; done
strip --strip-unneeded "$context"/bin/* 2> /dev/null || true
cat > "$context/Containerfile" <<CONTAINERFILE
FROM $base
COPY bin/ /usr/local/bin/
LABEL org.opencontainers.image.title=nodeward nodeward.built-from=$bin_dir
CONTAINERFILE
previous=$(podman images --quiet --filter "label=nodeward.built-from=$bin_dir" | sort -u)
podman build --quiet --pull=never --tag "$tag" "$context" > /dev/null
current=$(podman image inspect --format '{{.Id}}' "$tag")
for id in $previous; do
  [[ "$current" == "$id"* ]] || podman rmi --force "$id" > /dev/null 2>&1 || true
done
echo "$tag"
