#!/usr/bin/env bash
# Sanitizer runs (CI, via scripts/test.sh). Usage: scripts/sanitize.sh asan|tsan
#   asan: AddressSanitizer + UndefinedBehaviorSanitizer (leaks included)
#   tsan: ThreadSanitizer
# Builds build-<mode>/ with -fsanitize and runs the subset below:
#  - the unit tests: base, iopath's engine, throttle, scheduler and limits,
#    fuse's quota, placement, request, inode table and space, fsx's own, the
#    agent's config and manifest, and under ASan its metrics and ctl;
#  - the in-process volume tests that cross the most threads: quota_test
#    (which also mounts the sanitized localvol-fuse binary), kernel_ring_test
#    (ring requests answered from the I/O completion thread) and
#    fd_cache_test (concurrent lookups against the fd cache);
#  - a short fsx and fio run through a mounted volume (fsx_test,
#    fio_verify_test), where the server is the sanitized localvol-fuse.
# ctest runs every test of the targets built here (the others show as
# *_NOT_BUILT and are left out). The agent's daemon-level tests and the POSIX
# suites run only in the normal build, to keep CI within its time.
# Every process writes its reports to one directory (log_path); any report
# there fails the run, whether or not the test that caused it noticed.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: scripts/sanitize.sh asan|tsan}
# Debian's gRPC, abseil and civetweb (prometheus-cpp's exposer) are not built
# with ThreadSanitizer, which then reports their own threads' synchronization
# as races; the agent's unit tests that run them (ctl, metrics) therefore run
# under ASan only.
grpc_unit_targets=(agent_ctl_unit_test agent_metrics_unit_test)
case "$mode" in
  asan) flags=address,undefined; extra_targets=("${grpc_unit_targets[@]}") ;;
  tsan) flags=thread; extra_targets=() ;;
  *) echo "sanitize.sh: unknown mode '$mode' (asan or tsan)" >&2; exit 2 ;;
esac
build=build-$mode
unit_targets=(base_size_test iopath_engine_test iopath_throttle_test iopath_scheduler_test
              iopath_io_limits_test fuse_quota_test fuse_thread_placement_test tools_fsx_test
              fuse_request_test fuse_inode_table_test fuse_space_test fuse_passthrough_test
              agent_config_unit_test agent_manifest_unit_test)
mount_targets=(localvol-fuse localvol-fsx quota_test fsx_test fio_verify_test kernel_ring_test
               fd_cache_test)

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOCALVOL_SANITIZE="$flags" >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${unit_targets[@]}" "${extra_targets[@]}" \
  "${mount_targets[@]}"

reports=$(mktemp -d /tmp/lvsan-"$mode"-XXXXXX)
trap 'rm -rf "$reports"' EXIT
common="log_path=$reports/report:print_stacktrace=1"
export ASAN_OPTIONS="$common:detect_leaks=1:abort_on_error=0"
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="$common:halt_on_error=1"
export TSAN_OPTIONS="$common:halt_on_error=1:second_deadlock_stack=1"
status=0
(cd "$build" && ctest --output-on-failure -j"$(nproc)" --timeout 600 -E '_NOT_BUILT$') || status=$?
if compgen -G "$reports/report*" >/dev/null; then
  echo "sanitize.sh ($mode): sanitizer reports:" >&2
  cat "$reports"/report* >&2
  status=1
fi
exit $status
