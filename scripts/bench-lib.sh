# shellcheck shell=bash
# Shared by the benchmark scripts (bench-curl.sh, bench-replicate.sh).

# A temp dir $DIR on a real disk ($BENCH_DIR, default /var/tmp), removed
# at exit with every server started into PIDS (stopped by PID).
bench_workdir() { # NAME
	DIR=$(mktemp -d "${BENCH_DIR:-/var/tmp}/$1.XXXXXX")
	PIDS=()
	trap bench_cleanup EXIT
}
bench_cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$DIR"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { local p; for p in $(seq "$1" $(($1 + 99))); do port_free "$p" && { echo "$p"; return; }; done; return 1; }

# A quiet config for a server of a fresh root on 127.0.0.1:PORT.
server_config() { # FILE ROOT PORT
	cat >"$1" <<CFG
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $2
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$3
CFG
}

START_PID=
# Start BIN serving a fresh root $DIR/NAME/data on 127.0.0.1:PORT, quiet,
# and wait until /v2/ answers; sets START_PID and adds it to PIDS.
start_server() { # NAME BIN PORT
	mkdir -p "$DIR/$1"
	server_config "$DIR/$1/config.yml" "$DIR/$1/data" "$3"
	"$2" serve "$DIR/$1/config.yml" >"$DIR/$1/log" 2>&1 &
	START_PID=$!
	PIDS+=("$START_PID")
	for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$3/v2/" && return; sleep 0.1; done
	echo "$1 did not start" >&2; cat "$DIR/$1/log" >&2; exit 1
}
