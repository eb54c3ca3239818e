#!/usr/bin/env bash
# How a cold converge grows with the stack: N independent services, for N = 50 and 100,
# berth against docker-compose, judged by one rule for both.
#
#   scripts/bench-scale.sh     (~20 min at ROUNDS=3 plus the release build: the
#                               compose runs at N=100 may take the whole cap)
#
# Series, per N and round (their order rotates from round to round):
#   berth       N x berth-fixture:healthcheck (the fixture with a Docker HEALTHCHECK: every
#               1 s, 1 s timeout, 1 retry), gated on the image's HEALTHCHECK (no health
#               block), min_healthy_time 1s: `berth apply`.
#   compose     the same N services: `docker-compose up -d` (`up -d --wait` where the
#               installed docker-compose has it; 1.29 has not).
#   berth-http  N x berth-fixture:test (no HEALTHCHECK) gated on berth's own http probe
#               every 250 ms: the same containers and window without the engine's
#               healthcheck execs, i.e. berth's own cost as the stack grows (no compose
#               counterpart: compose has only the engine's healthchecks).
#
# THE RULE, the same for both tools: all N containers healthy together, checked the same
# way for both from the moment each tool says it is done.
#   1. The tool says it is done: berth's apply exits 0; docker-compose's `up -d` (or
#      `up -d --wait`) exits 0. A non-zero exit fails the run.
#   2. From that moment, one `docker ps -a` of the project's containers is polled (every
#      100 ms, the first at once): the run is done when it shows N containers, every one
#      of them "Up ... (healthy)" (running, and the engine's health status healthy) at
#      the same time. For berth-http, which has no engine health status, the check is
#      one `docker ps -a` showing N containers all "Up", and then GET /health of every
#      container (from the host, to its address, in parallel) answering 2xx.
#   3. The time is from the command's start to the start of the first check that held.
#      For berth that is normally its exit (its gates already judged every container);
#      for docker-compose 1.29, whose `up -d` returns once the containers are started,
#      it is when the engine's healthchecks made all N healthy together.
#   4. A run is failed when the rule does not hold within BENCH_CAP seconds from the
#      start (berth's healthy_deadline and progress_deadline are the cap too). Reported
#      with how many were healthy together at the cap.
# Also reported per run: when the tool said it was done, whether the rule held at the
# first check, and for the HEALTHCHECK series the engine's last healthcheck results in
# the containers' logs (the last 5 each) and how many ran past their 1 s timeout.
#
# Reported: every round, the median and the spread (min-max) per N and series, and the
# growth 100/50 of the medians (the target: at most 2.2, doubling N about doubles the
# time). Not a test: nothing is asserted. Everything belongs to projects benchscale<N> /
# benchscalec<N> / benchscaleh<N> and is removed between runs and on exit.
# Knobs: ROUNDS=3, SIZES="50 100", BENCH_CAP=180, BENCH_SKIP_BUILD=1,
#        BERTH=PATH (default target/release/berth; a private copy runs).
set -euo pipefail
export LC_ALL=C
caller_pwd=$PWD
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
sizes=${SIZES:-"50 100"}
cap=${BENCH_CAP:-180}
for v in "ROUNDS=$rounds" "BENCH_CAP=$cap"; do
  [[ "${v#*=}" =~ ^[1-9][0-9]*$ ]] || { echo "bench-scale: ${v%%=*} must be a positive integer" >&2; exit 1; }
done
for n in $sizes; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench-scale: bad SIZES entry: $n" >&2; exit 1; }
done
berth=${BERTH:-$PWD/target/release/berth}
[[ "$berth" == /* ]] || berth=$caller_pwd/$berth
[ -n "${BENCH_SKIP_BUILD:-}" ] || cargo build --release -q --bin berth
[ -x "$berth" ] || { echo "bench-scale: $berth not found (build failed?)" >&2; exit 1; }
docker image inspect berth-fixture:healthcheck >/dev/null 2>&1 || scripts/build-fixture.sh
unset BERTH_FILE BERTH_STATE

exec 9>"${TMPDIR:-/tmp}/berth-bench-scale.lock"
flock -n 9 || { echo "bench-scale: another scripts/bench-scale.sh is running" >&2; exit 1; }

work=$(mktemp -d)
teardown() { # KEY PROJECT: containers (with anonymous volumes), then networks, by label
  docker ps -aq --filter "label=$1=$2" | xargs -r docker rm -f -v >/dev/null 2>&1 || true
  docker network ls -q --filter "label=$1=$2" | xargs -r docker network rm >/dev/null 2>&1 || true
}
clean() {
  for n in $sizes; do
    teardown berth.project "benchscale$n"
    teardown berth.project "benchscaleh$n"
    teardown com.docker.compose.project "benchscalec$n"
  done
}
trap 'clean; rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
clean

binfo="$berth (built $(date -u -r "$berth" +%FT%TZ), sha256 $(sha256sum "$berth" | cut -c1-12))"
cp "$berth" "$work/berth"
berth=$work/berth

. scripts/bench-lib.sh   # now, secs, median, spread

wait_flag=""
! docker-compose up --help 2>/dev/null | grep -q -- '--wait' || wait_flag=--wait

# The rule's check, one `docker ps -a` of the project: prints how many of its containers
# are healthy (or, with http, running), and returns 0 when that is all N of them.
healthy_together() { # KEY PROJECT N [http]
  local st up
  st=$(docker ps -a --filter "label=$1=$2" --format '{{.Status}}')
  if [ "${4:-}" = http ]; then
    up=$(grep -c '^Up' <<<"$st" || true)
  else
    up=$(grep -c '^Up .*(healthy)$' <<<"$st" || true)
  fi
  echo "$up"
  [ "$(grep -c . <<<"$st" || true)" -eq "$3" ] && [ "$up" -eq "$3" ] || return 1
  [ "${4:-}" = http ] || return 0
  # Every container answers its /health (the probe berth gates on), all at once.
  local u args=()
  for u in $(docker ps -q --filter "label=$1=$2" | xargs -r docker inspect \
    -f '{{range .NetworkSettings.Networks}}http://{{.IPAddress}}:8080/health {{end}}'); do
    args+=(-o /dev/null "$u")
  done
  [ "$(curl -s --no-progress-meter --max-time 2 -w '%{http_code}\n' --parallel --parallel-max 100 \
    "${args[@]}" 2>/dev/null | grep -c '^2' || true)" -eq "$3" ]
}

# The engine's last healthcheck results of a project's containers: "LATE/ALL" (LATE ran
# past their timeout).
late_checks() { # KEY PROJECT
  local ids checks late
  ids=$(docker ps -aq --filter "label=$1=$2")
  [ -n "$ids" ] || { echo "0/0"; return; }
  # shellcheck disable=SC2086
  checks=$(docker inspect --format '{{range .State.Health.Log}}{{.ExitCode}}{{"\n"}}{{end}}' $ids | grep -c . || true)
  # shellcheck disable=SC2086
  late=$(docker inspect --format '{{range .State.Health.Log}}{{.Output}}{{"\n"}}{{end}}' $ids | grep -c 'exceeded timeout' || true)
  echo "$late/$checks"
}

# One run: the tool's command, then the rule. Records res[N,series] (seconds or "failed"),
# said[] (when the tool said done), first[] (held at the 1st check: y/n), late[].
declare -A res=() said=() first=() late=()
run() { # SERIES N ROUND
  local series=$1 n=$2 r=$3 key p mode="" t tdone rc=0 tcheck held=0 h=0 s log
  log=$work/$series-$n-$r.log
  case "$series" in
    berth) key=berth.project p=benchscale$n ;;
    berth-http) key=berth.project p=benchscaleh$n mode=http ;;
    compose) key=com.docker.compose.project p=benchscalec$n ;;
  esac
  teardown "$key" "$p"
  rm -f "$work/state.db" "$work/state.db-wal" "$work/state.db-shm"
  t=$(now)
  case "$series" in
    berth) timeout $((cap + 30)) "$berth" --state "$work/state.db" apply -f "$work/berth-$n.toml" >"$log" 2>&1 </dev/null || rc=$? ;;
    berth-http) timeout $((cap + 30)) "$berth" --state "$work/state.db" apply -f "$work/berth-http-$n.toml" >"$log" 2>&1 </dev/null || rc=$? ;;
    # shellcheck disable=SC2086
    compose) timeout $((cap + 30)) docker-compose -p "$p" -f "$work/compose-$n.yml" up -d $wait_flag >"$log" 2>&1 </dev/null || rc=$? ;;
  esac
  tdone=$(now)
  said[$n,$series]+="$(secs "$t" "$tdone") "
  local checks=0
  while ((rc == 0)); do
    tcheck=$(now)
    checks=$((checks + 1))
    if h=$(healthy_together "$key" "$p" "$n" $mode); then held=1; break; fi
    (($(now) - t <= cap * 1000000)) || break
    sleep 0.1
  done
  if ((held)); then
    s=$(secs "$t" "$tcheck")
    res[$n,$series]+="$s "
    ((checks == 1)) && first[$n,$series]+="y " || first[$n,$series]+="n "
  else
    s="failed"
    res[$n,$series]+="failed "
    first[$n,$series]+="- "
  fi
  [ "$mode" = http ] || late[$n,$series]+="$(late_checks "$key" "$p") "
  if ((rc != 0)); then
    echo "N=$n round $r: $series FAILED: the command exited $rc after $(secs "$t" "$tdone") s (last lines of its output below)"
    sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -n 5 | sed 's/^/    /'
  elif ((held)); then
    echo "N=$n round $r: $series $s s (said done at $(secs "$t" "$tdone") s; all $n healthy together at check $checks)"
  else
    echo "N=$n round $r: $series FAILED: said done at $(secs "$t" "$tdone") s; only ${h:-0} of $n healthy together at the ${cap} s cap"
  fi
  teardown "$key" "$p"
}

for n in $sizes; do
  {
    printf '[project]\nname = "benchscale%s"\n[rollout]\nmin_healthy_time = "1s"\nhealthy_deadline = "%ss"\nprogress_deadline = "%ss"\n' "$n" "$cap" "$cap"
    for i in $(seq 1 "$n"); do printf '[services.s%03d]\nimage = "berth-fixture:healthcheck"\n' "$i"; done
  } >"$work/berth-$n.toml"
  {
    printf '[project]\nname = "benchscaleh%s"\n[rollout]\nmin_healthy_time = "1s"\nhealthy_deadline = "%ss"\nprogress_deadline = "%ss"\n' "$n" "$cap" "$cap"
    for i in $(seq 1 "$n"); do
      printf '[services.s%03d]\nimage = "berth-fixture:test"\nhealth = { probe = "http", port = 8080, interval = "250ms" }\n' "$i"
    done
  } >"$work/berth-http-$n.toml"
  { echo "services:"; for i in $(seq 1 "$n"); do printf '  s%03d:\n    image: berth-fixture:healthcheck\n' "$i"; done; } >"$work/compose-$n.yml"
done

series=(berth compose berth-http)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for n in $sizes; do
  for ((r = 1; r <= rounds; r++)); do
    for ((i = 0; i < ${#series[@]}; i++)); do
      run "${series[$(((i + r - 1) % ${#series[@]}))]}" "$n" "$r"
    done
  done
done

# Report: per N and series, every round, the median and spread of the successful ones.
ok_of() { local x; for x in ${res[$1]:-}; do [ "$x" = failed ] || echo "$x"; done; }
echo
echo "berth bench-scale: N independent services, cold converge; one rule for both tools (all N"
echo "healthy together in one docker ps, checked from the moment the tool says it is done)"
echo "date: $(date -u +%FT%TZ)  host: $(nproc) CPUs  docker $(docker version -f '{{.Server.Version}}' 2>/dev/null)  docker-compose $(docker-compose version --short 2>/dev/null)"
echo "load average before: $load_before  after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "berth binary: $binfo"
echo "berth: min_healthy_time 1s; berth, compose: the image's HEALTHCHECK every 1s (timeout 1s, retries 1); berth-http: berth's http probe every 250ms; compose: up -d${wait_flag:+ --wait}; cap ${cap} s"
declare -A med=()
for n in $sizes; do
  echo
  printf '%-10s' "N=$n"; for ((r = 1; r <= rounds; r++)); do printf ' %8s' "r$r"; done
  printf ' %8s %13s  %s\n' median 'spread' 'said done at (median); rule held at the 1st check (per round); the engine'"'"'s last healthchecks past their timeout / all (per round)'
  for s in "${series[@]}"; do
    mapfile -t ok < <(ok_of "$n,$s")
    m=n/a sp=n/a
    if ((${#ok[@]})); then m=$(median "${ok[@]}"); sp=$(spread "${ok[@]}"); fi
    med[$n,$s]=$m
    printf '%-10s' "$s"
    # shellcheck disable=SC2086
    printf ' %8s' ${res[$n,$s]}
    # shellcheck disable=SC2086
    printf ' %8s %13s  %s s; %s' "$m" "$sp" "$(median ${said[$n,$s]})" "$(echo ${first[$n,$s]} | tr ' ' /)"
    # shellcheck disable=SC2086
    [ -z "${late[$n,$s]:-}" ] || printf '; late/all %s' "$(echo ${late[$n,$s]})"
    fails=$(grep -o failed <<<"${res[$n,$s]}" | wc -l || true)
    ((fails == 0)) || printf '; %d of %d rounds FAILED the rule' "$fails" "$rounds"
    echo
  done
done
set -- $sizes
if [ $# -ge 2 ]; then
  echo
  for s in "${series[@]}"; do
    a=${med[$1,$s]} b=${med[$2,$s]}
    if [[ "$a" == n/a || "$b" == n/a ]]; then
      printf 'growth %s/%s: %-10s n/a (no successful run at one size)\n' "$2" "$1" "$s"
    else
      awk -v a="$a" -v b="$b" -v s="$s" -v x="$2/$1" 'BEGIN { printf "growth %s: %-10s %.2fx (medians %.2f -> %.2f s)%s\n", x, s, b / a, a, b, (s == "berth" ? "  (target: 2.2 or less)" : "") }'
    fi
  done
fi
