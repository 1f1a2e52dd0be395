#!/usr/bin/env bash
# Issue 5's benchmark: whorl (embedded, and on a local cluster when one can be started) side by
# side with restic and borg on the same live directory; see tests/bench/bench.py for what it does.
#
#   tests/bench/run.sh [--quick] [--reps N] [--out DIR]     (any other bench.py flag passes through)
#
# Installs restic, borgbackup, gnuplot-nox and time from Debian 12 if missing, builds Release into
# build-bench/ (unless WHORL_BIN names a whorl binary: then no build, and the cluster runs only if
# whorl-metad and whorl-chunkd sit beside it), and writes results.md, results.json and
# backup_times.png under tests/bench/results/ (or --out).
# Environment: WHORL_BIN=path/to/whorl  WHORL_CLUSTER=0 (skip the cluster)
#              WHORL_BENCH_TMP=DIR (where the corpora and repositories go; default $TMPDIR or /tmp)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v restic >/dev/null 2>&1 || need+=(restic)
command -v borg >/dev/null 2>&1 || need+=(borgbackup)
command -v gnuplot >/dev/null 2>&1 || need+=(gnuplot-nox)
[ -x /usr/bin/time ] || need+=(time)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
  echo "run.sh: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root apt-get install -y -qq "${need[@]}" >/dev/null; then
    as_root apt-get update -qq
    as_root apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

if [ -n "${WHORL_BIN:-}" ]; then
  whorl=$WHORL_BIN
  [ -x "$whorl" ] || { echo "run.sh: WHORL_BIN=$whorl is not an executable" >&2; exit 2; }
  echo "run.sh: using WHORL_BIN=$whorl (no build)" >&2
else
  bash "$root/deploy/install-deps.sh"
  cmake -S "$root" -B "$root/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  # whorl-probe: deploy/local-cluster.sh health-checks the daemons with it.
  # whorl-bench: the primitives' figures (chunker, SHA-256, FindMissing, pack writes).
  daemons=(whorl-metad whorl-chunkd whorl-bench)
  if cmake --build "$root/build-bench" --target help 2>/dev/null | grep -q '^whorl-probe:'; then
    daemons+=(whorl-probe)
  fi
  if ! cmake --build "$root/build-bench" -j2 --target whorl "${daemons[@]}"; then
    # The agent is what the benchmark cannot do without; the daemons only enable the cluster rows.
    echo "run.sh: building the daemons failed; building whorl alone, cluster runs skipped" >&2
    cmake --build "$root/build-bench" -j2 --target whorl
    export WHORL_CLUSTER=0
  fi
  whorl=$root/build-bench/bin/whorl
fi

py=/usr/bin/python3
[ -x "$py" ] || py=python3
exec "$py" "$here/bench.py" --whorl "$whorl" "$@"
