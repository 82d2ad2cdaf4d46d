#!/usr/bin/env bash
# How soon a registry serves after a start, by store size: a store in
# Distribution's layout with REPOS repositories x 2 tags (2 manifests each,
# over one shared config and layer) is written once per size; then ours and
# Distribution start on it, warm (page cache full) and cold (caches dropped,
# as after a reboot; only where this machine lets us), alternating. For each
# start: the time until the first manifest GET answers 200, and for ours
# also until /readyz says the index is complete and a full _catalog answers.
#
#   usage: scripts/start-time.sh [REGISTRY_BIN=target/release/registry] [REPOS...=20000]
#
# Environment: DISTRIBUTION (default /usr/bin/docker-registry; empty: skip),
# ROUNDS (default 2). Data goes under $BENCH_DIR (default /var/tmp). Only
# 127.0.0.1 is used; every server is stopped by PID.
set -euo pipefail
REG=${1:-target/release/registry}
shift || true
SIZES=("${@:-20000}")
DIST=${DISTRIBUTION-/usr/bin/docker-registry}
ROUNDS=${ROUNDS:-2}
[ -x "$REG" ] || { echo "usage: $0 [REGISTRY_BIN] [REPOS...]: $REG is not executable" >&2; exit 2; }
for c in curl python3 awk; do command -v "$c" >/dev/null || { echo "$c is missing" >&2; exit 2; }; done
REG=$(realpath "$REG")
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
bench_workdir start-time
can_drop=false
if [ -w /proc/sys/vm/drop_caches ] && sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then can_drop=true; fi
$can_drop || echo "note: cannot drop the page cache here; cold starts are skipped"

# generate ROOT REPOS: the store, written in one Python process.
generate() {
	python3 - "$1" "$2" <<'PY'
import hashlib, json, os, sys
root, n = sys.argv[1], int(sys.argv[2])
v2 = os.path.join(root, "docker/registry/v2")
def put(rel, data):
    p = os.path.join(v2, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
def blob(data):
    h = hashlib.sha256(data).hexdigest()
    put(f"blobs/sha256/{h[:2]}/{h}/data", data)
    return h
config = b'{"architecture":"amd64","os":"linux"}'
layer = b"one layer for every repository"
c, l = blob(config), blob(layer)
def manifest(note):
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + c, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + l, "size": len(layer)}],
        "annotations": {"note": note}}).encode()
for i in range(n):
    repo = f"repositories/many/r{i:06d}"
    for h in (c, l):
        put(f"{repo}/_layers/sha256/{h}/link", b"sha256:" + h.encode())
    for tag in ("v1", "v2"):
        m = blob(manifest(f"{i}:{tag}"))
        link = b"sha256:" + m.encode()
        put(f"{repo}/_manifests/revisions/sha256/{m}/link", link)
        put(f"{repo}/_manifests/tags/{tag}/current/link", link)
        put(f"{repo}/_manifests/tags/{tag}/index/sha256/{m}/link", link)
PY
}

now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }

# start_on NAME BIN ROOT PORT: prints "first-answer-seconds [index-seconds]".
start_on() {
	local name=$1 bin=$2 root=$3 port=$4 t0 first idx pid
	server_config "$DIR/$name.yml" "$root" "$port"
	t0=$(now)
	"$bin" serve "$DIR/$name.yml" >"$DIR/$name.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	local url="http://127.0.0.1:$port/v2/many/r000007/manifests/v1"
	for _ in $(seq 120000); do
		curl -fs -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$url" && break
		kill -0 "$pid" 2>/dev/null || { echo "$name exited:" >&2; cat "$DIR/$name.log" >&2; exit 1; }
		sleep 0.005
	done
	first=$(since "$t0")
	idx=""
	if [ "$bin" = "$REG" ]; then
		for _ in $(seq 120000); do
			[ "$(curl -fs "http://127.0.0.1:$port/readyz")" = ready ] && break
			sleep 0.01
		done
		curl -fs -o /dev/null "http://127.0.0.1:$port/v2/_catalog?n=1000000" || { echo "catalog failed" >&2; exit 1; }
		idx=$(since "$t0")
	fi
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	echo "$first $idx"
}

for n in "${SIZES[@]}"; do
	root="$DIR/store-$n"
	t0=$(now)
	generate "$root" "$n"
	echo "store: $n repositories, $((n * 2)) manifests (written in $(since "$t0") s)"
	port=$(free_port 5900)
	for r in $(seq "$ROUNDS"); do
		modes="warm"
		$can_drop && modes="cold warm"
		for mode in $modes; do
			order="ours dist"
			((r % 2)) || order="dist ours"
			for who in $order; do
				case $who in
				ours) bin=$REG ;;
				dist) [ -n "$DIST" ] || continue; bin=$DIST ;;
				esac
				if [ "$mode" = cold ]; then sync; echo 3 >/proc/sys/vm/drop_caches; else
					# Warm: read the tree once so the cache holds it.
					find "$root" -type f -exec cat {} + >/dev/null
				fi
				read -r first idx < <(start_on "$who-$n-$r-$mode" "$bin" "$root" "$port")
				if [ -n "$idx" ]; then
					printf '%7d repos  %-4s  %-4s round %d: first answer %6.3f s, index complete and full catalog %7.3f s\n' "$n" "$mode" "$who" "$r" "$first" "$idx"
				else
					printf '%7d repos  %-4s  %-4s round %d: first answer %6.3f s\n' "$n" "$mode" "$who" "$r" "$first"
				fi
			done
		done
	done
	rm -rf "$root"
done
