#!/usr/bin/env bash
# registry-gc against Distribution's `registry garbage-collect` on copies of
# one generated store: 200 repositories, 2,000 manifests (config + 4 layers
# each, so 10,000 blobs), a third of the tags deleted, and 500 orphan blobs.
# Times both (offline, --grace 0 for ours, as Distribution deletes at
# once), with and without deleting untagged manifests, and checks that
# both leave exactly the same blobs (the last line counts the modes where
# they did: "gc-bench: N passed, M failed").
#
# With GC_BENCH_S3=1 the copies are in a bucket instead: a SeaweedFS the
# script starts (scripts/seaweedfs.sh), or the one whose SEAWEEDFS_*
# variables it was handed, each copy under a prefix of its own, collected
# by Distribution's S3 driver and by ours.
#
#   usage: [GC_BENCH_S3=1] scripts/gc-bench.sh REGISTRY_GC_BIN [REPOS=200] [PER_REPO=10]
set -euo pipefail
GC=$(readlink -f "${1:?usage: $0 REGISTRY_GC_BIN [REPOS] [PER_REPO]}")
REPOS=${2:-200}
PER=${3:-10}
DIST=${DISTRIBUTION_BIN:-/usr/bin/docker-registry}
DIR=$(mktemp -d "${BENCH_DIR:-/var/tmp}/gc-bench.XXXXXX")
S3=${GC_BENCH_S3:-}
if [ -n "$S3" ]; then
	# shellcheck source=scripts/seaweedfs.sh
	source "$(dirname "$0")/seaweedfs.sh"
	if [ -n "${SEAWEEDFS_PID:-}" ] && _seaweedfs_alive "$SEAWEEDFS_PID" "${SEAWEEDFS_PID_START:-}"; then
		# One handed down (scripts/test.sh): used, and left running.
		trap 'rm -rf "$DIR"' EXIT
	else
		seaweedfs_start "$DIR/s3" >/dev/null
		trap 'seaweedfs_stop; rm -rf "$DIR"' EXIT
	fi
	unset AWS_CA_BUNDLE
else
	trap 'rm -rf "$DIR"' EXIT
fi

python3 - "$DIR/store" "$REPOS" "$PER" <<'PY'
import hashlib, json, os, sys
root, repos, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
v2 = os.path.join(root, "docker/registry/v2")
def blob(data):
    h = hashlib.sha256(data).hexdigest()
    d = os.path.join(v2, "blobs/sha256", h[:2], h)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "data"), "wb") as f:
        f.write(data)
    return "sha256:" + h
def link(path, digest):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "link"), "w") as f:
        f.write(digest)
for r in range(repos):
    name = f"team{r % 20}/app{r}"
    rd = os.path.join(v2, "repositories", name)
    for m in range(per):
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "r": r, "m": m}).encode()
        layers = [f"layer {r}/{m}/{l} ".encode() * 64 for l in range(4)]
        cd = blob(cfg)
        link(os.path.join(rd, "_layers/sha256", cd[7:]), cd)
        descs = []
        for l in layers:
            ld = blob(l)
            link(os.path.join(rd, "_layers/sha256", ld[7:]), ld)
            descs.append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(l), "digest": ld})
        man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                          "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(cfg), "digest": cd},
                          "layers": descs}, indent=3).encode()
        md = blob(man)
        link(os.path.join(rd, "_manifests/revisions/sha256", md[7:]), md)
        if m % 3 != 0:  # a third of the tags deleted (never written)
            tag = os.path.join(rd, "_manifests/tags", f"v{m}")
            link(os.path.join(tag, "current"), md)
            link(os.path.join(tag, "index/sha256", md[7:]), md)
for o in range(500):
    blob(f"orphan {o}".encode() * 32)
PY

cfg() { # ROOT -> config path (a directory, or a prefix in the bucket)
	local driver
	if [ -n "$S3" ]; then
		driver=$(seaweedfs_s3_driver "/${1##*/}")
	else
		driver="  filesystem:
    rootdirectory: $1"
	fi
	cat >"$1.yml" <<CFG
version: 0.1
log:
  level: error
storage:
$driver
  delete:
    enabled: true
CFG
	echo "$1.yml"
}
# copy_store NAME: a fresh copy of the generated store, as $DIR/NAME.
copy_store() {
	if [ -n "$S3" ]; then
		"$(seaweedfs_weed)" filer.copy -c 16 "$DIR/store/docker" \
			"$SEAWEEDFS_FILER_URL/buckets/$SEAWEEDFS_BUCKET/$1/" >/dev/null
	else
		rm -rf "${DIR:?}/$1"
		cp -a "$DIR/store" "$DIR/$1"
		sync
	fi
}
blobs() { # NAME: the digests of the blobs left in a copy, sorted
	if [ -n "$S3" ]; then
		python3 - "$SEAWEEDFS_FILER_URL/buckets/$SEAWEEDFS_BUCKET/$1/docker/registry/v2/blobs/sha256" <<'PY'
import json, sys, urllib.request
def ls(url):
    last = ""
    while True:
        req = urllib.request.Request(f"{url}/?limit=1000&lastFileName={last}", headers={"Accept": "application/json"})
        try:
            page = json.load(urllib.request.urlopen(req))
        except urllib.error.HTTPError:
            return
        entries = page.get("Entries") or []
        for e in entries:
            yield e["FullPath"].rsplit("/", 1)[1]
        if not page.get("ShouldDisplayLoadMore"):
            return
        last = page.get("LastFileName", "")
out = []
for prefix in ls(sys.argv[1]):
    for hexdir in ls(f"{sys.argv[1]}/{prefix}"):
        if "data" in ls(f"{sys.argv[1]}/{prefix}/{hexdir}"):
            out.append(hexdir)
print("\n".join(sorted(out)))
PY
	else
		find "$DIR/$1/docker/registry/v2/blobs" -name data | sed 's|.*/sha256/../||; s|/data||' | sort
	fi
}
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>"$DIR/err" || { cat "$DIR/err" >&2; return 1; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

echo "store: $(find "$DIR/store/docker/registry/v2/blobs" -name data | wc -l) blobs, $(find "$DIR/store" -path '*revisions*' -name link | wc -l) manifests, $REPOS repositories"
passed=0
failed=0
for mode in keep-untagged delete-untagged; do
	dflag=(); oflag=()
	if [ "$mode" = delete-untagged ]; then dflag=(-m); oflag=(--delete-untagged); fi
	# Alternate the two, twice each, on fresh copies; compare the results.
	td=(); to=()
	for round in 1 2; do
		for who in dist ours; do
			copy="${DIR##*/}-$mode-$round-$who" # unique in a shared bucket
			copy_store "$copy"
			c=$(cfg "$DIR/$copy")
			if [ "$who" = dist ]; then
				td+=("$(secs "$DIST" garbage-collect "${dflag[@]}" "$c")")
				blobs "$copy" >"$DIR/left-dist"
			else
				to+=("$(secs "$GC" "$c" --grace 0 "${oflag[@]}")")
				blobs "$copy" >"$DIR/left-ours"
			fi
			[ -n "$S3" ] || rm -rf "${DIR:?}/$copy"
		done
	done
	same=yes; cmp -s "$DIR/left-dist" "$DIR/left-ours" || same=NO
	best() { printf '%s\n' "$@" | sort -n | head -1; }
	d=$(best "${td[@]}"); o=$(best "${to[@]}")
	printf '%-16s Distribution %6.2fs  registry-gc %6.2fs  %5.1fx  blobs left %s / %s, same: %s\n' \
		"$mode" "$d" "$o" "$(echo "$d / $o" | bc -l)" "$(wc -l <"$DIR/left-dist")" "$(wc -l <"$DIR/left-ours")" "$same"
	if [ "$same" = yes ]; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		diff "$DIR/left-dist" "$DIR/left-ours" | head
	fi
done
echo "gc-bench: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
