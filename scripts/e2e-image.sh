#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions are invoked indirectly via step/trap
# End-to-end test of the container image, with the recipes people use for
# registry:2: scripts/image.sh builds it with a dockerd started here, then
# containers of it are run as the recipes say, with two changes the test
# machine needs: `--network host` (this dockerd has no bridge) and
# REGISTRY_HTTP_ADDR=127.0.0.1:PORT (servers here listen on loopback only;
# the variable is itself one of the recipes).
#
#   usage: scripts/e2e-image.sh
#
# Recipes: a volume at /var/lib/registry, push and pull with docker, the data
# on the host; the HEALTHCHECK turns healthy; `docker exec registry
# bin/registry garbage-collect /etc/docker/registry/config.yml` and
# registry-gc on the PATH; a restart keeps the data; `docker stop` ends PID
# 1 cleanly (exit 0); REGISTRY_AUTH=htpasswd with REGISTRY_AUTH_HTPASSWD_*
# and a mounted /auth/htpasswd, then docker login and push; a mounted
# /etc/docker/registry/config.yml. The systemd unit in contrib/ passes
# systemd-analyze verify.
#
# Output ends with "e2e-image: N passed, M failed". Only 127.0.0.1 is
# contacted; nothing is pulled. Knobs: E2E_TIMEOUT, E2E_IMAGE_TOTAL_TIMEOUT
# (default 1500s), E2E_IMAGE_KEEP=1, BUSYBOX, DOCKER_CLI. Must run as root.

set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"
watchdog E2E_IMAGE 1500 "${BASH_SOURCE[0]}" "$@"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/e2e-image.XXXXXX") || exit 1
LOGDIR=$WORK/logs
STATE=$WORK/state
IMG=$WORK/img
mkdir -p "$LOGDIR" "$STATE" "$WORK/tmp" "$IMG"

E2E_DONE=0
suite_traps e2e-image E2E_IMAGE_KEEP
# The clients get a HOME of their own below; cargo (for scripts/image.sh)
# keeps its toolchain.
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
isolate_clients "$WORK"
isolate_engines "$WORK"
HOSTARCH=$(host_arch)
RUN=r$(date +%s)-$$
IMAGE=registry:e2e-$RUN
bh() { bh_in build "$@"; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { local p; for p in $(seq "$1" $(($1 + 99))); do port_free "$p" && { echo "$p"; return; }; done; }
P1=$(free_port 5300)
P2=$(free_port 5400)
P3=$(free_port 5500)

s_tools() {
	require_commands dockerd "$DOCKER_CLI" buildah skopeo htpasswd systemd-analyze curl jq timeout
	require_busybox_static
	require_root "dockerd"
}

s_build_base() {
	mk_release_base image-base "hello from e2e-image $$" 262144 /etc/e2e-image org.example.e2e=image
	bh push --format oci localhost/image-base:latest "oci:$IMG/oci:base"
	sko copy "oci:$IMG/oci:base" "docker-archive:$IMG/base.tar:e2e-image/base:latest"
	put base_config "$(jq -r .config.digest "$(local_blob "$IMG/oci" "$(layout_digest "$IMG/oci" base | cut -d: -f2)")")"
}

s_image() {
	local out size
	out=$(DOCKER_HOST="unix://$WORK/d/docker.sock" "$HERE/image.sh" "$IMAGE")
	echo "$out"
	size=$(dk image inspect --format '{{.Size}}' "$IMAGE")
	info "image size: $size bytes"
	[ "$size" -lt $((64 << 20)) ] || fail_now "the image is $size bytes"
	expect_eq "$(dk image inspect --format '{{json .Config.ExposedPorts}}' "$IMAGE")" '{"5000/tcp":{}}' "EXPOSE 5000"
	expect_eq "$(dk image inspect --format '{{json .Config.Volumes}}' "$IMAGE")" '{"/var/lib/registry":{}}' "VOLUME"
	expect_eq "$(dk image inspect --format '{{json .Config.Cmd}}' "$IMAGE")" '["serve","/etc/docker/registry/config.yml"]' "default command"
}

# wait_serving PORT: the registry in the container answers /v2/
wait_serving() { wait_for 30 rcurl -o /dev/null "http://127.0.0.1:$1/v2/"; }

s_volume() {
	mkdir -p "$WORK/vol"
	dk run -d --network host --restart=always --name registry \
		-e "REGISTRY_HTTP_ADDR=127.0.0.1:$P1" --health-interval 1s \
		-v "$WORK/vol:/var/lib/registry" "$IMAGE"
	wait_serving "$P1" || { dk logs registry; fail_now "the container does not serve"; }
	dk load -i "$IMG/base.tar"
	dk tag e2e-image/base:latest "127.0.0.1:$P1/e2e/base:1"
	dk push "127.0.0.1:$P1/e2e/base:1"
	dk rmi "127.0.0.1:$P1/e2e/base:1"
	dk pull "127.0.0.1:$P1/e2e/base:1"
	expect_eq "$(dk image inspect --format '{{.Id}}' "127.0.0.1:$P1/e2e/base:1")" "$(get base_config)" "image ID after the pull"
	[ -d "$WORK/vol/docker/registry/v2/repositories/e2e/base/_manifests" ] || fail_now "no data in the host's volume"
}

s_healthy() {
	wait_for 30 sh -c "[ \"\$($DOCKER_CLI -H unix://$WORK/d/docker.sock inspect --format '{{.State.Health.Status}}' registry)\" = healthy ]" ||
		fail_now "health: $(dk inspect --format '{{json .State.Health}}' registry)"
}

s_exec_gc() {
	local out
	out=$(dk exec registry bin/registry garbage-collect /etc/docker/registry/config.yml)
	echo "$out"
	expect_contains "$out" "kept" "garbage-collect report"
	dk exec registry registry-gc /etc/docker/registry/config.yml --dry-run
	dk exec registry registry-replicate --help >/dev/null
}

s_restart() {
	dk restart registry
	wait_serving "$P1" || fail_now "not serving after the restart"
	expect_eq "$(http_status "http://127.0.0.1:$P1/v2/e2e/base/manifests/1" -H "Accept: $ACCEPT_ALL")" 200 "the image after a restart"
}

s_stop() {
	local t0=$SECONDS
	dk stop -t 20 registry
	[ $((SECONDS - t0)) -lt 15 ] || fail_now "docker stop took $((SECONDS - t0)) s"
	expect_eq "$(dk inspect --format '{{.State.ExitCode}}' registry)" 0 "exit code of PID 1 after SIGTERM"
}

s_htpasswd() {
	mkdir -p "$WORK/auth"
	htpasswd -Bbc "$WORK/auth/htpasswd" ci "s3cret-$$"
	dk run -d --network host --name registry-auth \
		-e "REGISTRY_HTTP_ADDR=127.0.0.1:$P2" \
		-e REGISTRY_AUTH=htpasswd -e "REGISTRY_AUTH_HTPASSWD_REALM=Registry Realm" \
		-e REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd \
		-v "$WORK/auth:/auth" "$IMAGE"
	wait_for 30 sh -c "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$P2/v2/ | grep -q 401" ||
		{ dk logs registry-auth; fail_now "no login asked"; }
	printf 's3cret-%s' "$$" | dk login "127.0.0.1:$P2" -u ci --password-stdin
	dk tag e2e-image/base:latest "127.0.0.1:$P2/team/base:1"
	dk push "127.0.0.1:$P2/team/base:1"
	dk logout "127.0.0.1:$P2"
	expect_eq "$(http_status "http://127.0.0.1:$P2/v2/team/base/manifests/1")" 401 "anonymous GET"
	expect_eq "$(http_status "http://127.0.0.1:$P2/v2/team/base/manifests/1" -u "ci:s3cret-$$" -H "Accept: $ACCEPT_ALL")" 200 "GET as ci"
}

s_mounted_config() {
	cat >"$WORK/config.yml" <<CFG
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$P3
CFG
	# The config's path as the only argument, as registry:2 takes it.
	dk run -d --network host --name registry-config \
		-v "$WORK/config.yml:/etc/docker/registry/config.yml" "$IMAGE" /etc/docker/registry/config.yml
	wait_serving "$P3" || { dk logs registry-config; fail_now "the mounted config is not served"; }
	dk tag e2e-image/base:latest "127.0.0.1:$P3/e2e/base:1"
	dk push "127.0.0.1:$P3/e2e/base:1"
	# Deletes are on in the mounted config only.
	expect_eq "$(http_status "http://127.0.0.1:$P3/v2/e2e/base/manifests/1" -X DELETE)" 202 "DELETE of a tag"
}

s_systemd_unit() {
	local unit=$WORK/registry.service
	# The unit as shipped, with this build's binary where it names the installed one.
	sed "s#/usr/local/bin/registry#$(readlink -f "$HERE/../target/debug/registry")#" \
		"$HERE/../contrib/systemd/registry.service" >"$unit"
	systemd-analyze verify "$unit"
	grep -q '^DynamicUser=yes' "$unit"
	grep -q '^StateDirectory=registry' "$unit"
}

step "setup: tools present" s_tools || { E2E_DONE=1; exit 1; }
step "setup: buildah builds an image to push, from busybox-static" s_build_base
step "systemd: contrib/systemd/registry.service passes systemd-analyze verify" s_systemd_unit

section image
DOCKERD_PID=""
DOCKERD_CTD_PID=""
start_dockerd
step "docker: dockerd up (pid ${DOCKERD_PID%%:*}, vfs, private roots)" s_dk_up "$DOCKERD_PID"
if ! step "image: scripts/image.sh builds $IMAGE FROM scratch (EXPOSE, VOLUME, CMD)" s_image; then
	E2E_DONE=1
	exit 1
fi
step "recipe: -v HOST:/var/lib/registry, docker push and pull, data on the host" s_volume
step "recipe: the HEALTHCHECK (the binary asks /healthz) turns healthy" s_healthy
step "recipe: docker exec registry bin/registry garbage-collect CONFIG; registry-gc on the PATH" s_exec_gc
step "recipe: docker restart keeps the data" s_restart
step "recipe: docker stop: SIGTERM ends PID 1 cleanly" s_stop
step "recipe: REGISTRY_AUTH=htpasswd + /auth/htpasswd, docker login, push" s_htpasswd
step "recipe: a mounted /etc/docker/registry/config.yml, its path as the argument" s_mounted_config
step "docker: stop dockerd (and its containerd) by pid" s_dk_stop "$DOCKERD_PID" "$DOCKERD_CTD_PID"

E2E_DONE=1
exit 0
