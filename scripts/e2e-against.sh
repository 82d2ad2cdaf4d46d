#!/usr/bin/env bash
# Run scripts/e2e.sh against a registry binary started here on 127.0.0.1
# with a throw-away filesystem store and deletes enabled. BIN is anything
# that takes `BIN serve CONFIG` with a Distribution config.yml: our
# target/*/registry, or Debian's docker-registry (CNCF Distribution 2.8, the
# default), which tells client or environment problems apart from our bugs.
#
#   usage: scripts/e2e-against.sh [BIN] [PORT]   (default port: a free one >= 5100)
#
# E2E_STORE=s3 keeps the store in the SeaweedFS bucket that
# scripts/seaweedfs.sh started (SEAWEEDFS_* in the environment), under a
# prefix of this run's own. E2E_NODES=2 (with s3) starts two servers on that
# one store behind nginx, which sends each request to the next node in
# turn: the clients' uploads, pushes and pulls cross nodes at every step.
#
# E2E_GC=INTERVAL (our registry only) runs registry-gc, from beside BIN, on
# the same store every INTERVAL for the whole suite, with a grace of
# E2E_GC_GRACE (default 60s): the clients' pushes and pulls must all pass
# beside the collections, and every pass must succeed.
#
# Extra environment is passed through to e2e.sh (E2E_TIMEOUT, E2E_SKIP, ...).
# shellcheck disable=SC2317  # stop and cleanup run from the EXIT trap
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${1:-/usr/bin/docker-registry}
[ -x "$BIN" ] || { echo "missing $BIN (build it, or apt-get install docker-registry)" >&2; exit 2; }
shift || true

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=${1:-}
if [ -z "$PORT" ]; then
	for PORT in $(seq 5100 5199); do port_free "$PORT" && break; done
fi
port_free "$PORT" || { echo "port $PORT is busy" >&2; exit 2; }
STORE=${E2E_STORE:-filesystem}
NODES=${E2E_NODES:-1}
case "$STORE/$NODES" in
filesystem/1 | s3/1 | s3/2) ;;
*) echo "E2E_STORE=$STORE E2E_NODES=$NODES: use filesystem, or s3 with 1 or 2 nodes" >&2; exit 2 ;;
esac
if [ "$STORE" = s3 ] && [ -z "${SEAWEEDFS_ENDPOINT:-}" ]; then
	echo "E2E_STORE=s3 needs scripts/seaweedfs.sh's SEAWEEDFS_* environment" >&2
	exit 2
fi

DIR=$(mktemp -d "${TMPDIR:-/tmp}/e2e-dist.XXXXXX") || exit 2
PIDS=()
stop() { # PID
	if kill -0 "$1" 2>/dev/null; then
		kill -TERM "$1" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$1" 2>/dev/null
		wait "$1" 2>/dev/null
	fi
}
cleanup() {
	local p
	for p in "${PIDS[@]}"; do stop "$p"; done
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$STORE" = s3 ]; then
	# shellcheck source=scripts/seaweedfs.sh
	. "$HERE/seaweedfs.sh"
	DRIVER=$(seaweedfs_s3_driver "/e2e-$(basename "$DIR")")
else
	DRIVER="  filesystem:
    rootdirectory: $DIR/data"
fi

# start_node N PORT: one server on the store, waited for.
start_node() {
	cat >"$DIR/config-$1.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
$DRIVER
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$2
EOF
	# Distribution 2.8's S3 driver refuses to start with a CA bundle set.
	(unset AWS_CA_BUNDLE && exec "$BIN" serve "$DIR/config-$1.yml") >"$DIR/registry-$1.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 100); do
		curl -fs --noproxy '*' -o /dev/null "http://127.0.0.1:$2/v2/" && return 0
		kill -0 "${PIDS[-1]}" 2>/dev/null || break
		sleep 0.1
	done
	echo "$BIN did not start:" >&2
	cat "$DIR/registry-$1.log" >&2
	exit 2
}

if [ "$NODES" = 1 ]; then
	start_node 1 "$PORT"
	echo "registry under test: $("$BIN" --version 2>/dev/null | head -n1) pid ${PIDS[0]} on 127.0.0.1:$PORT, $STORE store"
else
	command -v nginx >/dev/null || { echo "E2E_NODES=2 needs nginx (apt-get install nginx-light)" >&2; exit 2; }
	ports=()
	for p in $(seq $((PORT + 1)) $((PORT + 99))); do
		port_free "$p" && ports+=("$p")
		[ "${#ports[@]}" -eq 2 ] && break
	done
	start_node 1 "${ports[0]}"
	start_node 2 "${ports[1]}"
	# Round robin per request, bodies streamed both ways, the client's Host
	# kept (the nodes build Location headers from it).
	mkdir -p "$DIR/nginx"
	cat >"$DIR/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
user root;
pid $DIR/nginx/nginx.pid;
error_log $DIR/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $DIR/nginx/body;
  proxy_temp_path $DIR/nginx/proxy;
  fastcgi_temp_path $DIR/nginx/fastcgi;
  uwsgi_temp_path $DIR/nginx/uwsgi;
  scgi_temp_path $DIR/nginx/scgi;
  client_max_body_size 0;
  proxy_request_buffering off;
  proxy_buffering off;
  proxy_http_version 1.1;
  proxy_read_timeout 300s;
  upstream nodes {
    server 127.0.0.1:${ports[0]} max_fails=0;
    server 127.0.0.1:${ports[1]} max_fails=0;
    keepalive 16;
  }
  server {
    listen 127.0.0.1:$PORT;
    location / {
      proxy_pass http://nodes;
      proxy_set_header Host \$http_host;
      proxy_set_header Connection "";
      proxy_next_upstream off;
    }
  }
}
EOF
	nginx -c "$DIR/nginx/nginx.conf" -p "$DIR/nginx" >"$DIR/nginx/stdout.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 50); do
		curl -fs --noproxy '*' -o /dev/null "http://127.0.0.1:$PORT/v2/" && break
		sleep 0.1
	done
	echo "registry under test: $("$BIN" --version 2>/dev/null | head -n1), two nodes (pids ${PIDS[0]} ${PIDS[1]}) on one $STORE store behind nginx on 127.0.0.1:$PORT"
fi
GC_PID=
if [ -n "${E2E_GC:-}" ]; then
	GC_BIN="$(dirname "$BIN")/registry-gc"
	[ -x "$GC_BIN" ] || { echo "E2E_GC needs registry-gc beside $BIN" >&2; exit 2; }
	"$GC_BIN" "$DIR/config-1.yml" --interval "$E2E_GC" --grace "${E2E_GC_GRACE:-60s}" --json \
		>"$DIR/gc.jsonl" 2>"$DIR/gc.log" &
	GC_PID=$!
	PIDS+=("$GC_PID")
	echo "registry-gc beside the suite: every $E2E_GC, grace ${E2E_GC_GRACE:-60s} (pid $GC_PID)"
fi
# Distribution answers no search (distribution#975): leave those steps out.
[[ $BIN == */registry ]] || export E2E_SKIP="${E2E_SKIP:-} search"
"$HERE/e2e.sh" "127.0.0.1:$PORT"
rc=$?
if [ -n "$GC_PID" ]; then
	kill -TERM "$GC_PID" 2>/dev/null
	wait "$GC_PID"
	gc_rc=$?
	passes=$(wc -l <"$DIR/gc.jsonl")
	totals=$(jq -rs '"\(map(.blobs_deleted) | add // 0) blobs and \(map(.manifests_deleted) | add // 0) manifests freed, \(map(.kept_in_use) | add // 0) candidates kept in use"' "$DIR/gc.jsonl")
	echo "registry-gc beside the suite: $passes passes, $totals, exit $gc_rc"
	if [ "$gc_rc" -ne 0 ] || [ "$passes" -lt 1 ]; then
		echo "e2e: the collector beside the suite failed:" >&2
		tail -n 20 "$DIR/gc.log" >&2
		rc=1
	fi
fi
if [ "$NODES" = 2 ] && [[ $BIN == */registry ]]; then
	# Both nodes must have done their share: PATCHes and PUTs of uploads on each.
	for p in "${ports[@]}"; do
		n=$(curl -fs --noproxy '*' "http://127.0.0.1:$p/metrics" |
			awk '/^registry_http_requests_total\{route="blob_upload"/ {s += $2} END {print s + 0}')
		echo "node on 127.0.0.1:$p answered $n upload requests"
		[ "$n" -gt 0 ] || { echo "e2e: the node on $p took no uploads: was the traffic split?" >&2; rc=1; }
	done
fi
exit "$rc"
