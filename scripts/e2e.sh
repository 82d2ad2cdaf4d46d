#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions are invoked indirectly via step/trap
# End-to-end test of an OCI registry with real clients (Debian packages).
#
#   usage: scripts/e2e.sh 127.0.0.1:PORT
#
# The registry must already be running on 127.0.0.1:PORT (plain HTTP, no
# auth, deletes enabled).  Nothing is pulled from the internet: every image
# is built locally from scratch with buildah from Debian's busybox-static.
# All repositories live under e2e/<run-id>/ so runs never collide.
#
# What it covers (each check prints one PASS/FAIL line):
#  setup    buildah (vfs, private storage root) builds a 2-layer base image
#           (busybox + files + 4 MiB incompressible layer) and amd64/arm64
#           images; exported as OCI layout, docker-archive and dir (v2s2).
#  skopeo   copy OCI layout -> registry with --preserve-digests and verify
#           every manifest/config/layer byte-for-byte via GET /v2/ (curl);
#           inspect, inspect --raw, inspect --config; HEAD digest and
#           Content-Type; copy back to an OCI layout and compare all bytes;
#           dir: (docker v2s2) round trip compared with diff -r;
#           docker-archive push (uncompressed layers get gzip'ed) verified by
#           config bytes and gunzip'ed layers == diff_ids, then copy back to a
#           docker-archive; registry->registry copy (cross-repo mount path);
#           list-tags + GET /tags/list (pagination with n/last is checked
#           only if the server honours ?n=; Distribution 2.8 ignores it);
#           delete by tag -> manifest 404 by digest and tag, other tag and
#           other repo unaffected; HEAD/404 behaviour via curl.
#  multi    buildah manifest create/add/push --all as OCI index and as docker
#           manifest list; verify whole tree; skopeo inspect --override-arch;
#           skopeo copy --all (index -> OCI layout, list -> dir:) and back to
#           a new repo with identical digests; podman/docker/ctr pull it too.
#  podman   pull (fresh storage), image ID == config digest, tag+push (oci and
#           v2s2, --digestfile == registry digest), rmi + pull by tag and by
#           digest, pull --arch arm64 from an index, build (COPY/ENV/LABEL)
#           FROM an image in the registry and push.
#  buildah  push with --digestfile, pull into a fresh store, from + copy +
#           commit + push of a derived image (diff_ids prefix preserved).
#  docker   own dockerd (vfs, private data/exec root, no iptables/bridge):
#           load docker-archive, tag, push (digest == registry), rmi, pull,
#           pull by digest, pull an OCI-manifest image, pull the index and the
#           manifest list (host platform chosen), push to a 2nd repo (mount),
#           docker build with the legacy builder and with BuildKit FROM the
#           pulled base (COPY/ENV/LABEL, plus RUN --network none when a
#           runtime works), push, rmi, pull back, inspect (and run).
#  ctr      own containerd (no CRI, private root/state/socket): pull
#           --plain-http (docker v2s2, OCI, by digest, --all-platforms index),
#           export and compare blobs with the original OCI layout, tag + push
#           of an image and of an index (digests preserved).
#
# Output ends with the line "e2e: N passed, M failed"; exit status is non-zero
# if anything failed.  Every daemon started is stopped by PID in an EXIT trap;
# all data lives in one mktemp directory that is removed at the end (set
# E2E_KEEP=1 to keep it).  Each client call is bounded by `timeout`
# (E2E_TIMEOUT seconds, default 120).
#
# Debian packages needed: skopeo podman buildah containerd docker.io
# busybox-static jq curl coreutils gzip tar (+ runc/crun, pulled in by
# docker.io/podman).  Must run as root (dockerd, containerd).
# Global state it cannot avoid touching as root: skopeo's blob-info cache
# /var/lib/containers/cache (no flag for it), and empty runtime dirs that
# dockerd/containerd/runc hard-code (/run/docker/plugins, /run/containerd/s,
# /run/runc).  No other daemon, socket, store or config outside the work dir.
#
# Environment knobs: E2E_TIMEOUT (per client command, default 120s),
# E2E_TOTAL_TIMEOUT (whole run, default 1800s, 0 = none), E2E_KEEP=1 (keep
# work dir and per-step logs), E2E_LOG_TAIL (log lines shown per failure),
# E2E_SKIP="docker ctr ..." (sections: skopeo multi podman buildah docker
# ctr; later sections use images pushed by skopeo and multi; "search" leaves
# out docker and podman search, which Distribution does not answer),
# E2E_STRICT_PAGINATION=1 (fail if /tags/list ignores ?n=), DOCKER_CLI
# (default /usr/bin/docker: the client matching Debian's dockerd 20.10; the
# newer /usr/local/bin/docker would need DOCKER_API_VERSION).

set -u -o pipefail

usage() { echo "usage: $0 127.0.0.1:PORT" >&2; echo "e2e: 0 passed, 1 failed"; exit 2; }
[ $# -eq 1 ] || usage
REG=$1
[[ $REG =~ ^127\.0\.0\.1:[0-9]+$ ]] || { echo "e2e: registry must be 127.0.0.1:PORT (got '$REG')" >&2; usage; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"
watchdog E2E 1800 "${BASH_SOURCE[0]}" "$@"

E2E_SKIP=${E2E_SKIP:-}

# ------------------------------------------------------------------ work dir
WORK=$(mktemp -d "${TMPDIR:-/tmp}/e2e.XXXXXX") || exit 1
LOGDIR=$WORK/logs
STATE=$WORK/state
mkdir -p "$LOGDIR" "$STATE" "$WORK/tmp" "$WORK/img"

E2E_DONE=0
suite_traps e2e E2E_KEEP

# Keep every client away from global state and from any proxy (lib.sh),
# and docker and podman too.
isolate_clients "$WORK"
isolate_engines "$WORK"

RUN_ID=r$(date +%s)-$$
NS=e2e/$RUN_ID
HOSTARCH=$(host_arch)

# ------------------------------------------------------------------ client wrappers
# (sko, bh_in, pm_in, dk, ct: lib.sh)
bh() { bh_in build "$@"; }          # store where images are built
bh2() { bh_in buildah2 "$@"; }      # fresh store for buildah pulls
pm() { pm_in podman "$@"; }         # fresh store for podman

skipped() { case " $E2E_SKIP " in *" $1 "*) note "section $1 skipped (E2E_SKIP)"; return 0 ;; esac; return 1; }

# ================================================================== setup
s_tools() {
	require_commands skopeo podman buildah ctr containerd dockerd "$DOCKER_CLI" jq curl timeout gzip tar cmp sha256sum
	require_busybox_static
	require_root "dockerd, containerd"
	local code
	code=$(http_status "http://$REG/v2/")
	expect_eq "$code" 200 "GET /v2/ status"
	skopeo --version; podman --version; buildah --version; ctr --version; "$DOCKER_CLI" --version
}

# base image: layer 1 = busybox + /hello.txt, layer 2 = 4 MiB random + /etc/e2e
s_build_images() {
	local ctx=$WORK/ctx c
	mk_release_base e2e-base "hello from e2e $RUN_ID" 4194304 /etc/e2e-release \
		org.example.e2e=base "org.example.run=$RUN_ID"
	# export in three local formats
	bh push --format oci localhost/e2e-base:latest "oci:$WORK/img/oci:base"
	sko copy "oci:$WORK/img/oci:base" "docker-archive:$WORK/img/base.tar:e2e/base:latest"
	sko copy --format v2s2 "oci:$WORK/img/oci:base" "dir:$WORK/img/dir-v2s2"
	# multi-arch images: different content per arch
	local a
	for a in amd64 arm64; do
		echo "arch $a $RUN_ID" >"$ctx/arch-$a"
		c=$(bh from scratch)
		bh copy "$c" "$ctx/busybox" /bin/busybox
		bh copy "$c" "$ctx/arch-$a" /arch.txt
		bh config --arch "$a" --os linux --cmd '["/bin/busybox","cat","/arch.txt"]' --label "org.example.arch=$a" "$c"
		bh commit --format oci "$c" "localhost/e2e-multi-$a:latest"
		bh rm "$c"
	done
	local layers
	layers=$(jq -r '.layers | length' "$WORK/img/oci/blobs/sha256/$(layout_digest "$WORK/img/oci" base | cut -d: -f2)")
	expect_eq "$layers" 2 "base image layer count"
	put base_oci_digest "$(layout_digest "$WORK/img/oci" base)"
	put base_config "$(jq -r .config.digest "$WORK/img/oci/blobs/sha256/$(get base_oci_digest | cut -d: -f2)")"
}

# ================================================================== skopeo
R_OCI=$NS/skopeo/oci
R_DIR=$NS/skopeo/dir
R_ARC=$NS/skopeo/archive
R_TAGS=$NS/skopeo/tags
R_DEL=$NS/skopeo/delete
R_COPY=$NS/skopeo/copied

s_sko_push_oci() {
	sko copy --preserve-digests --dest-tls-verify=false "oci:$WORK/img/oci:base" "docker://$REG/$R_OCI:v1"
	local want got
	want=$(get base_oci_digest)
	got=$(reg_digest "$R_OCI" v1)
	expect_eq "$got" "$want" "manifest digest served for $R_OCI:v1"
	verify_tree "$R_OCI" "$want" "$WORK/img/oci"
}

s_sko_inspect() {
	local raw j cfg
	raw=$WORK/tmp/raw.json
	sko inspect --tls-verify=false --raw "docker://$REG/$R_OCI:v1" >"$raw"
	expect_eq "sha256:$(sha256_file "$raw")" "$(get base_oci_digest)" "inspect --raw bytes hash"
	cmp "$raw" "$WORK/img/oci/blobs/sha256/$(get base_oci_digest | cut -d: -f2)"
	j=$(sko inspect --tls-verify=false "docker://$REG/$R_OCI:v1")
	echo "$j"
	expect_eq "$(echo "$j" | jq -r .Digest)" "$(get base_oci_digest)" "inspect .Digest"
	expect_eq "$(echo "$j" | jq -r .Architecture)" "$HOSTARCH" "inspect .Architecture"
	expect_eq "$(echo "$j" | jq -r '.Labels["org.example.e2e"]')" base "inspect label"
	expect_eq "$(echo "$j" | jq -r '.Layers | length')" 2 "inspect layer count"
	cfg=$WORK/tmp/cfg.json
	sko inspect --tls-verify=false --config --raw "docker://$REG/$R_OCI:v1" >"$cfg"
	expect_eq "sha256:$(sha256_file "$cfg")" "$(get base_config)" "inspect --config --raw bytes hash"
	# by digest too
	j=$(sko inspect --tls-verify=false "docker://$REG/$R_OCI@$(get base_oci_digest)")
	expect_eq "$(echo "$j" | jq -r .Digest)" "$(get base_oci_digest)" "inspect by digest"
}

s_http_head() {
	local h=$WORK/tmp/head.hdr code dg
	code=$(rcurl -o /dev/null -w '%{http_code}' -I -D "$h" -H "Accept: $ACCEPT_ALL" "http://$REG/v2/$R_OCI/manifests/v1")
	expect_eq "$code" 200 "HEAD manifest status"
	expect_eq "$(hdr "$h" Docker-Content-Digest)" "$(get base_oci_digest)" "HEAD Docker-Content-Digest"
	expect_eq "$(hdr "$h" Content-Type)" application/vnd.oci.image.manifest.v1+json "HEAD Content-Type"
	expect_eq "$(hdr "$h" Content-Length)" "$(stat -c %s "$WORK/img/oci/blobs/sha256/$(get base_oci_digest | cut -d: -f2)")" "HEAD Content-Length"
	dg=$(get base_config)
	code=$(rcurl -o /dev/null -w '%{http_code}' -I -D "$h" "http://$REG/v2/$R_OCI/blobs/$dg")
	expect_eq "$code" 200 "HEAD config blob status"
	expect_eq "$(hdr "$h" Content-Length)" "$(stat -c %s "$WORK/img/oci/blobs/sha256/${dg#sha256:}")" "HEAD blob Content-Length"
	code=$(http_status "http://$REG/v2/$R_OCI/manifests/doesnotexist" -H "Accept: $ACCEPT_ALL")
	expect_eq "$code" 404 "GET unknown tag"
	code=$(http_status "http://$REG/v2/$R_OCI/blobs/sha256:$(printf 'nope' | sha256sum | cut -d' ' -f1)")
	expect_eq "$code" 404 "GET unknown blob"
}

s_sko_pull_oci() {
	local out=$WORK/img/oci-back
	sko copy --preserve-digests --src-tls-verify=false "docker://$REG/$R_OCI:v1" "oci:$out:back"
	expect_eq "$(layout_digest "$out" back)" "$(get base_oci_digest)" "round-trip manifest digest"
	local f
	for f in "$out"/blobs/sha256/*; do
		cmp "$f" "$WORK/img/oci/blobs/sha256/$(basename "$f")" || fail_now "blob $(basename "$f") differs after round trip"
	done
	expect_eq "$(find "$out/blobs/sha256" -type f | wc -l)" 4 "round-trip blob count (manifest+config+2 layers)"
}

s_sko_dir() {
	local back=$WORK/img/dir-back dg
	expect_eq "$(jq -r .mediaType "$WORK/img/dir-v2s2/manifest.json")" application/vnd.docker.distribution.manifest.v2+json "dir source manifest type"
	sko copy --preserve-digests --dest-tls-verify=false "dir:$WORK/img/dir-v2s2" "docker://$REG/$R_DIR:v2s2"
	dg="sha256:$(sha256_file "$WORK/img/dir-v2s2/manifest.json")"
	expect_eq "$(reg_digest "$R_DIR" v2s2)" "$dg" "v2s2 manifest digest in registry"
	verify_tree "$R_DIR" "$dg" "$WORK/img/dir-v2s2"
	sko copy --preserve-digests --src-tls-verify=false "docker://$REG/$R_DIR:v2s2" "dir:$back"
	diff -r "$WORK/img/dir-v2s2" "$back"
	info "dir: round trip identical (diff -r)"
	put dir_digest "$dg"
}

s_sko_archive() {
	local tar=$WORK/img/base.tar x=$WORK/tmp/arc cfgname cfgdg dg m
	mkdir -p "$x"
	tar -xf "$tar" -C "$x" manifest.json
	cfgname=$(jq -r '.[0].Config' "$x/manifest.json")
	tar -xf "$tar" -C "$x" "$cfgname"
	cfgdg="sha256:$(sha256_file "$x/$cfgname")"
	sko copy --dest-tls-verify=false "docker-archive:$tar" "docker://$REG/$R_ARC:1"
	m=$WORK/tmp/arc-manifest.json
	reg_manifest "$R_ARC" 1 "$m"
	dg="sha256:$(sha256_file "$m")"
	verify_tree "$R_ARC" "$dg"
	expect_eq "$(jq -r .config.digest "$m")" "$cfgdg" "config digest (docker-archive -> registry)"
	reg_blob "$R_ARC" "$cfgdg" "$WORK/tmp/arc-cfg.json"
	cmp "$WORK/tmp/arc-cfg.json" "$x/$cfgname"
	# each registry layer, decompressed, must hash to the diff_id in the config
	local i n d diffid b
	n=$(jq '.layers | length' "$m")
	for ((i = 0; i < n; i++)); do
		d=$(jq -r ".layers[$i].digest" "$m")
		diffid=$(jq -r ".rootfs.diff_ids[$i]" "$x/$cfgname")
		b=$WORK/tmp/arc-layer
		reg_blob "$R_ARC" "$d" "$b"
		if [ "$(head -c2 "$b" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
			expect_eq "sha256:$(gzip -dc "$b" | sha256sum | cut -d' ' -f1)" "$diffid" "layer $i gunzip'ed == diff_id"
		else
			expect_eq "sha256:$(sha256_file "$b")" "$diffid" "layer $i == diff_id"
		fi
	done
	# and back out to a docker-archive
	sko copy --src-tls-verify=false "docker://$REG/$R_ARC:1" "docker-archive:$WORK/img/base-back.tar:e2e/back:1"
	mkdir -p "$x/back"
	tar -xf "$WORK/img/base-back.tar" -C "$x/back"
	cmp "$x/back/$(jq -r '.[0].Config' "$x/back/manifest.json")" "$x/$cfgname"
	info "docker-archive round trip: config identical"
}

s_sko_copy_reg() {
	# registry -> registry (different repo, same registry): exercises blob
	# existence checks and cross-repository mount
	sko copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
		"docker://$REG/$R_OCI:v1" "docker://$REG/$R_COPY:v1"
	expect_eq "$(reg_digest "$R_COPY" v1)" "$(get base_oci_digest)" "copied manifest digest"
	verify_tree "$R_COPY" "$(get base_oci_digest)" "$WORK/img/oci"
}

s_sko_list_tags() {
	local t j tags
	for t in v1 v2 v3 latest; do
		sko copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
			"docker://$REG/$R_OCI:v1" "docker://$REG/$R_TAGS:$t"
	done
	j=$(sko list-tags --tls-verify=false "docker://$REG/$R_TAGS")
	echo "$j"
	tags=$(echo "$j" | jq -r '.Tags | sort | join(",")')
	expect_eq "$tags" "latest,v1,v2,v3" "list-tags"
	j=$(rcurl -f "http://$REG/v2/$R_TAGS/tags/list")
	expect_eq "$(echo "$j" | jq -r .name)" "$R_TAGS" "tags/list name"
	expect_eq "$(echo "$j" | jq -r '.tags | sort | join(",")')" "latest,v1,v2,v3" "tags/list tags"
}

s_tags_paging() {
	# Distribution 2.x ignores ?n= (pagination came in 3.0): if the server
	# returns everything, note it; if it paginates, the result must be right.
	local j h=$WORK/tmp/tags.hdr link
	j=$(rcurl -f -D "$h" "http://$REG/v2/$R_TAGS/tags/list?n=2")
	echo "$j"
	if [ "$(echo "$j" | jq '.tags | length')" -gt 2 ]; then
		[ "${E2E_STRICT_PAGINATION:-0}" = 1 ] && fail_now "server ignores ?n=2"
		echo "server ignores ?n= (no tag pagination): not checked" >"$STATE/paging_note"
		return 0
	fi
	expect_eq "$(echo "$j" | jq -r '.tags | join(",")')" "latest,v1" "tags/list?n=2 (lexical order)"
	link=$(hdr "$h" Link)
	info "Link: $link"
	expect_contains "$link" 'rel="next"' "Link header"
	j=$(rcurl -f "http://$REG/v2/$R_TAGS/tags/list?n=2&last=v1")
	echo "$j"
	expect_eq "$(echo "$j" | jq -r '.tags | join(",")')" "v2,v3" "tags/list?n=2&last=v1"
	j=$(rcurl -f "http://$REG/v2/$R_TAGS/tags/list?n=10&last=v3")
	expect_eq "$(echo "$j" | jq -r '.tags // [] | length')" 0 "tags/list after the last tag"
}

s_sko_delete() {
	local dg code j
	sko copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false "docker://$REG/$R_OCI:v1" "docker://$REG/$R_DEL:gone"
	sko copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false "docker://$REG/$R_DIR:v2s2" "docker://$REG/$R_DEL:keep"
	dg=$(get base_oci_digest)
	expect_eq "$(http_status "http://$REG/v2/$R_DEL/manifests/$dg" -H "Accept: $ACCEPT_ALL")" 200 "manifest present before delete"
	sko delete --tls-verify=false "docker://$REG/$R_DEL:gone"
	if sko inspect --tls-verify=false "docker://$REG/$R_DEL:gone" >/dev/null 2>&1; then fail_now "inspect still works after delete"; fi
	code=$(http_status "http://$REG/v2/$R_DEL/manifests/$dg" -H "Accept: $ACCEPT_ALL")
	expect_eq "$code" 404 "GET deleted manifest by digest"
	code=$(http_status "http://$REG/v2/$R_DEL/manifests/$dg" -I -H "Accept: $ACCEPT_ALL")
	expect_eq "$code" 404 "HEAD deleted manifest by digest"
	code=$(http_status "http://$REG/v2/$R_DEL/manifests/gone" -H "Accept: $ACCEPT_ALL")
	expect_eq "$code" 404 "GET deleted tag"
	expect_eq "$(reg_digest "$R_DEL" keep)" "$(get dir_digest)" "other tag unaffected"
	j=$(sko list-tags --tls-verify=false "docker://$REG/$R_DEL")
	expect_eq "$(echo "$j" | jq -r '.Tags | sort | join(",")')" keep "list-tags after delete"
	# the same manifest in another repository must be unaffected
	expect_eq "$(reg_digest "$R_OCI" v1)" "$dg" "same manifest in other repo unaffected"
}

# ================================================================== multi-arch
R_MULTI=$NS/multi/list
R_MULTI2=$NS/multi/copied

s_multi_create() {
	bh manifest create localhost/e2e-list:latest
	local a
	for a in amd64 arm64; do
		bh manifest add localhost/e2e-list:latest "containers-storage:localhost/e2e-multi-$a:latest"
	done
	bh manifest inspect localhost/e2e-list:latest
}

multi_push() { # FORMAT TAG EXPECTED_MEDIATYPE CHILD_MEDIATYPE
	local df=$WORK/tmp/multi-$2.digest m=$WORK/tmp/multi-$2.json dg
	bh manifest push --all --format "$1" --tls-verify=false --digestfile "$df" \
		localhost/e2e-list:latest "docker://$REG/$R_MULTI:$2"
	reg_manifest "$R_MULTI" "$2" "$m"
	dg="sha256:$(sha256_file "$m")"
	expect_eq "$(cat "$df")" "$dg" "buildah --digestfile vs registry"
	expect_eq "$(jq -r .mediaType "$m")" "$3" "list mediaType"
	expect_eq "$(hdr "$m.hdr" Content-Type)" "$3" "list Content-Type"
	expect_eq "$(jq -r '[.manifests[].platform.architecture] | sort | join(",")' "$m")" "amd64,arm64" "list platforms"
	expect_eq "$(jq -r '[.manifests[].mediaType] | unique | join(",")' "$m")" "$4" "child mediaType"
	verify_tree "$R_MULTI" "$dg"
	local j
	j=$(sko inspect --tls-verify=false --override-arch arm64 "docker://$REG/$R_MULTI:$2")
	expect_eq "$(echo "$j" | jq -r .Architecture)" arm64 "skopeo inspect --override-arch arm64"
	j=$(sko inspect --tls-verify=false --override-arch amd64 "docker://$REG/$R_MULTI:$2")
	expect_eq "$(echo "$j" | jq -r .Architecture)" amd64 "skopeo inspect --override-arch amd64"
	put "multi_$2" "$dg"
}
s_multi_push_oci() { multi_push oci oci application/vnd.oci.image.index.v1+json application/vnd.oci.image.manifest.v1+json; }
s_multi_push_v2s2() { multi_push v2s2 v2s2 application/vnd.docker.distribution.manifest.list.v2+json application/vnd.docker.distribution.manifest.v2+json; }

s_multi_skopeo_all() {
	# OCI index -> OCI layout; docker manifest list -> dir: (an OCI layout
	# cannot hold a docker list without converting it); then back into a new
	# repository with --preserve-digests, and out again for a diff -r.
	local t loc src
	for t in oci v2s2; do
		if [ "$t" = oci ]; then loc=$WORK/img/multi-oci; src="oci:$loc:$t"; else loc=$WORK/img/multi-dir; src="dir:$loc"; fi
		sko copy --all --preserve-digests --src-tls-verify=false "docker://$REG/$R_MULTI:$t" "$src"
		if [ "$t" = oci ]; then
			expect_eq "$(layout_digest "$loc" "$t")" "$(get "multi_$t")" "copy --all to OCI layout digest"
		else
			expect_eq "sha256:$(sha256_file "$loc/manifest.json")" "$(get "multi_$t")" "copy --all to dir: digest"
		fi
		verify_tree "$R_MULTI" "$(get "multi_$t")" "$loc"
		sko copy --all --preserve-digests --dest-tls-verify=false "$src" "docker://$REG/$R_MULTI2:$t"
		expect_eq "$(reg_digest "$R_MULTI2" "$t")" "$(get "multi_$t")" "copy --all local -> new repo ($t) digest"
		verify_tree "$R_MULTI2" "$(get "multi_$t")" "$loc"
	done
	sko copy --all --preserve-digests --src-tls-verify=false "docker://$REG/$R_MULTI2:v2s2" "dir:$WORK/img/multi-dir-back"
	diff -r "$WORK/img/multi-dir" "$WORK/img/multi-dir-back"
	info "manifest list dir: round trip identical (diff -r)"
}

# ================================================================== podman
R_PM=$NS/podman/img
R_PMB=$NS/podman/built

s_pm_pull() {
	pm pull --tls-verify=false "$REG/$R_OCI:v1"
	expect_eq "sha256:$(pm image inspect --format '{{.Id}}' "$REG/$R_OCI:v1")" "$(get base_config)" "podman image ID == config digest"
	expect_eq "$(pm image inspect --format '{{.Digest}}' "$REG/$R_OCI:v1")" "$(get base_oci_digest)" "podman image digest"
}

s_pm_push() {
	local df=$WORK/tmp/pm.digest dg
	pm tag "$REG/$R_OCI:v1" "$REG/$R_PM:oci" "$REG/$R_PM:v2s2"
	pm push --tls-verify=false --format oci --digestfile "$df" "$REG/$R_PM:oci"
	dg=$(reg_digest "$R_PM" oci)
	expect_eq "$(cat "$df")" "$dg" "podman push --digestfile vs registry (oci)"
	verify_tree "$R_PM" "$dg"
	put pm_oci "$dg"
	pm push --tls-verify=false --format v2s2 --digestfile "$df" "$REG/$R_PM:v2s2"
	dg=$(reg_digest "$R_PM" v2s2)
	expect_eq "$(cat "$df")" "$dg" "podman push --digestfile vs registry (v2s2)"
	expect_eq "$(sko inspect --tls-verify=false --raw "docker://$REG/$R_PM:v2s2" | jq -r .mediaType)" \
		application/vnd.docker.distribution.manifest.v2+json "v2s2 mediaType"
	verify_tree "$R_PM" "$dg"
	put pm_v2s2 "$dg"
}

# podman asks /v1/search (and would fall back to _catalog if refused) and
# prints names with the registry's address in front; --limit is its own.
s_pm_search() {
	local out
	out=$(pm search --tls-verify=false --format '{{.Name}}' "$REG/$RUN_ID/podman")
	echo "$out"
	expect_eq "$out" "$REG/$R_PM" "podman search finds the pushed repository"
	out=$(pm search --tls-verify=false --limit 1 --format '{{.Name}}' "$REG/$RUN_ID")
	expect_eq "$(echo "$out" | wc -l)" 1 "podman search --limit 1"
	expect_eq "$(pm search --tls-verify=false --format '{{.Name}}' "$REG/no-such-$RUN_ID")" "" "podman search without a match"
}

s_pm_rmi_pull() {
	pm rmi -f "$REG/$R_OCI:v1" "$REG/$R_PM:oci" "$REG/$R_PM:v2s2"
	[ -z "$(pm images -q)" ] || fail_now "images left after rmi: $(pm images)"
	pm pull --tls-verify=false "$REG/$R_PM:v2s2"
	expect_eq "sha256:$(pm image inspect --format '{{.Id}}' "$REG/$R_PM:v2s2")" "$(get base_config)" "image ID after re-pull"
	pm pull --tls-verify=false "$REG/$R_PM@$(get pm_oci)"
	expect_contains "$(pm image inspect --format '{{join .RepoDigests " "}}' "$REG/$R_PM@$(get pm_oci)")" "$REG/$R_PM@$(get pm_oci)" "RepoDigests after pull by digest"
}

s_pm_pull_arch() {
	pm pull --tls-verify=false --arch arm64 "$REG/$R_MULTI:oci"
	expect_eq "$(pm image inspect --format '{{.Architecture}}' "$REG/$R_MULTI:oci")" arm64 "podman pull --arch arm64"
}

s_pm_build() {
	local ctx=$WORK/pm-ctx df=$WORK/tmp/pmb.digest j
	mkdir -p "$ctx"
	echo "podman-built $RUN_ID" >"$ctx/added.txt"
	cat >"$ctx/Containerfile" <<EOF
FROM $REG/$R_PM:v2s2
COPY added.txt /added.txt
ENV E2E_BUILT=podman
LABEL org.example.built=podman
EOF
	pm build --tls-verify=false --pull=always --format docker -t "$REG/$R_PMB:1" -f "$ctx/Containerfile" "$ctx"
	pm push --tls-verify=false --digestfile "$df" "$REG/$R_PMB:1"
	expect_eq "$(reg_digest "$R_PMB" 1)" "$(cat "$df")" "podman built image digest"
	verify_tree "$R_PMB" "$(cat "$df")"
	j=$(sko inspect --tls-verify=false "docker://$REG/$R_PMB:1")
	expect_eq "$(echo "$j" | jq -r '.Labels["org.example.built"]')" podman "built label"
	expect_eq "$(echo "$j" | jq -r '.Layers | length')" 3 "built layer count"
	expect_contains "$(echo "$j" | jq -r '.Env | join(" ")')" E2E_BUILT=podman "built env"
}

# ================================================================== buildah
R_BH=$NS/buildah/base
R_BHD=$NS/buildah/derived

s_bh_push() {
	local df=$WORK/tmp/bh.digest dg cfg
	bh push --tls-verify=false --format oci --digestfile "$df" localhost/e2e-base:latest "docker://$REG/$R_BH:1"
	dg=$(reg_digest "$R_BH" 1)
	expect_eq "$(cat "$df")" "$dg" "buildah push --digestfile vs registry"
	verify_tree "$R_BH" "$dg"
	cfg=$(sko inspect --tls-verify=false --raw "docker://$REG/$R_BH:1" | jq -r .config.digest)
	expect_eq "$cfg" "$(get base_config)" "config digest preserved by buildah push"
}

s_bh_pull() {
	bh2 pull --tls-verify=false "$REG/$R_BH:1"
	expect_eq "sha256:$(bh2 inspect --type image --format '{{.FromImageID}}' "$REG/$R_BH:1")" "$(get base_config)" "buildah pull image ID"
}

s_bh_derive() {
	local c ctx=$WORK/bh-ctx df=$WORK/tmp/bhd.digest base_ids ids
	mkdir -p "$ctx"
	echo "derived $RUN_ID" >"$ctx/derived.txt"
	c=$(bh2 from --tls-verify=false --pull-always "$REG/$R_DIR:v2s2")
	bh2 copy "$c" "$ctx/derived.txt" /derived.txt
	bh2 config --env E2E_DERIVED=1 --label org.example.derived=yes "$c"
	bh2 commit --format docker "$c" "$REG/$R_BHD:1"
	bh2 rm "$c"
	bh2 push --tls-verify=false --digestfile "$df" "$REG/$R_BHD:1"
	expect_eq "$(reg_digest "$R_BHD" 1)" "$(cat "$df")" "derived digest"
	verify_tree "$R_BHD" "$(cat "$df")"
	base_ids=$(sko inspect --tls-verify=false --config "docker://$REG/$R_DIR:v2s2" | jq -r '.rootfs.diff_ids | join(",")')
	ids=$(sko inspect --tls-verify=false --config "docker://$REG/$R_BHD:1" | jq -r '.rootfs.diff_ids | join(",")')
	expect_eq "$(echo "$ids" | tr ',' '\n' | wc -l)" 3 "derived layer count"
	expect_contains "$ids" "$base_ids" "derived diff_ids start with base diff_ids"
}

# ================================================================== docker
R_DK=$NS/docker/base
R_DK2=$NS/docker/mounted
R_DKB=$NS/docker/built

# start_dockerd, s_dk_up, s_dk_stop: lib.sh

s_dk_load_push() {
	local out dg
	dk load -i "$WORK/img/base.tar"
	expect_eq "$(dk image inspect --format '{{.Id}}' e2e/base:latest)" "$(get base_config)" "docker load image ID"
	dk tag e2e/base:latest "$REG/$R_DK:1"
	out=$(dk push "$REG/$R_DK:1")
	echo "$out"
	dg=$(echo "$out" | sed -n 's/^.*digest: \(sha256:[0-9a-f]\{64\}\) size:.*$/\1/p' | tail -n1)
	expect_ne_empty "$dg" "digest in docker push output"
	expect_eq "$(reg_digest "$R_DK" 1)" "$dg" "docker push digest vs registry"
	expect_eq "$(sko inspect --tls-verify=false --raw "docker://$REG/$R_DK:1" | jq -r .mediaType)" \
		application/vnd.docker.distribution.manifest.v2+json "docker pushed mediaType"
	verify_tree "$R_DK" "$dg"
	put dk_digest "$dg"
}

s_dk_rmi_pull() {
	local dg rd
	dg=$(get dk_digest)
	dk rmi "$REG/$R_DK:1" e2e/base:latest
	if dk image inspect "$REG/$R_DK:1" >/dev/null 2>&1; then fail_now "image still present after rmi"; fi
	dk pull "$REG/$R_DK:1"
	expect_eq "$(dk image inspect --format '{{.Id}}' "$REG/$R_DK:1")" "$(get base_config)" "image ID after pull"
	rd=$(dk image inspect --format '{{join .RepoDigests " "}}' "$REG/$R_DK:1")
	expect_contains "$rd" "$REG/$R_DK@$dg" "RepoDigests"
	dk rmi "$REG/$R_DK:1"
	dk pull "$REG/$R_DK@$dg"
	expect_eq "$(dk image inspect --format '{{.Id}}' "$REG/$R_DK@$dg")" "$(get base_config)" "image ID after pull by digest"
	dk tag "$REG/$R_DK@$dg" "$REG/$R_DK:1"
}

s_dk_pull_oci() {
	dk pull "$REG/$R_OCI:v1"
	expect_eq "$(dk image inspect --format '{{.Id}}' "$REG/$R_OCI:v1")" "$(get base_config)" "docker pull of OCI manifest: image ID"
}

s_dk_pull_multi() {
	local t child cfg
	for t in oci v2s2; do
		dk pull "$REG/$R_MULTI:$t"
		expect_eq "$(dk image inspect --format '{{.Architecture}}' "$REG/$R_MULTI:$t")" "$HOSTARCH" "docker pull $t list picks host arch"
		child=$(rcurl -f -H "Accept: $ACCEPT_ALL" "http://$REG/v2/$R_MULTI/manifests/$t" |
			jq -r --arg a "$HOSTARCH" '.manifests[] | select(.platform.architecture == $a) | .digest')
		cfg=$(rcurl -f -H "Accept: $ACCEPT_ALL" "http://$REG/v2/$R_MULTI/manifests/$child" | jq -r .config.digest)
		expect_eq "$(dk image inspect --format '{{.Id}}' "$REG/$R_MULTI:$t")" "$cfg" "docker image ID == host-arch child config"
	done
}

s_dk_push_mount() {
	local out dg
	dk tag "$REG/$R_DK:1" "$REG/$R_DK2:1"
	out=$(dk push "$REG/$R_DK2:1")
	echo "$out"
	dg=$(echo "$out" | sed -n 's/^.*digest: \(sha256:[0-9a-f]\{64\}\) size:.*$/\1/p' | tail -n1)
	expect_eq "$dg" "$(get dk_digest)" "same manifest digest in 2nd repo"
	expect_eq "$(reg_digest "$R_DK2" 1)" "$dg" "registry digest in 2nd repo"
	verify_tree "$R_DK2" "$dg"
}

# The daemon asks /v1/_ping and /v1/search itself (HTTPS first, then plain
# HTTP for 127.0.0.0/8) and prints what the registry returns, uncut: the
# registry honours the --limit it sends as n.
s_dk_search() {
	local out
	out=$(dk search --format '{{.Name}}' "$REG/$RUN_ID/docker")
	echo "$out"
	expect_eq "$out" "$R_DK"$'\n'"$R_DK2" "docker search: both repositories, in order"
	out=$(dk search --limit 1 --format '{{.Name}}' "$REG/$RUN_ID/docker")
	expect_eq "$out" "$R_DK" "docker search --limit 1"
	out=$(dk search --no-trunc "$REG/$RUN_ID/docker/mounted")
	echo "$out"
	expect_contains "$out" "NAME" "docker search table header"
	expect_contains "$out" "$R_DK2" "docker search table row"
	expect_eq "$(dk search --format '{{.Name}}' "$REG/no-such-$RUN_ID")" "" "docker search without a match"
}

probe_docker_runtime() { # outside a step: sets DK_RUNTIME=1 if containers run
	DK_RUNTIME=0
	if dk run --rm --network none "$REG/$R_DK:1" /bin/busybox true >"$LOGDIR/docker-run-probe.log" 2>&1; then
		DK_RUNTIME=1
		note "docker can run containers: Dockerfiles include RUN (--network none)"
	else
		note "docker cannot run containers here (see below): Dockerfiles without RUN"
		tail -n 5 "$LOGDIR/docker-run-probe.log" | sed 's/^/    | /'
	fi
}

dk_build() { # BUILDKIT(0|1) TAG
	local ctx=$WORK/dk-ctx-$2 out dg j
	mkdir -p "$ctx"
	echo "docker-built $2 $RUN_ID" >"$ctx/added.txt"
	{
		echo "FROM $REG/$R_DK:1"
		echo "COPY added.txt /added.txt"
		echo "ENV E2E_BUILT=docker-$2"
		echo "LABEL org.example.built=\"docker-$2\""
		if [ "$DK_RUNTIME" = 1 ]; then echo 'RUN ["/bin/busybox", "sh", "-c", "echo ran > /ran.txt"]'; fi
	} >"$ctx/Dockerfile"
	cat "$ctx/Dockerfile"
	DOCKER_BUILDKIT=$1 BUILDKIT_PROGRESS=plain dk build --network none -t "$REG/$R_DKB:$2" "$ctx"
	out=$(dk push "$REG/$R_DKB:$2")
	echo "$out"
	dg=$(echo "$out" | sed -n 's/^.*digest: \(sha256:[0-9a-f]\{64\}\) size:.*$/\1/p' | tail -n1)
	expect_eq "$(reg_digest "$R_DKB" "$2")" "$dg" "built image digest vs registry"
	verify_tree "$R_DKB" "$dg"
	local id
	id=$(dk image inspect --format '{{.Id}}' "$REG/$R_DKB:$2")
	dk rmi "$REG/$R_DKB:$2"
	dk pull "$REG/$R_DKB:$2"
	expect_eq "$(dk image inspect --format '{{.Id}}' "$REG/$R_DKB:$2")" "$id" "image ID after rmi + pull"
	expect_eq "$(dk image inspect --format '{{index .Config.Labels "org.example.built"}}' "$REG/$R_DKB:$2")" "docker-$2" "label"
	expect_contains "$(dk image inspect --format '{{join .Config.Env " "}}' "$REG/$R_DKB:$2")" "E2E_BUILT=docker-$2" "env"
	j=$(sko inspect --tls-verify=false "docker://$REG/$R_DKB:$2")
	expect_eq "$(echo "$j" | jq -r '.Labels["org.example.built"]')" "docker-$2" "label via skopeo"
	if [ "$DK_RUNTIME" = 1 ]; then
		expect_eq "$(dk run --rm --network none "$REG/$R_DKB:$2" /bin/busybox cat /added.txt)" "docker-built $2 $RUN_ID" "file in container"
		expect_eq "$(dk run --rm --network none "$REG/$R_DKB:$2" /bin/busybox cat /ran.txt)" ran "RUN result in container"
		expect_eq "$(dk run --rm --network none "$REG/$R_DKB:$2" /bin/busybox cat /data/random.bin | sha256sum | cut -d' ' -f1)" \
			"$(sha256_file "$WORK/ctx/random.bin")" "base layer file content in container"
	fi
}
s_dk_build_legacy() { dk_build 0 legacy; }
s_dk_build_buildkit() { dk_build 1 buildkit; }

# ================================================================== containerd / ctr
R_CT=$NS/ctr/pushed
R_CTM=$NS/ctr/multi

# start_containerd, s_ct_up, s_ct_stop, ct_digest: lib.sh

s_ct_pull() {
	local ref
	ct images pull --plain-http --snapshotter native "$REG/$R_DIR:v2s2"
	expect_eq "$(ct_digest "$REG/$R_DIR:v2s2")" "$(get dir_digest)" "ctr pull (docker v2s2) digest"
	ct images pull --plain-http --snapshotter native "$REG/$R_OCI:v1"
	expect_eq "$(ct_digest "$REG/$R_OCI:v1")" "$(get base_oci_digest)" "ctr pull (OCI) digest"
	ref="$REG/$R_OCI@$(get base_oci_digest)"
	ct images pull --plain-http --snapshotter native "$ref"
	expect_eq "$(ct_digest "$ref")" "$(get base_oci_digest)" "ctr pull by digest"
	ct images check
}

s_ct_export() {
	local x=$WORK/ctr-export f
	mkdir -p "$x"
	ct images export "$WORK/ctr-export.tar" "$REG/$R_OCI:v1"
	tar -xf "$WORK/ctr-export.tar" -C "$x"
	expect_eq "$(jq -r '.manifests[0].digest' "$x/index.json")" "$(get base_oci_digest)" "exported index digest"
	for f in "$x"/blobs/sha256/*; do
		expect_eq "$(sha256_file "$f")" "$(basename "$f")" "exported blob hash"
		cmp "$f" "$WORK/img/oci/blobs/sha256/$(basename "$f")" || fail_now "exported blob differs from original OCI layout"
	done
	expect_eq "$(find "$x/blobs/sha256" -type f | wc -l)" 4 "exported blob count"
}

s_ct_pull_multi() {
	local t d
	for t in oci v2s2; do
		ct images pull --plain-http --all-platforms --snapshotter native "$REG/$R_MULTI:$t"
		expect_eq "$(ct_digest "$REG/$R_MULTI:$t")" "$(get "multi_$t")" "ctr pull --all-platforms ($t) digest"
		for d in $(rcurl -f -H "Accept: $ACCEPT_ALL" "http://$REG/v2/$R_MULTI/manifests/$t" | jq -r '.manifests[].digest'); do
			ct content get "$d" | sha256sum | grep -q "^${d#sha256:} " || fail_now "child $d missing/corrupt in containerd content store"
		done
	done
}

s_ct_push() {
	ct images tag "$REG/$R_DIR:v2s2" "$REG/$R_CT:1"
	ct images push --plain-http "$REG/$R_CT:1"
	expect_eq "$(reg_digest "$R_CT" 1)" "$(get dir_digest)" "ctr push digest"
	verify_tree "$R_CT" "$(get dir_digest)" "$WORK/img/dir-v2s2"
	ct images tag "$REG/$R_MULTI:oci" "$REG/$R_CTM:oci"
	ct images push --plain-http "$REG/$R_CTM:oci"
	expect_eq "$(reg_digest "$R_CTM" oci)" "$(get multi_oci)" "ctr push of index: digest"
	verify_tree "$R_CTM" "$(get multi_oci)"
}

# ================================================================== main
echo "e2e: registry $REG, run $RUN_ID, work dir $WORK, host arch $HOSTARCH"

section setup
step "setup: tools present and registry answers GET /v2/" s_tools || {
	E2E_DONE=1
	exit 1
}
step "setup: buildah builds base (2 layers) and amd64/arm64 images from scratch" s_build_images

if ! skipped skopeo; then
	section skopeo
	step "skopeo: copy OCI layout -> registry, every object byte-identical" s_sko_push_oci
	step "skopeo: inspect / inspect --raw / --config / by digest" s_sko_inspect
	step "http: HEAD manifest/blob headers, 404 for unknown tag/blob" s_http_head
	step "skopeo: copy registry -> OCI layout, all blobs byte-identical" s_sko_pull_oci
	step "skopeo: dir (docker v2s2) -> registry -> dir round trip identical" s_sko_dir
	step "skopeo: docker-archive -> registry -> docker-archive (diff_ids, config)" s_sko_archive
	step "skopeo: registry -> registry copy into a new repo" s_sko_copy_reg
	step "skopeo: list-tags and GET /tags/list" s_sko_list_tags
	step "http: /tags/list pagination (n, last)" s_tags_paging
	[ -f "$STATE/paging_note" ] && note "$(cat "$STATE/paging_note")"
	step "skopeo: delete -> 404 by digest and tag, other tags intact" s_sko_delete
fi

if ! skipped multi; then
	section multi-arch
	step "buildah: manifest create/add (amd64+arm64)" s_multi_create
	step "buildah: manifest push --all as OCI index" s_multi_push_oci
	step "buildah: manifest push --all as docker manifest list" s_multi_push_v2s2
	step "skopeo: copy --all index/list -> OCI layout -> new repo, digests kept" s_multi_skopeo_all
fi

if ! skipped podman; then
	section podman
	step "podman: pull into fresh storage" s_pm_pull
	step "podman: tag + push (oci, v2s2) with --digestfile" s_pm_push
	skipped search || step "podman: search (names with the address, --limit, no match)" s_pm_search
	step "podman: rmi + pull by tag and by digest" s_pm_rmi_pull
	step "podman: pull --arch arm64 from OCI index" s_pm_pull_arch
	step "podman: build FROM registry image, push" s_pm_build
fi

if ! skipped buildah; then
	section buildah
	step "buildah: push with --digestfile" s_bh_push
	step "buildah: pull into a fresh store" s_bh_pull
	step "buildah: from registry + copy + commit + push derived image" s_bh_derive
fi

if ! skipped docker; then
	section docker
	DOCKERD_PID=""
	DOCKERD_CTD_PID=""
	start_dockerd
	step "docker: dockerd up (pid ${DOCKERD_PID%%:*}, vfs, private roots)" s_dk_up "$DOCKERD_PID"
	step "docker: load docker-archive, tag, push" s_dk_load_push
	step "docker: rmi, pull by tag, pull by digest" s_dk_rmi_pull
	step "docker: pull image with OCI manifest" s_dk_pull_oci
	step "docker: pull OCI index and manifest list (host platform)" s_dk_pull_multi
	step "docker: push same image to a second repo" s_dk_push_mount
	skipped search || step "docker: search through the daemon (names in order, --limit, table, no match)" s_dk_search
	probe_docker_runtime
	step "docker: build (legacy builder) FROM registry base, push, rmi, pull" s_dk_build_legacy
	step "docker: build (BuildKit) FROM registry base, push, rmi, pull" s_dk_build_buildkit
	step "docker: stop dockerd (and its containerd) by pid" s_dk_stop "$DOCKERD_PID" "$DOCKERD_CTD_PID"
fi

if ! skipped ctr; then
	section containerd
	CONTAINERD_PID=""
	start_containerd
	step "ctr: containerd up (pid ${CONTAINERD_PID%%:*}, no CRI, private root)" s_ct_up "$CONTAINERD_PID"
	step "ctr: pull --plain-http (v2s2, OCI, by digest)" s_ct_pull
	step "ctr: export and compare blobs with the original OCI layout" s_ct_export
	step "ctr: pull --all-platforms of index and list" s_ct_pull_multi
	step "ctr: tag + push image and index" s_ct_push
	step "ctr: stop containerd by pid" s_ct_stop "$CONTAINERD_PID"
fi

E2E_DONE=1
exit 0
