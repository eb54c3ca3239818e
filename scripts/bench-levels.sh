#!/usr/bin/env bash
# Cold converge of a layered fixture stack, berth against docker-compose: LEVELS
# dependency levels of WIDTH services each (default 5 x 10 = 50), every service of level
# k > 0 depending on every service of level k-1 (the full WIDTH x WIDTH edge set between
# neighbouring levels, 400 edges by default: both tools take it, so no subset is chosen).
# Level 0 depends on nothing. Image: berth-fixture:test (no HEALTHCHECK of its own;
# FIXTURE_READY_AFTER unset, so /health answers 200 as soon as the port is bound).
#
#   berth     `berth --state $work/state.db apply -f berth.toml`, timed from launch to exit
#             (it exits 0 only when every service passed its probe and every stability
#             window closed). [rollout] min_healthy_time = "1s" (the shipped 1 s window),
#             stability pipelined (the default). Each service is gated on an http probe:
#             GET :8080/health expecting 2xx, timeout 1s, every 250ms (the shipped
#             stack's probe interval, as in scripts/bench-stack.sh; before the first pass
#             berth probes at 25 ms doubling up to it).
#   compose   docker-compose with the same services; each healthcheck runs the fixture's
#             own `/berth-fixture probe` (GET 127.0.0.1:8080/health expecting 2xx, 1 s
#             timeout: the same check as berth's probe), interval 1s, timeout 3s,
#             retries 5, start_period 90s (as bench/compose/docker-compose.yml), and
#             `depends_on: {X: {condition: service_healthy}}` on level k-1. Timed as
#             `up -d --wait` when the installed docker-compose has --wait; otherwise (1.29
#             has not) `up -d`, then `docker ps --filter health=healthy` polled every 100 ms
#             until all LEVELS x WIDTH containers are healthy at once (as
#             scripts/bench-scale.sh), for at most 300 s from the start.
#
#   scripts/bench-levels.sh     (runnable from any cwd; a round is one berth and one
#                                compose converge plus teardown; plus the release build)
#
# Every round is cold: no containers or network of either project, a fresh berth state db.
# Rounds alternate which tool goes first. Reported: wall seconds per round and tool, the
# medians, and berth / compose (issue 12's target: 0.80 or less). Not a test: nothing is
# asserted. Nothing is written outside the temp dir (paste the report into
# bench/speed-results.txt yourself).
#
# Knobs:
#   ROUNDS=3              rounds (each runs berth once and compose once)
#   LEVELS=5              dependency levels
#   WIDTH=10              services per level
#   BERTH=PATH            the berth binary (default target/release/berth); a private copy runs
#   BENCH_SKIP_BUILD=1    do not run `cargo build --release -q --bin berth`
#
# Everything belongs to projects benchlevels (label berth.project) and benchlevelsc (label
# com.docker.compose.project); only containers and networks carrying those labels are
# removed, before and after every run and on exit.
set -euo pipefail
export LC_ALL=C

caller_pwd=$PWD
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
levels=${LEVELS:-5}
width=${WIDTH:-10}
for v in "ROUNDS=$rounds" "LEVELS=$levels" "WIDTH=$width"; do
  [[ "${v#*=}" =~ ^[1-9][0-9]*$ ]] || { echo "bench-levels: ${v%%=*} must be a positive integer" >&2; exit 1; }
done
((width <= 100)) || { echo "bench-levels: WIDTH must be at most 100" >&2; exit 1; }
n=$((levels * width))
image=berth-fixture:test
pb=benchlevels
pc=benchlevelsc
cap=300

berth=${BERTH:-$PWD/target/release/berth}
[[ "$berth" == /* ]] || berth=$caller_pwd/$berth
[ "${BENCH_SKIP_BUILD:-0}" == 1 ] || cargo build --release -q --bin berth
[ -x "$berth" ] || { echo "bench-levels: $berth not found (build failed?)" >&2; exit 1; }
docker image inspect "$image" >/dev/null 2>&1 || scripts/build-fixture.sh
unset BERTH_FILE BERTH_STATE

# One bench-levels at a time on this host: the projects are fixed.
exec 9>"${TMPDIR:-/tmp}/berth-bench-levels.lock"
flock -n 9 || { echo "bench-levels: another scripts/bench-levels.sh is running" >&2; exit 1; }

work=$(mktemp -d)
teardown() { # KEY PROJECT: containers (with anonymous volumes), then networks, by label
  docker ps -aq --filter "label=$1=$2" | xargs -r docker rm -f -v >/dev/null 2>&1 || true
  docker network ls -q --filter "label=$1=$2" | xargs -r docker network rm >/dev/null 2>&1 || true
}
clean() {
  teardown berth.project "$pb"
  teardown com.docker.compose.project "$pc"
}
trap 'clean; rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
clean

# A private copy: a concurrent `cargo build` must not swap the binary mid-bench.
binfo="$berth (built $(date -u -r "$berth" +%FT%TZ), sha256 $(sha256sum "$berth" | cut -c1-12))"
cp "$berth" "$work/berth"
berth=$work/berth

now() { local t=$EPOCHREALTIME; echo "${t/./}"; }   # unix microseconds
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e6 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) printf "%.2f", a[(NR + 1) / 2]; else printf "%.2f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
svc() { printf 'l%ds%02d' "$1" "$2"; }
show_failure() { # LOG KEY PROJECT
  echo "bench-levels: last lines of $1:" >&2
  sed 's/\x1b\[[0-9;]*m//g' "$1" | tail -n 30 | sed 's/^/    /' >&2
  docker ps -a --filter "label=$2=$3" --format '    {{.Names}}  {{.Status}}' | grep -v '(healthy)' | head -n 20 >&2 || true
}

# The desired state and the compose file.
f=$work/berth.toml
{
  printf '# %d levels x %d fixture services; level k depends on all of level k-1.\n' "$levels" "$width"
  printf '[project]\nname = "%s"\n\n[rollout]\nmin_healthy_time = "1s"\nhealthy_deadline = "120s"\nprogress_deadline = "%ds"\n' "$pb" "$cap"
  for ((l = 0; l < levels; l++)); do
    deps=""
    if ((l > 0)); then
      for ((j = 0; j < width; j++)); do deps+="${deps:+, }\"$(svc $((l - 1)) "$j")\""; done
    fi
    for ((i = 0; i < width; i++)); do
      printf '\n[services.%s]\nimage = "%s"\n' "$(svc "$l" "$i")" "$image"
      ((l == 0)) || printf 'depends_on = [%s]\n' "$deps"
      printf 'health = { probe = "http", port = 8080, path = "/health", interval = "250ms", timeout = "1s" }\n'
    done
  done
} >"$f"
c=$work/compose.yml
{
  printf '# %d levels x %d fixture services; level k depends on all of level k-1.\nversion: "2.4"\n\nservices:\n' "$levels" "$width"
  for ((l = 0; l < levels; l++)); do
    for ((i = 0; i < width; i++)); do
      printf '  %s:\n    image: %s\n' "$(svc "$l" "$i")" "$image"
      if ((l > 0)); then
        printf '    depends_on:\n'
        for ((j = 0; j < width; j++)); do
          printf '      %s:\n        condition: service_healthy\n' "$(svc $((l - 1)) "$j")"
        done
      fi
      printf '    healthcheck:\n      test: ["CMD", "/berth-fixture", "probe"]\n'
      printf '      interval: 1s\n      timeout: 3s\n      retries: 5\n      start_period: 90s\n'
    done
  done
} >"$c"
"$berth" validate -f "$f" >"$work/validate.log" 2>&1 || { show_failure "$work/validate.log" berth.project "$pb"; exit 1; }
docker-compose -p "$pc" -f "$c" config -q >"$work/config.log" 2>&1 || { show_failure "$work/config.log" com.docker.compose.project "$pc"; exit 1; }

wait_flag=""
up_help=$(docker-compose up --help 2>/dev/null || true)
! grep -q -- '--wait' <<<"$up_help" || wait_flag=--wait
echo "bench-levels: $levels levels x $width services ($n), each of level k>0 depending on all $width of level k-1; $rounds round(s)"
echo "  compose: $(if [ -n "$wait_flag" ]; then echo 'up -d --wait'; else echo 'up -d, then docker ps polled until all healthy (no --wait in this docker-compose)'; fi)"

berth_s=() compose_s=() up_s=()
run_berth() {
  local r=$1 t rc=0 running
  teardown berth.project "$pb"
  rm -f "$work/state.db" "$work/state.db-wal" "$work/state.db-shm"
  t=$(now)
  "$berth" --state "$work/state.db" apply -f "$f" >"$work/berth-$r.log" 2>&1 </dev/null || rc=$?
  local s; s=$(secs "$t" "$(now)")
  running=$(docker ps -q --filter "label=berth.project=$pb" --filter status=running | wc -l)
  if ((rc != 0 || running != n)); then
    show_failure "$work/berth-$r.log" berth.project "$pb"
    echo "round $r: berth FAILED: apply exited $rc after $s s, $running of $n containers running"
    berth_s+=(failed)
  else
    echo "round $r: berth $s s (apply exited 0: all healthy, every 1 s window closed)"
    berth_s+=("$s")
  fi
  teardown berth.project "$pb"
}
run_compose() {
  local r=$1 t tup rc=0 healthy=0 s
  teardown com.docker.compose.project "$pc"
  t=$(now)
  # shellcheck disable=SC2086
  docker-compose -p "$pc" -f "$c" up -d $wait_flag >"$work/compose-$r.log" 2>&1 </dev/null || rc=$?
  tup=$(now)
  while ((rc == 0)); do
    healthy=$(docker ps -q --filter "label=com.docker.compose.project=$pc" --filter health=healthy | wc -l)
    ((healthy < n)) || break
    (($(now) - t <= cap * 1000000)) || break
    sleep 0.1
  done
  s=$(secs "$t" "$(now)")
  if ((rc != 0 || healthy < n)); then
    show_failure "$work/compose-$r.log" com.docker.compose.project "$pc"
    echo "round $r: docker-compose FAILED: up exited $rc; $healthy of $n healthy at once after $s s"
    compose_s+=(failed)
  else
    echo "round $r: docker-compose $s s (up returned at $(secs "$t" "$tup") s)"
    compose_s+=("$s") up_s+=("$(secs "$t" "$tup")")
  fi
  teardown com.docker.compose.project "$pc"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= rounds; r++)); do
  if ((r % 2)); then run_berth "$r"; run_compose "$r"; else run_compose "$r"; run_berth "$r"; fi
done

# Report.
ok() { local x; for x in "$@"; do [ "$x" != failed ] && echo "$x"; done; }
mapfile -t bok < <(ok "${berth_s[@]}")
mapfile -t cok < <(ok "${compose_s[@]}")
echo
echo "berth bench-levels: $levels levels x $width fixture services, cold converge to all healthy"
echo "date: $(date -u +%FT%TZ)  host: $(nproc) CPUs  docker $(docker version -f '{{.Server.Version}}' 2>/dev/null)  docker-compose $(docker-compose version --short 2>/dev/null)"
echo "load average before: $load_before  after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "berth binary: $binfo"
echo "berth: http probe every 250ms, min_healthy_time 1s; compose: healthcheck interval 1s, $(if [ -n "$wait_flag" ]; then echo 'up -d --wait'; else echo 'up -d + docker ps poll'; fi)"
printf '%-16s' tool; for ((r = 1; r <= rounds; r++)); do printf ' %8s' "r$r"; done; printf ' %8s\n' median
mb=n/a mc=n/a
((${#bok[@]} == 0)) || mb=$(median "${bok[@]}")
((${#cok[@]} == 0)) || mc=$(median "${cok[@]}")
printf '%-16s' berth; printf ' %8s' "${berth_s[@]}"; printf ' %8s\n' "$mb"
printf '%-16s' docker-compose; printf ' %8s' "${compose_s[@]}"; printf ' %8s' "$mc"
((${#up_s[@]} == 0)) || printf '  up returned at median %s s' "$(median "${up_s[@]}")"
echo
if [[ "$mb" != n/a && "$mc" != n/a ]]; then
  awk -v a="$mb" -v b="$mc" 'BEGIN { x = a / b; printf "berth / compose = %.2f  (issue 12 target: 0.80 or less: %s)\n", x, (x <= 0.8 ? "met" : "NOT met") }'
else
  echo "berth / compose: n/a (no successful run of one of them)"
fi
