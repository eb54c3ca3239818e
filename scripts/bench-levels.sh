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
#   berth-mht<W>  the same with min_healthy_time = W (BERTH_VARIANT_MIN_HEALTHY, default
#             0s): reported beside, never in the headline.
#   compose@<I>  docker-compose with the same services; each healthcheck runs the
#             fixture's own `/berth-fixture probe` (GET 127.0.0.1:8080/health expecting
#             2xx, 1 s timeout: the same check as berth's probe), interval I, timeout 3s,
#             retries 5, start_period 90s (as bench/compose/docker-compose.yml), and
#             `depends_on: {X: {condition: service_healthy}}` on level k-1. One contender
#             per entry of COMPOSE_HEALTH_INTERVAL (default "250ms 1s"). The HEADLINE is
#             compose at berth's own probe interval (250ms: the same cadence; Docker
#             accepts it, and Docker 20.10 has no start_interval, so its first check runs
#             one interval after the start); 1s is the second figure. Timed as `up -d
#             --wait` when the installed docker-compose has --wait; otherwise (1.29 has
#             not) `up -d`, then `docker ps --filter health=healthy` polled every 100 ms
#             until all LEVELS x WIDTH containers are healthy at once (as
#             scripts/bench-scale.sh), for at most 300 s from the start.
#
#   scripts/bench-levels.sh     (runnable from any cwd; a round is one run of every
#                                contender plus teardowns; plus the release build)
#
# Every run is cold: no containers or network of either project, a fresh berth state db.
# The contenders' order rotates from round to round. Reported: wall seconds per round and
# contender with its probe cadence, the medians, and berth / compose at each interval
# (the target at the same cadence: 1.00 or less, berth no slower than compose). Not a
# test: nothing is asserted. Nothing is written outside the temp dir (paste the report
# into bench/speed-results.txt yourself).
#
# Knobs:
#   ROUNDS=3              rounds (each runs every contender once)
#   LEVELS=5              dependency levels
#   WIDTH=10              services per level
#   COMPOSE_HEALTH_INTERVAL="250ms 1s"  compose healthcheck interval(s)
#   BERTH_VARIANT_MIN_HEALTHY=0s        the variant's window; empty: no variant
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
read -r -a intervals <<<"${COMPOSE_HEALTH_INTERVAL:-250ms 1s}"
((${#intervals[@]})) || { echo "bench-levels: COMPOSE_HEALTH_INTERVAL is empty" >&2; exit 1; }
for iv in "${intervals[@]}"; do
  [[ "$iv" =~ ^[0-9]+(ms|s|m)$ ]] || { echo "bench-levels: bad COMPOSE_HEALTH_INTERVAL entry: $iv" >&2; exit 1; }
done
mht_variant=${BERTH_VARIANT_MIN_HEALTHY-0s}
[[ -z "$mht_variant" || "$mht_variant" =~ ^[0-9]+(ms|s)$ ]] || { echo "bench-levels: bad BERTH_VARIANT_MIN_HEALTHY: $mht_variant" >&2; exit 1; }
berth_iv=250ms   # berth's probe interval (every service)
window=1s        # the shipped stack's min_healthy_time
to_ms() { case "$1" in *ms) echo "${1%ms}" ;; *s) echo $((${1%s} * 1000)) ;; *m) echo $((${1%m} * 60000)) ;; esac; }
# The intervals, the one equal to berth's first (the headline).
headline=${intervals[0]} headline_note="NOT berth's cadence ($berth_iv)"
for iv in "${intervals[@]}"; do
  if [[ "$(to_ms "$iv")" == "$(to_ms "$berth_iv")" ]]; then headline=$iv headline_note="equal cadence"; break; fi
done
ordered=("$headline")
for iv in "${intervals[@]}"; do [[ "$iv" == "$headline" ]] || ordered+=("$iv"); done
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

. scripts/bench-lib.sh   # now, secs, median, spread
svc() { printf 'l%ds%02d' "$1" "$2"; }
show_failure() { # LOG KEY PROJECT
  echo "bench-levels: last lines of $1:" >&2
  sed 's/\x1b\[[0-9;]*m//g' "$1" | tail -n 30 | sed 's/^/    /' >&2
  docker ps -a --filter "label=$2=$3" --format '    {{.Names}}  {{.Status}}' | grep -v '(healthy)' | head -n 20 >&2 || true
}

# The desired state (with stability window W) and the compose file (healthcheck interval I).
write_berth() { # FILE WINDOW
  local l i j deps
  {
    printf '# %d levels x %d fixture services; level k depends on all of level k-1.\n' "$levels" "$width"
    printf '[project]\nname = "%s"\n\n[rollout]\nmin_healthy_time = "%s"\nhealthy_deadline = "120s"\nprogress_deadline = "%ds"\n' "$pb" "$2" "$cap"
    for ((l = 0; l < levels; l++)); do
      deps=""
      if ((l > 0)); then
        for ((j = 0; j < width; j++)); do deps+="${deps:+, }\"$(svc $((l - 1)) "$j")\""; done
      fi
      for ((i = 0; i < width; i++)); do
        printf '\n[services.%s]\nimage = "%s"\n' "$(svc "$l" "$i")" "$image"
        ((l == 0)) || printf 'depends_on = [%s]\n' "$deps"
        printf 'health = { probe = "http", port = 8080, path = "/health", interval = "%s", timeout = "1s" }\n' "$berth_iv"
      done
    done
  } >"$1"
}
write_compose() { # FILE INTERVAL
  local l i j
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
        printf '      interval: %s\n      timeout: 3s\n      retries: 5\n      start_period: 90s\n' "$2"
      done
    done
  } >"$1"
}
contenders=(berth)
[[ -z "$mht_variant" ]] || contenders+=("berth-mht$mht_variant")
for iv in "${ordered[@]}"; do contenders+=("compose@$iv"); done
declare -A file=()
file[berth]=$work/berth.toml
write_berth "${file[berth]}" "$window"
if [[ -n "$mht_variant" ]]; then
  file[berth-mht$mht_variant]=$work/berth-mht.toml
  write_berth "${file[berth-mht$mht_variant]}" "$mht_variant"
fi
for iv in "${ordered[@]}"; do
  file[compose@$iv]=$work/compose-$iv.yml
  write_compose "${file[compose@$iv]}" "$iv"
done
for c in "${contenders[@]}"; do
  case "$c" in
    berth*) "$berth" validate -f "${file[$c]}" >"$work/validate.log" 2>&1 || { show_failure "$work/validate.log" berth.project "$pb"; exit 1; } ;;
    *) docker-compose -p "$pc" -f "${file[$c]}" config -q >"$work/config.log" 2>&1 || { show_failure "$work/config.log" com.docker.compose.project "$pc"; exit 1; } ;;
  esac
done
# What each contender probes how often, printed beside its result.
cadence() {
  case "$1" in
    berth) echo "http probe every $berth_iv (25ms doubling to it until the 1st pass), window $window" ;;
    berth-mht*) echo "http probe every $berth_iv (25ms doubling to it until the 1st pass), window ${1#berth-mht}" ;;
    compose@*) echo "HEALTHCHECK every ${1#compose@} (1st check ${1#compose@} after start)" ;;
  esac
}

wait_flag=""
up_help=$(docker-compose up --help 2>/dev/null || true)
! grep -q -- '--wait' <<<"$up_help" || wait_flag=--wait

declare -A res=() ups=()
run_berth() { # NAME ROUND
  local c=$1 r=$2 t rc=0 running s
  teardown berth.project "$pb"
  rm -f "$work/state.db" "$work/state.db-wal" "$work/state.db-shm"
  t=$(now)
  "$berth" --state "$work/state.db" apply -f "${file[$c]}" >"$work/$c-$r.log" 2>&1 </dev/null || rc=$?
  s=$(secs "$t" "$(now)")
  running=$(docker ps -q --filter "label=berth.project=$pb" --filter status=running | wc -l)
  if ((rc != 0 || running != n)); then
    show_failure "$work/$c-$r.log" berth.project "$pb"
    echo "round $r: $c FAILED: apply exited $rc after $s s, $running of $n containers running"
    res[$c]+="failed "
  else
    echo "round $r: $c $s s (apply exited 0: all healthy, every window closed; $(cadence "$c"))"
    res[$c]+="$s "
  fi
  teardown berth.project "$pb"
}
run_compose() { # NAME ROUND
  local c=$1 r=$2 t tup rc=0 healthy=0 s
  teardown com.docker.compose.project "$pc"
  t=$(now)
  # shellcheck disable=SC2086
  docker-compose -p "$pc" -f "${file[$c]}" up -d $wait_flag >"$work/$c-$r.log" 2>&1 </dev/null || rc=$?
  tup=$(now)
  while ((rc == 0)); do
    healthy=$(docker ps -q --filter "label=com.docker.compose.project=$pc" --filter health=healthy | wc -l)
    ((healthy < n)) || break
    (($(now) - t <= cap * 1000000)) || break
    sleep 0.1
  done
  s=$(secs "$t" "$(now)")
  if ((rc != 0 || healthy < n)); then
    show_failure "$work/$c-$r.log" com.docker.compose.project "$pc"
    echo "round $r: $c FAILED: up exited $rc; $healthy of $n healthy at once after $s s"
    res[$c]+="failed "
  else
    echo "round $r: $c $s s (up returned at $(secs "$t" "$tup") s; $(cadence "$c"))"
    res[$c]+="$s " ups[$c]+="$(secs "$t" "$tup") "
  fi
  teardown com.docker.compose.project "$pc"
}

echo "bench-levels: $levels levels x $width services ($n), each of level k>0 depending on all $width of level k-1; $rounds round(s)"
echo "  contenders: ${contenders[*]}"
echo "  compose: $(if [ -n "$wait_flag" ]; then echo 'up -d --wait'; else echo 'up -d, then docker ps polled until all healthy (no --wait in this docker-compose)'; fi)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
k=${#contenders[@]}
for ((r = 1; r <= rounds; r++)); do
  for ((i = 0; i < k; i++)); do
    c=${contenders[$(((i + r - 1) % k))]}
    case "$c" in berth*) run_berth "$c" "$r" ;; *) run_compose "$c" "$r" ;; esac
  done
done

# Report.
med_of() { # CONTENDER: median of its successful rounds, or n/a
  local x ok=()
  for x in ${res[$1]:-}; do [ "$x" != failed ] && ok+=("$x"); done
  if ((${#ok[@]})); then median "${ok[@]}"; else echo n/a; fi
}
echo
echo "berth bench-levels: $levels levels x $width fixture services, cold converge to all healthy"
echo "date: $(date -u +%FT%TZ)  host: $(nproc) CPUs  docker $(docker version -f '{{.Server.Version}}' 2>/dev/null)  docker-compose $(docker-compose version --short 2>/dev/null)"
echo "load average before: $load_before  after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "berth binary: $binfo"
echo "compose: $(if [ -n "$wait_flag" ]; then echo 'up -d --wait'; else echo 'up -d + docker ps poll every 100 ms'; fi); headline: compose@$headline ($headline_note)"
printf '%-16s' contender; for ((r = 1; r <= rounds; r++)); do printf ' %8s' "r$r"; done; printf ' %8s  %s\n' median 'probe cadence; notes'
for c in "${contenders[@]}"; do
  printf '%-16s' "$c"
  # shellcheck disable=SC2086
  printf ' %8s' ${res[$c]}
  printf ' %8s  %s' "$(med_of "$c")" "$(cadence "$c")"
  # shellcheck disable=SC2086
  [ -z "${ups[$c]:-}" ] || printf '; up returned at median %s s' "$(median ${ups[$c]})"
  case "$c" in berth-mht*) printf '; VARIANT, not the shipped window' ;; esac
  echo
done
for b in berth ${mht_variant:+"berth-mht$mht_variant"}; do
  mb=$(med_of "$b")
  for iv in "${ordered[@]}"; do
    mc=$(med_of "compose@$iv")
    if [[ "$mb" == n/a || "$mc" == n/a ]]; then
      printf '%-28s = n/a (no successful run of one of them)\n' "$b / compose@$iv"
      continue
    fi
    if [[ "$b" != berth ]]; then
      what="variant beside it (min_healthy_time $mht_variant)"
    elif [[ "$iv" == "$headline" ]]; then
      what="HEADLINE ($headline_note), target <= 1.00: $(awk -v x="$(awk -v a="$mb" -v b="$mc" 'BEGIN { printf "%.2f", a / b }')" 'BEGIN { print (x <= 1.0 ? "met" : "NOT met") }')"
    else
      what="second figure"
    fi
    awk -v a="$mb" -v b="$mc" -v l="$b / compose@$iv" -v w="$what" -v cb="$(cadence "$b")" -v cc="$(cadence "compose@$iv")" \
      'BEGIN { printf "%-28s = %.2f  %s; berth %s | compose %s\n", l, a / b, w, cb, cc }'
  done
done
