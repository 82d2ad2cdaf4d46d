#!/usr/bin/env bash
# The cost of a login: manifest GET req/s with htpasswd credentials (the
# bcrypt check cached) against the same GET anonymously, on one server
# with `auth.anonymous: true`, alternating the two (A B B A per round).
#
#   usage: scripts/bench-auth.sh REGISTRY_BIN [SECONDS=5] [ROUNDS=2]
#
# Needs wrk and htpasswd (Debian: wrk, apache2-utils). 127.0.0.1 only.
set -euo pipefail
BIN=${1:?usage: $0 REGISTRY_BIN [SECONDS] [ROUNDS]}
SECS=${2:-5}
ROUNDS=${3:-2}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/bench-auth.XXXXXX")
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT

htpasswd -Bbc "$DIR/htpasswd" ci secret 2>/dev/null
cat >"$DIR/config.yml" <<CFG
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DIR/data
http:
  addr: 127.0.0.1:0
auth:
  htpasswd:
    realm: bench
    path: $DIR/htpasswd
  anonymous: true
CFG
env -u RUST_LOG "$BIN" serve "$DIR/config.yml" 2>"$DIR/log" &
PID=$!
for _ in $(seq 100); do
	ADDR=$(sed 's/\x1b\[[0-9;]*m//g' "$DIR/log" | grep -o 'listening on 127\.0\.0\.1:[0-9]*' | head -n1 | sed 's/listening on //') || true
	[ -n "$ADDR" ] && break
	sleep 0.1
done
[ -n "${ADDR:-}" ] || { echo "no address" >&2; cat "$DIR/log" >&2; exit 1; }
AUTH="Authorization: Basic $(printf 'ci:secret' | base64)"
push() {
	local data=$1 d
	d="sha256:$(printf '%s' "$data" | sha256sum | cut -d' ' -f1)"
	curl -fsS -H "$AUTH" -X POST --data-binary "$data" "http://$ADDR/v2/bench/app/blobs/uploads/?digest=$d" >/dev/null
	echo "$d"
}
CFG_D=$(push '{"os":"linux"}')
LAYER_D=$(push 'layer')
MANIFEST="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$CFG_D\",\"size\":14},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$LAYER_D\",\"size\":5}]}"
curl -fsS -H "$AUTH" -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$MANIFEST" "http://$ADDR/v2/bench/app/manifests/v1" >/dev/null
URL="http://$ADDR/v2/bench/app/manifests/v1"
curl -fsS -o /dev/null "$URL"
curl -fsS -o /dev/null -H "$AUTH" "$URL"

rate() { # [HEADER...] -> req/s
	wrk -t2 -c8 -d"${SECS}s" "$@" -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$URL" |
		awk '/Requests\/sec/ {printf "%.0f", $2} /Non-2xx/ {print " (errors!)" > "/dev/stderr"}'
}
anon=""; auth=""
for r in $(seq "$ROUNDS"); do
	anon+="$(rate) "; auth+="$(rate -H "$AUTH") "; auth+="$(rate -H "$AUTH") "; anon+="$(rate) "
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'; }
ma=$(echo "$anon" | median); mu=$(echo "$auth" | median)
echo "anonymous manifest GET req/s: $anon(median $ma)"
echo "logged-in manifest GET req/s: $auth(median $mu)"
awk -v a="$ma" -v u="$mu" 'BEGIN {printf "logged-in / anonymous: %.2f\n", u/a}'
