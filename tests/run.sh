#!/usr/bin/env bash
# The whole test suite: installs dependencies if needed, builds Release (build/) and
# ASan+UBSan (build-asan/), and runs every ctest suite in both.
#   tests/run.sh            everything
#   tests/run.sh --fast     Release build only
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash deploy/install-deps.sh

jobs=${WHORL_JOBS:-$(nproc)}
fast=0
[ "${1:-}" = "--fast" ] && fast=1

run_suite() {  # build_dir cmake_args...
  local dir=$1
  shift
  cmake -S "$root" -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  (cd "$dir" && ctest --output-on-failure -j "$jobs")
}

echo "== Release build and tests (build/)"
run_suite build -DCMAKE_BUILD_TYPE=Release

if [ "$fast" = 0 ]; then
  echo "== ASan+UBSan build and tests (build-asan/)"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp
  run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DWHORL_SANITIZE=ON
fi
