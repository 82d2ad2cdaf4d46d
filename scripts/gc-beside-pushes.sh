#!/usr/bin/env bash
# The same test for both collectors: pushes run while collections loop,
# then every image whose manifest the registry acknowledged is read back.
# Distribution's `garbage-collect` is documented to need the registry
# read-only; ours (`registry-gc`) is built to run beside pushes. Each side
# gets a fresh store, WRITERS pushers (curl: config and layer uploaded by
# POST then PUT, a pause as a client's between layers and manifest, then
# the manifest) and a collection loop, for SECONDS.
#
#   usage: scripts/gc-beside-pushes.sh [BIN_DIR=target/release] [SECONDS=60]
#
# Environment: WRITERS (default 4), DISTRIBUTION (default
# /usr/bin/docker-registry). Prints, per registry: manifests acknowledged
# and refused, collections run, and how many acknowledged images lost a
# blob afterwards. Only 127.0.0.1 is used; every process is stopped by PID.
set -uo pipefail
BIN_DIR=$(realpath "${1:-target/release}")
SECONDS_=${2:-60}
WRITERS=${WRITERS:-4}
DIST=${DISTRIBUTION:-/usr/bin/docker-registry}
for b in "$BIN_DIR/registry" "$BIN_DIR/registry-gc" "$DIST"; do [ -x "$b" ] || { echo "usage: $0 [BIN_DIR] [SECONDS]: $b is not executable" >&2; exit 2; }; done
for c in curl sha256sum awk timeout; do command -v "$c" >/dev/null || { echo "$c is missing" >&2; exit 2; }; done
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
bench_workdir gc-beside-pushes

# push_loop BASE FILE-PREFIX END: images until END; acknowledged ones go to FILE.acked.
push_loop() {
	local base=$1 out=$2 end=$3 i=0 loc code c l cfg layer m sep
	: >"$out.acked"
	: >"$out.refused"
	while [ "$(date +%s)" -lt "$end" ]; do
		i=$((i + 1))
		cfg="$out.cfg" layer="$out.layer" m="$out.manifest"
		printf '{"architecture":"amd64","os":"linux","w":"%s","i":%d}' "$out" "$i" >"$cfg"
		head -c $((16384 + RANDOM)) /dev/urandom >"$layer"
		c=$(sha256sum "$cfg" | cut -d' ' -f1) l=$(sha256sum "$layer" | cut -d' ' -f1)
		for pair in "$c:$cfg" "$l:$layer"; do
			loc=$(timeout 30 curl -s -o /dev/null -D - -X POST "$base/v2/gc/live/blobs/uploads/" | tr -d '\r' |
				awk 'tolower($1) == "location:" {print $2}')
			case $loc in /*) loc=$base$loc ;; esac
			case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
			timeout 30 curl -s -o /dev/null -X PUT --data-binary "@${pair#*:}" \
				-H 'Content-Type: application/octet-stream' "$loc${sep}digest=sha256:${pair%%:*}"
		done
		# A client's pause between its last layer and the manifest.
		sleep 0.$((RANDOM % 5))
		printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
			"$c" "$(stat -c %s "$cfg")" "$l" "$(stat -c %s "$layer")" >"$m"
		code=$(timeout 30 curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary "@$m" \
			-H 'Content-Type: application/vnd.oci.image.manifest.v1+json' "$base/v2/gc/live/manifests/$(basename "$out")-$i")
		if [ "$code" = 201 ]; then echo "$(basename "$out")-$i $c $l" >>"$out.acked"; else echo "$code" >>"$out.refused"; fi
	done
}

run() { # NAME BIN GC-COMMAND...
	local name=$1 bin=$2 port end w pids=() passes=0 acked refused broken=0 c l d
	shift 2
	port=$(free_port 6300)
	start_server "$name" "$bin" "$port"
	end=$(($(date +%s) + SECONDS_))
	for w in $(seq "$WRITERS"); do
		push_loop "http://127.0.0.1:$port" "$DIR/$name/w$w" "$end" &
		pids+=($!)
	done
	while [ "$(date +%s)" -lt "$end" ]; do
		timeout 120 "$@" "$DIR/$name/config.yml" >>"$DIR/$name/gc.log" 2>&1 || echo "collection failed" >>"$DIR/$name/gc.log"
		passes=$((passes + 1))
	done
	for w in "${pids[@]}"; do wait "$w"; done
	acked=$(cat "$DIR/$name"/w*.acked | wc -l)
	refused=$(cat "$DIR/$name"/w*.refused | wc -l)
	while read -r _ c l; do
		for d in "$c" "$l"; do
			if [ "$(curl -fs "http://127.0.0.1:$port/v2/gc/live/blobs/sha256:$d" | sha256sum | cut -d' ' -f1)" != "$d" ]; then
				broken=$((broken + 1))
				break
			fi
		done
	done < <(cat "$DIR/$name"/w*.acked)
	printf '%-13s %4d manifests acknowledged, %3d refused (%s), %3d collections; after: %d acknowledged images missing a blob\n' \
		"$name" "$acked" "$refused" "$(sort "$DIR/$name"/w*.refused | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')" "$passes" "$broken"
}

run distribution "$DIST" "$DIST" garbage-collect
run ours "$BIN_DIR/registry" "$BIN_DIR/registry-gc" --grace 1s
