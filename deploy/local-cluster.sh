#!/usr/bin/env bash
# A real Whorl cluster on 127.0.0.1, for trying it out and for tests.
#
#   deploy/local-cluster.sh start DIR [--meta N] [--chunk M]   # defaults 3 and 2
#   deploy/local-cluster.sh status DIR
#   deploy/local-cluster.sh stop DIR
#
# start picks free ports, writes DIR/cluster.json (the map, epoch 1), starts N whorl-metad and
# M whorl-chunkd with data in DIR/data/ID, logs in DIR/logs/ID.log and pids in DIR/pids/ID.pid,
# waits until each answers its gRPC health check, writes DIR/repo-url and prints the URL.
# Logs are JSON lines (one event per RPC); each node serves Prometheus metrics on a free port
# listed in DIR/metrics (ID URL per line).
# stop sends SIGTERM to exactly the processes start recorded (checked against
# /proc/PID/cmdline) and waits for them. Binaries: $WHORL_BIN_DIR, default <repo>/build/bin.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${WHORL_BIN_DIR:-$ROOT/build/bin}"

die() { echo "local-cluster: $*" >&2; exit 1; }
usage() { echo "usage: $0 start DIR [--meta N] [--chunk M] | status DIR | stop DIR" >&2; exit 2; }

[ $# -ge 2 ] || usage
cmd="$1"; dir="$2"; shift 2

free_ports() {  # N free loopback ports
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# The ids of the nodes in DIR's map, one "ID ADDRESS KIND" per line.
nodes() {
  python3 - "$dir/cluster.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
for n in m["metadata"]:
    print(n["id"], n["address"], "metad")
for n in m["chunkstores"]:
    print(n["id"], n["address"], "chunkd")
PY
}

# Whether PID is alive and runs a whorl daemon.
is_ours() {
  local pid="$1"
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "whorl-\(metad\|chunkd\) "
}

case "$cmd" in
  start)
    meta=3; chunk=2
    while [ $# -gt 0 ]; do
      case "$1" in
        --meta) meta="$2"; shift 2 ;;
        --chunk) chunk="$2"; shift 2 ;;
        *) usage ;;
      esac
    done
    [ "$meta" -ge 1 ] && [ "$chunk" -ge 1 ] || die "--meta and --chunk must be at least 1"
    for b in whorl-metad whorl-chunkd whorl-probe; do
      [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b not found: build first (cmake --build build)"
    done
    if [ -d "$dir/pids" ] && ls "$dir"/pids/*.pid >/dev/null 2>&1; then
      die "$dir already has a running cluster (stop it first)"
    fi
    mkdir -p "$dir/data" "$dir/logs" "$dir/pids"
    dir="$(cd "$dir" && pwd)"
    read -r -a ports <<<"$(free_ports $((2 * (meta + chunk))))"
    python3 - "$dir/cluster.json" "$meta" "$chunk" "${ports[@]}" <<'PY'
import json, os, sys
path, meta, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ports = sys.argv[4:]
m = {"format": 1, "epoch": 1,
     "metadata": [{"id": f"meta-{i + 1}", "address": f"127.0.0.1:{ports[i]}", "weight": 1}
                  for i in range(meta)],
     "chunkstores": [{"id": f"chunk-{i + 1}", "address": f"127.0.0.1:{ports[meta + i]}",
                      "weight": 1} for i in range(chunk)]}
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(m, f, indent=2)
os.replace(tmp, path)
PY
    : >"$dir/metrics"
    i=$((meta + chunk))
    while read -r id addr kind; do
      mport="${ports[$i]}"; i=$((i + 1))
      "$BIN_DIR/whorl-$kind" --node-id "$id" --listen "$addr" --data "$dir/data/$id" \
        --cluster "$dir/cluster.json" --metrics-listen "127.0.0.1:$mport" --log-format json \
        >>"$dir/logs/$id.log" 2>&1 </dev/null &
      echo $! >"$dir/pids/$id.pid"
      echo "$id http://127.0.0.1:$mport/metrics" >>"$dir/metrics"
    done < <(nodes)
    deadline=$((SECONDS + 30))
    while read -r id addr kind; do
      until "$BIN_DIR/whorl-probe" "$addr" 2>/dev/null; do
        pid="$(cat "$dir/pids/$id.pid")"
        kill -0 "$pid" 2>/dev/null || die "$id exited; see $dir/logs/$id.log: $(tail -3 "$dir/logs/$id.log")"
        [ $SECONDS -lt $deadline ] || die "$id at $addr did not answer its health check in 30 s"
        sleep 0.1
      done
    done < <(nodes)
    first="$(nodes | awk 'NR == 1 { print $2 }')"
    echo "whorl://$first" >"$dir/repo-url"
    echo "whorl://$first"
    ;;
  status)
    [ -f "$dir/cluster.json" ] || die "no cluster in $dir"
    while read -r id addr kind; do
      if "$BIN_DIR/whorl-probe" "$addr" 2>/dev/null; then state=up; else state=down; fi
      printf '%-12s %-22s %-7s %s\n' "$id" "$addr" "$kind" "$state"
    done < <(nodes)
    ;;
  stop)
    shopt -s nullglob
    pids=()
    for f in "$dir"/pids/*.pid; do
      pid="$(cat "$f")"
      if is_ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
      fi
      rm -f "$f"
    done
    for pid in "${pids[@]}"; do
      for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$pid" 2>/dev/null && is_ours "$pid"; then
        echo "local-cluster: $pid did not stop in 15 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
    ;;
  *) usage ;;
esac
