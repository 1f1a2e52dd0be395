#!/usr/bin/env bash
# Long randomized crash runs (the ctest "crash" label runs a short one):
#
#   tests/crash/run.sh --cycles 200 [--seed S] [--mode cluster|embedded|both] [-v]
#
# Builds whorl, whorl-metad, whorl-chunkd and whorl-probe in build/ (Release) unless
# $WHORL_BIN_DIR names binaries already built, then runs tests/crash/crash.py with the
# arguments given (see its --help). Prints one summary line per mode: cycles, kills per
# process kind, snapshots and chunks acknowledged and verified, lost (must be 0). Exit 0 if
# nothing acknowledged was lost and every check was clean, else 1 (the work directory is kept).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ -z "${WHORL_BIN_DIR:-}" ]; then
  export WHORL_BIN_DIR="$ROOT/build/bin"
  cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$ROOT/build" -j"$(nproc)" --target whorl whorl-metad whorl-chunkd whorl-probe \
    >/dev/null
fi
exec python3 "$ROOT/tests/crash/crash.py" "$@"
