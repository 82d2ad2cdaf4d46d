# shellcheck shell=bash
# Helpers for scripts/e2e.sh, compat.sh and e2e-auth.sh (sourced, not
# executed).
#
# Provides: step runner with PASS/FAIL accounting, assertions, timeouts on
# every client, process bookkeeping (everything is stopped by PID), and
# curl-based helpers that talk to the registry's /v2/ API directly so that
# bytes can be compared independently of any client; client isolation and
# wrappers, and starting/stopping a registry, dockerd and containerd with
# private roots.

# seaweedfs_s3_driver, for stores in a bucket (COMPAT_STORE=s3)
# shellcheck source=scripts/seaweedfs.sh
. "$(dirname "${BASH_SOURCE[0]}")/seaweedfs.sh"

E2E_PASSED=0
E2E_FAILED=0
E2E_STEPNO=0
E2E_PIDS=()        # daemons we started; stopped in reverse order
E2E_LATE_PIDS=()   # processes spawned by our daemons (stopped after them)
E2E_TIMEOUT=${E2E_TIMEOUT:-120}
SUITE_EXIT_HOOKS=()  # functions run at exit (suite_on_exit)

# How the curl helpers reach $REG: scheme, and extra curl arguments (e.g.
# --cacert for a registry speaking HTTPS).
REG_SCHEME=http
RCURL_ARGS=()

ACCEPT_ALL='application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json'

section() { printf '\n=== %s ===\n' "$*"; }
note()    { printf 'NOTE: %s\n' "$*"; }
info()    { printf '  .. %s\n' "$*"; }   # inside steps: goes to the step log

# step DESCRIPTION COMMAND [ARGS...]
# Runs COMMAND in a subshell with errexit/pipefail (so any failing command or
# assertion fails the step), output to a per-step log.  Prints exactly one
# PASS/FAIL line; on failure, the tail of the log.  Steps cannot set
# variables of the caller: use put/get for state shared between steps.
step() {
	local desc=$1 rc t0=$SECONDS logf
	shift
	E2E_STEPNO=$((E2E_STEPNO + 1))
	logf=$(printf '%s/%03d.log' "$LOGDIR" "$E2E_STEPNO")
	(
		set -eE -o pipefail
		shopt -s inherit_errexit
		"$@"
	) >"$logf" 2>&1 </dev/null
	rc=$?
	if [ "$rc" -eq 0 ]; then
		E2E_PASSED=$((E2E_PASSED + 1))
		printf 'PASS: %s (%ss)\n' "$desc" "$((SECONDS - t0))"
	else
		E2E_FAILED=$((E2E_FAILED + 1))
		printf 'FAIL: %s (rc=%s, %ss, log %s)\n' "$desc" "$rc" "$((SECONDS - t0))" "$logf"
		tail -n "${E2E_LOG_TAIL:-25}" "$logf" | sed 's/^/    | /'
	fi
	return "$rc"
}

fail_now() { echo "ASSERTION FAILED: $*" >&2; exit 1; }
expect_eq() { # ACTUAL EXPECTED WHAT
	[ "$1" == "$2" ] || fail_now "$3: expected [$2], got [$1]"
	info "ok: $3 = $1"
}
expect_ne_empty() { [ -n "$1" ] || fail_now "$2: empty"; }
expect_contains() { # HAYSTACK NEEDLE WHAT
	case "$1" in *"$2"*) info "ok: $3 contains $2" ;; *) fail_now "$3: [$1] does not contain [$2]" ;; esac
}

# shared state between steps (steps run in subshells)
put() { printf '%s' "$2" >"$STATE/$1"; }
get() { [ -f "$STATE/$1" ] || fail_now "state '$1' missing (earlier step failed?)"; cat "$STATE/$1"; }

sha256_file() { sha256sum "$1" | cut -d' ' -f1; }

# T CMD...: bounded run of any client command
T() { timeout -k 10 "$E2E_TIMEOUT" "$@"; }

# ---------------------------------------------------------------- processes
# Processes are tracked as "PID:STARTTIME" (start time from /proc/PID/stat)
# so that a recycled PID is never signalled.
pid_starttime() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

# track_pid PID [late]: remember a daemon for cleanup; sets TRACKED to its
# "PID:STARTTIME" handle.  Must run in the main shell (not in $(...) or a step).
track_pid() {
	TRACKED="$1:$(pid_starttime "$1")"
	if [ "${2:-}" = late ]; then E2E_LATE_PIDS+=("$TRACKED"); else E2E_PIDS+=("$TRACKED"); fi
}

alive() { # PID or PID:STARTTIME: running (not a zombie) and, if given, same start time
	local pid=${1%%:*} want='' st
	case "$1" in *:*) want=${1#*:} ;; esac
	[ -r "/proc/$pid/stat" ] || return 1
	st=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ] || return 1
	[ -z "$want" ] || [ "$(pid_starttime "$pid")" = "$want" ]
}

stop_pid() { # PID or PID:STARTTIME, [GRACE_SECONDS]
	local h=$1 grace=${2:-20} i pid=${1%%:*}
	[ -n "$pid" ] || return 0
	if alive "$h"; then
		kill -TERM "$pid" 2>/dev/null
		for ((i = 0; i < grace * 10; i++)); do alive "$h" || break; sleep 0.1; done
		if alive "$h"; then
			echo "WARN: pid $pid did not stop after ${grace}s, sending KILL" >&2
			kill -KILL "$pid" 2>/dev/null
			sleep 0.5
		fi
	fi
	wait "$pid" 2>/dev/null || true   # reap if it is our child
}

# Any process whose command line mentions our work dir (e.g. containerd-shim
# processes spawned by the dockerd-managed containerd) is ours: stop by PID.
sweep_work_processes() {
	local p pid cmd
	for p in /proc/[0-9]*; do
		pid=${p#/proc/}
		[ "$pid" = "$$" ] && continue
		[ "$pid" = "${BASHPID:-$$}" ] && continue
		cmd=$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
		case "$cmd" in
		*"$WORK"*) echo "cleanup: stopping leftover pid $pid: ${cmd:0:120}" >&2; stop_pid "$pid:$(pid_starttime "$pid")" 5 ;;
		esac
	done
}

cleanup_processes() {
	local i
	for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${E2E_PIDS[i]}"; done
	for ((i = ${#E2E_LATE_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${E2E_LATE_PIDS[i]}"; done
	E2E_PIDS=()
	E2E_LATE_PIDS=()
	sweep_work_processes
}

cleanup_mounts() { # unmount anything below $WORK (deepest first)
	local m
	awk -v w="$WORK/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
}

wait_for() { # SECONDS CMD...: poll until CMD succeeds
	local secs=$1 i
	shift
	for ((i = 0; i < secs * 4; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.25
	done
	return 1
}

# ---------------------------------------------------------------- registry /v2 via curl
rcurl() { curl -sS --noproxy '*' --max-time 60 "${RCURL_ARGS[@]}" "$@"; }

# reg_manifest REPO REF OUTFILE: GET manifest (headers to OUTFILE.hdr)
reg_manifest() {
	rcurl -f -H "Accept: $ACCEPT_ALL" -D "$3.hdr" -o "$3" "$REG_SCHEME://$REG/v2/$1/manifests/$2"
}

# reg_digest REPO REF: sha256 of the manifest bytes the registry serves
reg_digest() {
	local f
	f=$(mktemp -p "$WORK/tmp")
	reg_manifest "$1" "$2" "$f" >&2
	echo "sha256:$(sha256_file "$f")"
	rm -f "$f" "$f.hdr"
}

hdr() { # FILE NAME: value of a response header (case-insensitive)
	tr -d '\r' <"$1" | awk -v n="$(echo "$2" | tr '[:upper:]' '[:lower:]')" -F': *' 'tolower($1) == n { sub(/^[^:]*: */, ""); v = $0 } END { print v }'
}

http_status() { # URL [curl args...]
	local url=$1
	shift
	rcurl -o /dev/null -w '%{http_code}' "$@" "$url"
}

# reg_blob REPO DIGEST OUTFILE: GET blob and check its sha256
reg_blob() {
	# -L: on object storage the registry answers 307 to a presigned URL
	rcurl -f -L -o "$3" "$REG_SCHEME://$REG/v2/$1/blobs/$2"
	[ "sha256:$(sha256_file "$3")" == "$2" ] || fail_now "blob $2 from $1: content does not hash to its digest"
}

# local_blob DIR HEX: path of a blob (or per-instance manifest) in an OCI
# layout / dir: directory / exported tarball
local_blob() {
	if [ -f "$1/blobs/sha256/$2" ]; then echo "$1/blobs/sha256/$2"
	elif [ -f "$1/$2" ]; then echo "$1/$2"
	elif [ -f "$1/$2.manifest.json" ]; then echo "$1/$2.manifest.json"
	else return 1; fi
}

# verify_tree REPO DIGEST [LOCALDIR]
# Walks the manifest (index/list -> children -> config + layers) as served by
# the registry, checks every object hashes to its digest and sizes match the
# descriptors; if LOCALDIR is given every object must also be byte-identical
# to the local copy (OCI layout or dir: layout).
verify_tree() {
	local repo=$1 dg=$2 dir=${3:-} f mt kids d sz
	f="$WORK/tmp/m-${dg#sha256:}"
	reg_manifest "$repo" "$dg" "$f"
	[ "sha256:$(sha256_file "$f")" == "$dg" ] || fail_now "manifest $repo@$dg: bytes do not hash to digest"
	if [ -n "$dir" ]; then
		local lb
		lb=$(local_blob "$dir" "${dg#sha256:}") || lb=""
		if [ -z "$lb" ] && [ -f "$dir/manifest.json" ]; then lb="$dir/manifest.json"; fi
		[ -n "$lb" ] || fail_now "manifest $dg not present locally in $dir"
		cmp "$f" "$lb" || fail_now "manifest $dg differs from local copy $lb"
	fi
	mt=$(jq -r '.mediaType // empty' "$f")
	kids=$(jq -r '.manifests[]?.digest' "$f")
	if [ -n "$kids" ]; then
		info "index/list $dg ($mt) with $(echo "$kids" | wc -l) children"
		for d in $kids; do verify_tree "$repo" "$d" "$dir"; done
		return 0
	fi
	jq -r '(.config, .layers[]) | "\(.digest) \(.size)"' "$f" | while read -r d sz; do
		local b="$WORK/tmp/b-${d#sha256:}"
		reg_blob "$repo" "$d" "$b"
		[ "$(stat -c %s "$b")" == "$sz" ] || fail_now "blob $d size $(stat -c %s "$b") != descriptor size $sz"
		if [ -n "$dir" ]; then
			local lb
			lb=$(local_blob "$dir" "${d#sha256:}") || fail_now "blob $d not present locally in $dir"
			cmp "$b" "$lb" || fail_now "blob $d differs from local copy"
		fi
		rm -f "$b"
	done
	info "manifest $dg ($mt): config+$(jq '.layers | length' "$f") layers verified"
	rm -f "$f" "$f.hdr"
}

# layout_digest LAYOUTDIR REFNAME: manifest digest for a ref in an OCI layout
layout_digest() {
	jq -r --arg r "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r) | .digest' "$1/index.json"
}

host_arch() {
	case "$(uname -m)" in
	x86_64) echo amd64 ;; aarch64) echo arm64 ;; armv7l) echo arm ;; *) uname -m ;;
	esac
}

# ---------------------------------------------------------------- shared by compat.sh
# isolate_clients DIR: keep skopeo/buildah away from global config, proxies
# and credentials (same settings as e2e.sh uses); everything lives under DIR.
# Sets POLICY (a signature policy accepting anything) for --policy.
isolate_clients() {
	local d=$1
	mkdir -p "$d/tmp" "$d/home"
	export TMPDIR=$d/tmp
	export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
	unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
	export HOME=$d/home
	export XDG_RUNTIME_DIR=$d/xdg-run XDG_CONFIG_HOME=$d/home/.config XDG_DATA_HOME=$d/home/.local/share
	mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
	export REGISTRY_AUTH_FILE=$d/auth.json
	echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
	export CONTAINERS_REGISTRIES_CONF=$d/registries.conf
	printf 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n' >"$CONTAINERS_REGISTRIES_CONF"
	export CONTAINERS_STORAGE_CONF=$d/storage.conf
	printf '[storage]\ndriver = "vfs"\ngraphroot = "%s"\nrunroot = "%s"\n' "$d/c-default/root" "$d/c-default/run" >"$CONTAINERS_STORAGE_CONF"
	POLICY=$d/policy.json
	echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
}

# log_listen_addr LOGFILE: the "listening on 127.0.0.1:PORT" address a
# server logged (ANSI colours stripped); empty if not (yet) logged.
log_listen_addr() {
	sed 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null | grep -o 'listening on 127\.0\.0\.1:[0-9]\+' | head -n1 | sed 's/^listening on //'
}

# reg_upload_url LOCATION: absolute URL for an upload Location header; only
# URLs on $REG are accepted (relative ones are resolved against it).
reg_upload_url() {
	case "$1" in
	"$REG_SCHEME://$REG/"*) echo "$1" ;;
	/*) echo "$REG_SCHEME://$REG$1" ;;
	*) fail_now "upload Location [$1] is not on $REG_SCHEME://$REG/" ;;
	esac
}

# reg_chunked_upload REPO FILE NCHUNKS: chunked blob upload with curl:
# POST, NCHUNKS x PATCH (Content-Range: start-end), then PUT ?digest= with an
# empty body.  Checks statuses, Range after every chunk and the final digest.
reg_chunked_upload() {
	local repo=$1 file=$2 n=$3 size dg loc code i start=0 end sep
	local h=$WORK/tmp/upload.hdr chunk=$WORK/tmp/upload.chunk
	size=$(stat -c %s "$file")
	dg="sha256:$(sha256_file "$file")"
	[ "$size" -ge "$n" ] || fail_now "blob too small for $n chunks"
	code=$(rcurl -X POST -o /dev/null -D "$h" -w '%{http_code}' -H 'Content-Length: 0' "$REG_SCHEME://$REG/v2/$repo/blobs/uploads/")
	expect_eq "$code" 202 "POST /v2/$repo/blobs/uploads/ status"
	loc=$(hdr "$h" Location)
	expect_ne_empty "$loc" "upload Location"
	for ((i = 1; i <= n; i++)); do
		end=$((size * i / n - 1))
		dd if="$file" of="$chunk" bs=65536 iflag=skip_bytes,count_bytes skip="$start" count=$((end - start + 1)) status=none
		expect_eq "$(stat -c %s "$chunk")" $((end - start + 1)) "chunk $i size"
		code=$(rcurl -X PATCH -o /dev/null -D "$h" -w '%{http_code}' -H 'Expect:' \
			-H 'Content-Type: application/octet-stream' -H "Content-Range: $start-$end" \
			--data-binary "@$chunk" "$(reg_upload_url "$loc")")
		expect_eq "$code" 202 "PATCH chunk $i/$n ($start-$end) status"
		expect_eq "$(hdr "$h" Range)" "0-$end" "Range after chunk $i"
		loc=$(hdr "$h" Location)
		expect_ne_empty "$loc" "upload Location after chunk $i"
		start=$((end + 1))
	done
	case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
	code=$(rcurl -X PUT -o /dev/null -D "$h" -w '%{http_code}' -H 'Content-Length: 0' "$(reg_upload_url "$loc")${sep}digest=$dg")
	expect_eq "$code" 201 "PUT ?digest= status"
	expect_eq "$(hdr "$h" Docker-Content-Digest)" "$dg" "PUT Docker-Content-Digest"
	rm -f "$chunk"
}

# reg_tags REPO: {"name","tags"} from GET /v2/REPO/tags/list, tags sorted
reg_tags() { rcurl -f "$REG_SCHEME://$REG/v2/$1/tags/list" | jq -cS '{name, tags: ((.tags // []) | sort)}'; }
# reg_catalog: sorted repository names from GET /v2/_catalog, comma-separated
reg_catalog() { rcurl -f "$REG_SCHEME://$REG/v2/_catalog" | jq -r '(.repositories // []) | sort | join(",")'; }

# watchdog PREFIX DEFAULT_SECONDS SCRIPT ARGS...: run SCRIPT again under
# timeout(1), which signals the whole process group (steps and daemons)
# when $PREFIX_TOTAL_TIMEOUT (default DEFAULT_SECONDS; 0 for none) runs out;
# the EXIT trap then stops everything by PID and prints the summary.
watchdog() {
	local prefix=$1 default=$2 script=$3
	shift 3
	local under="${prefix}_UNDER_WATCHDOG" limit_var="${prefix}_TOTAL_TIMEOUT"
	local limit=${!limit_var:-$default}
	if [ -z "${!under:-}" ] && [ "$limit" != 0 ]; then
		export "$under=1"
		exec timeout -k 60 "$limit" bash "$script" "$@"
	fi
}

# suite_traps NAME KEEP_VAR: install the EXIT/INT/TERM handling of a test
# script: stop everything it started, remove $WORK (unless $KEEP_VAR=1),
# count an unfinished run ($E2E_DONE not 1) as a failure, and print the
# closing line "NAME: N passed, M failed"; exit non-zero on any failure.
suite_traps() {
	SUITE_NAME=$1
	SUITE_KEEP=$2
	trap suite_finish EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# suite_on_exit FUNCTION: run FUNCTION at exit, however the run ends (after
# every process is stopped, before $WORK is removed); for state outside
# $WORK that a suite had to create.  Main shell only.
suite_on_exit() { SUITE_EXIT_HOOKS+=("$1"); }

suite_finish() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	cleanup_processes
	cleanup_mounts
	local h
	for h in "${SUITE_EXIT_HOOKS[@]}"; do "$h"; done
	if [ "${!SUITE_KEEP:-0}" = 1 ]; then
		echo "$SUITE_NAME: keeping work dir $WORK"
	else
		rm -rf "$WORK"
		[ "$E2E_FAILED" -gt 0 ] && echo "$SUITE_NAME: (logs removed; rerun with $SUITE_KEEP=1 to keep them)"
	fi
	if [ "$E2E_DONE" != 1 ]; then
		echo "$SUITE_NAME: interrupted or aborted (rc=$rc)"
		E2E_FAILED=$((E2E_FAILED + 1))
	fi
	echo "$SUITE_NAME: $E2E_PASSED passed, $E2E_FAILED failed"
	if [ "$E2E_FAILED" -gt 0 ]; then exit 1; fi
	exit 0
}

# ---------------------------------------------------------------- tools
BUSYBOX=${BUSYBOX:-/usr/bin/busybox}
# DOCKER_CLI: the client matching Debian's dockerd 20.10 (the newer
# /usr/local/bin/docker would need DOCKER_API_VERSION)
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker}

require_commands() { # CMD...: fail the step naming every missing one
	local c missing=""
	for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing="$missing $c"; done
	[ -z "$missing" ] || fail_now "missing commands:$missing"
}

require_busybox_static() { # images are built from $BUSYBOX: must be static
	[ -x "$BUSYBOX" ] || fail_now "$BUSYBOX missing (apt-get install busybox-static)"
	if ldd "$BUSYBOX" >/dev/null 2>&1; then fail_now "$BUSYBOX is dynamically linked; need busybox-static"; fi
}

require_root() { [ "$(id -u)" = 0 ] || fail_now "must run as root${1:+ ($1)}"; }

# ---------------------------------------------------------------- clients
# isolate_engines DIR: besides isolate_clients, private configuration for
# docker (DOCKER_CONFIG, where logins are stored) and podman
# (CONTAINERS_CONF: cgroupfs, events to a file, tmp and network dirs in DIR).
isolate_engines() {
	local d=$1
	export DOCKER_CONFIG=$d/docker-config
	mkdir -p "$DOCKER_CONFIG" "$d/podman-tmp" "$d/podman-net"
	echo '{}' >"$DOCKER_CONFIG/config.json"
	export CONTAINERS_CONF=$d/containers.conf
	cat >"$CONTAINERS_CONF" <<EOF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$d/podman-events.log"
tmp_dir = "$d/podman-tmp"
[network]
network_config_dir = "$d/podman-net"
EOF
}

sko() { T skopeo --policy "$POLICY" "$@"; }
# buildah/podman with a private vfs store under $WORK: bh_in|pm_in NAME args...
bh_in() { local s=$1; shift; T buildah --storage-driver vfs --root "$WORK/c-$s/root" --runroot "$WORK/c-$s/run" "$@"; }
pm_in() {
	local s=$1; shift
	mkdir -p "$WORK/podman-tmp" "$WORK/podman-net"
	T podman --storage-driver vfs --root "$WORK/c-$s/root" --runroot "$WORK/c-$s/run" \
		--cgroup-manager cgroupfs --events-backend file --tmpdir "$WORK/podman-tmp" \
		--network-config-dir "$WORK/podman-net" "$@"
}
dk() { T "$DOCKER_CLI" -H "unix://$WORK/d/docker.sock" "$@"; }
ct() { T ctr -a "$WORK/ctd/c.sock" -n e2e "$@"; }
ct_digest() { ct images ls | awk -v r="$1" '$1 == r { print $3 }'; }

# ---------------------------------------------------------------- daemons
# unset_registry_env: unset every REGISTRY_* variable (our server,
# registry-gc and Distribution all read them as config overrides;
# REGISTRY_AUTH_FILE, set for the clients, would read as auth.file).  For
# subshells that then exec a server or collector.
unset_registry_env() {
	local v
	for v in $(compgen -e | grep '^REGISTRY_'); do unset "$v"; done
	# Distribution 2.8's S3 driver refuses to start with a CA bundle set.
	unset AWS_CA_BUNDLE
}

# no_registry_env CMD...: run the external command CMD without them
no_registry_env() { (unset_registry_env && exec "$@"); }

# start_registry BIN CONFIG LOG: `BIN serve CONFIG` in the background (see
# unset_registry_env); waits up to 30 s for its "listening on" line.  Main
# shell only: sets SERVER_PID (PID:STARTTIME) and REG (empty if none was
# logged).
start_registry() {
	local i
	# exec: the PID tracked is the server's own
	(unset_registry_env && exec "$1" serve "$2") >"$3" 2>&1 &
	track_pid $!
	SERVER_PID=$TRACKED
	REG=""
	for ((i = 0; i < 120; i++)); do
		REG=$(log_listen_addr "$3")
		[ -n "$REG" ] && break
		alive "$SERVER_PID" || break
		sleep 0.25
	done
}

# start_dockerd [DOCKERD_ARGS...]: own dockerd (vfs, private data/exec root
# and socket under $WORK/d, no iptables/bridge), with any extra arguments
# (a --registry-mirror).  Main shell only: sets DOCKERD_PID and
# DOCKERD_CTD_PID (the containerd it spawns; empty if not seen).
start_dockerd() {
	mkdir -p "$WORK/d/data" "$WORK/d/exec"
	echo '{}' >"$WORK/d/daemon.json"
	DOCKERD_CTD_PID=""
	dockerd --config-file "$WORK/d/daemon.json" \
		--iptables=false --ip6tables=false --ip-masq=false --bridge=none \
		--storage-driver=vfs --data-root "$WORK/d/data" --exec-root "$WORK/d/exec" \
		-H "unix://$WORK/d/docker.sock" --pidfile "$WORK/d/docker.pid" "$@" \
		>"$WORK/d/dockerd.log" 2>&1 &
	track_pid $!
	# shellcheck disable=SC2034  # for the caller
	DOCKERD_PID=$TRACKED
	if wait_for 60 dk version; then
		local cpid
		cpid=$(cat "$WORK/d/exec/containerd/containerd.pid" 2>/dev/null || true)
		if [ -n "$cpid" ]; then
			track_pid "$cpid" late
			# shellcheck disable=SC2034  # for the caller
			DOCKERD_CTD_PID=$TRACKED
		fi
	fi
}

s_dk_up() { # DOCKERD_PID
	alive "$1" || { tail -n 30 "$WORK/d/dockerd.log"; fail_now "dockerd (pid $1) died"; }
	dk version
	expect_eq "$(dk info --format '{{.Driver}}')" vfs "dockerd storage driver"
	expect_eq "$(dk info --format '{{.DockerRootDir}}')" "$WORK/d/data" "dockerd data root"
}

s_dk_stop() { # DOCKERD_PID [DOCKERD_CONTAINERD_PID]
	stop_pid "$1" 30
	if alive "$1"; then fail_now "dockerd still running"; fi
	if [ -n "${2:-}" ]; then
		stop_pid "$2" 10
		if alive "$2"; then fail_now "dockerd's containerd still running"; fi
	fi
}

# start_containerd: own containerd (no CRI; root, state and socket under
# $WORK/ctd).  Main shell only: sets CONTAINERD_PID.
start_containerd() {
	mkdir -p "$WORK/ctd/root" "$WORK/ctd/state"
	cat >"$WORK/ctd/config.toml" <<EOF
version = 2
root = "$WORK/ctd/root"
state = "$WORK/ctd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/ctd/c.sock"
[ttrpc]
  address = "$WORK/ctd/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOF
	containerd --config "$WORK/ctd/config.toml" >"$WORK/ctd/containerd.log" 2>&1 &
	track_pid $!
	# shellcheck disable=SC2034  # for the caller
	CONTAINERD_PID=$TRACKED
	wait_for 30 ct version || true
}

s_ct_up() { # CONTAINERD_PID
	alive "$1" || { tail -n 30 "$WORK/ctd/containerd.log"; fail_now "containerd (pid $1) died"; }
	ct version
}

s_ct_stop() { # CONTAINERD_PID
	stop_pid "$1" 20
	if alive "$1"; then fail_now "containerd still running"; fi
}

# ---------------------------------------------------------------- shared by compat.sh and gc-compat.sh
# Our server and Distribution (Debian's docker-registry) taking turns on
# filesystem roots.  The caller sets OUR_BIN and DIST_BIN; configs and logs
# go to $WORK/srv.

# fs_config FILE ROOT: a config both servers and all collectors read:
# filesystem storage at ROOT, deletes enabled, 127.0.0.1 on a free port.
# With COMPAT_STORE=s3 the store is instead in the SeaweedFS bucket that
# scripts/seaweedfs.sh started (SEAWEEDFS_* in the environment), under a
# prefix named after ROOT; blobs are then streamed by the servers
# (redirect.disable), so both are checked on the same answers.
fs_config() {
	local driver
	if [ "${COMPAT_STORE:-filesystem}" = s3 ]; then
		driver="$(seaweedfs_s3_driver "/$(basename "$(dirname "$2")")-$(basename "$2")")
  redirect:
    disable: true"
	else
		driver="  filesystem:
    rootdirectory: $2"
	fi
	cat >"$1" <<CFG
version: 0.1
log:
  level: info
storage:
$driver
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
CFG
}

SERVER_PID=""
SERVER_N=0

# start_server dist|ours ROOT: in the main shell; sets REG, SERVER_PID,
# SERVER_LOG, SERVER_ROOT.  Refuses to start while the previous one runs
# (never two writers on one root).
start_server() {
	local kind=$1 bin cfg
	case "$kind" in dist) bin=$DIST_BIN ;; ours) bin=$OUR_BIN ;; *) echo "start_server: kind [$kind]" >&2; return 1 ;; esac
	if [ -n "$SERVER_PID" ] && alive "$SERVER_PID"; then
		echo "$SUITE_NAME: previous server ${SERVER_PID%%:*} still running; refusing to start a 2nd writer" >&2
		REG=""
		return 1
	fi
	SERVER_N=$((SERVER_N + 1))
	SERVER_ROOT=$2
	mkdir -p "$WORK/srv" "$SERVER_ROOT"
	cfg=$WORK/srv/$SERVER_N-$kind.yml
	SERVER_LOG=$WORK/srv/$SERVER_N-$kind.log
	fs_config "$cfg" "$SERVER_ROOT"
	start_registry "$bin" "$cfg" "$SERVER_LOG"
	[ -n "$REG" ] && wait_for 15 rcurl -f -o /dev/null "http://$REG/v2/"
}

s_server_up() { # KIND
	alive "$SERVER_PID" || { tail -n 30 "$SERVER_LOG"; fail_now "$1 server (pid ${SERVER_PID%%:*}) is not running"; }
	expect_ne_empty "$REG" "listen address in the server log"
	[[ $REG =~ ^127\.0\.0\.1:[0-9]+$ ]] || fail_now "listen address [$REG] is not 127.0.0.1:PORT"
	expect_eq "$(http_status "http://$REG/v2/")" 200 "GET /v2/"
	info "$1 on $REG, root $SERVER_ROOT"
}

s_server_stop() {
	stop_pid "$SERVER_PID" 20
	if alive "$SERVER_PID"; then fail_now "server ${SERVER_PID%%:*} still running"; fi
}

# server_phase KIND ROOT DESCRIPTION: start and check the server; abort the
# whole run if it is not there
server_phase() {
	start_server "$1" "$2"
	if ! step "$3: server up (pid ${SERVER_PID%%:*}, ${REG:-no address})" s_server_up "$1"; then
		tail -n 20 "$SERVER_LOG" | sed 's/^/    | /'
		E2E_DONE=1
		exit 1
	fi
}

server_stop() { # DESCRIPTION
	step "$1: stop server by pid ${SERVER_PID%%:*}" s_server_stop
	stop_pid "$SERVER_PID" 5   # reap in the main shell (no-op if stopped)
	if alive "$SERVER_PID"; then
		echo "$SUITE_NAME: server ${SERVER_PID%%:*} would not stop; aborting" >&2
		E2E_DONE=1
		exit 1
	fi
}

# skopeo to / from $REG (plain HTTP), digests kept
cp_out() { sko copy --preserve-digests --src-tls-verify=false "$@"; }
cp_in() { sko copy --preserve-digests --dest-tls-verify=false "$@"; }

# Images built with buildah (private vfs store $WORK/c-build) from
# busybox-static, named localhost/$IMG_PREFIX-NAME:latest; build context in
# $WORK/ctx.
bh_build() { bh_in build "$@"; }

# mk_release_base NAME HELLO RANDOM_BYTES RELEASE_FILE LABEL...: the
# end-to-end suites' base image localhost/NAME:latest, two layers: busybox
# and /hello.txt (text HELLO), then RANDOM_BYTES of random data and
# RELEASE_FILE (a copy of /hello.txt); labelled with each KEY=VALUE LABEL.
mk_release_base() {
	local name=$1 hello=$2 bytes=$3 release=$4 ctx=$WORK/ctx c l labels=()
	shift 4
	for l in "$@"; do labels+=(--label "$l"); done
	mkdir -p "$ctx"
	cp "$BUSYBOX" "$ctx/busybox"
	echo "$hello" >"$ctx/hello.txt"
	head -c "$bytes" /dev/urandom >"$ctx/random.bin"
	c=$(bh_build from scratch)
	bh_build copy "$c" "$ctx/busybox" /bin/busybox
	bh_build copy "$c" "$ctx/hello.txt" /hello.txt
	bh_build config --arch "$HOSTARCH" --os linux --cmd '["/bin/busybox","cat","/hello.txt"]' \
		--env PATH=/bin "${labels[@]}" "$c"
	bh_build commit --format oci "$c" "localhost/$name:l1"
	bh_build rm "$c"
	c=$(bh_build from "localhost/$name:l1")
	bh_build copy "$c" "$ctx/random.bin" /data/random.bin
	bh_build copy "$c" "$ctx/hello.txt" "$release"
	bh_build commit --format oci "$c" "localhost/$name:latest"
	bh_build rm "$c"
}

mk_base() { # ARCH: base image (one layer: /bin/busybox)
	local ctx=$WORK/ctx c
	mkdir -p "$ctx"
	cp "$BUSYBOX" "$ctx/busybox"
	c=$(bh_build from scratch)
	bh_build copy "$c" "$ctx/busybox" /bin/busybox
	bh_build config --arch "$1" --os linux --env PATH=/bin "$c"
	bh_build commit --format oci "$c" "localhost/$IMG_PREFIX-base:latest"
	bh_build rm "$c"
}

# mk_image NAME ARCH [RANDOM_KIB]: from the base, add /NAME.txt (and a
# random file) as one layer, commit localhost/$IMG_PREFIX-NAME:latest
mk_image() {
	local c ctx=$WORK/ctx
	echo "$IMG_PREFIX image $1 ($2) $$" >"$ctx/$1.txt"
	c=$(bh_build from "localhost/$IMG_PREFIX-base:latest")
	bh_build copy "$c" "$ctx/$1.txt" "/$1.txt"
	if [ -n "${3:-}" ]; then
		head -c "$(($3 * 1024))" /dev/urandom >"$ctx/$1.bin"
		bh_build copy "$c" "$ctx/$1.bin" "/data/$1.bin"
	fi
	bh_build config --arch "$2" --os linux --cmd "[\"/bin/busybox\",\"cat\",\"/$1.txt\"]" --label "org.example.$IMG_PREFIX=$1" "$c"
	bh_build commit --format oci "$c" "localhost/$IMG_PREFIX-$1:latest"
	bh_build rm "$c"
}

mk_index() { # NAME IMAGE...: OCI index of images, exported to $IMG/NAME
	local n=$1 i
	shift
	bh_build manifest create "localhost/$IMG_PREFIX-$n:latest"
	for i in "$@"; do bh_build manifest add "localhost/$IMG_PREFIX-$n:latest" "containers-storage:localhost/$IMG_PREFIX-$i:latest"; done
	bh_build manifest push --all --format oci "localhost/$IMG_PREFIX-$n:latest" "oci:$IMG/$n:$n"
}

expect_gone_digest() { # REPO DIGEST: GET and HEAD of the manifest answer 404
	expect_eq "$(http_status "http://$REG/v2/$1/manifests/$2" -H "Accept: $ACCEPT_ALL")" 404 "GET deleted $1@$2"
	expect_eq "$(http_status "http://$REG/v2/$1/manifests/$2" -I -H "Accept: $ACCEPT_ALL")" 404 "HEAD deleted $1@$2"
}

expect_gone() { # REPO TAG DIGEST: tag and manifest digest answer 404
	expect_eq "$(http_status "http://$REG/v2/$1/manifests/$2" -H "Accept: $ACCEPT_ALL")" 404 "GET deleted $1:$2"
	expect_gone_digest "$1" "$3"
}

# s_copy_out_oci REPO TAG|DIGEST DIGEST_KEY [--all]: skopeo copy out of $REG
# into an OCI layout under $OUT; the digest must be the one stored (put)
# under DIGEST_KEY and every object must hash and equal the copy
s_copy_out_oci() {
	local ref=$2 src dir
	case "$2" in sha256:*) src="docker://$REG/$1@$2" ref=bydigest ;; *) src="docker://$REG/$1:$2" ;; esac
	dir=$OUT/$1-${2/:/_}-$SERVER_N
	cp_out ${4:+"$4"} "$src" "oci:$dir:$ref"
	expect_eq "$(layout_digest "$dir" "$ref")" "$(get "$3")" "skopeo copy $src -> OCI layout: digest"
	verify_tree "$1" "$(get "$3")" "$dir"
}
