#!/usr/bin/env bash
# Time from a gate failing to the last good generation being healthy again, for the
# three-tier fixture stack (db <- cache <- app). Generation 1 is healthy; generation 2 gives
# `app` a configuration that never becomes healthy; berth reverts. The figure is
# (generation 2 finished, i.e. revert healthy) - (app's gate failure), from berth's own
# history, over several runs. Not a test: timings are reported, never asserted.
# Knobs: RUNS=3; BERTH=PATH runs another berth binary (an A/B against an older build).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
cargo build --release -q --bin berth
scripts/build-fixture.sh >/dev/null
berth=${BERTH:-$PWD/target/release/berth}
work=$(mktemp -d)
project=bench-revert
cleanup() {
  docker ps -aq --filter "label=berth.project=$project" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=berth.project=$project" | xargs -r docker network rm >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
stack() { # $1: extra env for app
cat <<TOML
[project]
name = "$project"
[rollout]
healthy_deadline = "3s"
min_healthy_time = "500ms"
[services.db]
image = "berth-fixture:test"
environment = { FIXTURE_READY_AFTER = "0.5" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
[services.cache]
image = "berth-fixture:test"
depends_on = ["db"]
environment = { FIXTURE_READY_AFTER = "0.5" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
[services.app]
image = "berth-fixture:test"
depends_on = ["cache"]
environment = { FIXTURE_READY_AFTER = "0.5"$1 }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
TOML
}
figures=()
for i in $(seq 1 "$runs"); do
  cleanup; work=$(mktemp -d)
  stack "" > "$work/berth.toml"
  "$berth" --state "$work/state.db" apply -f "$work/berth.toml" >/dev/null
  stack ', FIXTURE_NEVER_HEALTHY = "1"' > "$work/berth.toml"
  set +e; "$berth" --state "$work/state.db" apply -f "$work/berth.toml" >/dev/null 2>&1; code=$?; set -e
  [ "$code" = 3 ] || { echo "run $i: expected exit 3, got $code" >&2; exit 1; }
  ms=$("$berth" --state "$work/state.db" history --json | python3 -c '
import json,sys
g=json.load(sys.stdin)[1]
assert g["outcome"]=="rolled-back", g
print(g["finished_ms"]-g["timings"]["app"]["failed_ms"])')
  echo "run $i: gate failure -> last good healthy again: ${ms} ms"
  figures+=("$ms")
done
printf '%s\n' "${figures[@]}" | sort -n | awk '{a[NR]=$1} END {print "median: " a[int((NR+1)/2)] " ms over " NR " runs"}'
