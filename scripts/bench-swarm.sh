#!/usr/bin/env bash
# Converge and revert times of the three-tier fixture stack (db <- api <- web, http probes
# every 200 ms, the fixture ready 0.5 s after start) under engine = "swarm" on a
# single-node swarm, against:
#   - the same stack on one host (engine = "docker"; one container per service, since
#     replicas are Swarm's), and
#   - `docker stack deploy --detach=false` of an equivalent compose file (the fixture's
#     HEALTHCHECK variant, checked every 200 ms; Swarm ignores depends_on), where the
#     installed docker CLI has `stack deploy --detach`.
# Under Swarm the api has 2 replicas, as in tests/e2e_swarm.rs. berth runs with
# min_healthy_time = "0s" so that no stability window is counted; the figures are wall
# times of each command, from nothing to its exit. Revert: generation 2 makes the api
# never healthy (healthy_deadline 3s); the figure is gate failure -> last good healthy
# again, from berth's own history, as scripts/bench-revert.sh does on one host.
# Median of RUNS (3) each. Not a test: timings are reported, never asserted.
# Needs the host engine out of any swarm (it makes a single-node one and leaves it),
# /usr/bin/docker-registry and the fixture images (scripts/build-fixture.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
runs=${RUNS:-3}
state=$(docker info --format '{{.Swarm.LocalNodeState}}')
[ "$state" = inactive ] || { echo "the engine is already in a swarm ($state): not touching it" >&2; exit 2; }
cargo build --release -q --bin berth
scripts/build-fixture.sh >/dev/null
berth=$PWD/target/release/berth
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
projects=()
registry_pid=
created_swarm=
cleanup() {
  set +e
  for p in "${projects[@]}"; do remove "$p"; done
  # Only the swarm this script made: another one is someone else's (a test running now).
  [ -n "$created_swarm" ] && docker swarm leave --force >/dev/null 2>&1
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null
  docker rmi "127.0.0.1:$port/bench-fixture:test" "127.0.0.1:$port/bench-fixture:healthcheck" >/dev/null 2>&1
  rm -rf "$work"
}
# remove PROJECT: its services or containers, then its networks.
remove() {
  docker service ls -q --filter "label=berth.project=$1" | xargs -r docker service rm >/dev/null
  docker stack rm "$1" >/dev/null 2>&1 || true
  for _ in $(seq 100); do
    [ -z "$(docker ps -aq --filter "label=com.docker.swarm.service.name" --filter "name=$1")" ] && break
    sleep 0.2
  done
  docker ps -aq --filter "label=berth.project=$1" | xargs -r docker rm -f >/dev/null
  for _ in $(seq 25); do
    nets=$(docker network ls -q --filter "label=berth.project=$1"; docker network ls -q --filter "label=com.docker.stack.namespace=$1")
    [ -z "$nets" ] && break
    echo "$nets" | xargs -r docker network rm >/dev/null 2>&1 || sleep 0.4
  done
}
trap cleanup EXIT

# A registry of the script's own: Swarm runs images by registry digest.
mkdir -p "$work/registry"
cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
/usr/bin/docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.2; done
image=127.0.0.1:$port/bench-fixture:test
image_hc=127.0.0.1:$port/bench-fixture:healthcheck
for pair in "berth-fixture:test $image" "berth-fixture:healthcheck $image_hc"; do
  set -- $pair
  docker tag "$1" "$2" && docker push -q "$2" >/dev/null
done
docker swarm init --advertise-addr 127.0.0.1 >/dev/null
created_swarm=1

# stack PROJECT ENGINE API_EXTRA DEADLINE
stack() {
  local replicas='' update=''
  if [ "$2" = swarm ]; then replicas='replicas = 2'; update='update_order = "start-first"'; fi
  cat <<TOML
[project]
name = "$1"
engine = "$2"
[rollout]
healthy_deadline = "$4"
min_healthy_time = "0s"
[services.db]
image = "$image"
environment = { FIXTURE_READY_AFTER = "0.5", ROLE = "db" }
health = { probe = "http", port = 8080, path = "/health", interval = "200ms" }
[services.api]
image = "$image"
depends_on = ["db"]
$replicas
$update
environment = { FIXTURE_READY_AFTER = "0.5", ROLE = "api"$3 }
health = { probe = "http", port = 8080, path = "/health", interval = "200ms" }
[services.web]
image = "$image"
depends_on = ["api"]
environment = { FIXTURE_READY_AFTER = "0.5", ROLE = "web" }
health = { probe = "http", port = 8080, path = "/health", interval = "200ms" }
TOML
}
compose() {
  cat <<YML
version: "3.8"
x-health: &health
  test: ["CMD", "/berth-fixture", "probe"]
  interval: 200ms
  timeout: 1s
  retries: 1
services:
  db:
    image: $image_hc
    environment: { FIXTURE_READY_AFTER: "0.5", ROLE: db }
    healthcheck: *health
  api:
    image: $image_hc
    depends_on: [db]
    environment: { FIXTURE_READY_AFTER: "0.5", ROLE: api }
    healthcheck: *health
    deploy: { replicas: 2 }
  web:
    image: $image_hc
    depends_on: [api]
    environment: { FIXTURE_READY_AFTER: "0.5", ROLE: web }
    healthcheck: *health
YML
}

# converge ENGINE RUN: seconds for berth apply from nothing.
converge() {
  local p=bench-sw-$1-$2 t0 t1
  projects+=("$p")
  stack "$p" "$1" "" 30s >"$work/$p.toml"
  t0=$(now)
  "$berth" --state "$work/$p.db" apply -f "$work/$p.toml" >"$work/$p.log" 2>&1 || { cat "$work/$p.log" >&2; exit 1; }
  t1=$(now)
  secs "$t0" "$t1"
}

swarm_runs=(); docker_runs=(); stack_runs=(); revert_runs=()
for i in $(seq 1 "$runs"); do
  s=$(converge swarm "$i"); swarm_runs+=("$s")
  d=$(converge docker "$i"); docker_runs+=("$d")
  echo "run $i: swarm $s s, docker $d s" >&2
  # Revert under Swarm, on the converged swarm project of this run.
  p=bench-sw-swarm-$i
  stack "$p" swarm ', FIXTURE_NEVER_HEALTHY = "1"' 3s >"$work/$p.toml"
  set +e; "$berth" --state "$work/$p.db" apply -f "$work/$p.toml" >"$work/$p.revert.log" 2>&1; code=$?; set -e
  [ "$code" = 3 ] || { echo "revert run $i: expected exit 3, got $code" >&2; cat "$work/$p.revert.log" >&2; exit 1; }
  ms=$("$berth" --state "$work/$p.db" history --json | python3 -c '
import json,sys
g=[g for g in json.load(sys.stdin) if g["outcome"]=="rolled-back"][0]
print(g["finished_ms"]-g["timings"]["api"]["failed_ms"])')
  revert_runs+=("$(awk -v m="$ms" 'BEGIN { printf "%.2f", m / 1000 }')")
  echo "run $i: revert ${ms} ms" >&2
  remove "$p"; remove "bench-sw-docker-$i"
done

has_stack_detach=
stack_failed=
if docker stack deploy --help 2>&1 | grep -q -- '--detach'; then
  has_stack_detach=1
  for i in $(seq 1 "$runs"); do
    p=bench-sw-stack-$i
    projects+=("$p")
    compose >"$work/$p.yml"
    t0=$(now)
    if ! timeout 60 docker stack deploy --detach=false -c "$work/$p.yml" "$p" >"$work/$p.log" 2>&1; then
      # Say why its tasks did not converge (Swarm's own error of the first one), once.
      stack_failed=$(docker service ps "${p}_db" --no-trunc --format '{{.CurrentState}}: {{.Error}}' | grep -m1 -i failed || echo "no task error given")
      echo "docker stack deploy did not converge within 60 s: $stack_failed" >&2
      remove "$p"
      break
    fi
    t1=$(now)
    stack_runs+=("$(secs "$t0" "$t1")")
    echo "run $i: docker stack deploy ${stack_runs[-1]} s" >&2
    remove "$p"
  done
fi

echo
echo "three-tier fixture stack, median of $runs runs (min-max), $(date -u +%F)"
printf '| %s | %s | %s |\n' "what" "median s" "spread s"
printf '| %s | %s | %s |\n' "---" "---" "---"
printf '| %s | %s | %s |\n' "berth apply, engine = docker (one host, 1 container each)" "$(median "${docker_runs[@]}")" "$(spread "${docker_runs[@]}")"
printf '| %s | %s | %s |\n' "berth apply, engine = swarm (single node, api 2 replicas)" "$(median "${swarm_runs[@]}")" "$(spread "${swarm_runs[@]}")"
if [ -n "$stack_failed" ]; then
  echo "| docker stack deploy --detach=false | not measured: its tasks failed here ($stack_failed) | |"
elif [ -n "$has_stack_detach" ]; then
  printf '| %s | %s | %s |\n' "docker stack deploy --detach=false (HEALTHCHECK 200 ms, no order)" "$(median "${stack_runs[@]}")" "$(spread "${stack_runs[@]}")"
else
  echo "| docker stack deploy --detach=false | not measured: this docker CLI has no stack deploy --detach | |"
fi
printf '| %s | %s | %s |\n' "revert under swarm (api gate failure -> generation 1 healthy)" "$(median "${revert_runs[@]}")" "$(spread "${revert_runs[@]}")"
