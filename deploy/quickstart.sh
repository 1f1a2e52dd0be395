#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine: installs dependencies and builds if needed, creates
# the embedded repository ./whorl-repo if absent, backs up DIR (default: this source tree),
# restores it to a temporary directory, compares, and prints the snapshot and the dedup stats.
#   deploy/quickstart.sh [DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src=$(cd "${1:-$here}" && pwd)
repo=${WHORL_REPO:-$(pwd)/whorl-repo}

bash "$here/deploy/install-deps.sh"
if [ ! -x "$here/build/bin/whorl" ]; then
  cmake -S "$here" -B "$here/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$here/build" -j "$(nproc)" --target whorl
fi
whorl=$here/build/bin/whorl

[ -f "$repo/config" ] || "$whorl" init --repo "$repo"
# Keep build trees and the repository itself out of a backup of this source tree.
excludes=()
diff_args=(-r --no-dereference)
if [ "$src" = "$here" ]; then
  excludes+=(--exclude "$here/build*")
  diff_args+=(-x 'build*')
fi
case "$repo/" in
  "$src"/*) excludes+=(--exclude "$repo"); diff_args+=(-x "$(basename "$repo")") ;;
esac
"$whorl" backup --repo "$repo" "${excludes[@]}" "$src"
snap=$("$whorl" snapshots --repo "$repo" --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')

target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
"$whorl" restore --repo "$repo" "$snap" --target "$target"
if diff "${diff_args[@]}" "$src" "$target$src"; then
  echo "restored snapshot ${snap:0:8} to $target$src: identical to $src"
else
  echo "quickstart: the restored tree differs from $src" >&2
  exit 1
fi
"$whorl" snapshots --repo "$repo"
"$whorl" stats --repo "$repo"
