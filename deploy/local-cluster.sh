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
# start on a DIR whose cluster was stopped starts the same nodes again (same map, addresses and
# data). status prints each node up or down (its health check).
# stop sends SIGTERM to exactly the processes start recorded (checked against
# /proc/PID/cmdline) and waits for them. Binaries: $WHORL_BIN_DIR, default <repo>/build/bin.
# Exit codes: 0 ok, 1 failed (start stops what it started), 2 usage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${WHORL_BIN_DIR:-$ROOT/build/bin}"

die() { echo "local-cluster: $*" >&2; exit 1; }
usage() { echo "usage: $0 start DIR [--meta N] [--chunk M] | status DIR | stop DIR" >&2; exit 2; }

[ $# -ge 2 ] || usage
cmd="$1"; dir="$2"; shift 2

# Prints "ID ADDRESS KIND METRICS_PORT" per node of DIR's map (KIND metad or chunkd), with a
# free loopback port for each node's metrics. With "new N M", first writes a map of N shards and
# M chunk stores on free ports (epoch 1); with "check N M", refuses a map of other counts.
# One python3 run: its start-up is most of the script's time on a slow machine.
map_nodes() {
  python3 - "$dir/cluster.json" "$@" <<'PY'
import json, os, socket, sys
path, mode = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
import random
socks = []
# Ports below the kernel's ephemeral range: one from the range (bind to port 0) can be handed to
# another process's outgoing connection between this script's exit and the daemon's bind.
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
top = max(low - 1, 2048)
def free_port():
    for _ in range(1000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", random.randint(max(top - 20000, 1024), top)))
        except OSError:
            s.close()
            continue
        socks.append(s)  # held until exit, so no port is handed out twice
        return s.getsockname()[1]
    sys.exit("no free loopback port below the ephemeral range")
if mode == "new":
    meta, chunk = int(sys.argv[3]), int(sys.argv[4])
    m = {"format": 1, "epoch": 1,
         "metadata": [{"id": f"meta-{i + 1}", "address": f"127.0.0.1:{free_port()}", "weight": 1}
                      for i in range(meta)],
         "chunkstores": [{"id": f"chunk-{i + 1}", "address": f"127.0.0.1:{free_port()}",
                          "weight": 1} for i in range(chunk)]}
    with open(path + ".tmp", "w") as f:
        json.dump(m, f, indent=2)
    os.replace(path + ".tmp", path)
m = json.load(open(path))
if mode == "check" and (len(m["metadata"]), len(m["chunkstores"])) != (int(sys.argv[3]), int(sys.argv[4])):
    sys.exit(f"{path} holds a cluster of {len(m['metadata'])} metadata shards and "
             f"{len(m['chunkstores'])} chunk stores")
for kind, key in (("metad", "metadata"), ("chunkd", "chunkstores")):
    for n in m[key]:
        print(n["id"], n["address"], kind, free_port() if mode else 0)
PY
}

# Whether PID is alive and is the daemon this script started for node ID of this DIR: a
# whorl-metad or whorl-chunkd with "--node-id ID" and "--cluster DIR/cluster.json" (a recycled
# pid running anything else is left alone).
is_ours() {
  local pid="$1" id="$2" cmdline
  [ -r "/proc/$pid/cmdline" ] || return 1
  cmdline="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  case "$(head -1 <<<"$cmdline")" in
    */whorl-metad | */whorl-chunkd | whorl-metad | whorl-chunkd) ;;
    *) return 1 ;;
  esac
  grep -qxF -- "$id" <<<"$cmdline" && grep -qxF -- "$dir/cluster.json" <<<"$cmdline"
}

# Whether PID is running: exists and is not a zombie (an exited daemon whose parent, often
# init, has not reaped it yet).
running() {
  local state
  state="$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# SIGTERM to every recorded daemon that is still ours, then wait (15 s each, then SIGKILL).
stop_all() {
  shopt -s nullglob
  local f pid id pids=()
  for f in "$dir"/pids/*.pid; do
    pid="$(cat "$f")"
    id="$(basename "$f" .pid)"
    if is_ours "$pid" "$id"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid:$id")
    fi
    rm -f "$f"
  done
  for p in "${pids[@]}"; do
    pid="${p%%:*}"; id="${p#*:}"
    for _ in $(seq 1 300); do
      running "$pid" || break
      sleep 0.05
    done
    if running "$pid" && is_ours "$pid" "$id"; then
      echo "local-cluster: $id (pid $pid) did not stop in 15 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

case "$cmd" in
  start)
    meta=3; chunk=2; counts_given=0
    while [ $# -gt 0 ]; do
      case "$1" in
        --meta) [ $# -ge 2 ] || usage; meta="$2"; counts_given=1; shift 2 ;;
        --chunk) [ $# -ge 2 ] || usage; chunk="$2"; counts_given=1; shift 2 ;;
        *) usage ;;
      esac
    done
    [[ "$meta" =~ ^[1-9][0-9]*$ && "$chunk" =~ ^[1-9][0-9]*$ ]] ||
      die "--meta and --chunk must be whole numbers of at least 1"
    for b in whorl-metad whorl-chunkd whorl-probe; do
      [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b not found: build first (cmake --build build)"
    done
    mkdir -p "$dir/data" "$dir/logs" "$dir/pids"
    dir="$(cd "$dir" && pwd)"
    for f in "$dir"/pids/*.pid; do
      [ -e "$f" ] || continue
      if is_ours "$(cat "$f")" "$(basename "$f" .pid)"; then
        die "$dir already has a running cluster (stop it first)"
      fi
      rm -f "$f"  # left by a cluster that died
    done
    if [ -f "$dir/cluster.json" ]; then
      # A stopped cluster starts again with its map, addresses and data as they were.
      if [ "$counts_given" = 1 ]; then mode=(check "$meta" "$chunk"); else mode=(again); fi
    else
      mode=(new "$meta" "$chunk")
    fi
    node_list="$(map_nodes "${mode[@]}")" || die "cannot use $dir/cluster.json"
    : >"$dir/metrics"
    while read -r id addr kind mport; do
      "$BIN_DIR/whorl-$kind" --node-id "$id" --listen "$addr" --data "$dir/data/$id" \
        --cluster "$dir/cluster.json" --metrics-listen "127.0.0.1:$mport" --log-format json \
        >>"$dir/logs/$id.log" 2>&1 </dev/null &
      echo $! >"$dir/pids/$id.pid"
      echo "$id http://127.0.0.1:$mport/metrics" >>"$dir/metrics"
    done <<<"$node_list"
    deadline=$((SECONDS + 30))
    while read -r id addr kind _; do
      until "$BIN_DIR/whorl-probe" "$addr" 2>/dev/null; do
        pid="$(cat "$dir/pids/$id.pid")"
        if ! running "$pid"; then
          stop_all
          die "$id exited; see $dir/logs/$id.log: $(tail -3 "$dir/logs/$id.log")"
        fi
        if [ $SECONDS -ge $deadline ]; then
          stop_all
          die "$id at $addr did not answer its health check in 30 s"
        fi
        sleep 0.1
      done
    done <<<"$node_list"
    first="$(awk 'NR == 1 { print $2 }' <<<"$node_list")"
    echo "whorl://$first" >"$dir/repo-url"
    echo "whorl://$first"
    ;;
  status)
    [ -f "$dir/cluster.json" ] || die "no cluster in $dir"
    while read -r id addr kind _; do
      if "$BIN_DIR/whorl-probe" "$addr" 2>/dev/null; then state=up; else state=down; fi
      printf '%-12s %-22s %-7s %s\n' "$id" "$addr" "$kind" "$state"
    done < <(map_nodes)
    ;;
  stop)
    [ -d "$dir" ] || exit 0  # nothing was started there
    dir="$(cd "$dir" && pwd)"
    stop_all
    ;;
  *) usage ;;
esac
