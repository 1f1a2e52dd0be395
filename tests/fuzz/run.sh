#!/usr/bin/env bash
# Builds the libFuzzer targets (build-fuzz/, clang-14, ASan+UBSan+coverage) and runs each for
# N seconds of wall time, one after the other, from its seed corpus in tests/fuzz/corpus/.
#   tests/fuzz/run.sh [--seconds N] [--no-build] [TARGET...]
# TARGET is one of the names below (default: all). A crash, leak, timeout or sanitizer report
# fails the run (exit 1); its reproducer is written to tests/fuzz/artifacts/TARGET-* (not
# committed). Reproduce with build-fuzz/bin/TARGET_fuzz FILE. New coverage found is kept in
# build-fuzz/corpus/TARGET (not in git); copy regression inputs into the corpus by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

seconds=300
build=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(tree manifest repo_config pack codec cluster_map bloom_filter rpc)
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

# Longest input per target: room for a few records / nodes / requests, small enough to be fast.
max_len() {
  case "$1" in
    pack|rpc) echo 8192 ;;
    repo_config) echo 2048 ;;
    *) echo 4096 ;;
  esac
}

if [ "$build" = 1 ]; then
  jobs=${WHORL_JOBS:-$(nproc)}
  if [ ! -f build-fuzz/CMakeCache.txt ]; then
    launcher=()
    command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    CC=clang-14 CXX=clang++-14 cmake -S "$root" -B build-fuzz -G Ninja -DWHORL_FUZZ=ON \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" \
      "${launcher[@]}" >/dev/null
  fi
  cmake --build build-fuzz -j "$jobs" --target whorl_fuzz
fi

mkdir -p tests/fuzz/artifacts
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp
# Pack files and RocksDB stores of the targets go to memory when it can.
if [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi

failed=()
summary=()
for t in "${targets[@]}"; do
  bin=build-fuzz/bin/${t}_fuzz
  [ -x "$bin" ] || { echo "fuzz: no target $t (have: ${all[*]})" >&2; exit 2; }
  work=build-fuzz/corpus/$t
  mkdir -p "$work"
  dict=()
  [ -f tests/fuzz/dict/$t.dict ] && dict=(-dict=tests/fuzz/dict/$t.dict)
  log=build-fuzz/fuzz-$t.log
  echo "== fuzz $t for ${seconds}s"
  rc=0
  "$bin" -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=25 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="tests/fuzz/artifacts/$t-" "${dict[@]}" \
    "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  line=$(printf '%-13s %9s execs %7s/s  cov %6s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}")
  if [ "$rc" -ne 0 ] || grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:' "$log"; then
    failed+=("$t")
    line="$line  FAILED (rc $rc, log $log)"
    grep -E -A30 'ERROR:|runtime error:|property failed|server fault' "$log" | head -60 >&2 || true
    ls tests/fuzz/artifacts/"$t"-* 2>/dev/null >&2 || true
  else
    line="$line  ok"
  fi
  echo "$line"
  summary+=("$line")
done

echo "== fuzz summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
echo "fuzz: $(( ${#targets[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
