#!/usr/bin/env bash
# Run a local Baton cluster of 3 or 5 nodes on loopback, as separate processes.
#
#   deploy/local/cluster.sh start [3|5]   build `baton`, start the nodes, wait for a leader
#   deploy/local/cluster.sh status        leader, term and indexes of every node
#   deploy/local/cluster.sh stop          SIGTERM every node (graceful)
#
# Node i listens on 127.0.0.1:710i (Raft), :720i (gRPC API) and :730i
# (HTTP: /metrics, /healthz, /readyz). Data and logs go to $BATON_LOCAL_DIR
# (default ./.baton-local). Extra `baton serve` flags can be passed in
# BATON_SERVE_ARGS, e.g. BATON_SERVE_ARGS="--worker-ttl-ms 5000".
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="${BATON_LOCAL_DIR:-$PWD/.baton-local}"
cmd="${1:-}"
n="${2:-3}"

bin() {
  local target="${CARGO_TARGET_DIR:-$PWD/target}"
  echo "$target/debug/baton"
}

members() {
  local m=()
  for i in $(seq 1 "$1"); do m+=("$i=127.0.0.1:710$i/127.0.0.1:720$i"); done
  local IFS=,
  echo "${m[*]}"
}

case "$cmd" in
  start)
    [[ "$n" == 3 || "$n" == 5 ]] || { echo "cluster size must be 3 or 5" >&2; exit 2; }
    ./.ci/deps
    cargo build -q -p baton-coordinator --bin baton
    mkdir -p "$dir"
    for i in $(seq 1 "$n"); do
      if [[ -f "$dir/node$i.pid" ]] && kill -0 "$(cat "$dir/node$i.pid")" 2>/dev/null; then
        echo "node $i already running (pid $(cat "$dir/node$i.pid"))"; continue
      fi
      # shellcheck disable=SC2086
      "$(bin)" serve --node-id "$i" --data-dir "$dir/node$i" \
        --raft-listen "127.0.0.1:710$i" --api-listen "127.0.0.1:720$i" --http-listen "127.0.0.1:730$i" \
        --initial-members "$(members "$n")" ${BATON_SERVE_ARGS:-} >>"$dir/node$i.log" 2>&1 &
      echo $! >"$dir/node$i.pid"
      echo "node $i: pid $!, api 127.0.0.1:720$i, metrics http://127.0.0.1:730$i/metrics, log $dir/node$i.log"
    done
    for _ in $(seq 1 100); do
      if curl -fs "http://127.0.0.1:7301/readyz" >/dev/null 2>&1; then
        curl -s "http://127.0.0.1:7301/readyz"; exit 0
      fi
      sleep 0.1
    done
    echo "no leader after 10 s; see $dir/node*.log" >&2; exit 1
    ;;
  status)
    for f in "$dir"/node*.pid; do
      [[ -e "$f" ]] || { echo "no cluster in $dir"; exit 1; }
      i=$(basename "$f" .pid); i=${i#node}
      printf 'node %s: ' "$i"
      curl -s --max-time 1 "http://127.0.0.1:730$i/readyz" || echo "down"
    done
    ;;
  stop)
    for f in "$dir"/node*.pid; do
      [[ -e "$f" ]] || continue
      kill "$(cat "$f")" 2>/dev/null || true
      rm -f "$f"
    done
    echo "stopped (data kept in $dir)"
    ;;
  *)
    sed -n '2,12p' "$0"; exit 2
    ;;
esac
