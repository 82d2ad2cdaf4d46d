#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions are invoked indirectly via step/trap
# Garbage collection compared with CNCF Distribution 2.8 (Debian's
# docker-registry) on data Distribution itself wrote.
#
#   usage: scripts/gc-compat.sh REGISTRY_BIN REGISTRY_GC_BIN
#
#  1. build  buildah (vfs, private store) builds from scratch with
#            busybox-static: single-platform images A, B, OLD, C, E sharing
#            the base layer and a 2-platform (amd64+arm64) OCI index MULTI.
#            Distribution (deletes enabled) on root R: skopeo pushes
#            alpha:v1 = alpha:v2 = A, alpha:old = OLD, beta:v1 = B,
#            beta:a = A, gamma:multi = MULTI (--all), gamma:edge = E then
#            gamma:edge = B (E left untagged), C by digest only into beta
#            (untagged), and an orphan blob into alpha (chunked upload, no
#            manifest); then DELETE alpha@OLD and beta@A by digest (OLD's
#            own blobs become unreferenced; A's stay, alpha tags it).
#  2. gc     R is copied (cp -a) once per collector and mode:
#              keep untagged:   docker-registry garbage-collect CONFIG
#                               vs REGISTRY_GC_BIN CONFIG --grace 0 --json
#              delete untagged: docker-registry garbage-collect -m CONFIG
#                               vs REGISTRY_GC_BIN ... --delete-untagged
#            (and REGISTRY_BIN garbage-collect --grace 0 [-m], the
#            Distribution-style command, on one more copy each).  The blob
#            digests left under docker/registry/v2/blobs must be identical
#            and what the images predict.  Distribution 2.8's -m also
#            deletes the config and layers of the children of a tagged
#            multi-arch index (its known bug: it sees the children as
#            untagged manifests; the index still marks the child manifest
#            blobs themselves): with -m that difference, and only it, is
#            expected, checked digest by digest and named in the PASS line.
#            registry-gc --dry-run must report the same blobs_deleted as the
#            real run and change nothing in the root.
#  3. serve  our server on each root registry-gc collected: skopeo copies
#            every kept tag, the index (--all) and kept untagged manifests
#            to OCI layouts, every object hashes to its digest and equals
#            the local image; deleted manifests are 404 (GET, HEAD), freed
#            blobs are 404; tags/list and _catalog as before.  Distribution
#            on its own -m result shows what its bug costs (index served,
#            children's configs gone).
#
# Output: one PASS/FAIL line per check, NOTE lines with the counts, then
# "gc-compat: N passed, M failed"; exit status non-zero if anything failed.
# Only 127.0.0.1 is contacted; one server runs at a time, each stopped by
# PID.  All data lives in one mktemp directory, removed at the end
# (GC_COMPAT_KEEP=1 keeps it).  Knobs: E2E_TIMEOUT (per client call,
# default 120s), GC_COMPAT_TOTAL_TIMEOUT (whole run, default 900s, 0 =
# none), DISTRIBUTION_BIN (default /usr/bin/docker-registry), BUSYBOX
# (default /usr/bin/busybox).
# Needs: skopeo buildah docker-registry busybox-static jq curl; root (buildah).

set -u -o pipefail
export LC_ALL=C          # sort and comm agree on the order of digests

usage() { echo "usage: $0 REGISTRY_BIN REGISTRY_GC_BIN" >&2; echo "gc-compat: 0 passed, 1 failed"; exit 2; }
[ $# -eq 2 ] || usage
OUR_BIN=$(readlink -f "$1") || usage
GC_BIN=$(readlink -f "$2") || usage
[ -x "$OUR_BIN" ] || { echo "gc-compat: $1 is not executable" >&2; usage; }
[ -x "$GC_BIN" ] || { echo "gc-compat: $2 is not executable" >&2; usage; }
DIST_BIN=${DISTRIBUTION_BIN:-/usr/bin/docker-registry}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"
watchdog GC_COMPAT 900 "${BASH_SOURCE[0]}" "$@"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gc-compat.XXXXXX") || exit 1
LOGDIR=$WORK/logs
STATE=$WORK/state
IMG=$WORK/img
OUT=$WORK/out            # skopeo copies out of the registries
R=$WORK/r                # the root Distribution writes; copied per collector
GCDIR=$WORK/gc           # configs, outputs and blob lists of the collectors
mkdir -p "$LOGDIR" "$STATE" "$WORK/tmp" "$IMG" "$OUT" "$R" "$GCDIR" "$WORK/srv"

E2E_DONE=0
suite_traps gc-compat GC_COMPAT_KEEP

isolate_clients "$WORK"
HOSTARCH=$(host_arch)
REG=""
IMG_PREFIX=gccompat      # images are localhost/gccompat-NAME (lib.sh mk_image)
IMAGES="a b old c e"     # single-platform images (host arch)
KIDS="m-amd64 m-arm64"   # children of the index "multi"

# ================================================================== helpers
BLOBS=docker/registry/v2/blobs

# blob_set ROOT: hex digests of the blobs stored under ROOT (directories
# blobs/sha256/XX/HEX), sorted; fails naming any such directory without a
# data file or anything else but data files in them
blob_set() {
	local b=$1/$BLOBS/sha256 odd
	[ -d "$b" ] || fail_now "$b missing"
	odd=$(find "$b" -mindepth 2 -maxdepth 2 -type d -empty -printf 'empty dir %P\n'
		find "$b" -mindepth 3 ! -name data -printf 'stray %y %P\n'
		find "$b" -mindepth 1 -maxdepth 2 ! -type d -printf 'stray %y %P\n')
	[ -z "$odd" ] || fail_now "unexpected entries under $b: $odd"
	find "$b" -mindepth 2 -maxdepth 2 -type d -printf '%f\n' | sort
}

# tree_listing ROOT: every entry with type, size, mtime and mode
tree_listing() { (cd "$1" && find . -printf '%y %p %s %T@ %m\n' | sort); }

# objects DIR REF: hex digests of everything an image in an OCI layout
# consists of (manifest, config, layers; an index and all its children's)
objects() {
	local dir=$1 dg=${2#sha256:} f
	f=$(local_blob "$dir" "$dg") || fail_now "$dg not in $dir"
	echo "$dg"
	if jq -e '.manifests' "$f" >/dev/null; then
		for dg in $(jq -r '.manifests[].digest' "$f"); do objects "$dir" "$dg"; done
	else
		jq -r '.config.digest, .layers[].digest' "$f" | sed 's/^sha256://'
	fi
}

# gc_run CMD...: a collector, bounded, without REGISTRY_* overrides
gc_run() { no_registry_env timeout -k 10 "$E2E_TIMEOUT" "$@"; }

# set operations on sorted lists in files
only_in() { comm -23 "$1" "$2"; }  # lines in FILE1 not in FILE2
union() { sort -u "$@"; }
digests() { sed 's/^/sha256:/' "$@" | tr '\n' ' '; }

# the config both servers and collectors read for ROOT
cfg_for() { fs_config "$GCDIR/$(basename "$1").yml" "$1"; echo "$GCDIR/$(basename "$1").yml"; }

# ================================================================== 1. build
s_tools() {
	require_commands skopeo buildah jq curl timeout cmp comm sha256sum "$DIST_BIN"
	require_busybox_static
	require_root buildah
	skopeo --version
	buildah --version
	"$DIST_BIN" --version
	[ -x "$GC_BIN" ] && "$GC_BIN" --version
}

s_build() {
	local n
	mk_base "$HOSTARCH"
	mk_image a "$HOSTARCH" 512
	mk_image b "$HOSTARCH" 256
	mk_image old "$HOSTARCH" 384
	mk_image c "$HOSTARCH" 64
	mk_image e "$HOSTARCH" 128
	mk_image m-amd64 amd64 32
	mk_image m-arm64 arm64 48
	for n in $IMAGES; do bh_build push --format oci "localhost/$IMG_PREFIX-$n:latest" "oci:$IMG/$n:$n"; done
	# shellcheck disable=SC2086  # a list of names
	mk_index multi $KIDS
	for n in $IMAGES multi; do
		put "dg_$n" "$(layout_digest "$IMG/$n" "$n")"
		expect_ne_empty "$(get "dg_$n")" "digest of $n in its OCI layout"
		objects "$IMG/$n" "$(get "dg_$n")" | sort -u >"$STATE/obj_$n"
		info "$n: $(get "dg_$n"), $(wc -l <"$STATE/obj_$n") objects"
	done
	local idx
	idx=$(local_blob "$IMG/multi" "$(get dg_multi | cut -d: -f2)")
	expect_eq "$(jq -r .mediaType "$idx")" application/vnd.oci.image.index.v1+json "multi is an OCI index"
	expect_eq "$(jq -r '[.manifests[].platform.architecture] | sort | join(",")' "$idx")" amd64,arm64 "multi platforms"
	jq -r '.manifests[].digest' "$idx" | sed 's/^sha256://' | sort >"$STATE/kid_manifests"
	# the base layer is shared by every image
	expect_eq "$(jq -r '.layers[0].digest' "$(local_blob "$IMG/a" "$(get dg_a | cut -d: -f2)")")" \
		"$(jq -r '.layers[0].digest' "$(local_blob "$IMG/b" "$(get dg_b | cut -d: -f2)")")" "base layer shared by a and b"
	head -c 102400 /dev/urandom >"$IMG/orphan.bin"
	sha256_file "$IMG/orphan.bin" >"$STATE/obj_orphan"

	# what each collector must leave
	union "$STATE"/obj_* >"$STATE/all"                                        # everything pushed
	union "$STATE/obj_a" "$STATE/obj_b" "$STATE/obj_c" "$STATE/obj_e" "$STATE/obj_multi" >"$STATE/left_keep"
	union "$STATE/obj_a" "$STATE/obj_b" "$STATE/obj_multi" >"$STATE/left_untag"
	# Distribution 2.8 -m: the index marks its children's manifest blobs,
	# but their configs and layers only stay if a tagged image uses them
	union "$STATE/obj_a" "$STATE/obj_b" "$STATE/kid_manifests" <(get dg_multi | cut -d: -f2) >"$STATE/left_untag_dist"
	only_in "$STATE/left_untag" "$STATE/left_untag_dist" >"$STATE/dist_bug"
	only_in "$STATE/all" "$STATE/left_keep" >"$STATE/freed_keep"
	only_in "$STATE/all" "$STATE/left_untag" >"$STATE/freed_untag"
	info "blobs pushed $(wc -l <"$STATE/all"); expected freed: keep-untagged $(wc -l <"$STATE/freed_keep"), delete-untagged $(wc -l <"$STATE/freed_untag") (Distribution $(($(wc -l <"$STATE/freed_untag") + $(wc -l <"$STATE/dist_bug"))))"
	[ -s "$STATE/dist_bug" ] || fail_now "index children share everything with tagged images: the -m case would test nothing"
}

# ================================================================== 1b. Distribution writes
s_d_push() {
	cp_in "oci:$IMG/a:a" "docker://$REG/alpha:v1"
	cp_in "oci:$IMG/a:a" "docker://$REG/alpha:v2"
	cp_in "oci:$IMG/old:old" "docker://$REG/alpha:old"
	cp_in "oci:$IMG/b:b" "docker://$REG/beta:v1"
	cp_in "oci:$IMG/a:a" "docker://$REG/beta:a"
	cp_in --all "oci:$IMG/multi:multi" "docker://$REG/gamma:multi"
	cp_in "oci:$IMG/e:e" "docker://$REG/gamma:edge"
	expect_eq "$(reg_digest gamma edge)" "$(get dg_e)" "gamma:edge = E"
	cp_in "oci:$IMG/b:b" "docker://$REG/gamma:edge"
	expect_eq "$(reg_digest gamma edge)" "$(get dg_b)" "gamma:edge moved to B (E untagged)"
	local n repo tag img
	for n in alpha:v1:a alpha:v2:a alpha:old:old beta:v1:b beta:a:a gamma:multi:multi; do
		IFS=: read -r repo tag img <<<"$n"
		expect_eq "$(reg_digest "$repo" "$tag")" "$(get "dg_$img")" "$repo:$tag digest"
	done
	verify_tree gamma "$(get dg_multi)" "$IMG/multi"
}

s_d_untagged() { # C by digest only into beta
	cp_in "oci:$IMG/c:c" "docker://$REG/beta@$(get dg_c)"
	expect_eq "$(reg_digest beta "$(get dg_c)")" "$(get dg_c)" "beta@C digest"
	verify_tree beta "$(get dg_c)" "$IMG/c"
	expect_eq "$(reg_tags beta | jq -r '.tags | join(",")')" a,v1 "tags of beta (C untagged)"
}

s_d_orphan() { # a blob no manifest references
	reg_chunked_upload alpha "$IMG/orphan.bin" 2
	reg_blob alpha "sha256:$(cat "$STATE/obj_orphan")" "$WORK/tmp/orphan.blob"
	cmp "$WORK/tmp/orphan.blob" "$IMG/orphan.bin"
}

s_d_delete() {
	local dg
	dg=$(get dg_old)
	expect_eq "$(http_status "http://$REG/v2/alpha/manifests/$dg" -X DELETE)" 202 "DELETE /v2/alpha/manifests/$dg (OLD)"
	expect_gone alpha old "$dg"
	dg=$(get dg_a)
	expect_eq "$(http_status "http://$REG/v2/beta/manifests/$dg" -X DELETE)" 202 "DELETE /v2/beta/manifests/$dg (A)"
	expect_gone beta a "$dg"
	expect_eq "$(reg_digest alpha v1)" "$dg" "alpha:v1 (A) still there"
}

s_d_record() {
	expect_eq "$(reg_catalog)" alpha,beta,gamma "catalog"
	expect_eq "$(reg_tags alpha | jq -r '.tags | join(",")')" v1,v2 "tags of alpha"
	expect_eq "$(reg_tags beta | jq -r '.tags | join(",")')" v1 "tags of beta"
	expect_eq "$(reg_tags gamma | jq -r '.tags | join(",")')" edge,multi "tags of gamma"
	expect_eq "$(reg_digest gamma "$(get dg_e)")" "$(get dg_e)" "gamma@E (untagged) still served"
	expect_eq "$(reg_digest beta "$(get dg_c)")" "$(get dg_c)" "beta@C (untagged) still served"
}

s_d_root() { # the root Distribution wrote holds every pushed blob
	blob_set "$R" >"$STATE/blobs_r"
	expect_eq "$(only_in "$STATE/all" "$STATE/blobs_r" | tr '\n' ' ')" "" "pushed blobs missing from R"
	expect_eq "$(only_in "$STATE/blobs_r" "$STATE/all" | tr '\n' ' ')" "" "blobs in R nobody pushed"
	info "R: $(wc -l <"$STATE/blobs_r") blobs"
}

# ================================================================== 2. garbage collection
s_copies() {
	local c
	for c in keep-dist keep-ours keep-cmd untag-dist untag-ours untag-cmd; do
		cp -a "$R" "$WORK/$c"
		expect_eq "$(blob_set "$WORK/$c" | sha256sum)" "$(sha256sum <"$STATE/blobs_r")" "blobs of copy $c"
	done
}

# s_gc_dist NAME [-m]: docker-registry garbage-collect on $WORK/NAME
s_gc_dist() {
	local root=$WORK/$1 out=$GCDIR/$1.out cfg line
	shift
	cfg=$(cfg_for "$root")
	gc_run "$DIST_BIN" garbage-collect "$@" "$cfg" >"$out" 2>&1 || { tail -n 20 "$out"; fail_now "docker-registry garbage-collect $* failed"; }
	line=$(grep -E '^[0-9]+ blobs marked, [0-9]+ blobs and [0-9]+ manifests eligible for deletion' "$out" | tail -n1)
	expect_ne_empty "$line" "summary line of docker-registry garbage-collect"
	info "Distribution: $line"
	blob_set "$root" >"$GCDIR/$(basename "$root").left"
	only_in "$STATE/blobs_r" "$GCDIR/$(basename "$root").left" >"$GCDIR/$(basename "$root").freed"
	expect_eq "$(echo "$line" | awk '{print $4}')" "$(wc -l <"$GCDIR/$(basename "$root").freed")" "blobs Distribution said it would delete vs blobs gone"
}

# s_gc_ours NAME [--delete-untagged]: registry-gc --dry-run, then for real
s_gc_ours() {
	local name=$1 root=$WORK/$1 cfg dry real
	shift
	cfg=$(cfg_for "$root")
	tree_listing "$root" >"$GCDIR/$name.tree-before"
	gc_run "$GC_BIN" "$cfg" --dry-run --grace 0 --json "$@" >"$GCDIR/$name.dry.json" 2>"$GCDIR/$name.dry.err" ||
		{ cat "$GCDIR/$name.dry.err"; fail_now "registry-gc --dry-run failed"; }
	tree_listing "$root" >"$GCDIR/$name.tree-after"
	diff "$GCDIR/$name.tree-before" "$GCDIR/$name.tree-after" || fail_now "registry-gc --dry-run changed the root"
	info "dry run changed nothing ($(wc -l <"$GCDIR/$name.tree-before") entries)"
	gc_run "$GC_BIN" "$cfg" --grace 0 --json "$@" >"$GCDIR/$name.json" 2>"$GCDIR/$name.err" ||
		{ cat "$GCDIR/$name.err"; fail_now "registry-gc failed"; }
	dry=$(jq -s '.[-1]' "$GCDIR/$name.dry.json")
	real=$(jq -s '.[-1]' "$GCDIR/$name.json")
	info "dry run: $(echo "$dry" | jq -c 'del(.phases)')"
	info "real:    $(echo "$real" | jq -c 'del(.phases)')"
	expect_eq "$(echo "$dry" | jq .dry_run)" true "dry run reports dry_run"
	expect_eq "$(echo "$real" | jq .dry_run)" false "real run reports dry_run"
	blob_set "$root" >"$GCDIR/$name.left"
	only_in "$STATE/blobs_r" "$GCDIR/$name.left" >"$GCDIR/$name.freed"
	expect_eq "$(echo "$real" | jq .blobs_deleted)" "$(wc -l <"$GCDIR/$name.freed")" "blobs_deleted vs blobs gone"
	expect_eq "$(echo "$dry" | jq .blobs_deleted)" "$(echo "$real" | jq .blobs_deleted)" "blobs_deleted: dry run vs real run"
	expect_eq "$(echo "$dry" | jq .manifests_deleted)" "$(echo "$real" | jq .manifests_deleted)" "manifests_deleted: dry run vs real run"
}

# s_gc_cmd NAME [-m]: REGISTRY_BIN garbage-collect --grace 0
s_gc_cmd() {
	local name=$1 root=$WORK/$1 cfg
	shift
	cfg=$(cfg_for "$root")
	gc_run "$OUR_BIN" garbage-collect --grace 0 "$@" "$cfg" >"$GCDIR/$name.out" 2>&1 ||
		{ tail -n 20 "$GCDIR/$name.out"; fail_now "registry garbage-collect failed"; }
	tail -n 3 "$GCDIR/$name.out"
	blob_set "$root" >"$GCDIR/$name.left"
	only_in "$STATE/blobs_r" "$GCDIR/$name.left" >"$GCDIR/$name.freed"
}

# same_left A B [EXPECTED_STATE]: both collectors left the same blobs (and
# those expected)
same_left() {
	local a=$GCDIR/$1.left b=$GCDIR/$2.left
	{ [ -f "$a" ] && [ -f "$b" ]; } || fail_now "missing result of $1 or $2 (earlier step failed?)"
	if ! cmp -s "$a" "$b"; then
		echo "only left by $1: $(only_in "$a" "$b" | digests)"
		echo "only left by $2: $(only_in "$b" "$a" | digests)"
		fail_now "$1 and $2 left different blobs"
	fi
	info "$1 and $2 left the same $(wc -l <"$a") blobs, freed $(wc -l <"$GCDIR/$1.freed")"
	if [ -n "${3:-}" ]; then
		expect_eq "$(only_in "$STATE/$3" "$a" | digests)" "" "expected blobs ($3) that are gone"
		expect_eq "$(only_in "$a" "$STATE/$3" | digests)" "" "blobs left that should be gone ($3)"
	fi
}

s_cmp_keep() { same_left keep-dist keep-ours left_keep; }
s_cmp_keep_cmd() { same_left keep-ours keep-cmd left_keep; }
s_cmp_untag_cmd() { same_left untag-ours untag-cmd left_untag; }

# -m: identical except the index children's configs and layers
s_cmp_untag() {
	local d=$GCDIR/untag-dist.left o=$GCDIR/untag-ours.left
	{ [ -f "$d" ] && [ -f "$o" ]; } || fail_now "missing result (earlier step failed?)"
	only_in "$o" "$d" >"$STATE/untag_diff_ours"
	only_in "$d" "$o" >"$STATE/untag_diff_dist"
	info "only left by registry-gc: $(digests "$STATE/untag_diff_ours")"
	info "only left by Distribution: $(digests "$STATE/untag_diff_dist")"
	expect_eq "$(digests "$STATE/untag_diff_dist")" "" "blobs Distribution kept and registry-gc deleted"
	expect_eq "$(only_in "$STATE/left_untag" "$o" | digests)" "" "blobs registry-gc should have kept"
	expect_eq "$(only_in "$o" "$STATE/left_untag" | digests)" "" "blobs registry-gc should have deleted"
	# Distribution kept the child manifests (the index marks them) ...
	expect_eq "$(only_in "$STATE/kid_manifests" "$d" | digests)" "" "index children manifests missing after Distribution -m"
	# ... and lost exactly their configs/layers no tagged image shares
	expect_eq "$(digests "$STATE/untag_diff_ours")" "$(digests "$STATE/dist_bug")" "difference vs children's unshared configs+layers"
	# which child lost what (for the NOTE after the step)
	local k f arch d what lost
	: >"$STATE/bug_detail"
	while read -r k; do
		f=$(local_blob "$IMG/multi" "$k")
		arch=$(jq -r --arg d "sha256:$k" '.manifests[] | select(.digest == $d) | .platform.architecture' \
			"$(local_blob "$IMG/multi" "$(get dg_multi | cut -d: -f2)")")
		lost=""
		while read -r what d; do
			if grep -qxF "${d#sha256:}" "$STATE/untag_diff_ours"; then lost="$lost $what $d"; fi
		done < <(jq -r '"config \(.config.digest)", (.layers | to_entries[] | "layer\(.key) \(.value.digest)")' "$f")
		echo "child sha256:$k ($arch): manifest kept by both; Distribution deleted$lost" | tee -a "$STATE/bug_detail"
	done <"$STATE/kid_manifests"
}

# ================================================================== 3. serving what was kept
s_o_pull_tags() {
	s_copy_out_oci alpha v1 dg_a
	s_copy_out_oci alpha v2 dg_a
	s_copy_out_oci beta v1 dg_b
	s_copy_out_oci gamma edge dg_b
	s_copy_out_oci gamma multi dg_multi --all
}

s_o_pull_untagged() { # kept without --delete-untagged
	s_copy_out_oci beta "$(get dg_c)" dg_c
	s_copy_out_oci gamma "$(get dg_e)" dg_e
}

s_o_gone() { # MODE(keep|untag)
	local d r
	expect_gone alpha old "$(get dg_old)"
	expect_gone beta a "$(get dg_a)"
	if [ "$1" = untag ]; then
		expect_gone_digest beta "$(get dg_c)"
		expect_gone_digest gamma "$(get dg_e)"
	fi
	while read -r d; do
		for r in alpha beta gamma; do
			expect_eq "$(http_status "http://$REG/v2/$r/blobs/sha256:$d" -I)" 404 "HEAD freed blob $r@sha256:$d"
		done
	done <"$STATE/freed_$1"
}

s_o_meta() {
	expect_eq "$(reg_catalog)" alpha,beta,gamma "catalog"
	expect_eq "$(reg_tags alpha | jq -r '.tags | join(",")')" v1,v2 "tags of alpha"
	expect_eq "$(reg_tags beta | jq -r '.tags | join(",")')" v1 "tags of beta"
	expect_eq "$(reg_tags gamma | jq -r '.tags | join(",")')" edge,multi "tags of gamma"
}

# Distribution on the root its own -m left: the index is served, its
# children are not (revision links removed) and their configs are gone
s_d_bug() {
	local k f cfgd
	expect_eq "$(reg_digest gamma multi)" "$(get dg_multi)" "gamma:multi index served"
	while read -r k; do
		f=$(local_blob "$IMG/multi" "$k")
		cfgd=$(jq -r .config.digest "$f")
		expect_eq "$(http_status "http://$REG/v2/gamma/manifests/sha256:$k" -H "Accept: $ACCEPT_ALL")" 404 "GET child gamma@sha256:$k"
		expect_eq "$(http_status "http://$REG/v2/gamma/blobs/$cfgd" -I)" 404 "HEAD child's config gamma@$cfgd"
	done <"$STATE/kid_manifests"
	if cp_out --all "docker://$REG/gamma:multi" "oci:$OUT/dist-bug:multi"; then
		fail_now "skopeo copy --all gamma:multi from Distribution's -m result worked"
	fi
	info "skopeo copy --all gamma:multi fails on Distribution's -m result, as expected"
}

# ================================================================== main
echo "gc-compat: registry-gc $GC_BIN, server $OUR_BIN vs $("$DIST_BIN" --version 2>/dev/null | head -n1)"
echo "gc-compat: work dir $WORK, host arch $HOSTARCH"

section "1. images, written by Distribution 2.8"
if ! step "setup: tools present" s_tools; then E2E_DONE=1; exit 1; fi
if ! step "build: base, A, B, OLD, C, E, OCI index multi (amd64+arm64), all sharing the base layer" s_build; then E2E_DONE=1; exit 1; fi
server_phase dist "$R" "Distribution"
step "Distribution: skopeo push alpha:v1 alpha:v2 alpha:old beta:v1 beta:a gamma:multi (index) gamma:edge (E, then B)" s_d_push
step "Distribution: push C by digest only (beta@C, untagged)" s_d_untagged
step "Distribution: orphan blob into alpha (chunked upload, no manifest)" s_d_orphan
step "Distribution: DELETE alpha@OLD and beta@A by digest" s_d_delete
step "Distribution: catalog, tags/list, untagged manifests as expected" s_d_record
server_stop "Distribution"
if ! step "root R holds exactly the pushed blobs" s_d_root; then E2E_DONE=1; exit 1; fi

section "2. garbage collection on copies of R"
if ! step "copy R six times (cp -a)" s_copies; then E2E_DONE=1; exit 1; fi
step "keep untagged: docker-registry garbage-collect" s_gc_dist keep-dist
step "keep untagged: registry-gc --grace 0 (--dry-run first: same blobs_deleted, root unchanged)" s_gc_ours keep-ours
step "keep untagged: registry garbage-collect --grace 0" s_gc_cmd keep-cmd
step "keep untagged: registry-gc and Distribution left identical blobs (as predicted)" s_cmp_keep
step "keep untagged: registry garbage-collect left the same blobs as registry-gc" s_cmp_keep_cmd
step "delete untagged: docker-registry garbage-collect -m" s_gc_dist untag-dist -m
step "delete untagged: registry-gc --grace 0 --delete-untagged (--dry-run first: same blobs_deleted, root unchanged)" s_gc_ours untag-ours --delete-untagged
step "delete untagged: registry garbage-collect --grace 0 -m" s_gc_cmd untag-cmd -m
step "delete untagged: identical except the index children's configs+layers, which registry-gc keeps and Distribution 2.8 -m deletes (Distribution's known bug: index children counted as untagged)" s_cmp_untag
if [ -s "$STATE/bug_detail" ]; then
	note "index gamma:multi $(cat "$STATE/dg_multi"): Distribution -m deleted $(wc -l <"$STATE/untag_diff_ours") blobs registry-gc keeps:"
	sed 's/^/      /' "$STATE/bug_detail"
fi
step "delete untagged: registry garbage-collect -m left the same blobs as registry-gc" s_cmp_untag_cmd
for m in keep untag; do
	for w in dist ours cmd; do
		[ -f "$GCDIR/$m-$w.freed" ] && note "blobs freed: $m-$w $(wc -l <"$GCDIR/$m-$w.freed") of $(wc -l <"$STATE/blobs_r")"
	done
done

section "3. our server on what registry-gc kept"
server_phase ours "$WORK/keep-ours" "ours (keep untagged)"
step "ours (keep untagged): skopeo copy every tag and the index (--all), objects hash and equal the images" s_o_pull_tags
step "ours (keep untagged): untagged beta@C and gamma@E still served" s_o_pull_untagged
step "ours (keep untagged): deleted manifests and freed blobs are 404" s_o_gone keep
step "ours (keep untagged): catalog and tags/list" s_o_meta
server_stop "ours (keep untagged)"
server_phase ours "$WORK/untag-ours" "ours (delete untagged)"
step "ours (delete untagged): skopeo copy every tag and the index (--all, children intact)" s_o_pull_tags
step "ours (delete untagged): deleted and untagged manifests and freed blobs are 404" s_o_gone untag
step "ours (delete untagged): catalog and tags/list" s_o_meta
server_stop "ours (delete untagged)"
if [ -s "$STATE/untag_diff_ours" ]; then
	server_phase dist "$WORK/untag-dist" "Distribution (its -m result)"
	step "Distribution (its -m result): gamma:multi served but its children and their configs are gone (Distribution's known bug)" s_d_bug
	server_stop "Distribution (its -m result)"
fi

E2E_DONE=1
exit 0
