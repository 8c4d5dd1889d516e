#!/usr/bin/env bash
# Baton vs etcd vs NATS JetStream on this machine, in one run (docs/benchmarks.md).
#
#   chaos-tests/bench/compare.sh [--quick] [baton-bench flags...]     (or: make compare ARGS=--quick)
#
# Installs what it needs with apt (etcd-server, nats-server, protobuf-compiler
# for etcd-client's generated code, and Baton's own build packages), builds
# `baton` and `baton-bench` in the dev profile (optimized, see Cargo.toml),
# runs the comparison, and prints the ratio table. Results, JSON and SVG plots
# go to $BENCH_OUT (default target/bench-compare). Every server it starts has
# its pid in the run dir's `pids` file; the trap below kills any that are left,
# by pid, on any exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

./.ci/deps
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if ((${#need[@]})); then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "baton-bench: installing ${need[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -q -p baton-coordinator --bin baton
cargo build -q -p baton-bench

run_dir="$(mktemp -d /tmp/baton-bench.XXXXXX)"
cleanup() {
  if [[ -f "$run_dir/pids" ]]; then
    while read -r pid; do
      # Only our own servers: the pid must still be one of the programs we start.
      if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -Eq '(^|/)(baton|etcd|nats-server|baton-bench) '; then
        kill -9 "$pid" 2>/dev/null || true
      fi
    done <"$run_dir/pids"
  fi
  rm -rf "$run_dir"
}
trap cleanup EXIT INT TERM

"$target/debug/baton-bench" --run-dir "$run_dir" --out "${BENCH_OUT:-target/bench-compare}" \
  --baton-bin "$target/debug/baton" "$@"
