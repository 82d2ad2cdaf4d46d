#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions are invoked indirectly via step/trap
# Storage compatibility with CNCF Distribution 2.8 (Debian's docker-registry):
# our server and Distribution serve one and the same root directory, each
# serving what the other pushed.
#
#   usage: scripts/compat.sh REGISTRY_BIN
#
# The two servers never run at the same time: each binds 127.0.0.1 on a
# free port (http.addr 127.0.0.1:0, port read from its "listening on" log
# line) and is stopped by PID before the other one starts on the same root.
#
#  1. build  buildah (vfs, private store) builds from scratch with
#            busybox-static: a shared base layer, single-platform images
#            A, OLD, B, D (D exported as docker schema2 to a dir:) and two
#            2-platform (amd64+arm64) OCI indexes MULTI and M2, all exported
#            to OCI layouts.
#  2. Distribution: skopeo pushes A as a:v1, MULTI as multi:latest, D as
#            d2:v1; a blob is uploaded in 3 chunks with curl into a; OLD is
#            pushed as a:old and deleted by digest (DELETE manifest).  What
#            Distribution serves (manifests by tag and digest incl. index
#            children with Content-Type/Docker-Content-Digest, tags/list,
#            _catalog) is recorded.
#  3. our server on the same root: every recorded manifest is byte-identical
#            (GET, HEAD, skopeo inspect --raw), every blob is served and
#            hashes to its digest (and equals the local layout), catalog and
#            tags/list match, the chunked blob is there, a:old is gone;
#            skopeo copies each image out (OCI layout / dir:) with all digests
#            kept.  Then it pushes B as b:v1, a:v2 (= A), M2 as m2:latest
#            (OCI index, skopeo) and m2:list (docker manifest list, buildah),
#            a chunked blob into b, and pushes+deletes b:old; what it serves
#            is recorded the same way.
#  4. Distribution again: everything recorded from our server is served
#            byte-identically, blobs hash, catalog/tags/list match, b:old is
#            gone, skopeo copies out work with identical digests, and the
#            phase-2 data is still served as before.
#
# Output: one PASS/FAIL line per check, then "compat: N passed, M failed";
# exit status non-zero if anything failed.  Only 127.0.0.1 is contacted.
# Every process started is stopped by PID in an EXIT trap; all data lives in
# one mktemp directory, removed at the end (COMPAT_KEEP=1 keeps it).
# Knobs: E2E_TIMEOUT (per client call, default 120s), COMPAT_TOTAL_TIMEOUT
# (whole run, default 900s, 0 = none), DISTRIBUTION_BIN (default
# /usr/bin/docker-registry), BUSYBOX (default /usr/bin/busybox).
# Needs: skopeo buildah docker-registry busybox-static jq curl; root (buildah).

set -u -o pipefail

usage() { echo "usage: $0 REGISTRY_BIN" >&2; echo "compat: 0 passed, 1 failed"; exit 2; }
[ $# -eq 1 ] || usage
OUR_BIN=$(readlink -f "$1") || usage
[ -x "$OUR_BIN" ] || { echo "compat: $1 is not executable" >&2; usage; }
DIST_BIN=${DISTRIBUTION_BIN:-/usr/bin/docker-registry}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"
watchdog COMPAT 900 "${BASH_SOURCE[0]}" "$@"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/compat.XXXXXX") || exit 1
LOGDIR=$WORK/logs
STATE=$WORK/state
IMG=$WORK/img
ROOT=$WORK/root          # the one storage root both servers use
SNAP=$WORK/snap          # what each server served, for byte comparison
OUT=$WORK/out            # skopeo copies out of the registries
mkdir -p "$LOGDIR" "$STATE" "$WORK/tmp" "$IMG" "$ROOT" "$SNAP" "$OUT" "$WORK/srv"

E2E_DONE=0
suite_traps compat COMPAT_KEEP

isolate_clients "$WORK"
HOSTARCH=$(host_arch)
REG=""

IMG_PREFIX=compat   # images are localhost/compat-NAME (lib.sh mk_image)
bh() { bh_build "$@"; }

# ================================================================== servers
# start_server, server_phase, server_stop (lib.sh): one server at a time on
# $ROOT, stopped by PID before the other one starts.

# ================================================================== snapshots
# A snapshot SET records, for the current $REG, the bytes and headers of
# manifests (by tag, by digest and every index child by digest), tags/list of
# repositories and the catalog, so another server can be compared with it.

snap_file() { echo "$SNAP/$1/m/$2/${3/:/_}"; } # SET REPO REF

snap_ref() { # SET REPO REF: record one manifest; sets SNAP_DG
	local f
	f=$(snap_file "$1" "$2" "$3")
	mkdir -p "$(dirname "$f")"
	reg_manifest "$2" "$3" "$f"
	SNAP_DG="sha256:$(sha256_file "$f")"
	expect_eq "$(hdr "$f.hdr" Docker-Content-Digest)" "$SNAP_DG" "$2:$3 Docker-Content-Digest == sha256(body)"
	expect_eq "$(hdr "$f.hdr" Content-Type)" "$(jq -r .mediaType "$f")" "$2:$3 Content-Type == mediaType"
	echo "$2 $3" >>"$SNAP/$1/list"
}

snapshot() { # SET REPO:TAG...
	local set=$1 rt repo tag dg kid
	shift
	mkdir -p "$SNAP/$set"
	for rt in "$@"; do
		repo=${rt%%:*}
		tag=${rt#*:}
		snap_ref "$set" "$repo" "$tag"
		dg=$SNAP_DG
		snap_ref "$set" "$repo" "$dg"
		for kid in $(jq -r '.manifests[]?.digest' "$(snap_file "$set" "$repo" "$dg")"); do
			snap_ref "$set" "$repo" "$kid"
		done
	done
}

snapshot_meta() { # SET REPO...: tags/list of each REPO and the catalog
	local set=$1 r
	shift
	mkdir -p "$SNAP/$set/tags"
	for r in "$@"; do
		reg_tags "$r" >"$SNAP/$set/tags/$r"
		info "tags $(cat "$SNAP/$set/tags/$r")"
	done
	reg_catalog >"$SNAP/$set/catalog"
	info "catalog $(cat "$SNAP/$set/catalog")"
}

# compare_manifests SET: every manifest of SET served by $REG byte-identical,
# same Content-Type / Docker-Content-Digest, on GET and HEAD, and the same
# bytes from skopeo inspect --raw
compare_manifests() {
	local set=$1 repo ref want got n=0 h=$WORK/tmp/head.hdr ref_sko
	[ -s "$SNAP/$set/list" ] || fail_now "snapshot $set is empty (earlier step failed?)"
	while read -r -u 3 repo ref; do
		want=$(snap_file "$set" "$repo" "$ref")
		got=$WORK/tmp/cmp-manifest
		reg_manifest "$repo" "$ref" "$got" || fail_now "GET /v2/$repo/manifests/$ref failed: $(head -c 300 "$got" 2>/dev/null)"
		cmp "$want" "$got" || fail_now "GET /v2/$repo/manifests/$ref: body differs ($(wc -c <"$want") vs $(wc -c <"$got") bytes)"
		expect_eq "$(hdr "$got.hdr" Content-Type)" "$(hdr "$want.hdr" Content-Type)" "GET $repo:$ref Content-Type"
		expect_eq "$(hdr "$got.hdr" Docker-Content-Digest)" "$(hdr "$want.hdr" Docker-Content-Digest)" "GET $repo:$ref Docker-Content-Digest"
		expect_eq "$(rcurl -I -o /dev/null -D "$h" -w '%{http_code}' -H "Accept: $ACCEPT_ALL" "http://$REG/v2/$repo/manifests/$ref")" 200 "HEAD $repo:$ref status"
		expect_eq "$(hdr "$h" Content-Type)" "$(hdr "$want.hdr" Content-Type)" "HEAD $repo:$ref Content-Type"
		expect_eq "$(hdr "$h" Docker-Content-Digest)" "$(hdr "$want.hdr" Docker-Content-Digest)" "HEAD $repo:$ref Docker-Content-Digest"
		expect_eq "$(hdr "$h" Content-Length)" "$(stat -c %s "$want")" "HEAD $repo:$ref Content-Length"
		case "$ref" in sha256:*) ref_sko="$repo@$ref" ;; *) ref_sko="$repo:$ref" ;; esac
		sko inspect --tls-verify=false --raw "docker://$REG/$ref_sko" >"$got.sko"
		cmp "$want" "$got.sko" || fail_now "skopeo inspect --raw docker://$REG/$ref_sko differs from recorded bytes"
		n=$((n + 1))
		rm -f "$got" "$got.hdr" "$got.sko"
	done 3<"$SNAP/$set/list"
	info "$n manifest references byte-identical"
}

compare_meta() { # SET: tags/list of recorded repositories and catalog equal
	local set=$1 f r
	for f in "$SNAP/$set/tags"/*; do
		r=$(basename "$f")
		expect_eq "$(reg_tags "$r")" "$(cat "$f")" "GET /v2/$r/tags/list"
	done
	expect_eq "$(reg_catalog)" "$(cat "$SNAP/$set/catalog")" "GET /v2/_catalog"
}

# head_blobs REPO DIGEST: HEAD every blob under a manifest (Content-Length,
# Docker-Content-Digest)
head_blobs() {
	local repo=$1 dg=$2 f h=$WORK/tmp/hb.hdr d sz kid
	f=$WORK/tmp/hb-${dg#sha256:}
	reg_manifest "$repo" "$dg" "$f"
	for kid in $(jq -r '.manifests[]?.digest' "$f"); do head_blobs "$repo" "$kid"; done
	jq -r '(.config // empty), (.layers // [])[] | "\(.digest) \(.size)"' "$f" | while read -r d sz; do
		expect_eq "$(rcurl -I -o /dev/null -D "$h" -w '%{http_code}' "http://$REG/v2/$repo/blobs/$d")" 200 "HEAD $repo blob $d"
		expect_eq "$(hdr "$h" Content-Length)" "$sz" "HEAD blob $d Content-Length"
		expect_eq "$(hdr "$h" Docker-Content-Digest)" "$d" "HEAD blob $d Docker-Content-Digest"
	done
	rm -f "$f" "$f.hdr"
}

expect_blob() { # REPO FILE: GET/HEAD of a blob pushed from FILE
	local dg h=$WORK/tmp/eb.hdr
	dg="sha256:$(sha256_file "$2")"
	reg_blob "$1" "$dg" "$WORK/tmp/eb.blob"
	cmp "$WORK/tmp/eb.blob" "$2" || fail_now "blob $dg in $1 differs from the uploaded file"
	expect_eq "$(rcurl -I -o /dev/null -D "$h" -w '%{http_code}' "http://$REG/v2/$1/blobs/$dg")" 200 "HEAD $1 blob $dg"
	expect_eq "$(hdr "$h" Content-Length)" "$(stat -c %s "$2")" "HEAD $1 blob Content-Length"
	rm -f "$WORK/tmp/eb.blob"
}

# ================================================================== 1. build
s_tools() {
	require_commands skopeo buildah jq curl timeout cmp sha256sum "$DIST_BIN"
	require_busybox_static
	require_root buildah
	skopeo --version
	buildah --version
	"$DIST_BIN" --version
}

s_build() {
	local n
	mk_base "$HOSTARCH"
	mk_image a "$HOSTARCH" 512
	mk_image old "$HOSTARCH"
	mk_image b "$HOSTARCH" 256
	mk_image d2 "$HOSTARCH"
	for n in m1-amd64:amd64 m1-arm64:arm64 m2-amd64:amd64 m2-arm64:arm64; do mk_image "${n%%:*}" "${n#*:}"; done
	for n in a old b d2; do bh push --format oci "localhost/compat-$n:latest" "oci:$IMG/$n:$n"; done
	mk_index multi m1-amd64 m1-arm64
	mk_index m2 m2-amd64 m2-arm64
	sko copy --format v2s2 "oci:$IMG/d2:d2" "dir:$IMG/d2-dir"
	for n in a old b multi m2; do
		put "dg_$n" "$(layout_digest "$IMG/$n" "$n")"
		expect_ne_empty "$(get "dg_$n")" "digest of $n in its OCI layout"
	done
	put dg_d2 "sha256:$(sha256_file "$IMG/d2-dir/manifest.json")"
	expect_eq "$(jq -r .mediaType "$IMG/d2-dir/manifest.json")" application/vnd.docker.distribution.manifest.v2+json "d2 manifest type"
	expect_eq "$(jq -r .mediaType "$(local_blob "$IMG/multi" "$(get dg_multi | cut -d: -f2)")")" application/vnd.oci.image.index.v1+json "multi is an OCI index"
	expect_eq "$(jq -r '[.manifests[].platform.architecture] | sort | join(",")' "$(local_blob "$IMG/multi" "$(get dg_multi | cut -d: -f2)")")" amd64,arm64 "multi platforms"
	expect_eq "$(jq -r '[.manifests[].platform.architecture] | sort | join(",")' "$(local_blob "$IMG/m2" "$(get dg_m2 | cut -d: -f2)")")" amd64,arm64 "m2 platforms"
	expect_eq "$(jq '.layers | length' "$(local_blob "$IMG/a" "$(get dg_a | cut -d: -f2)")")" 2 "a layer count (base, files)"
	head -c 307200 /dev/urandom >"$IMG/chunked-dist.bin"
	head -c 204800 /dev/urandom >"$IMG/chunked-ours.bin"
	for n in a old b d2 multi m2; do info "$n: $(get "dg_$n")"; done
}

# ================================================================== 2. Distribution pushes
s_d_push() {
	cp_in "oci:$IMG/a:a" "docker://$REG/a:v1"
	cp_in --all "oci:$IMG/multi:multi" "docker://$REG/multi:latest"
	cp_in "dir:$IMG/d2-dir" "docker://$REG/d2:v1"
	expect_eq "$(reg_digest a v1)" "$(get dg_a)" "a:v1 digest on Distribution"
	expect_eq "$(reg_digest multi latest)" "$(get dg_multi)" "multi:latest digest on Distribution"
	expect_eq "$(reg_digest d2 v1)" "$(get dg_d2)" "d2:v1 digest on Distribution"
	verify_tree a "$(get dg_a)" "$IMG/a"
	verify_tree multi "$(get dg_multi)" "$IMG/multi"
	verify_tree d2 "$(get dg_d2)" "$IMG/d2-dir"
}

s_chunked() { # REPO FILE
	reg_chunked_upload "$1" "$2" 3
	expect_blob "$1" "$2"
}

s_push_delete() { # REPO: push OLD as REPO:old, DELETE it by digest
	local dg
	dg=$(get dg_old)
	cp_in "oci:$IMG/old:old" "docker://$REG/$1:old"
	expect_eq "$(reg_digest "$1" old)" "$dg" "$1:old digest"
	expect_eq "$(http_status "http://$REG/v2/$1/manifests/$dg" -X DELETE)" 202 "DELETE /v2/$1/manifests/$dg"
	expect_gone "$1" old "$dg"
}

# settle_tags REPO TAG: on a bucket, wait (at most 2 minutes) until the
# server no longer lists TAG, deleted just before. SeaweedFS keeps a deleted
# tag's prefix in delimited listings until its cleaner removes the empty
# directory, tens of seconds later, and Distribution lists tags with such a
# listing; ours reads each tag's link and lists only what is there, so it
# never waits here. On a file system nothing lingers.
settle_tags() {
	[ "${COMPAT_STORE:-filesystem}" = s3 ] || return 0
	local i
	for ((i = 0; i < 120; i++)); do
		reg_tags "$1" | jq -e --arg t "$2" '(.tags // []) | index($t) | not' >/dev/null && return 0
		sleep 1
	done
}

s_d_record() {
	settle_tags a old
	snapshot dist a:v1 multi:latest d2:v1
	snapshot_meta dist a multi d2
	expect_eq "$(cat "$SNAP/dist/catalog")" a,d2,multi "Distribution catalog"
	expect_eq "$(jq -r '.tags | join(",")' "$SNAP/dist/tags/a")" v1 "Distribution tags of a"
	expect_eq "$(jq -r '.tags | join(",")' "$SNAP/dist/tags/multi")" latest "Distribution tags of multi"
	expect_eq "$(jq -r '.tags | join(",")' "$SNAP/dist/tags/d2")" v1 "Distribution tags of d2"
	info "$(wc -l <"$SNAP/dist/list") manifest references recorded"
}

# ================================================================== 3. our server
s_o_manifests() { compare_manifests dist; }

s_o_blobs() {
	verify_tree a "$(get dg_a)" "$IMG/a"
	verify_tree multi "$(get dg_multi)" "$IMG/multi"
	verify_tree d2 "$(get dg_d2)" "$IMG/d2-dir"
	head_blobs a "$(get dg_a)"
	head_blobs multi "$(get dg_multi)"
	head_blobs d2 "$(get dg_d2)"
}

s_o_meta() {
	compare_meta dist
	expect_eq "$(reg_catalog)" a,d2,multi "catalog"
	expect_eq "$(reg_tags a | jq -r '.tags | join(",")')" v1 "tags of a (old deleted)"
}

s_copy_out_dir() { # REPO TAG DIGEST_KEY ORIGINAL_DIR|- [--all]
	local dir=$OUT/$1-$2-$SERVER_N-dir
	cp_out ${5:+"$5"} "docker://$REG/$1:$2" "dir:$dir"
	expect_eq "sha256:$(sha256_file "$dir/manifest.json")" "$(get "$3")" "skopeo copy $1:$2 -> dir: digest"
	verify_tree "$1" "$(get "$3")" "$dir"
	if [ "$4" != - ]; then
		diff -r "$4" "$dir"
		info "dir: identical to $4 (diff -r)"
	fi
}

s_o_push_b() {
	cp_in "oci:$IMG/b:b" "docker://$REG/b:v1"
	expect_eq "$(reg_digest b v1)" "$(get dg_b)" "b:v1 digest"
	verify_tree b "$(get dg_b)" "$IMG/b"
}

s_o_tag_a() {
	sko copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false "docker://$REG/a:v1" "docker://$REG/a:v2"
	expect_eq "$(reg_digest a v2)" "$(get dg_a)" "a:v2 digest"
	expect_eq "$(reg_digest a v1)" "$(get dg_a)" "a:v1 digest unchanged"
}

s_o_push_index() {
	local m=$WORK/tmp/m2list.json
	cp_in --all "oci:$IMG/m2:m2" "docker://$REG/m2:latest"
	expect_eq "$(reg_digest m2 latest)" "$(get dg_m2)" "m2:latest digest"
	verify_tree m2 "$(get dg_m2)" "$IMG/m2"
	# the same images as a docker manifest list (buildah converts)
	bh manifest push --all --format v2s2 --tls-verify=false --digestfile "$WORK/tmp/m2list.digest" \
		localhost/compat-m2:latest "docker://$REG/m2:list"
	reg_manifest m2 list "$m"
	expect_eq "$(jq -r .mediaType "$m")" application/vnd.docker.distribution.manifest.list.v2+json "m2:list mediaType"
	expect_eq "sha256:$(sha256_file "$m")" "$(cat "$WORK/tmp/m2list.digest")" "m2:list digest vs buildah --digestfile"
	put dg_m2list "sha256:$(sha256_file "$m")"
	verify_tree m2 "$(get dg_m2list)"
}

s_o_record() {
	snapshot ours a:v1 a:v2 b:v1 m2:latest m2:list multi:latest d2:v1
	snapshot_meta ours a b m2 multi d2
	expect_eq "$(cat "$SNAP/ours/catalog")" a,b,d2,m2,multi "our catalog after pushes"
	expect_eq "$(jq -r '.tags | join(",")' "$SNAP/ours/tags/a")" v1,v2 "our tags of a"
	expect_eq "$(jq -r '.tags | join(",")' "$SNAP/ours/tags/b")" v1 "our tags of b (old deleted)"
	expect_eq "$(jq -r '.tags | join(",")' "$SNAP/ours/tags/m2")" latest,list "our tags of m2"
}

# ================================================================== 4. Distribution again
s_d2_manifests() { compare_manifests ours; }

s_d2_blobs() {
	verify_tree b "$(get dg_b)" "$IMG/b"
	verify_tree a "$(get dg_a)" "$IMG/a"
	verify_tree m2 "$(get dg_m2)" "$IMG/m2"
	verify_tree m2 "$(get dg_m2list)"
	head_blobs b "$(get dg_b)"
	head_blobs a "$(get dg_a)"
	head_blobs m2 "$(get dg_m2)"
	head_blobs m2 "$(get dg_m2list)"
}

s_d2_meta() {
	settle_tags a old
	settle_tags b old
	compare_meta ours
	expect_eq "$(reg_catalog)" a,b,d2,m2,multi "catalog"
}

s_d2_old_data() {
	compare_manifests dist
	verify_tree a "$(get dg_a)" "$IMG/a"
	verify_tree multi "$(get dg_multi)" "$IMG/multi"
	verify_tree d2 "$(get dg_d2)" "$IMG/d2-dir"
	expect_gone a old "$(get dg_old)"
	expect_blob a "$IMG/chunked-dist.bin"
}

# ================================================================== main
echo "compat: our server $OUR_BIN vs $("$DIST_BIN" --version 2>/dev/null | head -n1)"
echo "compat: work dir $WORK, shared root $ROOT, host arch $HOSTARCH"

section "1. build images locally"
if ! step "setup: tools present" s_tools; then E2E_DONE=1; exit 1; fi
step "build: base, A, OLD, B, D (v2s2 dir:), OCI indexes multi and m2 (amd64+arm64)" s_build

section "2. Distribution 2.8 writes"
server_phase dist "$ROOT" "Distribution"
step "Distribution: skopeo push a:v1, multi:latest (index), d2:v1 (schema2)" s_d_push
step "Distribution: chunked blob upload into a (POST, 3x PATCH, PUT ?digest=)" s_chunked a "$IMG/chunked-dist.bin"
step "Distribution: push a:old, DELETE it by digest" s_push_delete a
step "Distribution: record manifests (tag, digest, children), tags/list, catalog" s_d_record
server_stop "Distribution"

section "3. our server on Distribution's root"
server_phase ours "$ROOT" "ours"
step "ours: every manifest byte-identical to Distribution's (GET, HEAD, skopeo inspect --raw; by tag and digest)" s_o_manifests
step "ours: every blob served, hashes to digest, equals local layout (GET, HEAD)" s_o_blobs
step "ours: _catalog and tags/list equal Distribution's" s_o_meta
step "ours: chunked blob pushed to Distribution is served" expect_blob a "$IMG/chunked-dist.bin"
step "ours: a:old deleted on Distribution is 404 (tag and digest)" expect_gone a old "$(cat "$STATE/dg_old" 2>/dev/null)"
step "ours: skopeo copy a:v1 -> OCI layout, digests match" s_copy_out_oci a v1 dg_a
step "ours: skopeo copy --all multi:latest -> OCI layout, digests match" s_copy_out_oci multi latest dg_multi --all
step "ours: skopeo copy d2:v1 -> dir:, identical to the original" s_copy_out_dir d2 v1 dg_d2 "$IMG/d2-dir"
step "ours: push b:v1 (skopeo)" s_o_push_b
step "ours: new tag a:v2 for image A (skopeo registry -> registry)" s_o_tag_a
step "ours: push index m2:latest (skopeo --all) and docker list m2:list (buildah)" s_o_push_index
step "ours: chunked blob upload into b (POST, 3x PATCH, PUT ?digest=)" s_chunked b "$IMG/chunked-ours.bin"
step "ours: push b:old, DELETE it by digest" s_push_delete b
step "ours: record manifests, tags/list, catalog" s_o_record
server_stop "ours"

section "4. Distribution 2.8 on the root our server wrote"
server_phase dist "$ROOT" "Distribution"
step "Distribution: every manifest our server pushed byte-identical (GET, HEAD, skopeo inspect --raw)" s_d2_manifests
step "Distribution: blobs our server pushed served and hash to digest (GET, HEAD)" s_d2_blobs
step "Distribution: _catalog and tags/list equal ours" s_d2_meta
step "Distribution: chunked blob pushed to our server is served" expect_blob b "$IMG/chunked-ours.bin"
step "Distribution: b:old deleted on our server is 404 (tag and digest)" expect_gone b old "$(cat "$STATE/dg_old" 2>/dev/null)"
step "Distribution: skopeo copy b:v1 -> OCI layout, digests match" s_copy_out_oci b v1 dg_b
step "Distribution: skopeo copy a:v2 -> OCI layout, digests match" s_copy_out_oci a v2 dg_a
step "Distribution: skopeo copy --all m2:latest -> OCI layout, digests match" s_copy_out_oci m2 latest dg_m2 --all
step "Distribution: skopeo copy --all m2:list -> dir:, digests match" s_copy_out_dir m2 list dg_m2list - --all
step "Distribution: phase-2 data still served as before" s_d2_old_data
server_stop "Distribution"

E2E_DONE=1
exit 0
