#!/usr/bin/env bash
# The whole test suite: unit and integration tests (cargo test), then the
# end-to-end runs with real clients against the registry binary that
# `cargo test` built (plain, then with htpasswd logins over HTTPS), then the
# compatibility test with Debian's docker-registry on a shared data
# directory. Needs root (the tests mount
# a tmpfs, and dockerd/containerd run) and scripts/setup.sh's packages.
#
# Ends with one line: "test: N passed, M failed" over the three stages.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

"$(dirname "$0")/setup.sh" || exit 1

passed=0
failed=0
count() { # LOG PATTERN: add "N passed, M failed" style counts found in LOG
	local p f
	p=$(grep -Eo "$2" "$1" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
	f=$(grep -Eo "$2" "$1" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
	passed=$((passed + p))
	failed=$((failed + f))
}
log=$(mktemp -d "${TMPDIR:-/tmp}/registry-test.XXXXXX")
trap 'rm -rf "$log"' EXIT
status=0

echo "== cargo test"
cargo test --locked 2>&1 | tee "$log/cargo.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/cargo.log" 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed'

bin=target/debug/registry
[ -x "$bin" ] || { echo "test: $bin was not built" >&2; exit 1; }

echo "== end-to-end with real clients against $bin"
scripts/e2e-against.sh "$bin" 2>&1 | tee "$log/e2e.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/e2e.log" '^e2e: [0-9]+ passed, [0-9]+ failed'

echo "== logins and HTTPS with real clients against $bin"
scripts/e2e-auth.sh "$bin" 2>&1 | tee "$log/e2e-auth.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/e2e-auth.log" '^e2e-auth: [0-9]+ passed, [0-9]+ failed'

echo "== garbage collection against Distribution's, on a store Distribution wrote"
scripts/gc-compat.sh "$bin" target/debug/registry-gc 2>&1 | tee "$log/gc-compat.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/gc-compat.log" '^gc-compat: [0-9]+ passed, [0-9]+ failed'

echo "== compatibility with Distribution on one data directory"
scripts/compat.sh "$bin" 2>&1 | tee "$log/compat.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/compat.log" '^compat: [0-9]+ passed, [0-9]+ failed'

if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
	failed=1 # a stage failed without counting it (build error, crash)
fi
echo "test: $passed passed, $failed failed"
exit "$status"
