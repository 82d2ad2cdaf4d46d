#!/usr/bin/env bash
# One big blob, one client: monolithic push (POST, then PUT ?digest= with
# the body) and pull with curl, against our registry and Debian's
# docker-registry (CNCF Distribution 2.8) on fresh roots, alternating the
# two (A B B A per round). Each run: the push, the pull straight after it,
# the two together (the CI cycle), the same pull again at once, and once
# more four seconds later. Prints MB/s per run and the median of each.
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

push() { # PORT REPO -> seconds
	local loc
	loc=$(curl -fsS -X POST -D - -o /dev/null "http://127.0.0.1:$1/v2/$2/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
	case "$loc" in http*) ;; *) loc="http://127.0.0.1:$1$loc" ;; esac
	case "$loc" in *\?*) loc="$loc&digest=$DIGEST" ;; *) loc="$loc?digest=$DIGEST" ;; esac
	curl -fsS -X PUT -H 'Expect:' -H 'Content-Type: application/octet-stream' \
		-T "$BLOB" -o /dev/null -w '%{time_total}' "$loc"
}
pull() { # PORT REPO -> seconds
	curl -fsS -o /dev/null -w '%{time_total}' "http://127.0.0.1:$1/v2/$2/blobs/$DIGEST"
}
mbs() { awk -v b="$BYTES" -v t="$1" 'BEGIN {printf "%.0f", b / t / 1e6}'; }

# Per run: the push, the pull straight after it (the CI cycle: a build
# pushes, a test job pulls at once), both together, a second pull at once
# and a third four seconds later.
declare -A R
run() { # NAME PORT ROUND
	local repo="bench/r$3" tp tl tw
	tp=$(push "$2" "$repo")
	tl=$(pull "$2" "$repo")
	tw=$(pull "$2" "$repo")
	# Once the server has had a few seconds to settle (ours brings a blob
	# read around the page cache into it a second after the pull).
	sleep 4
	tx=$(pull "$2" "$repo")
	R[$1-later]+="$(mbs "$tx") "
	R[$1-push]+="$(mbs "$tp") "
	R[$1-pull]+="$(mbs "$tl") "
	R[$1-both]+="$(mbs "$(awk -v a="$tp" -v b="$tl" 'BEGIN {print a + b}')") "
	R[$1-again]+="$(mbs "$tw") "
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
printf '%-18s %-34s %s\n' "MB/s" "runs" "median"
for what in push pull both again later; do
	for name in ours distribution; do
		printf '%-18s %-34s %s\n' "$name-$what" "${R[$name-$what]}" "$(echo "${R[$name-$what]}" | median)"
	done
done
printf '%d MiB blob, ours / Distribution (medians):' "$SIZE_MIB"
for what in push pull both again later; do
	o=$(echo "${R[ours-$what]}" | median); d=$(echo "${R[distribution-$what]}" | median)
	awk -v w="$what" -v a="$o" -v b="$d" 'BEGIN {printf " %s %.2fx", w, a / b}'
done
echo
