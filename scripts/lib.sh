# shellcheck shell=bash
# Helpers for scripts/e2e.sh (sourced, not executed).
#
# Provides: step runner with PASS/FAIL accounting, assertions, timeouts on
# every client, process bookkeeping (everything is stopped by PID), and
# curl-based helpers that talk to the registry's /v2/ API directly so that
# bytes can be compared independently of any client.

E2E_PASSED=0
E2E_FAILED=0
E2E_STEPNO=0
E2E_PIDS=()        # daemons we started; stopped in reverse order
E2E_LATE_PIDS=()   # processes spawned by our daemons (stopped after them)
E2E_TIMEOUT=${E2E_TIMEOUT:-120}

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
rcurl() { curl -sS --noproxy '*' --max-time 60 "$@"; }

# reg_manifest REPO REF OUTFILE: GET manifest (headers to OUTFILE.hdr)
reg_manifest() {
	rcurl -f -H "Accept: $ACCEPT_ALL" -D "$3.hdr" -o "$3" "http://$REG/v2/$1/manifests/$2"
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
	rcurl -f -o "$3" "http://$REG/v2/$1/blobs/$2"
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
	"http://$REG/"*) echo "$1" ;;
	/*) echo "http://$REG$1" ;;
	*) fail_now "upload Location [$1] is not on http://$REG/" ;;
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
	code=$(rcurl -X POST -o /dev/null -D "$h" -w '%{http_code}' -H 'Content-Length: 0' "http://$REG/v2/$repo/blobs/uploads/")
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
reg_tags() { rcurl -f "http://$REG/v2/$1/tags/list" | jq -cS '{name, tags: ((.tags // []) | sort)}'; }
# reg_catalog: sorted repository names from GET /v2/_catalog, comma-separated
reg_catalog() { rcurl -f "http://$REG/v2/_catalog" | jq -r '(.repositories // []) | sort | join(",")'; }

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

suite_finish() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	cleanup_processes
	cleanup_mounts
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
