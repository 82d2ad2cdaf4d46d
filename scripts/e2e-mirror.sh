#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions are invoked indirectly via step/trap
# End-to-end test of the pull-through cache as dockerd's registry mirror:
# the upstream, Debian's docker-registry (CNCF Distribution 2.8, plain HTTP
# on 127.0.0.1; E2E_MIRROR_UPSTREAM names another binary), holds
# library/e2e-mirror, built here from busybox-static; REGISTRY_BIN with
# `proxy.remoteurl` pointing at it is the mirror; a dockerd started here
# with `--registry-mirror http://MIRROR` pulls `e2e-mirror:TAG`, a docker.io
# name, through it. The upstream's requests are counted in its access log.
#
#   usage: scripts/e2e-mirror.sh REGISTRY_BIN
#
# dockerd falls back to registry-1.docker.io when a mirror fails: the pull
# runs only after the mirror has answered for the image itself, and the
# check that dockerd's log names no other registry comes after it.
# Checks: the mirror serves the upstream's manifest; `docker pull` through
# it gives the image (ID == config digest, RepoDigests); every blob crossed
# from the upstream once; a second pull after `docker rmi` crosses nothing;
# pushes to the mirror are refused.
#
# Output ends with "e2e-mirror: N passed, M failed". Only 127.0.0.1 is
# contacted; every process started is stopped by PID. Knobs: E2E_TIMEOUT,
# E2E_MIRROR_TOTAL_TIMEOUT (default 600s), E2E_MIRROR_KEEP=1, BUSYBOX,
# DOCKER_CLI. Must run as root (dockerd).

set -u -o pipefail

usage() { echo "usage: $0 REGISTRY_BIN" >&2; echo "e2e-mirror: 0 passed, 1 failed"; exit 2; }
[ $# -eq 1 ] || usage
OUR_BIN=$(readlink -f "$1") || usage
[ -x "$OUR_BIN" ] || { echo "e2e-mirror: $1 is not executable" >&2; usage; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"
watchdog E2E_MIRROR 600 "${BASH_SOURCE[0]}" "$@"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/e2e-mirror.XXXXXX") || exit 1
LOGDIR=$WORK/logs
STATE=$WORK/state
IMG=$WORK/img
mkdir -p "$LOGDIR" "$STATE" "$WORK/tmp" "$IMG" "$WORK/srv"

E2E_DONE=0
suite_traps e2e-mirror E2E_MIRROR_KEEP
isolate_clients "$WORK"
isolate_engines "$WORK"

TAG=r$(date +%s)-$$
HOSTARCH=$(host_arch)
NAME=e2e-mirror
bh() { bh_in build "$@"; }

s_tools() {
	require_commands skopeo buildah dockerd "$DOCKER_CLI" "$UPSTREAM_BIN" jq curl timeout sha256sum
	require_busybox_static
	require_root "dockerd"
}

s_build() {
	local dg
	mk_release_base mirror-base "hello from e2e-mirror $$" 1048576 /etc/e2e-mirror org.example.e2e=mirror
	bh push --format oci localhost/mirror-base:latest "oci:$IMG/oci:base"
	dg=$(layout_digest "$IMG/oci" base)
	put base_digest "$dg"
	put base_config "$(jq -r .config.digest "$(local_blob "$IMG/oci" "${dg#sha256:}")")"
	info "base $dg"
}

UPSTREAM_BIN=${E2E_MIRROR_UPSTREAM:-/usr/bin/docker-registry}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_upstream: Distribution on a free port; sets UP.
start_upstream() {
	local port
	for port in $(seq 5200 5299); do port_free "$port" && break; done
	cat >"$WORK/srv/upstream.yml" <<CFG
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $WORK/srv/upstream-data
http:
  addr: 127.0.0.1:$port
CFG
	(unset_registry_env && exec "$UPSTREAM_BIN" serve "$WORK/srv/upstream.yml") >"$WORK/srv/upstream.log" 2>&1 &
	track_pid $!
	UP=127.0.0.1:$port
	wait_for 15 rcurl -f -o /dev/null "http://$UP/v2/" || UP=""
}

# start_node NAME EXTRA_CONFIG: our registry on 127.0.0.1:0; sets REG.
start_node() {
	cat >"$WORK/srv/$1.yml" <<CFG
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $WORK/srv/$1-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
$2
CFG
	start_registry "$OUR_BIN" "$WORK/srv/$1.yml" "$WORK/srv/$1.log"
	[ -n "$REG" ] && wait_for 15 rcurl -f -o /dev/null "http://$REG/v2/"
}

# metric NODE_ADDR NAME_PREFIX: the sum of the series that start so
metric() {
	rcurl -f "http://$1/metrics" | awk -v p="$2" 'index($0, p) == 1 { s += $NF } END { print s + 0 }'
}
# Blob GETs the upstream answered 200, from its access log.
upstream_blob_gets() {
	grep -cE "\"GET /v2/library/$NAME/blobs/sha256:[0-9a-f]{64} HTTP/1.1\" 200 " "$WORK/srv/upstream.log" || true
}

s_upstream_push() {
	sko copy --dest-tls-verify=false "oci:$IMG/oci:base" "docker://$UP/library/$NAME:$TAG"
	REG=$UP
	expect_eq "$(reg_digest "library/$NAME" "$TAG")" "$(get base_digest)" "upstream digest"
}

s_mirror_answers() {
	local f=$WORK/tmp/m.json
	rcurl -f -H "Accept: $ACCEPT_ALL" -D "$f.hdr" -o "$f" "http://$MIRROR/v2/library/$NAME/manifests/$TAG"
	expect_eq "$(hdr "$f.hdr" Docker-Content-Digest)" "$(get base_digest)" "mirror's manifest digest"
	expect_eq "sha256:$(sha256_file "$f")" "$(get base_digest)" "mirror's manifest bytes"
	expect_eq "$(upstream_blob_gets)" 0 "blobs fetched before any pull"
}

s_dk_pull() {
	local rd layers
	dk pull "$NAME:$TAG"
	expect_eq "$(dk image inspect --format '{{.Id}}' "$NAME:$TAG")" "$(get base_config)" "image ID == config digest"
	rd=$(dk image inspect --format '{{join .RepoDigests " "}}' "$NAME:$TAG")
	expect_contains "$rd" "$NAME@$(get base_digest)" "RepoDigests"
	layers=$(jq '.layers | length' "$(local_blob "$IMG/oci" "$(get base_digest | cut -d: -f2)")")
	expect_eq "$(upstream_blob_gets)" "$((layers + 1))" "upstream blob GETs (config and layers, once each)"
	if grep -E 'registry-1\.docker\.io|Attempting next endpoint' "$WORK/d/dockerd.log"; then
		fail_now "dockerd went past the mirror"
	fi
}

s_dk_pull_again() {
	local before
	before=$(upstream_blob_gets)
	dk rmi "$NAME:$TAG"
	dk pull "$NAME:$TAG"
	expect_eq "$(dk image inspect --format '{{.Id}}' "$NAME:$TAG")" "$(get base_config)" "image ID after the second pull"
	expect_eq "$(upstream_blob_gets)" "$before" "nothing fetched again"
	info "mirror: $(metric "$MIRROR" registry_proxy_hits_total) hits, $(metric "$MIRROR" registry_proxy_misses_total) misses"
}

s_mirror_refuses_pushes() {
	local code
	code=$(http_status "http://$MIRROR/v2/library/$NAME/blobs/uploads/" -X POST)
	expect_eq "$code" 405 "POST upload to the mirror"
}

step "setup: tools present" s_tools || { E2E_DONE=1; exit 1; }
step "setup: buildah builds the image (2 layers) from busybox-static" s_build

section servers
start_upstream
start_node mirror "proxy:
  remoteurl: http://$UP"
MIRROR=$REG
[ -n "$UP" ] && [ -n "$MIRROR" ] || { echo "e2e-mirror: a registry did not start" >&2; tail -n 20 "$WORK"/srv/*.log >&2; exit 1; }
note "upstream on $UP, mirror on $MIRROR"
step "skopeo: push library/$NAME:$TAG to the upstream" s_upstream_push
# Only once the mirror answers for this very image may dockerd use it.
if ! step "mirror: serves the upstream's manifest (fetched and checked)" s_mirror_answers; then
	E2E_DONE=1
	exit 1
fi

section docker
DOCKERD_PID=""
DOCKERD_CTD_PID=""
start_dockerd --registry-mirror "http://$MIRROR"
step "docker: dockerd up with --registry-mirror http://$MIRROR" s_dk_up "$DOCKERD_PID"
step "docker: pull $NAME:$TAG (docker.io/library) through the mirror" s_dk_pull
step "docker: rmi and pull again: all from the mirror's store" s_dk_pull_again
step "mirror: refuses pushes (405)" s_mirror_refuses_pushes
step "docker: stop dockerd (and its containerd) by pid" s_dk_stop "$DOCKERD_PID" "$DOCKERD_CTD_PID"

E2E_DONE=1
exit 0
