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
#
# Where the time goes: after berth's HEALTHCHECK run, the engine's own healthcheck results
# still in each container's log (the last 5) are counted, and how many of them ran past
# their 1 s timeout. A second series gates the same N services of berth-fixture:test (no
# HEALTHCHECK) on berth's own http probe every 250 ms instead: the same containers and
# window without the engine's healthcheck execs, i.e. berth's own cost as the stack grows.
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
    for p in "benchscale$n" "benchscalec$n" "benchscaleh$n"; do
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
declare -A berth_s compose_s http_s
for n in $sizes; do
  f="$work/berth-$n.toml"
  {
    printf '[project]\nname = "benchscale%s"\n[rollout]\nmin_healthy_time = "1s"\nhealthy_deadline = "300s"\nprogress_deadline = "300s"\n' "$n"
    for i in $(seq 1 "$n"); do printf '[services.s%03d]\nimage = "berth-fixture:healthcheck"\n' "$i"; done
  } >"$f"
  t=$(now)
  "$berth" --state "$work/state-$n.db" apply -f "$f" >/dev/null
  berth_s[$n]=$(echo "$(now) - $t" | bc)
  ids=$(docker ps -q --filter "label=berth.project=benchscale$n")
  # shellcheck disable=SC2086
  checks=$(docker inspect --format '{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}{{"\n"}}{{end}}' $ids | grep -c . || true)
  # shellcheck disable=SC2086
  late=$(docker inspect --format '{{range .State.Health.Log}}{{.Output}}{{"\n"}}{{end}}' $ids | grep -c 'exceeded timeout' || true)
  printf 'N=%s: berth %.2f s (1 s stability window); the engine'"'"'s last healthchecks: %s of %s ran past their 1 s timeout\n' \
    "$n" "${berth_s[$n]}" "$late" "$checks"
  docker ps -aq --filter "label=berth.project=benchscale$n" | xargs -r docker rm -f >/dev/null

  # The same N containers gated on berth's own http probe: no engine healthchecks.
  h="$work/berth-http-$n.toml"
  {
    printf '[project]\nname = "benchscaleh%s"\n[rollout]\nmin_healthy_time = "1s"\nhealthy_deadline = "300s"\nprogress_deadline = "300s"\n' "$n"
    for i in $(seq 1 "$n"); do
      printf '[services.s%03d]\nimage = "berth-fixture:test"\nhealth = { probe = "http", port = 8080, interval = "250ms" }\n' "$i"
    done
  } >"$h"
  t=$(now)
  "$berth" --state "$work/state-http-$n.db" apply -f "$h" >/dev/null
  http_s[$n]=$(echo "$(now) - $t" | bc)
  printf 'N=%s: berth %.2f s with its own http probe (no HEALTHCHECK)\n' "$n" "${http_s[$n]}"
  docker ps -aq --filter "label=berth.project=benchscaleh$n" | xargs -r docker rm -f >/dev/null

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
  printf 'growth %s/%s: berth with its own http probe %.2fx\n' "$2" "$1" \
    "$(echo "${http_s[$2]} / ${http_s[$1]}" | bc -l)"
fi
