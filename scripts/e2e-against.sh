#!/usr/bin/env bash
# Run scripts/e2e.sh against a registry binary started here on 127.0.0.1
# with a throw-away filesystem store and deletes enabled. BIN is anything
# that takes `BIN serve CONFIG` with a Distribution config.yml: our
# target/*/registry, or Debian's docker-registry (CNCF Distribution 2.8, the
# default), which tells client or environment problems apart from our bugs.
#
#   usage: scripts/e2e-against.sh [BIN] [PORT]   (default port: a free one >= 5100)
#
# Extra environment is passed through to e2e.sh (E2E_TIMEOUT, E2E_SKIP, ...).
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

DIR=$(mktemp -d "${TMPDIR:-/tmp}/e2e-dist.XXXXXX") || exit 2
PID=""
cleanup() {
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
		kill -TERM "$PID" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$PID" 2>/dev/null
		wait "$PID" 2>/dev/null
	fi
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cat >"$DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
EOF
"$BIN" serve "$DIR/config.yml" >"$DIR/registry.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
	curl -fs --noproxy '*' -o /dev/null "http://127.0.0.1:$PORT/v2/" && break
	kill -0 "$PID" 2>/dev/null || break
	sleep 0.1
done
if ! curl -fs --noproxy '*' -o /dev/null "http://127.0.0.1:$PORT/v2/"; then
	echo "$BIN did not start:" >&2
	cat "$DIR/registry.log" >&2
	exit 2
fi
echo "registry under test: $("$BIN" --version 2>/dev/null | head -n1) pid $PID on 127.0.0.1:$PORT"
"$HERE/e2e.sh" "127.0.0.1:$PORT"
