#!/usr/bin/env bash
# The whole test suite: unit and integration tests (cargo test) on the file
# system, then the API and S3 integration tests again with the stores in a
# SeaweedFS bucket, then the end-to-end runs with real clients against the
# registry binary that `cargo test` built (plain, then with htpasswd logins
# over HTTPS, then as dockerd's registry mirror), then the container image
# with registry:2's recipes, then the compatibility tests with Debian's docker-registry on
# a shared data directory, then the client suite through nginx to two nodes
# on one bucket, the compatibility test on one bucket, and registry-gc
# against Distribution's collector on one bucket. Needs root (the tests mount
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
status=0

# SeaweedFS on loopback for the second pass and the S3 end-to-end runs.
# shellcheck source=scripts/seaweedfs.sh
source "$(dirname "$0")/seaweedfs.sh"
# Deleted prefixes leave SeaweedFS's delimited listings sooner.
export SEAWEEDFS_EMPTY_FOLDER_CLEANUP_DELAY=1s
trap 'seaweedfs_stop "$log/s3" >/dev/null 2>&1; rm -rf "$log"' EXIT
seaweedfs_start "$log/s3" >/dev/null || { echo "test: SeaweedFS did not start" >&2; exit 1; }
export TEST_S3_STORE="$SEAWEEDFS_ENDPOINT $SEAWEEDFS_BUCKET $SEAWEEDFS_ACCESS_KEY $SEAWEEDFS_SECRET_KEY"

echo "== cargo test (file system)"
env -u TEST_S3_STORE cargo test --locked -- --skip on_s3:: 2>&1 | tee "$log/cargo.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/cargo.log" 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed'

# The API and collector suites, the crash loop and the hostile requests
# again with every server's store in the bucket, and the tests of S3
# itself. Left out: what is about files by
# nature (a renamed root, the O_DIRECT writer, the bound on memory of the
# file data path, files aged or corrupted by hand, sendfile, the shape of
# an upload session on disk).
echo "== cargo test (S3, SeaweedFS on $SEAWEEDFS_ENDPOINT)"
cargo test --locked --test it -- on_s3:: nodes:: blobs:: manifests:: uploads:: api:: auth:: gc:: web:: notifications:: pull_through:: verify:: crash:: hostile:: \
	replicate::a_registry_config_names_the_store_to_read \
	--skip gc::grace_keeps_recent_uploads_and_old_sessions_go \
	--skip gc::unreadable_input_deletes_nothing \
	--skip api::health_readiness_and_metrics \
	--skip uploads::buffered_writes_store_exact_bytes \
	--skip uploads_stay_under_ \
	--skip blobs::big_blobs_sent_by_the_kernel \
	--skip uploads::sessions_are_one_file 2>&1 | tee "$log/cargo-s3.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/cargo-s3.log" 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed'

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

echo "== the pull-through cache as dockerd's registry mirror"
scripts/e2e-mirror.sh "$bin" 2>&1 | tee "$log/e2e-mirror.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/e2e-mirror.log" '^e2e-mirror: [0-9]+ passed, [0-9]+ failed'

echo "== the container image (a static release build) with registry:2's recipes, and the systemd unit"
scripts/e2e-image.sh 2>&1 | tee "$log/e2e-image.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/e2e-image.log" '^e2e-image: [0-9]+ passed, [0-9]+ failed'

echo "== garbage collection against Distribution's, on a store Distribution wrote"
scripts/gc-compat.sh "$bin" target/debug/registry-gc 2>&1 | tee "$log/gc-compat.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/gc-compat.log" '^gc-compat: [0-9]+ passed, [0-9]+ failed'

echo "== compatibility with Distribution on one data directory"
scripts/compat.sh "$bin" 2>&1 | tee "$log/compat.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/compat.log" '^compat: [0-9]+ passed, [0-9]+ failed'

# registry-gc loops beside it: every manifest the clients push is claimed
# while passes run (deletions beside pushes are the stress test's part).
echo "== end-to-end with real clients through nginx to two nodes on one bucket, registry-gc beside"
E2E_STORE=s3 E2E_NODES=2 E2E_GC=500ms E2E_GC_GRACE=30s scripts/e2e-against.sh "$bin" 2>&1 | tee "$log/e2e-nodes.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/e2e-nodes.log" '^e2e: [0-9]+ passed, [0-9]+ failed'

echo "== compatibility with Distribution's S3 driver on one bucket"
COMPAT_STORE=s3 scripts/compat.sh "$bin" 2>&1 | tee "$log/compat-s3.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/compat-s3.log" '^compat: [0-9]+ passed, [0-9]+ failed'

echo "== garbage collection in a bucket against Distribution's S3 driver"
GC_BENCH_S3=1 scripts/gc-bench.sh target/debug/registry-gc 10 4 2>&1 | tee "$log/gc-s3.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count "$log/gc-s3.log" '^gc-bench: [0-9]+ passed, [0-9]+ failed'

if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
	failed=1 # a stage failed without counting it (build error, crash)
fi
echo "test: $passed passed, $failed failed"
exit "$status"
