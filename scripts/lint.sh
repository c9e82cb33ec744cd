#!/usr/bin/env bash
# The checks that run by themselves (CI, via scripts/test.sh):
#   1. clang-format --dry-run -Werror over every tracked C++ file (.clang-format);
#   2. clang-tidy (.clang-tidy: bugprone-*, ignored results) over every project
#      translation unit in BUILD_DIR's compile database; generated code is not ours.
# Usage: scripts/lint.sh [BUILD_DIR]   (default build/, which scripts/build.sh made)
# Exit 0 when both are clean; otherwise their findings and exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
status=0

mapfile -t files < <(git ls-files '*.cc' '*.h')
echo "lint: clang-format over ${#files[@]} files"
clang-format --dry-run -Werror "${files[@]}" || {
  echo "lint: clang-format found lines to change; run: git ls-files '*.cc' '*.h' | xargs clang-format -i" >&2
  status=1
}

[ -f "$build/compile_commands.json" ] || { echo "lint: no $build/compile_commands.json; run scripts/build.sh first" >&2; exit 1; }
echo "lint: clang-tidy over the project's sources"
if ! run-clang-tidy -quiet -p "$build" -j"$(nproc)" \
    "^$PWD/(base|iopath|fuse|agent|tools|tests)/.*\\.cc\$" > "$build/clang-tidy.log" 2>&1; then
  grep -E 'error:|warning:' "$build/clang-tidy.log" | sort -u >&2 || cat "$build/clang-tidy.log" >&2
  echo "lint: clang-tidy found the above (full log: $build/clang-tidy.log)" >&2
  status=1
fi
exit $status
