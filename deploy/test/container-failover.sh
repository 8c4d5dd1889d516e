#!/usr/bin/env bash
# Container failover test (run by .ci/run whenever a Docker engine answers).
#
# Builds the image locally, starts the 3-node compose cluster and a worker,
# submits jobs, `docker kill`s the leader, brings it back, cuts a follower off
# the network with `docker network disconnect`, reconnects it, and checks that
# every acknowledged job completed and the cluster is back to 3 healthy
# members. Tears everything down at the end, pass or fail.
#
# BATON_CONTAINER_TLS=1 runs it on the TLS override (docker-compose.3.tls.yml)
# with certificates made by openssl as docs/deploy.md shows ("TLS with
# compose"); the host CLI then connects with BATON_CA/BATON_CERT/BATON_KEY.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! docker info >/dev/null 2>&1; then
  echo "SKIPPED container failover test: no Docker engine answers (docker info failed)"
  exit 0
fi
compose=(docker-compose)
command -v docker-compose >/dev/null 2>&1 || compose=(docker compose)

proj="batonci$$"
base=$(( 21000 + ($$ % 400) * 10 ))
export BATON_IMAGE="baton:ci-$$"
for i in 1 2 3; do
  export "BATON_API_PORT_$i=$((base + i))" "BATON_HTTP_PORT_$i=$((base + 3 + i))"
done
eps="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
files=(-f deploy/compose/docker-compose.3.yml)
certs=""
if [[ "${BATON_CONTAINER_TLS:-0}" == 1 ]]; then
  certs=$(mktemp -d)
  trap 'rm -rf "$certs"' EXIT  # until cleanup takes over
  (
    cd "$certs"
    ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    ec ca-key.pem
    openssl req -x509 -new -key ca-key.pem -days 2 -subj "/CN=baton container test CA" -out ca.pem
    issue() { # issue NAME SANS
      ec "$1-key.pem"
      openssl req -new -key "$1-key.pem" -subj "/CN=$1" -out "$1.csr"
      printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$2" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -days 2 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
      rm "$1.csr" "$1.ext"
    }
    for i in 1 2 3; do issue "node$i" "DNS:baton$i,DNS:localhost,IP:127.0.0.1"; done
    issue client DNS:compose-worker
    rm ca-key.pem
  )
  # Throwaway keys: readable by the containers' user (uid 10001).
  chmod 755 "$certs" && chmod 644 "$certs"/*
  export BATON_TLS_DIR="$certs" BATON_CA="$certs/ca.pem" BATON_CERT="$certs/client.pem" BATON_KEY="$certs/client-key.pem"
  files+=(-f deploy/compose/docker-compose.3.tls.yml)
fi
target="${CARGO_TARGET_DIR:-$PWD/target}"
baton="$target/debug/baton"
dc() { "${compose[@]}" -p "$proj" "${files[@]}" "$@"; }
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "--- container logs (failure) ---"
    dc logs --tail 30 2>&1 | tail -120 || true
  fi
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  docker image rm -f "$BATON_IMAGE" >/dev/null 2>&1 || true
  [[ -z "$certs" ]] || rm -rf "$certs"
  exit $rc
}
trap cleanup EXIT

log() { echo "container-failover: $*"; }
deploy/docker/build-local.sh "$BATON_IMAGE"
dc up -d >/dev/null 2>&1
log "cluster and worker started (project $proj, API ports $eps${certs:+, TLS})"

# Role of each node as "id role" lines; empty if unreachable.
roles() { "$baton" cluster status --endpoints "$eps" --json --timeout-secs 2 2>/dev/null | python3 -c '
import json, sys
for n in json.load(sys.stdin)["nodes"]:
    if n.get("reachable"): print(n["node_id"], n["role"], n["leader_id"], n["applied_index"])' || true; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$(( $(date +%s) + $1 )); local what=$2; shift 2
  until "$@"; do
    (( $(date +%s) < deadline )) || { log "timed out waiting for $what"; roles; return 1; }
    sleep 0.5
  done
}
three_healthy() {
  local r; r=$(roles)
  [[ $(grep -c . <<<"$r") -eq 3 ]] && [[ $(awk '$2=="leader"' <<<"$r" | wc -l) -eq 1 ]] \
    && [[ $(awk '{print $4}' <<<"$r" | sort -u | wc -l) -eq 1 ]]
}
leader() { roles | awk '$2=="leader" {print $1; exit}'; }
has_leader() { [[ -n "$(leader)" ]]; }

jobs=()
submit() { # submit N
  for _ in $(seq 1 "$1"); do
    jobs+=("$("$baton" job submit --shards 4 --namespace containers --endpoints "$eps" --json --timeout-secs 20 \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')")
  done
}

wait_for 60 "three healthy members" three_healthy
submit 5
old=$(leader)
log "killing leader node $old"
docker kill "${proj}_baton${old}_1" >/dev/null
wait_for 20 "a new leader" has_leader
log "new leader: node $(leader)"
submit 5
docker start "${proj}_baton${old}_1" >/dev/null
wait_for 60 "node $old back" three_healthy

follower=$(roles | awk '$2=="follower" {print $1; exit}')
log "disconnecting follower node $follower from the network"
docker network disconnect "${proj}_baton" "${proj}_baton${follower}_1"
submit 5
docker network connect --alias "baton${follower}" "${proj}_baton" "${proj}_baton${follower}_1"
log "reconnected node $follower"
wait_for 60 "three healthy members after the partition" three_healthy

log "${#jobs[@]} jobs acknowledged; waiting for them to finish"
for id in "${jobs[@]}"; do
  done_ok() {
    "$baton" job get "$id" --endpoints "$eps" --json --timeout-secs 5 2>/dev/null \
      | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["status"]=="succeeded" else 1)'
  }
  wait_for 60 "job $id to succeed" done_ok
done
log "PASS: ${#jobs[@]} acknowledged jobs succeeded; 3 healthy members (roles: $(roles | awk '{printf "%s:%s ", $1, $2}'))"
