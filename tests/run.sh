#!/usr/bin/env bash
# The whole test suite: installs dependencies if needed, then runs these stages in order.
#   release  Release build (build/) and every ctest suite
#   asan     ASan+UBSan build (build-asan/) and every ctest suite
#   fuzz     clang libFuzzer build (build-fuzz/) of the decoder and RPC targets only, each run
#            for $WHORL_FUZZ_SECONDS (default 12) from its seed corpus (tests/fuzz/run.sh)
#   tsan     ThreadSanitizer build (build-tsan/) of the concurrent parts and their tests
#            (tsan_tests below); any TSan report, in a test or a process it starts, fails it
# Usage:
#   tests/run.sh                    every stage
#   tests/run.sh --fast             release only
#   tests/run.sh --only fuzz,tsan   just these stages (comma-separated or repeated)
#   tests/run.sh --skip asan        every stage but these
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

all_stages=(release asan fuzz tsan)
selected=("${all_stages[@]}")
skip=()
only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --fast) only+=(release); shift ;;
    --only) IFS=, read -r -a s <<<"$2"; only+=("${s[@]}"); shift 2 ;;
    --skip) IFS=, read -r -a s <<<"$2"; skip+=("${s[@]}"); shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
for s in "${only[@]}" "${skip[@]}"; do
  [[ " ${all_stages[*]} " == *" $s "* ]] || { echo "run.sh: unknown stage $s" >&2; exit 2; }
done
[ ${#only[@]} -gt 0 ] && selected=("${only[@]}")
want() {  # stage
  [[ " ${selected[*]} " == *" $1 "* ]] && [[ " ${skip[*]} " != *" $1 "* ]]
}

bash deploy/install-deps.sh

jobs=${WHORL_JOBS:-$(nproc)}
declare -A took

run_suite() {  # build_dir cmake_args...
  local dir=$1
  shift
  cmake -S "$root" -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  (cd "$dir" && ctest --output-on-failure -j "$jobs")
}

timed() {  # stage command...
  local stage=$1 start=$SECONDS
  shift
  "$@"
  took[$stage]=$((SECONDS - start))
  echo "== stage $stage took ${took[$stage]} s"
}

stage_release() {
  echo "== Release build and tests (build/)"
  run_suite build -DCMAKE_BUILD_TYPE=Release
}

stage_asan() {
  echo "== ASan+UBSan build and tests (build-asan/)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    LSAN_OPTIONS=suppressions=$root/tests/lsan.supp \
    run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DWHORL_SANITIZE=ON
}

stage_fuzz() {
  echo "== libFuzzer build and short runs (build-fuzz/)"
  WHORL_JOBS=$jobs bash tests/fuzz/run.sh --seconds "${WHORL_FUZZ_SECONDS:-12}"
}

# The tests that run code on several threads or processes at once: the chunk store's group
# commit and concurrent puts (chunk_store_test), the metadata store, the agent's read-ahead,
# file reader and walk-ahead threads (agent_test), backups and restores with the file workers,
# the uploader's two threads and the embedded read-ahead (e2e_test_backup, e2e_test_restore),
# two agents backing up into one embedded repository at once (e2e_test_concurrency), and the
# daemon tests with parallel peer calls and map reloads (daemon_tsan_test, a subset of
# daemon_test: Debian's gRPC is not TSan-instrumented and all of it takes minutes under TSan).
tsan_tests='^(chunk_store_test|metadata_store_test|agent_test|e2e_test_backup|e2e_test_restore|e2e_test_concurrency|daemon_tsan_test)$'

stage_tsan() {
  echo "== ThreadSanitizer build and concurrency tests (build-tsan/)"
  local logs=$root/build-tsan/tsan-reports
  cmake -S "$root" -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" -DWHORL_TSAN=ON >/dev/null
  cmake --build build-tsan -j "$jobs" --target chunk_store_test metadata_store_test agent_test whorl \
    daemon_test whorl-metad whorl-chunkd
  rm -rf "$logs" && mkdir -p "$logs"
  # Reports go to files, so that one from a daemon a test started is seen too.
  local rc=0
  (cd build-tsan &&
    TSAN_OPTIONS="suppressions=$root/tests/tsan.supp ignore_noninstrumented_modules=1 log_path=$logs/tsan second_deadlock_stack=1 history_size=4" \
      ctest --output-on-failure -j "$jobs" -R "$tsan_tests") || rc=$?
  if compgen -G "$logs/tsan*" >/dev/null; then
    echo "ThreadSanitizer reports:" >&2
    cat "$logs"/tsan* >&2
    rc=1
  fi
  return "$rc"
}

for s in "${all_stages[@]}"; do
  if want "$s"; then timed "$s" "stage_$s"; fi
done
echo "== stage times (s):$(for s in "${all_stages[@]}"; do [ -n "${took[$s]:-}" ] && printf ' %s %s' "$s" "${took[$s]}"; done)"
