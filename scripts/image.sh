#!/usr/bin/env bash
# Build the container image: static release binaries (glibc, crt-static)
# copied into an image FROM scratch with the default config and the CA
# certificates, built by the Docker engine DOCKER_HOST points at (or the
# default one; DOCKER_CLI names the client), without pulling anything.
#
#   usage: scripts/image.sh [TAG]     (default registry:dev)
#
# Prints the image's size at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TAG=${1:-registry:dev}
TARGET=x86_64-unknown-linux-gnu
DOCKER=${DOCKER_CLI:-docker}

RUSTFLAGS="-C target-feature=+crt-static" \
	cargo build --release --locked --target "$TARGET" --bins
bins=(registry registry-gc registry-replicate)
for b in "${bins[@]}"; do
	f=target/$TARGET/release/$b
	if ldd "$f" 2>/dev/null | grep -q '=>'; then
		echo "image: $f is not static" >&2
		exit 1
	fi
done

ctx=$(mktemp -d "${TMPDIR:-/tmp}/registry-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
for b in "${bins[@]}"; do
	cp "target/$TARGET/release/$b" "$ctx/"
	strip "$ctx/$b"
done
cp contrib/image/Dockerfile contrib/image/config.yml "$ctx/"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
DOCKER_BUILDKIT=0 "$DOCKER" build --quiet -t "$TAG" "$ctx" >/dev/null
echo "image: $TAG, $("$DOCKER" image inspect --format '{{.Size}}' "$TAG") bytes"
