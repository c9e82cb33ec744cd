#!/usr/bin/env bash
# The README's test command: installs what is needed, builds, runs the whole
# test suite, the format and lint checks, and the sanitizer runs. Must run as root (tests attach loop devices and mount).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: run as root (the tests create loop devices and mount filesystems)" >&2
  exit 1
fi
scripts/install-deps.sh
scripts/build.sh
# A second configuration: clang checks the lock annotations (-Wthread-safety
# is an error there) on the libraries and binaries.
CXX=clang++ cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-clang -j"$(nproc)" --target localvol_iopath localvol_fuse localvol-fuse localvol_agent localvold localvolctl

status=0
(cd build && ctest --output-on-failure -j"$(nproc)" --timeout 600) || status=$?

# The checks review cannot do: format and clang-tidy, then the sanitizer runs
# (scripts/sanitize.sh says what each covers).
scripts/lint.sh build || status=1
scripts/sanitize.sh asan || status=1
scripts/sanitize.sh tsan || status=1

# The tests must leave nothing behind; a leak here is a bug in a fixture.
# Every test resource lives under /tmp/lv* (tests/support/temp_dir.h).
leaked=$(findmnt -rn -o TARGET,FSTYPE | awk '$1 ~ /^\/tmp\/lv/' || true)
loops=$(losetup -a | grep -E '\(/tmp/lv' || true)
if [ -n "$leaked$loops" ]; then
  echo "test.sh: the tests left mounts or loop devices behind:" >&2
  [ -n "$leaked" ] && echo "$leaked" >&2
  [ -n "$loops" ] && echo "$loops" >&2
  status=1
fi
exit $status
