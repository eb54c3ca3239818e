#!/usr/bin/env bash
# How berth's cold converge grows with the stack: N independent services of
# berth-fixture:healthcheck (the fixture with a Docker HEALTHCHECK every 1 s), gated on
# the image's HEALTHCHECK (no health block), for N = 50 and N = 100, side by side with
# docker-compose on the same services (`up -d`, then polling `docker ps` until all N are
# healthy).
#
#   scripts/bench-scale.sh     (~3 min plus the release build)
#
# Reported: wall seconds from the command's start to all healthy, per N and tool, and
# the growth 100/50 (issue 12's target: at most 2.2). Not a test: nothing is asserted.
# Everything belongs to projects benchscale<N> / benchscalec<N> and is removed on exit.
# Knobs: BENCH_SKIP_BUILD=1, SIZES="50 100".
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
[ -n "${BENCH_SKIP_BUILD:-}" ] || cargo build --release -q --bin berth
docker image inspect berth-fixture:healthcheck >/dev/null 2>&1 || scripts/build-fixture.sh
berth=$PWD/target/release/berth
work=$(mktemp -d)
sizes=${SIZES:-"50 100"}
clean() {
  for n in $sizes; do
    for p in "benchscale$n" "benchscalec$n"; do
      docker ps -aq --filter "label=berth.project=$p" --filter "label=com.docker.compose.project=$p" | xargs -r docker rm -f >/dev/null
      docker ps -aq --filter "label=com.docker.compose.project=$p" | xargs -r docker rm -f >/dev/null
      docker network ls -q --filter "label=berth.project=$p" | xargs -r docker network rm >/dev/null 2>&1 || true
      docker network rm "${p}_default" >/dev/null 2>&1 || true
    done
  done
}
trap 'clean; rm -rf "$work"' EXIT
clean
now() { date +%s.%N; }
declare -A berth_s compose_s
for n in $sizes; do
  f="$work/berth-$n.toml"
  {
    printf '[project]\nname = "benchscale%s"\n[rollout]\nmin_healthy_time = "1s"\nhealthy_deadline = "120s"\n' "$n"
    for i in $(seq 1 "$n"); do printf '[services.s%03d]\nimage = "berth-fixture:healthcheck"\n' "$i"; done
  } >"$f"
  t=$(now)
  "$berth" --state "$work/state-$n.db" apply -f "$f" >/dev/null
  berth_s[$n]=$(echo "$(now) - $t" | bc)
  printf 'N=%s: berth %.2f s (1 s stability window)\n' "$n" "${berth_s[$n]}"
  docker ps -aq --filter "label=berth.project=benchscale$n" | xargs -r docker rm -f >/dev/null

  c="$work/compose-$n.yml"
  { echo "services:"; for i in $(seq 1 "$n"); do printf '  s%03d:\n    image: berth-fixture:healthcheck\n' "$i"; done; } >"$c"
  t=$(now)
  docker-compose -p "benchscalec$n" -f "$c" up -d >/dev/null 2>&1
  # The engine's own healthchecks (every 1 s, 1 s timeout, 1 retry) can keep flapping
  # under the load of many containers on a small machine: give up after 120 s.
  healthy=0
  while :; do
    healthy=$(docker ps --filter "label=com.docker.compose.project=benchscalec$n" --filter health=healthy -q | wc -l)
    [ "$healthy" -ge "$n" ] && break
    if [ "$(echo "$(now) - $t > 120" | bc)" = 1 ]; then break; fi
    sleep 0.1
  done
  compose_s[$n]=$(echo "$(now) - $t" | bc)
  docker-compose -p "benchscalec$n" -f "$c" down >/dev/null 2>&1 || true
  if [ "$healthy" -ge "$n" ]; then
    printf 'N=%s: docker-compose %.2f s (until all healthy)\n' "$n" "${compose_s[$n]}"
  else
    printf 'N=%s: docker-compose: only %s of %s healthy at the same time after 120 s (the engine'"'"'s healthchecks flap under this load)\n' "$n" "$healthy" "$n"
    compose_s[$n]=0
  fi
done
set -- $sizes
if [ $# -ge 2 ]; then
  printf 'growth %s/%s: berth %.2fx (issue 12 target: 2.2 or less)\n' "$2" "$1" \
    "$(echo "${berth_s[$2]} / ${berth_s[$1]}" | bc -l)"
fi
