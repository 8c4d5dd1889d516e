#!/usr/bin/env bash
# Build the baton runtime image without pulling anything: the `baton` binary
# plus its shared-library closure (from ldd) in a FROM scratch image, running
# as uid 10001 with data on a volume and a /readyz healthcheck.
#
#   deploy/docker/build-local.sh [TAG]        (default TAG: baton:local)
#
# BATON_BUILD_PROFILE picks the cargo profile (default: dev, whose
# dependencies are optimized and shared with the test build; `release` for
# production images, at the price of a second RocksDB build).
set -euo pipefail
cd "$(dirname "$0")/../.."
tag="${1:-baton:local}"
profile="${BATON_BUILD_PROFILE:-dev}"
./.ci/deps
cargo build -q -p baton-coordinator --bin baton --profile "$profile"
target="${CARGO_TARGET_DIR:-$PWD/target}"
dir=$([[ "$profile" == dev ]] && echo debug || echo "$profile")
bin="$target/$dir/baton"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc" "$ctx/data"
cp "$bin" "$root/usr/local/bin/baton"
strip --strip-debug "$root/usr/local/bin/baton" 2>/dev/null || true
# The dynamic loader and every library the binary links.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
echo "baton:x:10001:10001:baton:/data:/sbin/nologin" >"$root/etc/passwd"
echo "baton:x:10001:" >"$root/etc/group"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /data/
USER 10001:10001
VOLUME /data
EXPOSE 7101 7201 7301
HEALTHCHECK --interval=2s --timeout=3s --retries=3 CMD ["/usr/local/bin/baton", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/baton"]
CMD ["serve", "--data-dir", "/data", "--raft-listen", "0.0.0.0:7101", "--api-listen", "0.0.0.0:7201", "--http-listen", "0.0.0.0:7301"]
DOCKERFILE
docker build -q -t "$tag" "$ctx" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
