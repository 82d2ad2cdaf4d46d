#!/usr/bin/env bash
# Replication of 20 repositories x 2 tags (OCI images: a config and 3 random
# layers of 1, 2 and 4 MiB; v1 and v2 of a repository share the first two)
# from one of our registries to another, with registry-replicate and with
# skopeo sync (one command for all repositories, via a YAML source). Each
# tool run gets a fresh empty target; it is timed on a first copy and on a
# re-run with nothing new. The tools alternate (ours first in odd rounds,
# skopeo first in even ones). Prints the times, medians and skopeo / ours.
#
#   usage: scripts/bench-replicate.sh [REGISTRY_BIN=target/release/registry]
#              [REPLICATE_BIN=target/release/registry-replicate] [ROUNDS=2]
#
# SOURCE_BIN (default REGISTRY_BIN) serves the source: /usr/bin/docker-registry
# compares the tools reading from CNCF Distribution.
#
# Data roots go under $BENCH_DIR (default: a temp dir on /var/tmp, i.e. a
# real disk, not tmpfs). Only 127.0.0.1 is used; every server is stopped by
# PID, and each tool run is bounded by `timeout` ($RUN_TIMEOUT, 600 s).
# Runs are timed with $EPOCHREALTIME (no process of their own), so both
# tools carry the same small overhead: `timeout` and the exec.
set -euo pipefail
REG=${1:-target/release/registry}
REPL=${2:-target/release/registry-replicate}
ROUNDS=${3:-2}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
NREPOS=20
for b in "$REG" "$REPL"; do [ -x "$b" ] || { echo "usage: $0 [REGISTRY_BIN] [REPLICATE_BIN] [ROUNDS]: $b is not executable" >&2; exit 2; }; done
for c in curl jq skopeo sha256sum awk timeout; do command -v "$c" >/dev/null || { echo "$c is missing" >&2; exit 2; }; done
REG=$(realpath "$REG")
REPL=$(realpath "$REPL")
SOURCE_BIN=$(realpath "${SOURCE_BIN:-$REG}")
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
bench_workdir bench-replicate
die() { echo "FAIL: $*" >&2; exit 1; }

start() { start_server "$1" "$REG" "$2"; } # NAME PORT; sets START_PID
stop() { # NAME PID: stop it, forget it, delete its root
	local p keep=()
	kill "$2" 2>/dev/null || true
	wait "$2" 2>/dev/null || true
	for p in "${PIDS[@]}"; do [ "$p" = "$2" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
	rm -rf "${DIR:?}/$1"
}
# Each target gets a port never used before in this run: skopeo's blob info
# cache (/var/lib/containers/cache) remembers blob locations per registry
# host:port, and a reused port would send it after blobs that are gone.
NEXT_PORT=5600
next_port() { local p; p=$(free_port "$NEXT_PORT"); NEXT_PORT=$((p + 1)); echo "$p"; }

# --- Source -----------------------------------------------------------------
P_SRC=$(free_port 5500)
start_server src "$SOURCE_BIN" "$P_SRC"
SRC=http://127.0.0.1:$P_SRC
repos=()
for i in $(seq -w 1 "$NREPOS"); do repos+=("bench/repo$i"); done

gen="$DIR/gen"
mkdir -p "$gen"
: >"$gen/blobs" # REPO FILE HEX, one per blob to push (each once per repository)
t0=$(date +%s.%N)
hexof() { sha256sum "$1" | cut -d' ' -f1; }
for repo in "${repos[@]}"; do
	d="$gen/${repo#bench/}"
	mkdir -p "$d"
	head -c $((1 << 20)) /dev/urandom >"$d/l1"
	head -c $((2 << 20)) /dev/urandom >"$d/l2"
	for tag in v1 v2; do
		head -c $((4 << 20)) /dev/urandom >"$d/l3-$tag"
		layers=("$d/l1" "$d/l2" "$d/l3-$tag")
		ldesc=() diffs=()
		for f in "${layers[@]}"; do
			h=$(hexof "$f")
			diffs+=("\"sha256:$h\"")
			ldesc+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$h\",\"size\":$(stat -c %s "$f")}")
			if [ "$tag" = v1 ] || [ "$f" = "$d/l3-$tag" ]; then echo "$repo $f $h" >>"$gen/blobs"; fi
		done
		n=${repo#bench/repo}
		created=$(printf '2024-01-%02dT%02d:00:00Z' $((10#$n)) "${tag#v}")
		printf '{"architecture":"amd64","os":"linux","created":"%s","config":{"Labels":{"bench":"%s:%s"}},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
			"$created" "$repo" "$tag" "$(IFS=,; echo "${diffs[*]}")" >"$d/config-$tag.json"
		ch=$(hexof "$d/config-$tag.json")
		echo "$repo $d/config-$tag.json $ch" >>"$gen/blobs"
		printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
			"$ch" "$(stat -c %s "$d/config-$tag.json")" "$(IFS=,; echo "${ldesc[*]}")" >"$d/manifest-$tag.json"
	done
done
# One POST and one PUT per blob (Distribution answers a monolithic POST
# with 202 and no blob), 4 at a time.
# shellcheck disable=SC2016
xargs -P 4 -L 1 bash -c 'loc=$(curl -sS --max-time 30 -o /dev/null -D - -X POST "$0/v2/$1/blobs/uploads/" |
		tr -d "\r" | awk "tolower(\$1) == \"location:\" {print \$2}") || exit 255
	case $loc in /*) loc=$0$loc ;; esac
	case $loc in *\?*) sep="&" ;; *) sep="?" ;; esac
	code=$(curl -sS --max-time 120 -o /dev/null -w "%{http_code}" -X PUT --data-binary "@$2" \
	-H "Content-Type: application/octet-stream" "$loc${sep}digest=sha256:$3") || exit 255
	[ "$code" = 201 ] || { echo "push of $2 to $1 answered $code" >&2; exit 255; }' "$SRC" <"$gen/blobs" ||
	die "filling the source"
for repo in "${repos[@]}"; do
	for tag in v1 v2; do
		curl -fsS --max-time 60 -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
			--data-binary "@$gen/${repo#bench/}/manifest-$tag.json" "$SRC/v2/$repo/manifests/$tag" ||
			die "manifest $repo:$tag"
	done
done
t1=$(date +%s.%N)
nblobs=$(wc -l <"$gen/blobs")
mib=$(du -sm "$DIR/src/data" | cut -f1)
awk -v n="$nblobs" -v m="$mib" -v r="$NREPOS" -v t="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" \
	'BEGIN {printf "source: %d repositories x 2 tags, %d distinct blobs, %d MiB on disk (filled in %.1f s)\n", r, n, m, t}'

# Source manifests' sha256, for the checks.
declare -A SRC_SHA
for repo in "${repos[@]}"; do
	for tag in v1 v2; do
		SRC_SHA[$repo:$tag]=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$SRC/v2/$repo/manifests/$tag" | sha256sum | cut -d' ' -f1)
	done
done

# The target must hold every repository with v1 and v2, each manifest
# byte for byte the source's (bench/repo07 is the one the brief names;
# the others are checked as well).
check_target() { # PORT WHO
	local repo tag tags sha
	for repo in "${repos[@]}"; do
		tags=$(curl -fsS "http://127.0.0.1:$1/v2/$repo/tags/list" | jq -r '.tags // [] | sort | join(",")') ||
			die "$2: no tags list for $repo on the target"
		[ "$tags" = v1,v2 ] || die "$2: $repo has tags [$tags] on the target, want v1,v2"
		for tag in v1 v2; do
			sha=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
				"http://127.0.0.1:$1/v2/$repo/manifests/$tag" | sha256sum | cut -d' ' -f1)
			[ "$sha" = "${SRC_SHA[$repo:$tag]}" ] ||
				die "$2: $repo:$tag is sha256:$sha on the target, sha256:${SRC_SHA[$repo:$tag]} on the source"
		done
	done
}

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.4f", b - a}'; }

# --- Tool runs -------------------------------------------------------------------
declare -A R # ours-first, ours-rerun, skopeo-first, skopeo-rerun: "t1 t2 ..."

run_ours() { # ROUND
	local name="dst-ours-$1" port pid t0 t1 rc f out
	port=$(next_port)
	start "$name" "$port"; pid=$START_PID
	f="$DIR/replicate-$1.yml"
	cat >"$f" <<YML
peers:
  src:
    url: $SRC
    concurrency: 8
  dst:
    url: http://127.0.0.1:$port
    concurrency: 8
rules:
  - source: src
    target: dst
    repositories:
      include: ["bench/*"]
YML
	for pass in first rerun; do
		out="$DIR/ours-$1-$pass"
		sync
		t0=$EPOCHREALTIME
		rc=0
		timeout "$RUN_TIMEOUT" "$REPL" "$f" --once --json >"$out.json" 2>"$out.err" || rc=$?
		t1=$EPOCHREALTIME
		if [ "$rc" != 0 ]; then
			echo "registry-replicate ($pass, round $1) exited with $rc; stderr:" >&2; cat "$out.err" >&2
			echo "stdout:" >&2; cat "$out.json" >&2
			die "registry-replicate"
		fi
		[ "$(jq -s 'length' "$out.json")" = 1 ] || { cat "$out.json" >&2; die "registry-replicate ($pass): want one JSON line"; }
		[ "$(jq -r '.failed | length' "$out.json")" = 0 ] || { cat "$out.json" >&2; die "registry-replicate ($pass): failed is not empty"; }
		if [ "$pass" = rerun ]; then
			jq -e '.blobs_copied == 0' "$out.json" >/dev/null || { cat "$out.json" >&2; die "registry-replicate re-run copied blobs"; }
		fi
		check_target "$port" "ours ($pass, round $1)"
		R[ours-$pass]+="$(elapsed "$t0" "$t1") "
		printf '  round %s ours   %-5s %7s s  %s\n' "$1" "$pass" "$(elapsed "$t0" "$t1")" \
			"$(jq -r '"tags \(.tags_copied) copied \(.tags_current) current, blobs \(.blobs_copied) copied \(.blobs_mounted) mounted \(.blobs_present) present, \(.bytes_copied / 1048576 | floor) MiB"' "$out.json")"
	done
	stop "$name" "$pid"
}

run_skopeo() { # ROUND
	local name="dst-skopeo-$1" port pid t0 t1 rc f out repo
	port=$(next_port)
	start "$name" "$port"; pid=$START_PID
	f="$DIR/skopeo-$1.yml"
	{
		echo "127.0.0.1:$P_SRC:"
		echo "  tls-verify: false"
		echo "  images-by-tag-regex:"
		for repo in "${repos[@]}"; do echo "    $repo: \".*\""; done
	} >"$f"
	for pass in first rerun; do
		out="$DIR/skopeo-$1-$pass"
		sync
		t0=$EPOCHREALTIME
		rc=0
		# Without --scoped, skopeo puts each image at DEST/<last path
		# component of the source>, so DEST=…/bench lands bench/repoNN.
		# --preserve-digests: by default skopeo gzips uncompressed layers
		# for a registry destination, rewriting the manifest (another
		# digest); this keeps it byte for byte, as registry-replicate does.
		timeout "$RUN_TIMEOUT" skopeo --insecure-policy sync --preserve-digests \
			--src yaml --dest docker --dest-tls-verify=false \
			"$f" "127.0.0.1:$port/bench" >"$out.log" 2>&1 || rc=$?
		t1=$EPOCHREALTIME
		if [ "$rc" != 0 ]; then
			echo "skopeo sync ($pass, round $1) exited with $rc:" >&2; tail -n 30 "$out.log" >&2
			die "skopeo sync"
		fi
		check_target "$port" "skopeo ($pass, round $1)"
		R[skopeo-$pass]+="$(elapsed "$t0" "$t1") "
		printf '  round %s skopeo %-5s %7s s  image refs %d, %d skipped (already present), blobs %d copied\n' "$1" "$pass" "$(elapsed "$t0" "$t1")" \
			"$(grep -c 'Copying image ref' "$out.log" || true)" "$(grep -c 'Skipping: image already present' "$out.log" || true)" \
			"$(grep 'Copying blob' "$out.log" | grep -vc 'skipped' || true)"
	done
	stop "$name" "$pid"
}

for round in $(seq "$ROUNDS"); do
	if ((round % 2)); then order="ours skopeo"; else order="skopeo ours"; fi
	for tool in $order; do "run_$tool" "$round"; done
done

# --- Report ---------------------------------------------------------------------
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) printf "%.4f\n", a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2}'; }
nth() { echo "$1" | awk -v i="$2" '{print $i}'; }
echo
printf '%-7s %12s %12s %12s %12s\n' round "ours first" "ours re-run" "skopeo first" "skopeo re-run"
for round in $(seq "$ROUNDS"); do
	printf '%-7s %12s %12s %12s %12s\n' "$round" "$(nth "${R[ours-first]}" "$round")" "$(nth "${R[ours-rerun]}" "$round")" \
		"$(nth "${R[skopeo-first]}" "$round")" "$(nth "${R[skopeo-rerun]}" "$round")"
done
of=$(echo "${R[ours-first]}" | median); orr=$(echo "${R[ours-rerun]}" | median)
sf=$(echo "${R[skopeo-first]}" | median); sr=$(echo "${R[skopeo-rerun]}" | median)
printf '%-7s %12s %12s %12s %12s\n' median "$of" "$orr" "$sf" "$sr"
echo
ratio() { awk -v s="$1" -v o="$2" 'BEGIN {if (o > 0) {r = s / o; f = r < 10 ? "%.2fx\n" : "%.1fx\n"; printf f, r} else print "n/a"}'; }
printf 'first copy: ours %s s, skopeo %s s, ratio %s\n' "$of" "$sf" "$(ratio "$sf" "$of")"
printf 're-run:     ours %s s, skopeo %s s, ratio %s\n' "$orr" "$sr" "$(ratio "$sr" "$orr")"
