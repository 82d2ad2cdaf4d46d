#!/usr/bin/env bash
# A soak: MINUTES (default 10) of everything at once against one registry
# of ours, then a check that nothing acknowledged was lost.
# - load: registry-bench, mixed image pushes and pulls, 1 MiB pushes and
#   pulls, in runs of at most 150 operations a scenario, 4 clients;
# - a ledger: images with unique tags pushed one after another with curl;
#   each one the registry acknowledged (201) is written down;
# - a collection (registry-gc --grace 60s) every 5 s;
# - registry-replicate as a daemon, copying everything to a second
#   registry of ours;
# - kill -9 of the registry every minute, then a start on the same store.
# The registry's RSS is sampled every 2 s. At the end: every image in the
# ledger is read back from both registries, manifest and blobs checked
# against their digests; `registry verify` runs on both stores. Prints the
# counts, errors by kind, and RSS by minute; exits 1 if anything was lost,
# a store does not verify, or the RSS of the last third exceeds the first's
# by more than half.
#
#   usage: scripts/soak.sh [MINUTES=10] [BIN_DIR=target/release]
#
# SOAK_STORE=s3 keeps the soaked registry's store in a SeaweedFS bucket
# that the script starts (scripts/seaweedfs.sh) and stops; the second
# registry, the replication target, stays on a file system.
#
# Only 127.0.0.1 is used; every process is stopped by PID; every command is
# bounded by `timeout`. Data goes under $BENCH_DIR (default /var/tmp).
set -uo pipefail
MINUTES=${1:-10}
BIN_DIR=$(realpath "${2:-target/release}")
REG=$BIN_DIR/registry GC=$BIN_DIR/registry-gc REPL=$BIN_DIR/registry-replicate BENCH=$BIN_DIR/registry-bench
for b in "$REG" "$GC" "$REPL" "$BENCH"; do [ -x "$b" ] || { echo "usage: $0 [MINUTES] [BIN_DIR]: $b is not executable" >&2; exit 2; }; done
for c in curl jq sha256sum awk timeout; do command -v "$c" >/dev/null || { echo "$c is missing" >&2; exit 2; }; done
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
STORE=${SOAK_STORE:-filesystem}
case "$STORE" in filesystem | s3) ;; *) echo "SOAK_STORE=$STORE: use filesystem or s3" >&2; exit 2 ;; esac
bench_workdir soak
LOOPS=()
cleanup() {
	local p
	for p in "${LOOPS[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -f "$DIR/a.pid" ] && kill -9 "$(cat "$DIR/a.pid")" 2>/dev/null
	[ "$STORE" = s3 ] && seaweedfs_stop "$DIR/s3" >/dev/null 2>&1
	bench_cleanup
}
trap cleanup EXIT

PA=$(free_port 6100)
PB=$(free_port $((PA + 1)))
A=http://127.0.0.1:$PA
mkdir -p "$DIR/a" "$DIR/b"
server_config "$DIR/a/config.yml" "$DIR/a/data" "$PA"
if [ "$STORE" = s3 ]; then
	# shellcheck source=scripts/seaweedfs.sh
	. "$(dirname "$0")/seaweedfs.sh"
	seaweedfs_start "$DIR/s3" >/dev/null || { echo "soak: SeaweedFS did not start" >&2; exit 1; }
	# The same config, with the bucket in place of the directory.
	driver=$(seaweedfs_s3_driver "/soak-$(basename "$DIR")")
	awk -v driver="$driver" '/^  filesystem:/ {print driver; skip = 1; next}
		skip && /^    / {next} {skip = 0; print}' "$DIR/a/config.yml" >"$DIR/a/config.s3" &&
		mv "$DIR/a/config.s3" "$DIR/a/config.yml"
fi
start_server b "$REG" "$PB"
start_a() { # the registry under soak, on the same store each time
	"$REG" serve "$DIR/a/config.yml" >>"$DIR/a/log" 2>&1 &
	echo $! >"$DIR/a.pid"
	for _ in $(seq 200); do curl -fs -o /dev/null "$A/v2/" && return; sleep 0.05; done
	echo "the registry did not start" >&2; tail "$DIR/a/log" >&2; exit 1
}
start_a
STARTED=$EPOCHREALTIME
END=$(($(date +%s) + MINUTES * 60))
running() { [ "$(date +%s)" -lt "$END" ]; }
: >"$DIR/errors"
error() { echo "$1" >>"$DIR/errors"; } # KIND

# --- The ledger: one image after another, each acknowledged one written down.
ledger() {
	local i=0 cfg layer c l m code
	while running; do
		i=$((i + 1))
		cfg="$DIR/ledger-cfg" layer="$DIR/ledger-layer"
		printf '{"architecture":"amd64","os":"linux","soak":%d}' "$i" >"$cfg"
		head -c $((64 * 1024 + RANDOM * 32)) /dev/urandom >"$layer"
		c=$(sha256sum "$cfg" | cut -d' ' -f1) l=$(sha256sum "$layer" | cut -d' ' -f1)
		for pair in "$c:$cfg" "$l:$layer"; do
			code=$(timeout 60 curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "@${pair#*:}" \
				-H 'Content-Type: application/octet-stream' "$A/v2/soak/ledger/blobs/uploads/?digest=sha256:${pair%%:*}") || code="curl-$?"
			[ "$code" = 201 ] || { error "ledger blob push: $code"; continue 2; }
		done
		m="$DIR/ledger-manifest"
		printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
			"$c" "$(stat -c %s "$cfg")" "$l" "$(stat -c %s "$layer")" >"$m"
		code=$(timeout 60 curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary "@$m" \
			-H 'Content-Type: application/vnd.oci.image.manifest.v1+json' "$A/v2/soak/ledger/manifests/t$i") || code="curl-$?"
		if [ "$code" = 201 ]; then
			echo "t$i $(sha256sum "$m" | cut -d' ' -f1) $c $l" >>"$DIR/ledger"
		else
			error "ledger manifest push: $code"
		fi
		sleep 0.2
	done
}
: >"$DIR/ledger"
ledger &
LOOPS+=($!)

# --- Load from registry-bench (a restart cuts a run short).
load() {
	local n=0 s
	while running; do
		n=$((n + 1))
		case $((n % 3)) in 0) s=mix-75-25 ;; 1) s=push-1m,pull-1m ;; 2) s=image-push,image-pull ;; esac
		# At most 150 operations a scenario, then a pause: what the pushes
		# leave stays within a disk's reach (5 MiB an image).
		timeout 120 "$BENCH" run "$A" --repo soak/bench -s "$s" -c 4 -d 20s -n 150 --warmup 0s --json >>"$DIR/bench.json" 2>>"$DIR/bench.err" ||
			error "registry-bench run ended with an error"
		sleep 15
	done
}
load &
LOOPS+=($!)

# --- A collection every 5 s.
: >"$DIR/gc.json"
collect() {
	while running; do
		timeout 300 "$GC" "$DIR/a/config.yml" --grace 60s --json >>"$DIR/gc.json" 2>>"$DIR/gc.err" || error "registry-gc failed"
		sleep 5
	done
}
collect &
LOOPS+=($!)

# --- The replication daemon, to the second registry.
cat >"$DIR/replication.yml" <<YML
peers:
  a:
    url: $A
    retry_for: 2m
  b:
    url: http://127.0.0.1:$PB
rules:
  - name: soak
    source: a
    target: b
    interval: 10s
YML
"$REPL" "$DIR/replication.yml" --json >"$DIR/replicate.json" 2>"$DIR/replicate.err" &
REPL_PID=$!
LOOPS+=("$REPL_PID")

# --- RSS every 2 s; kill -9 and restart every minute.
: >"$DIR/rss"
restarts=0
next_kill=$(($(date +%s) + 60))
while running; do
	pid=$(cat "$DIR/a.pid")
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
	echo "$(awk -v a="$STARTED" -v b="$EPOCHREALTIME" 'BEGIN {printf "%d", b - a}') ${rss:-0}" >>"$DIR/rss"
	if [ "$(date +%s)" -ge "$next_kill" ] && running; then
		kill -9 "$pid"
		wait "$pid" 2>/dev/null
		start_a
		restarts=$((restarts + 1))
		next_kill=$((next_kill + 60))
	fi
	sleep 2
done
for p in "${LOOPS[@]}"; do [ "$p" = "$REPL_PID" ] || wait "$p" 2>/dev/null; done
kill "$REPL_PID" 2>/dev/null
wait "$REPL_PID" 2>/dev/null

# --- The checks.
status=0
echo "final replication pass:"
timeout 600 "$REPL" "$DIR/replication.yml" --once --json >"$DIR/final.json" 2>"$DIR/final.err" || { error "final replication pass failed"; status=1; }
jq -r '"  \(.tags_copied) tags copied, \(.tags_current) current, \(.failed | length) failed"' "$DIR/final.json"
acked=$(wc -l <"$DIR/ledger")
checked=0 lost=0 bytes=0
while read -r tag md c l; do
	for base in "$A" "http://127.0.0.1:$PB"; do
		got=$(curl -fs -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$base/v2/soak/ledger/manifests/$tag" | sha256sum | cut -d' ' -f1)
		[ "$got" = "$md" ] || { echo "LOST: $base soak/ledger:$tag manifest is $got, not $md" >&2; lost=$((lost + 1)); continue; }
		for d in "$c" "$l"; do
			rm -f "$DIR/blob"
			# -L: a registry on object storage sends blob reads to signed URLs.
			curl -fsL -o "$DIR/blob" "$base/v2/soak/ledger/blobs/sha256:$d"
			got=$(sha256sum "$DIR/blob" 2>/dev/null | cut -d' ' -f1)
			[ "$got" = "$d" ] || { echo "LOST: $base soak/ledger:$tag blob sha256:$d" >&2; lost=$((lost + 1)); continue; }
			bytes=$((bytes + $(stat -c %s "$DIR/blob")))
		done
		checked=$((checked + 1))
	done
done <"$DIR/ledger"
[ "$lost" = 0 ] || status=1
for s in a b; do
	if "$REG" verify "$DIR/$s/config.yml" >"$DIR/verify-$s.txt" 2>&1; then
		echo "registry verify ($s): $(head -1 "$DIR/verify-$s.txt")"
	else
		echo "registry verify ($s) FAILED:" >&2; cat "$DIR/verify-$s.txt" >&2; status=1
	fi
done

# --- The report.
ops=$(jq -s '[.[].scenarios[]?.ops] | add // 0' "$DIR/bench.json" 2>/dev/null || echo 0)
berr=$(jq -s '[.[].scenarios[]?.errors] | add // 0' "$DIR/bench.json" 2>/dev/null || echo 0)
passes=$(grep -c . "$DIR/gc.json" || true)
freed=$(jq -s '[.[].blobs_deleted] | add // 0' "$DIR/gc.json" 2>/dev/null || echo 0)
rpasses=$(grep -c . "$DIR/replicate.json" || true)
retried=$(jq -s '[.[].requests_retried] | add // 0' "$DIR/replicate.json" 2>/dev/null || echo 0)
echo
echo "soak: $MINUTES min, store on $STORE; $restarts restarts by kill -9; $passes collections ($freed blobs freed); $rpasses replication passes ($retried requests retried)"
echo "load: $ops registry-bench operations, $berr errors (most cut by a restart)"
echo "ledger: $acked images acknowledged; $checked image reads checked on both registries ($((bytes / 1048576)) MiB), $lost lost"
echo "errors by kind:"
if [ -s "$DIR/errors" ]; then sort "$DIR/errors" | uniq -c | sed 's/^/  /'; else echo "  none"; fi
echo "registry RSS, peak by minute (MiB):"
awk '{m = int($1 / 60); if ($2 > p[m]) p[m] = $2; if (m > last) last = m}
	END {for (i = 0; i <= last; i++) printf "  minute %2d: %6.1f\n", i + 1, p[i] / 1024}' "$DIR/rss"
growth=$(awk '{m = int($1 / 60); if ($2 > p[m]) p[m] = $2; if (m > last) last = m}
	END {n = last + 1; t = int(n / 3); if (t < 1) {print "ok"; exit}
		for (i = 0; i < t; i++) if (p[i] > a) a = p[i]
		for (i = n - t; i < n; i++) if (p[i] > b) b = p[i]
		if (b > a * 1.5) print "grew: " a / 1024 " MiB in the first third, " b / 1024 " MiB in the last"; else print "ok"}' "$DIR/rss")
if [ "$growth" != ok ]; then echo "RSS $growth" >&2; status=1; fi
[ "$status" = 0 ] && echo "soak: passed" || echo "soak: FAILED"
exit "$status"
