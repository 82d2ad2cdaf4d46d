#!/usr/bin/env bash
# registry-replicate at size: a source of REPOS repositories x 5 tags
# (small OCI images: each tag its own manifest over a config and a layer
# that every repository shares), copied once to a fresh target, then
# re-run RUNS times with nothing new. Prints each re-run's wall time and
# the replicator's peak RSS, and the median. The target of the design is a
# re-run under 2 s at 1,000 repositories.
#
#   usage: scripts/bench-replicate-size.sh [REGISTRY_BIN=target/release/registry]
#              [REPLICATE_BIN=target/release/registry-replicate] [REPOS=1000] [RUNS=5]
#
# Environment: CONCURRENCY (requests in flight per peer, default 16).
# Data roots go under $BENCH_DIR (default /var/tmp). Only 127.0.0.1 is
# used; every server is stopped by PID; each run is bounded by `timeout`.
set -euo pipefail
REG=${1:-target/release/registry}
REPL=${2:-target/release/registry-replicate}
NREPOS=${3:-1000}
RUNS=${4:-5}
CONCURRENCY=${CONCURRENCY:-16}
TAGS=5
for b in "$REG" "$REPL"; do [ -x "$b" ] || { echo "usage: $0 [REGISTRY_BIN] [REPLICATE_BIN] [REPOS] [RUNS]: $b is not executable" >&2; exit 2; }; done
for c in curl jq sha256sum awk timeout /usr/bin/time; do command -v "$c" >/dev/null || { echo "$c is missing" >&2; exit 2; }; done
REG=$(realpath "$REG")
REPL=$(realpath "$REPL")
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
bench_workdir bench-replicate-size
die() { echo "FAIL: $*" >&2; exit 1; }

P_SRC=$(free_port 5700)
start_server src "$REG" "$P_SRC"
P_DST=$(free_port $((P_SRC + 1)))
start_server dst "$REG" "$P_DST"
SRC=http://127.0.0.1:$P_SRC

# --- Fill the source: one curl process, kept-alive connection ---------------
gen="$DIR/gen"
mkdir -p "$gen"
head -c 4096 /dev/urandom >"$gen/layer"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
	"$(sha256sum "$gen/layer" | cut -d' ' -f1)" >"$gen/config"
L=$(sha256sum "$gen/layer" | cut -d' ' -f1)
C=$(sha256sum "$gen/config" | cut -d' ' -f1)
t0=$(date +%s.%N)
cfg="$gen/curl.cfg"
: >"$cfg"
for i in $(seq -w 1 "$NREPOS"); do
	repo="size/repo$i"
	for pair in "$L:layer" "$C:config"; do
		printf 'url = "%s/v2/%s/blobs/uploads/?digest=sha256:%s"\ndata-binary = "@%s"\nheader = "Content-Type: application/octet-stream"\noutput = "/dev/null"\nnext\n' \
			"$SRC" "$repo" "${pair%%:*}" "$gen/${pair#*:}" >>"$cfg"
	done
	for t in $(seq 1 "$TAGS"); do
		m="$gen/m-$i-$t.json"
		printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":4096}],"annotations":{"bench":"%s:%s"}}' \
			"$C" "$(stat -c %s "$gen/config")" "$L" "$repo" "$t" >"$m"
		printf 'url = "%s/v2/%s/manifests/t%s"\nupload-file = "%s"\nheader = "Content-Type: application/vnd.oci.image.manifest.v1+json"\noutput = "/dev/null"\nnext\n' \
			"$SRC" "$repo" "$t" "$m" >>"$cfg"
	done
done
sed -i '$d' "$cfg" # no 'next' after the last
curl -sS --fail -K "$cfg" -w '%{http_code}\n' >"$gen/codes" || die "filling the source"
bad=$(grep -cv '^20[12]$' "$gen/codes" || true)
[ "$bad" = 0 ] || die "$bad requests filling the source failed: $(sort "$gen/codes" | uniq -c | tr '\n' ' ')"
t1=$(date +%s.%N)
awk -v r="$NREPOS" -v t="$TAGS" -v s="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" \
	'BEGIN {printf "source: %d repositories x %d tags (filled in %.1f s)\n", r, t, s}'

f="$DIR/replicate.yml"
cat >"$f" <<YML
peers:
  src:
    url: $SRC
    concurrency: $CONCURRENCY
  dst:
    url: http://127.0.0.1:$P_DST
    concurrency: $CONCURRENCY
rules:
  - source: src
    target: dst
    repositories:
      include: ["size/*"]
YML

run() { # NAME: one --once run; prints "seconds peak-KiB"
	local out="$DIR/$1" rc=0
	timeout "${RUN_TIMEOUT:-600}" /usr/bin/time -f '%e %M' -o "$out.time" "$REPL" "$f" --once --json >"$out.json" 2>"$out.err" || rc=$?
	if [ "$rc" != 0 ]; then
		echo "registry-replicate ($1) exited with $rc:" >&2; tail -n 20 "$out.err" >&2; cat "$out.json" >&2
		die "registry-replicate"
	fi
	[ "$(jq -r '.failed | length' "$out.json")" = 0 ] || { cat "$out.json" >&2; die "$1: failed is not empty"; }
	cat "$out.time"
}

read -r secs kib < <(run first)
want=$((NREPOS * TAGS))
[ "$(jq -r .tags_copied "$DIR/first.json")" = "$want" ] || { cat "$DIR/first.json" >&2; die "first copy: want $want tags copied"; }
printf 'first copy: %s s, peak RSS %d MiB\n' "$secs" $((kib / 1024))
times=()
for r in $(seq "$RUNS"); do
	read -r secs kib < <(run "rerun-$r")
	jq -e --argjson w "$want" '.tags_current == $w and .blobs_copied == 0 and .tags_copied == 0' "$DIR/rerun-$r.json" >/dev/null ||
		{ cat "$DIR/rerun-$r.json" >&2; die "re-run $r: want all $want tags current and nothing copied"; }
	printf 're-run %d: %s s, peak RSS %d MiB, %s requests retried\n' "$r" "$secs" $((kib / 1024)) "$(jq -r '.requests_retried // 0' "$DIR/rerun-$r.json")"
	times+=("$secs")
done
med=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}')
printf 'median re-run with nothing new, %d repositories x %d tags: %s s\n' "$NREPOS" "$TAGS" "$med"
