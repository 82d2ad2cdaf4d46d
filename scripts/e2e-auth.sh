#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions are invoked indirectly via step/trap
# End-to-end test of logins over HTTPS: real clients (Debian packages) log
# in with htpasswd credentials and round-trip images through our server.
#
#   usage: scripts/e2e-auth.sh REGISTRY_BIN
#
# The server is started here (`REGISTRY_BIN serve CONFIG`, http.addr
# 127.0.0.1:0, port read from its "listening on" line) with:
#   - http.tls: a server certificate (subjectAltName IP:127.0.0.1) signed by a
#     CA made with openssl for this run; clients trust the CA explicitly
#     (curl --cacert, --cert-dir for skopeo/podman/buildah, certs.d for
#     docker, --tlscacert for ctr), never the system store;
#   - auth.htpasswd with two bcrypt users (htpasswd -B, random passwords):
#     ci and dev; auth.anonymous: true (anonymous pull);
#   - access rules: ci may push ci/*, every logged-in user may pull *; so
#     dev may only pull, and nobody may push outside ci/.
# Images are built locally with buildah from busybox-static (nothing comes
# from the internet): base = busybox + file, plus a 1 MiB random layer.
#
# Checks (one PASS/FAIL line each):
#  https    curl: /v2/ is 401 with `Basic realm="Registry Realm"` anonymously
#           and with a wrong password, 200 for ci and dev; plain http:// to
#           the port gets 400 "This port speaks HTTPS"; without the CA the
#           certificate is refused; upload POST: 401 + challenge anonymously,
#           403 DENIED for dev in ci/ and for ci outside ci/, 202 for ci with
#           an https:// (or relative) Location.
#  skopeo   copy in with --dest-creds ci and --dest-cert-dir (digests kept,
#           every object byte-identical); anonymous inspect and copy out
#           (--cert-dir) identical to the pushed layout; without --cert-dir
#           the certificate is refused; anonymous push and push by dev fail
#           and leave nothing behind.
#  podman   login --cert-dir (auth file entry), push (--digestfile ==
#           registry), logout (entry gone, push refused), anonymous pull into
#           a fresh store (image ID == config digest, same manifest digest).
#  buildah  login --cert-dir --authfile (in the work dir), push with
#           --digestfile, logout, anonymous pull into a fresh store.
#  docker   own dockerd (vfs, private roots); the CA is trusted by writing
#           /etc/docker/certs.d/127.0.0.1:PORT/ca.crt (removed at exit, even on
#           failure); login -u ci --password-stdin, load + push (digest ==
#           registry), logout (entry gone, push refused); an anonymous pull is
#           refused by docker itself: after a Basic challenge it sends nothing
#           without credentials ("no basic auth credentials" in its log), so
#           the pull (image ID, RepoDigests) is done logged in as dev, whose
#           push is denied; login with a wrong password fails; docker search
#           logged in (the access log names ci) and logged out (anonymous).  Note: dockerd
#           always counts 127.0.0.0/8 as an "insecure registry", so it does
#           not verify the certificate (it still loads certs.d, and speaks
#           HTTPS: its plain-HTTP fallback would get the 400).
#  ctr      own containerd (no CRI, private root); ctr 1.6 speaks plain HTTP
#           to localhost unless a hosts.toml (--hosts-dir, in the work dir)
#           names https://127.0.0.1:PORT; without --tlscacert the certificate
#           is refused; anonymous pull with --tlscacert of the skopeo and
#           docker pushes (digests, every object in the content store equal
#           to the local copy); push without --user fails; push with
#           --user ci keeps the digest.
#  final    _catalog (as ci) lists exactly the repositories pushed.
#
# Output ends with "e2e-auth: N passed, M failed"; exit status non-zero if
# anything failed.  Only 127.0.0.1 is contacted.  Every process started is
# stopped by PID in an EXIT trap; all data lives in one mktemp directory,
# removed at the end (E2E_AUTH_KEEP=1 keeps it).  Knobs: E2E_TIMEOUT (per
# client call, default 120s), E2E_AUTH_TOTAL_TIMEOUT (whole run, default
# 900s, 0 = none), E2E_LOG_TAIL, BUSYBOX, DOCKER_CLI (default
# /usr/bin/docker, matching Debian's dockerd).
# Debian packages needed: openssl apache2-utils (htpasswd) skopeo podman
# buildah containerd docker.io busybox-static jq curl.  Must run as root
# (dockerd, containerd, /etc/docker/certs.d).  Global state touched: the one
# certs.d directory above (and /etc/docker/certs.d itself if it had to be
# created, removed again if empty), plus what e2e.sh lists (skopeo's blob-info
# cache, empty runtime dirs of dockerd/containerd/runc).

set -u -o pipefail

usage() { echo "usage: $0 REGISTRY_BIN" >&2; echo "e2e-auth: 0 passed, 1 failed"; exit 2; }
[ $# -eq 1 ] || usage
OUR_BIN=$(readlink -f "$1") || usage
[ -x "$OUR_BIN" ] || { echo "e2e-auth: $1 is not executable" >&2; usage; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"
watchdog E2E_AUTH 900 "${BASH_SOURCE[0]}" "$@"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/e2e-auth.XXXXXX") || exit 1
LOGDIR=$WORK/logs
STATE=$WORK/state
IMG=$WORK/img
PKI=$WORK/pki
CERTDIR=$PKI/certdir     # ca.crt only: the --cert-dir of containers/image tools
mkdir -p "$LOGDIR" "$STATE" "$WORK/tmp" "$IMG" "$PKI" "$CERTDIR" "$WORK/srv"

E2E_DONE=0
suite_traps e2e-auth E2E_AUTH_KEEP

isolate_clients "$WORK"
isolate_engines "$WORK"
HOSTARCH=$(host_arch)
REG=""
REG_SCHEME=https
RCURL_ARGS=(--cacert "$PKI/ca.crt")

randpw() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
CI_PW=$(randpw)
DEV_PW=$(randpw)
BH_AUTH=$WORK/buildah-auth.json

R_SKO=ci/skopeo
R_PM=ci/podman
R_BH=ci/buildah
R_DK=ci/docker
R_CT=ci/ctr

bh() { bh_in build "$@"; }
# ucurl USER:PASSWORD CURL_ARGS...
ucurl() { local u=$1; shift; rcurl -u "$u" "$@"; }
# a client command that must fail: run it, show its output, fail the step if
# it succeeded; the output is left in $WORK/tmp/refused.out
refused() {
	local rc=0
	"$@" >"$WORK/tmp/refused.out" 2>&1 || rc=$?
	cat "$WORK/tmp/refused.out"
	[ "$rc" -ne 0 ] || fail_now "expected to fail, but succeeded: $*"
	local cmd="$*"
	cmd=${cmd//$CI_PW/***}
	info "refused as expected (rc=$rc): ${cmd//$DEV_PW/***}"
}
refused_with() { # NEEDLE: the output of the last `refused` mentions NEEDLE
	expect_contains "$(tr '[:upper:]' '[:lower:]' <"$WORK/tmp/refused.out")" "$1" "client error"
}
tag_absent() { # REPO TAG: no such manifest (asked as ci)
	expect_eq "$(http_status "https://$REG/v2/$1/manifests/$2" -u "ci:$CI_PW" -H "Accept: $ACCEPT_ALL")" 404 "GET $1:$2 as ci"
}
authfile_entry() { jq -r --arg r "$REG" '.auths[$r].auth // empty' "$1"; }
b64() { printf '%s' "$1" | base64 -w0; }

# ================================================================== setup
s_tools() {
	require_commands openssl htpasswd skopeo podman buildah ctr containerd dockerd "$DOCKER_CLI" jq curl timeout cmp sha256sum base64
	require_busybox_static
	require_root "dockerd, containerd, /etc/docker/certs.d"
	openssl version; htpasswd -h 2>&1 | head -n1 || true
	skopeo --version; podman --version; buildah --version; ctr --version; "$DOCKER_CLI" --version
}

s_pki() {
	cd "$PKI"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=e2e-auth CA $$" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
		-keyout ca.key -out ca.crt
	openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr
	printf '%s\n' subjectAltName=IP:127.0.0.1 basicConstraints=CA:FALSE \
		keyUsage=critical,digitalSignature,keyEncipherment extendedKeyUsage=serverAuth >server.ext
	openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
		-extfile server.ext -out server.crt
	openssl verify -CAfile ca.crt server.crt
	expect_contains "$(openssl x509 -in server.crt -noout -ext subjectAltName)" "IP Address:127.0.0.1" "server certificate SAN"
	cp ca.crt "$CERTDIR/ca.crt"
	htpasswd -Bbc "$WORK/htpasswd" ci "$CI_PW"
	htpasswd -Bb "$WORK/htpasswd" dev "$DEV_PW"
	expect_eq "$(cut -d: -f1 "$WORK/htpasswd" | tr '\n' ,)" ci,dev, "htpasswd users"
	[[ $(grep '^ci:' "$WORK/htpasswd") == ci:\$2y\$* ]] || fail_now "htpasswd entry is not bcrypt"
}

# base image: layer 1 = busybox + /hello.txt, layer 2 = 1 MiB random + /etc/e2e-auth
s_build() {
	local dg
	mk_release_base auth-base "hello from e2e-auth $$" 1048576 /etc/e2e-auth org.example.e2e=auth
	bh push --format oci localhost/auth-base:latest "oci:$IMG/oci:base"
	sko copy "oci:$IMG/oci:base" "docker-archive:$IMG/base.tar:e2e-auth/base:latest"
	dg=$(layout_digest "$IMG/oci" base)
	expect_eq "$(jq '.layers | length' "$(local_blob "$IMG/oci" "${dg#sha256:}")")" 2 "base image layer count"
	put base_digest "$dg"
	put base_config "$(jq -r .config.digest "$(local_blob "$IMG/oci" "${dg#sha256:}")")"
	info "base $dg, config $(get base_config)"
}

# ================================================================== server
SERVER_PID=""
start_server() { # main shell: sets REG and SERVER_PID
	local cfg=$WORK/srv/config.yml
	cat >"$cfg" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $WORK/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
  tls:
    certificate: $PKI/server.crt
    key: $PKI/server.key
auth:
  htpasswd:
    realm: Registry Realm
    path: $WORK/htpasswd
  anonymous: true
access:
  rules:
    - repositories: ["ci/*"]
      users: [ci]
      actions: [push]
    - repositories: ["*"]
      users: ["*"]
      actions: [pull]
EOF
	start_registry "$OUR_BIN" "$cfg" "$WORK/srv/registry.log"
	[ -n "$REG" ] && wait_for 15 rcurl -o /dev/null "https://$REG/v2/"
}

s_server_up() {
	alive "$SERVER_PID" || { tail -n 30 "$WORK/srv/registry.log"; fail_now "server (pid ${SERVER_PID%%:*}) is not running"; }
	[[ $REG =~ ^127\.0\.0\.1:[0-9]+$ ]] || fail_now "listen address [$REG] is not 127.0.0.1:PORT"
	expect_eq "$(http_status "https://$REG/v2/")" 401 "GET https://$REG/v2/ (anonymous)"
}

# ================================================================== https (curl)
s_https_login() {
	local h=$WORK/tmp/v2.hdr b=$WORK/tmp/v2.body code
	code=$(rcurl -o "$b" -D "$h" -w '%{http_code}' "https://$REG/v2/")
	expect_eq "$code" 401 "GET /v2/ anonymously"
	expect_eq "$(hdr "$h" WWW-Authenticate)" 'Basic realm="Registry Realm"' "WWW-Authenticate"
	expect_eq "$(jq -r '.errors[0].code' "$b")" UNAUTHORIZED "error code"
	expect_eq "$(http_status "https://$REG/v2/" -u "ci:$CI_PW")" 200 "GET /v2/ as ci"
	expect_eq "$(http_status "https://$REG/v2/" -u "dev:$DEV_PW")" 200 "GET /v2/ as dev"
	code=$(rcurl -o /dev/null -D "$h" -w '%{http_code}' -u "ci:wrong-$CI_PW" "https://$REG/v2/")
	expect_eq "$code" 401 "GET /v2/ with a wrong password"
	expect_eq "$(hdr "$h" WWW-Authenticate)" 'Basic realm="Registry Realm"' "WWW-Authenticate (wrong password)"
}

s_https_plain() {
	local code rc=0
	code=$(curl -sS --noproxy '*' --max-time 30 -o "$WORK/tmp/plain.body" -w '%{http_code}' "http://$REG/v2/")
	expect_eq "$code" 400 "plain http:// to the TLS port"
	expect_contains "$(cat "$WORK/tmp/plain.body")" "This port speaks HTTPS" "plain-HTTP answer"
	# the CA is ours only: without it the certificate must be refused
	curl -sS --noproxy '*' --max-time 30 -o /dev/null "https://$REG/v2/" || rc=$?
	expect_eq "$rc" 60 "curl exit status without --cacert (peer certificate not trusted)"
}

s_https_rules() {
	local h=$WORK/tmp/post.hdr b=$WORK/tmp/post.body code loc url
	code=$(rcurl -X POST -o "$b" -D "$h" -w '%{http_code}' "https://$REG/v2/ci/curl/blobs/uploads/")
	expect_eq "$code" 401 "anonymous upload POST"
	expect_eq "$(hdr "$h" WWW-Authenticate)" 'Basic realm="Registry Realm"' "anonymous upload challenge"
	code=$(ucurl "dev:$DEV_PW" -X POST -o "$b" -D "$h" -w '%{http_code}' "https://$REG/v2/ci/curl/blobs/uploads/")
	expect_eq "$code" 403 "upload POST by dev into ci/"
	expect_eq "$(jq -r '.errors[0].code' "$b")" DENIED "dev error code"
	code=$(ucurl "ci:$CI_PW" -X POST -o "$b" -D "$h" -w '%{http_code}' "https://$REG/v2/other/curl/blobs/uploads/")
	expect_eq "$code" 403 "upload POST by ci outside ci/"
	expect_eq "$(jq -r '.errors[0].code' "$b")" DENIED "ci outside ci/ error code"
	code=$(ucurl "ci:$CI_PW" -X POST -o /dev/null -D "$h" -w '%{http_code}' "https://$REG/v2/ci/curl/blobs/uploads/")
	expect_eq "$code" 202 "upload POST by ci into ci/"
	loc=$(hdr "$h" Location)
	info "Location: $loc"
	url=$(reg_upload_url "$loc")   # fails unless https://$REG/... or relative
	expect_eq "$(http_status "$url" -u "ci:$CI_PW" -X DELETE)" 204 "cancel the upload"
}

# ================================================================== skopeo
s_sko_push() {
	sko copy --preserve-digests --dest-creds "ci:$CI_PW" --dest-cert-dir "$CERTDIR" \
		"oci:$IMG/oci:base" "docker://$REG/$R_SKO:1"
	expect_eq "$(reg_digest "$R_SKO" 1)" "$(get base_digest)" "manifest digest served for $R_SKO:1"
	verify_tree "$R_SKO" "$(get base_digest)" "$IMG/oci"
}

s_sko_anon_inspect() {
	local j raw=$WORK/tmp/raw.json
	j=$(sko inspect --cert-dir "$CERTDIR" "docker://$REG/$R_SKO:1")
	echo "$j"
	expect_eq "$(echo "$j" | jq -r .Digest)" "$(get base_digest)" "anonymous inspect .Digest"
	expect_eq "$(echo "$j" | jq -r '.Labels["org.example.e2e"]')" auth "anonymous inspect label"
	sko inspect --cert-dir "$CERTDIR" --raw "docker://$REG/$R_SKO:1" >"$raw"
	cmp "$raw" "$(local_blob "$IMG/oci" "$(get base_digest | cut -d: -f2)")"
	info "inspect --raw byte-identical to the pushed manifest"
}

s_sko_anon_copy_out() {
	local out=$IMG/sko-back f
	sko copy --preserve-digests --src-cert-dir "$CERTDIR" "docker://$REG/$R_SKO:1" "oci:$out:back"
	expect_eq "$(layout_digest "$out" back)" "$(get base_digest)" "copied-out manifest digest"
	for f in "$out"/blobs/sha256/*; do
		cmp "$f" "$IMG/oci/blobs/sha256/$(basename "$f")" || fail_now "blob $(basename "$f") differs after the round trip"
	done
	expect_eq "$(find "$out/blobs/sha256" -type f | wc -l)" 4 "blob count (manifest+config+2 layers)"
}

s_sko_untrusted() {
	refused sko inspect "docker://$REG/$R_SKO:1"
	refused_with "certificate"
}

s_sko_anon_push() {
	refused sko copy --dest-cert-dir "$CERTDIR" "oci:$IMG/oci:base" "docker://$REG/ci/anonymous:1"
	refused_with "unauthorized"
	tag_absent ci/anonymous 1
	refused sko copy --dest-cert-dir "$CERTDIR" "oci:$IMG/oci:base" "docker://$REG/$R_SKO:anonymous"
	refused_with "unauthorized"
	tag_absent "$R_SKO" anonymous
}

s_sko_denied_push() {
	refused sko copy --dest-creds "dev:$DEV_PW" --dest-cert-dir "$CERTDIR" "oci:$IMG/oci:base" "docker://$REG/ci/by-dev:1"
	refused_with "denied"
	tag_absent ci/by-dev 1
	refused sko copy --dest-creds "dev:$DEV_PW" --dest-cert-dir "$CERTDIR" "oci:$IMG/oci:base" "docker://$REG/$R_SKO:by-dev"
	refused_with "denied"
	tag_absent "$R_SKO" by-dev
	refused sko copy --dest-creds "ci:$CI_PW" --dest-cert-dir "$CERTDIR" "oci:$IMG/oci:base" "docker://$REG/other/by-ci:1"
	refused_with "denied"
	tag_absent other/by-ci 1
	# dev may pull
	expect_eq "$(sko inspect --creds "dev:$DEV_PW" --cert-dir "$CERTDIR" "docker://$REG/$R_SKO:1" | jq -r .Digest)" \
		"$(get base_digest)" "inspect as dev"
}

# ================================================================== podman
pm() { pm_in podman "$@"; }

s_pm_login() {
	printf '%s' "$CI_PW" | pm login --cert-dir "$CERTDIR" -u ci --password-stdin "$REG"
	expect_eq "$(authfile_entry "$REGISTRY_AUTH_FILE")" "$(b64 "ci:$CI_PW")" "auth file entry after podman login"
	expect_eq "$(pm login --get-login "$REG")" ci "podman login --get-login"
}

s_pm_push() {
	local df=$WORK/tmp/pm.digest dg
	pm pull "docker-archive:$IMG/base.tar"
	expect_eq "sha256:$(pm image inspect --format '{{.Id}}' e2e-auth/base:latest)" "$(get base_config)" "podman image ID (docker-archive)"
	pm tag e2e-auth/base:latest "$REG/$R_PM:1"
	pm push --cert-dir "$CERTDIR" --digestfile "$df" "$REG/$R_PM:1"
	dg=$(reg_digest "$R_PM" 1)
	expect_eq "$(cat "$df")" "$dg" "podman push --digestfile vs registry"
	verify_tree "$R_PM" "$dg"
	expect_eq "$(rcurl -f -H "Accept: $ACCEPT_ALL" "https://$REG/v2/$R_PM/manifests/1" | jq -r .config.digest)" \
		"$(get base_config)" "config digest kept by podman push"
	put pm_digest "$dg"
}

s_pm_logout() {
	pm logout "$REG"
	expect_eq "$(authfile_entry "$REGISTRY_AUTH_FILE")" "" "auth file entry after podman logout"
	refused pm push --cert-dir "$CERTDIR" "$REG/$R_PM:1" "docker://$REG/$R_PM:after-logout"
	refused_with "unauthorized"
	tag_absent "$R_PM" after-logout
}

s_pm_anon_pull() {
	local ref="$REG/$R_PM:1"
	pm_in podman2 pull --cert-dir "$CERTDIR" "$ref"
	expect_eq "sha256:$(pm_in podman2 image inspect --format '{{.Id}}' "$ref")" "$(get base_config)" "image ID == config digest"
	expect_eq "$(pm_in podman2 image inspect --format '{{.Digest}}' "$ref")" "$(get pm_digest)" "pulled manifest digest == pushed"
}

# ================================================================== buildah
s_bh_login() {
	echo '{"auths":{}}' >"$BH_AUTH"
	printf '%s' "$CI_PW" | bh login --cert-dir "$CERTDIR" --authfile "$BH_AUTH" -u ci --password-stdin "$REG"
	expect_eq "$(authfile_entry "$BH_AUTH")" "$(b64 "ci:$CI_PW")" "buildah auth file entry"
	expect_eq "$(authfile_entry "$REGISTRY_AUTH_FILE")" "" "default auth file untouched"
}

s_bh_push() {
	local df=$WORK/tmp/bh.digest dg
	bh push --cert-dir "$CERTDIR" --authfile "$BH_AUTH" --format oci --digestfile "$df" \
		localhost/auth-base:latest "docker://$REG/$R_BH:1"
	dg=$(reg_digest "$R_BH" 1)
	expect_eq "$(cat "$df")" "$dg" "buildah push --digestfile vs registry"
	verify_tree "$R_BH" "$dg"
	expect_eq "$(rcurl -f -H "Accept: $ACCEPT_ALL" "https://$REG/v2/$R_BH/manifests/1" | jq -r .config.digest)" \
		"$(get base_config)" "config digest kept by buildah push"
	put bh_digest "$dg"
	bh logout --authfile "$BH_AUTH" "$REG"
	expect_eq "$(authfile_entry "$BH_AUTH")" "" "buildah auth file entry after logout"
}

s_bh_anon_pull() {
	local ref="$REG/$R_BH:1"
	bh_in buildah2 pull --cert-dir "$CERTDIR" --authfile "$BH_AUTH" "$ref"
	expect_eq "sha256:$(bh_in buildah2 inspect --type image --format '{{.FromImageID}}' "$ref")" "$(get base_config)" "image ID == config digest"
	expect_eq "$(bh_in buildah2 inspect --type image --format '{{.FromImageDigest}}' "$ref")" "$(get bh_digest)" "pulled manifest digest == pushed"
}

# ================================================================== docker
DOCKER_CA_DIR=""
DOCKER_CA_MADE=()   # directories created for it, outermost first

# docker_trust_ca: main shell.  dockerd reads /etc/docker/certs.d/HOST:PORT
# (no flag to move it); the port is this run's, so the directory is ours.
docker_trust_ca() {
	local d=/etc/docker/certs.d/$REG p
	[[ $REG =~ ^127\.0\.0\.1:[0-9]+$ ]] || return 1
	if [ -e "$d" ]; then
		note "$d exists already (not ours): leaving it alone"
		return 1
	fi
	suite_on_exit docker_untrust_ca
	for p in /etc/docker /etc/docker/certs.d "$d"; do
		if [ ! -d "$p" ]; then
			mkdir "$p" || return 1
			DOCKER_CA_MADE+=("$p")
		fi
	done
	DOCKER_CA_DIR=$d
	cp "$PKI/ca.crt" "$d/ca.crt"
}

docker_untrust_ca() { # exit hook: remove exactly what docker_trust_ca made
	local i
	[ -n "$DOCKER_CA_DIR" ] || return 0
	rm -f "$DOCKER_CA_DIR/ca.crt"
	for ((i = ${#DOCKER_CA_MADE[@]} - 1; i >= 0; i--)); do
		rmdir "${DOCKER_CA_MADE[i]}" 2>/dev/null ||
			echo "WARN: could not remove ${DOCKER_CA_MADE[i]} (not empty?)" >&2
	done
	DOCKER_CA_DIR=""
}

s_dk_ca() {
	[ -n "$DOCKER_CA_DIR" ] || fail_now "certs.d directory for $REG not set up"
	cmp "$DOCKER_CA_DIR/ca.crt" "$PKI/ca.crt"
	info "CA in $DOCKER_CA_DIR"
}

s_dk_login() {
	local out
	out=$(printf '%s' "$CI_PW" | dk login "$REG" -u ci --password-stdin 2>&1)
	echo "$out"
	expect_contains "$out" "Login Succeeded" "docker login output"
	expect_eq "$(authfile_entry "$DOCKER_CONFIG/config.json")" "$(b64 "ci:$CI_PW")" "docker config.json entry"
}

s_dk_push() {
	local out dg
	dk load -i "$IMG/base.tar"
	expect_eq "$(dk image inspect --format '{{.Id}}' e2e-auth/base:latest)" "$(get base_config)" "docker load image ID"
	dk tag e2e-auth/base:latest "$REG/$R_DK:1"
	out=$(dk push "$REG/$R_DK:1")
	echo "$out"
	dg=$(echo "$out" | sed -n 's/^.*digest: \(sha256:[0-9a-f]\{64\}\) size:.*$/\1/p' | tail -n1)
	expect_ne_empty "$dg" "digest in docker push output"
	expect_eq "$(reg_digest "$R_DK" 1)" "$dg" "docker push digest vs registry"
	verify_tree "$R_DK" "$dg"
	put dk_digest "$dg"
}

s_dk_logout() {
	dk logout "$REG"
	expect_eq "$(authfile_entry "$DOCKER_CONFIG/config.json")" "" "docker config.json entry after logout"
	dk tag "$REG/$R_DK:1" "$REG/$R_DK:after-logout"
	refused dk push "$REG/$R_DK:after-logout"
	tag_absent "$R_DK" after-logout
}

# docker search: the daemon sends the login saved by `docker login` as Basic
# over HTTPS (and `Basic Og==`, empty, when logged out); the server's access
# log names who searched. Anonymous may pull everything here, so both see
# the repository; what each may see is filtered (tests/it/web.rs).
searched_as() { # USER: access-log lines of searches answered to USER
	grep -c "http.request.uri=/v1/search?.* auth.user.name=$1 http.response.status=200" "$WORK/srv/registry.log" || true
}

s_dk_search_logged_in() {
	local n out
	n=$(searched_as ci)
	out=$(dk search --format '{{.Name}}' "$REG/$R_DK")
	echo "$out"
	expect_eq "$out" "$R_DK" "docker search as ci"
	expect_eq "$(searched_as ci)" $((n + 1)) "access-log lines of searches by ci"
	expect_eq "$(dk search --limit 1 --format '{{.Name}}' "$REG/ci/" | wc -l)" 1 "docker search --limit 1"
}

s_dk_search_logged_out() {
	local n out
	n=$(searched_as -)
	out=$(dk search --format '{{.Name}}' "$REG/$R_DK")
	expect_eq "$out" "$R_DK" "docker search logged out"
	expect_eq "$(searched_as -)" $((n + 1)) "access-log lines of anonymous searches"
}

# docker (20.10) sends nothing without credentials once /v2/ has answered
# with a Basic challenge ("no basic auth credentials", then it falls back to
# plain http:// and gets the 400): an anonymous pull cannot work, whatever
# the server allows.  Shown here, then the pull is done as dev (pull only).
s_dk_anon_pull() {
	local n
	dk rmi "$REG/$R_DK:after-logout" >/dev/null 2>&1 || true
	dk rmi "$REG/$R_DK:1" e2e-auth/base:latest
	if dk image inspect "$REG/$R_DK:1" >/dev/null 2>&1; then fail_now "image still present after rmi"; fi
	n=$(grep -c 'for pull after error: .*no basic auth credentials' "$WORK/d/dockerd.log" || true)
	refused dk pull "$REG/$R_DK:1"
	expect_eq "$(grep -c 'for pull after error: .*no basic auth credentials' "$WORK/d/dockerd.log" || true)" $((n + 1)) \
		"dockerd log lines 'no basic auth credentials' on pull"
}

s_dk_dev_pull() {
	local dg out
	dg=$(get dk_digest)
	printf '%s' "$DEV_PW" | dk login "$REG" -u dev --password-stdin
	dk pull "$REG/$R_DK:1"
	expect_eq "$(dk image inspect --format '{{.Id}}' "$REG/$R_DK:1")" "$(get base_config)" "image ID after pull"
	expect_contains "$(dk image inspect --format '{{join .RepoDigests " "}}' "$REG/$R_DK:1")" "$REG/$R_DK@$dg" "RepoDigests"
	dk tag "$REG/$R_DK:1" "$REG/$R_DK:by-dev"
	refused dk push "$REG/$R_DK:by-dev"
	refused_with "denied"
	tag_absent "$R_DK" by-dev
	dk logout "$REG"
	expect_eq "$(authfile_entry "$DOCKER_CONFIG/config.json")" "" "docker config.json entry after logout"
}

s_dk_wrong_password() {
	printf 'wrong-%s' "$CI_PW" | refused dk login "$REG" -u ci --password-stdin
	refused_with "unauthorized"
	expect_eq "$(authfile_entry "$DOCKER_CONFIG/config.json")" "" "no docker config.json entry"
}

# ================================================================== containerd / ctr
# ctr 1.6 speaks plain HTTP to localhost unless a hosts.toml says https;
# the CA is given with --tlscacert
CT_HOSTS=$WORK/ctr-hosts
cta() { ct images "$1" --hosts-dir "$CT_HOSTS" --tlscacert "$PKI/ca.crt" "${@:2}"; }

s_ct_hosts() {
	mkdir -p "$CT_HOSTS/$REG"
	printf 'server = "https://%s"\n\n[host."https://%s"]\n  capabilities = ["pull", "resolve", "push"]\n' \
		"$REG" "$REG" >"$CT_HOSTS/$REG/hosts.toml"
	cat "$CT_HOSTS/$REG/hosts.toml"
	refused ct images pull --hosts-dir "$CT_HOSTS" --snapshotter native "$REG/$R_SKO:1"
	refused_with "certificate"
}

# ct_same_objects LAYOUT DIGEST: the manifest DIGEST and every blob it names
# in containerd's content store equal the copies in the local LAYOUT
ct_same_objects() {
	local dg=$2 f d n=0
	f=$WORK/tmp/ct-$RANDOM
	ct content get "$dg" >"$f"
	cmp "$f" "$(local_blob "$1" "${dg#sha256:}")" || fail_now "manifest $dg differs from the local copy"
	for d in $(jq -r '(.config, .layers[]) | .digest' "$f"); do
		ct content get "$d" | cmp - "$(local_blob "$1" "${d#sha256:}")" || fail_now "blob $d differs from the local copy"
		n=$((n + 1))
	done
	info "manifest + $n blobs in containerd equal the local copy"
	rm -f "$f"
}

s_ct_anon_pull() {
	cta pull --snapshotter native "$REG/$R_SKO:1"
	expect_eq "$(ct_digest "$REG/$R_SKO:1")" "$(get base_digest)" "ctr pull (OCI, pushed by skopeo) digest"
	ct_same_objects "$IMG/oci" "$(get base_digest)"
	cta pull --snapshotter native "$REG/$R_DK:1"
	expect_eq "$(ct_digest "$REG/$R_DK:1")" "$(get dk_digest)" "ctr pull (docker v2s2, pushed by docker) digest"
	ct images check
}

s_ct_push_anon() {
	ct images tag "$REG/$R_SKO:1" "$REG/$R_CT:1"
	refused cta push "$REG/$R_CT:1"
	tag_absent "$R_CT" 1
}

s_ct_push_user() {
	cta push --user "ci:$CI_PW" "$REG/$R_CT:1"
	expect_eq "$(reg_digest "$R_CT" 1)" "$(get base_digest)" "ctr push digest"
	verify_tree "$R_CT" "$(get base_digest)" "$IMG/oci"
}

# ================================================================== final
s_catalog() {
	local want=ci/buildah,ci/ctr,ci/docker,ci/podman,ci/skopeo
	expect_eq "$(rcurl -f -u "ci:$CI_PW" "https://$REG/v2/_catalog" | jq -r '.repositories | sort | join(",")')" "$want" "_catalog as ci"
	expect_eq "$(rcurl -f -u "ci:$CI_PW" "https://$REG/v2/$R_SKO/tags/list" | jq -r '.tags | sort | join(",")')" 1 "tags of $R_SKO"
}

# ================================================================== main
echo "e2e-auth: server $OUR_BIN, work dir $WORK, host arch $HOSTARCH"

section setup
step "setup: tools present" s_tools || { E2E_DONE=1; exit 1; }
step "setup: CA + server certificate (SAN IP:127.0.0.1) with openssl; htpasswd -B users ci, dev" s_pki || { E2E_DONE=1; exit 1; }
step "setup: buildah builds the base image (2 layers) from busybox-static" s_build
start_server
if ! step "setup: server up with TLS + htpasswd + access rules (pid ${SERVER_PID%%:*}, ${REG:-no address})" s_server_up; then
	tail -n 20 "$WORK/srv/registry.log" | sed 's/^/    | /'
	E2E_DONE=1
	exit 1
fi

section "https (curl)"
step "curl: /v2/ 401 + Basic challenge anonymously and with a wrong password, 200 for ci and dev" s_https_login
step "curl: plain http:// gets 400 \"This port speaks HTTPS\"; without the CA the certificate is refused" s_https_plain
step "curl: upload POST 401 anonymous, 403 DENIED for dev and outside ci/, 202 + https Location for ci" s_https_rules

section skopeo
step "skopeo: copy in with --dest-creds ci --dest-cert-dir, every object byte-identical" s_sko_push
step "skopeo: inspect anonymously with --cert-dir (digest, --raw bytes)" s_sko_anon_inspect
step "skopeo: copy out anonymously, all blobs byte-identical" s_sko_anon_copy_out
step "skopeo: without --cert-dir the certificate is refused" s_sko_untrusted
step "skopeo: anonymous push fails, nothing written" s_sko_anon_push
step "skopeo: push by dev (pull only) and by ci outside ci/ denied; dev may pull" s_sko_denied_push

section podman
step "podman: login --cert-dir (auth file entry)" s_pm_login
step "podman: push with --digestfile == registry, every object hashes" s_pm_push
step "podman: logout (entry gone, push refused)" s_pm_logout
step "podman: anonymous pull into a fresh store (image ID, digest)" s_pm_anon_pull

section buildah
step "buildah: login --cert-dir --authfile (work dir)" s_bh_login
step "buildah: push with --digestfile == registry, then logout" s_bh_push
step "buildah: anonymous pull into a fresh store (image ID, digest)" s_bh_anon_pull

section docker
docker_trust_ca
DOCKERD_PID=""
DOCKERD_CTD_PID=""
start_dockerd
step "docker: CA trusted via /etc/docker/certs.d/$REG/ca.crt" s_dk_ca
step "docker: dockerd up (pid ${DOCKERD_PID%%:*}, vfs, private roots)" s_dk_up "$DOCKERD_PID"
step "docker: login -u ci --password-stdin" s_dk_login
step "docker: load, tag, push (digest == registry, every object hashes)" s_dk_push
step "docker: search as ci (Basic over HTTPS, access log names ci; --limit)" s_dk_search_logged_in
step "docker: logout (entry gone, push refused)" s_dk_logout
step "docker: search logged out (anonymous in the access log)" s_dk_search_logged_out
step "docker: rmi; anonymous pull refused by docker itself (no basic auth credentials after a Basic challenge)" s_dk_anon_pull
step "docker: login as dev (pull only), pull (image ID, RepoDigests), push denied, logout" s_dk_dev_pull
step "docker: login with a wrong password fails" s_dk_wrong_password
step "docker: stop dockerd (and its containerd) by pid" s_dk_stop "$DOCKERD_PID" "$DOCKERD_CTD_PID"

section containerd
CONTAINERD_PID=""
start_containerd
step "ctr: containerd up (pid ${CONTAINERD_PID%%:*}, no CRI, private root)" s_ct_up "$CONTAINERD_PID"
step "ctr: hosts.toml (https) for the registry; without --tlscacert the certificate is refused" s_ct_hosts
step "ctr: anonymous pull --tlscacert (OCI and v2s2), objects equal the local copy" s_ct_anon_pull
step "ctr: push without --user fails" s_ct_push_anon
step "ctr: push --user ci keeps the digest" s_ct_push_user
step "ctr: stop containerd by pid" s_ct_stop "$CONTAINERD_PID"

section final
step "registry: _catalog as ci lists exactly the pushed repositories" s_catalog

E2E_DONE=1
exit 0
