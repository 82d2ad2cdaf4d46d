#!/usr/bin/env bash
# One big blob, one client: monolithic push (POST, then PUT ?digest= with
# the body) and pull with curl, against our registry and Debian's
# docker-registry (CNCF Distribution 2.8) on fresh roots, alternating the
# two (A B B A per round). Prints MB/s per run and the median of each.
#
#   usage: scripts/bench-curl.sh OUR_BIN [SIZE_MIB=1024] [ROUNDS=2]
#
# Data roots go under $BENCH_DIR (default: a temp dir on /var/tmp, i.e.
# a real disk, not tmpfs). Only 127.0.0.1 is used; both servers are
# stopped by PID at exit.
set -euo pipefail
OURS=${1:?usage: $0 OUR_BIN [SIZE_MIB] [ROUNDS]}
SIZE_MIB=${2:-1024}
ROUNDS=${3:-2}
DIST=${DISTRIBUTION_BIN:-/usr/bin/docker-registry}
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
bench_workdir bench-curl

P_OURS=$(free_port 5200); start_server ours "$OURS" "$P_OURS"
P_DIST=$(free_port 5300); start_server distribution "$DIST" "$P_DIST"

BLOB="$DIR/blob"
head -c "$((SIZE_MIB << 20))" /dev/urandom >"$BLOB"
DIGEST="sha256:$(sha256sum "$BLOB" | cut -d' ' -f1)"
BYTES=$(stat -c %s "$BLOB")

push() { # PORT REPO -> MB/s
	local loc t
	loc=$(curl -fsS -X POST -D - -o /dev/null "http://127.0.0.1:$1/v2/$2/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
	case "$loc" in http*) ;; *) loc="http://127.0.0.1:$1$loc" ;; esac
	case "$loc" in *\?*) loc="$loc&digest=$DIGEST" ;; *) loc="$loc?digest=$DIGEST" ;; esac
	t=$(curl -fsS -X PUT -H 'Expect:' -H 'Content-Type: application/octet-stream' \
		-T "$BLOB" -o /dev/null -w '%{time_total}' "$loc")
	awk -v b="$BYTES" -v t="$t" 'BEGIN {printf "%.0f", b / t / 1e6}'
}
pull() { # PORT REPO -> MB/s
	curl -fsS -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$1/v2/$2/blobs/$DIGEST" |
		awk '{printf "%.0f", $1 / 1e6}'
}

declare -A R
run() { # NAME PORT ROUND
	local repo="bench/r$3"
	R[$1-push]+="$(push "$2" "$repo") "
	R[$1-pull]+="$(pull "$2" "$repo") "
	# Leave no 1 GiB behind between rounds: a fresh repository each round
	# would hit the global blob store's dedup, so delete the content.
	rm -rf "$DIR/$1/data/docker/registry/v2/blobs" "$DIR/$1/data/docker/registry/v2/repositories"
	sync
}
# Our server caches blob sizes; restart-free cleanup is fine because each
# round uses a new repository and a fresh upload.
for round in $(seq "$ROUNDS"); do
	if ((round % 2)); then order="ours distribution distribution ours"; else order="distribution ours ours distribution"; fi
	i=0
	for name in $order; do
		i=$((i + 1))
		port=$P_OURS; [ "$name" = distribution ] && port=$P_DIST
		run "$name" "$port" "$round-$i"
	done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'; }
printf '%-14s %-28s %s\n' "" "runs (MB/s)" "median"
for k in ours-push distribution-push ours-pull distribution-pull; do
	printf '%-14s %-28s %s\n' "$k" "${R[$k]}" "$(echo "${R[$k]}" | median)"
done
op=$(echo "${R[ours-push]}" | median); dp=$(echo "${R[distribution-push]}" | median)
ol=$(echo "${R[ours-pull]}" | median); dl=$(echo "${R[distribution-pull]}" | median)
awk -v a="$op" -v b="$dp" -v c="$ol" -v d="$dl" -v s="$SIZE_MIB" 'BEGIN {printf "%d MiB blob: push %.2fx, pull %.2fx (ours / Distribution, medians)\n", s, a/b, c/d}'
