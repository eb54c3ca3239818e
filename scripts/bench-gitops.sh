#!/usr/bin/env bash
# berth run --git: from a `git push` returning to the converge starting, on the real
# engine with one test-fixture service, against a bare repository on the local disk:
#
#   scripts/bench-gitops.sh          (~1 min plus the release build)
#
#   1. polling: `--poll 1s`, ROUNDS pushes (each changes the service's environment); for
#      each, the push's end -> the generation's start (`started_ms` in `berth history
#      --json`, which berth records as the converge begins). Expected: about half the
#      poll interval on average, one interval at most, plus the fetch.
#   2. the sync endpoint: `--poll 1h`, and right after each push `POST /api/v1/sync`
#      with the token (what a git host's webhook sends); the push's end -> the
#      generation's start.
#
# Everything it creates belongs to project benchg-<pid> and is removed on exit. Not a
# test: timings are reported, never asserted. Knobs: ROUNDS=5, BENCH_SKIP_BUILD=1.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
[ -n "${BENCH_SKIP_BUILD:-}" ] || cargo build --release -q --bin berth
berth=$PWD/target/release/berth
docker image inspect berth-fixture:test >/dev/null 2>&1 || scripts/build-fixture.sh
project=benchg-$$
work=$(mktemp -d)
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  docker ps -aq --filter "label=berth.project=$project" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=berth.project=$project" | xargs -r docker network rm >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }
g() { git -C "$work/clone" -c user.name=bench -c user.email=bench@example.org "$@"; }

git init -q --bare -b main "$work/remote.git"
git init -q -b main "$work/clone"
g remote add origin "$work/remote.git"
mkdir -p "$work/clone/desired-state"
write() {
  cat >"$work/clone/desired-state/stack.toml" <<TOML
[project]
name = "$project"
[rollout]
min_healthy_time = "0s"
[services.web]
image = "berth-fixture:test"
environment = { ROUND = "$1" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
TOML
}
push() { write "$1"; g add -A; g commit -q -m "round $1"; g push -q origin main; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "sync-token-$$" >"$work/sync-token"

start() {
  rm -f "$work/state.db"
  "$berth" --state "$work/state.db" run --listen "127.0.0.1:$port" --git "$work/remote.git" \
    --host-dir "$work" --sync-token-file "$work/sync-token" "$@" >"$work/daemon.log" 2>&1 &
  daemon=$!
}
stop() { kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""; }
generations() { "$berth" --state "$work/state.db" history --json | jq length; }
started_of() { "$berth" --state "$work/state.db" history --json | jq ".[$1 - 1].started_ms"; }
wait_gens() {
  for _ in $(seq 1 600); do
    [ "$(generations 2>/dev/null || echo 0)" -ge "$1" ] && return 0
    sleep 0.05
  done
  echo "no generation $1; daemon log:" >&2; cat "$work/daemon.log" >&2; exit 1
}
wait_converged() {
  for _ in $(seq 1 600); do
    curl -fsS "127.0.0.1:$port/api/v1/status" 2>/dev/null | jq -e '.[0].status == "converged"' >/dev/null && return 0
    sleep 0.05
  done
  echo "not converged" >&2; exit 1
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
max() { sort -n | tail -1; }

run_mode() {
  local mode=$1; shift
  push 0
  start "$@"
  wait_gens 1; wait_converged
  local n=1 lat=()
  for i in $(seq 1 "$rounds"); do
    # Off the poll's phase: a push lands anywhere in the interval.
    sleep "0.$((RANDOM % 10))"
    push "$i"
    local pushed; pushed=$(now_ms)
    if [ "$mode" = sync ]; then
      curl -fsS -X POST -H "Authorization: Bearer sync-token-$$" "127.0.0.1:$port/api/v1/sync" >/dev/null
    fi
    n=$((n + 1)); wait_gens "$n"
    lat+=($(( $(started_of "$n") - pushed )))
    wait_converged
  done
  stop
  echo "$mode: push -> converge start, ms: ${lat[*]}; median $(printf '%s\n' "${lat[@]}" | median), max $(printf '%s\n' "${lat[@]}" | max)"
}

echo "# scripts/bench-gitops.sh, $(date -u +%Y-%m-%dT%H:%MZ), release build, $rounds rounds each"
run_mode polling --poll 1s
run_mode sync --poll 1h
