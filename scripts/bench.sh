#!/usr/bin/env bash
# Benchmark berth against the real Docker engine.
#
#   scripts/bench.sh    (runnable from any cwd; ~1 min on 2 cores plus the cargo build;
#                        a from-scratch release build alone took 3.5 min here)
#
# What it measures:
#   1. Three-tier stack db <- cache <- app (fixture, FIXTURE_READY_AFTER=1 each, http
#      probes on :8080/health every 100ms, min_healthy_time "0s"): cold `berth apply`
#      wall time (fresh state db, no containers, no network) versus the critical path =
#      sum over the chain of (fixture ready ts - fixture start ts), from the containers'
#      own `event=start` / `event=ready` log lines. Overhead = (wall - cp) / cp. 3 runs.
#      The overhead is split, from berth's call log, the generation's timings and the
#      fixture's timestamps, into "handoff" (previous service ready -> the next start
#      call: probe detection + berth's own work; for db: berth launch -> db start call,
#      which includes db's create), "docker create" (each create call's duration; cache's
#      and app's are made one level ahead, off the path), "docker start" (start call ->
#      fixture event=start) and "tail" (app ready -> berth exit). The floor is, along the
#      chain, each service's create call duration plus its start call -> fixture ready.
#   2. No-op `apply` and `plan` on the converged three-tier stack: median wall of 10
#      runs, berth's CPU (user+sys) and max RSS from /usr/bin/time, and the Docker API
#      calls it logs (BERTH_LOG=berth::runtime=debug, stderr lines with `docker_api`).
#   3. 100 independent fixture services (FIXTURE_READY_AFTER=0, http probe, no host
#      ports): cold apply wall time, then the same no-op measurements as 2. Targets:
#      ONE list call, no per-container inspect, < 100 ms of berth's own CPU.
#
# Docker is used only through its CLI, only for setup, teardown and measurement.
# Everything it creates belongs to projects bench3 / bench100 (label berth.project) and
# is removed on exit. Environment knobs:
#   BENCH_PORT=38080        host port of the three-tier app (127.0.0.1 only)
#   BENCH_SKIP_BUILD=1      do not run `cargo build --release` (use the existing binary)
#   BENCH_SKIP_FIXTURE=1    do not run scripts/build-fixture.sh (image must exist)
#   BENCH_KEEP_TMP=1        keep the temp dir (desired state, logs, state dbs)
set -euo pipefail
export LC_ALL=C

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BERTH="$REPO_ROOT/target/release/berth"
IMAGE="berth-fixture:test"
P3="bench3"
P100="bench100"
N100=100
COLD_RUNS=3
NOOP_RUNS=10
BENCH_PORT="${BENCH_PORT:-38080}"
LOCK_FILE="${TMPDIR:-/tmp}/berth-bench.lock"

die() { echo "bench: error: $*" >&2; exit 1; }
note() { echo "==> $*"; }

for tool in docker cargo awk sed sort /usr/bin/time flock; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

# One bench at a time on this host: the projects and the port are fixed.
exec 9>"$LOCK_FILE"
flock -n 9 || die "another scripts/bench.sh holds $LOCK_FILE"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/berth-bench.XXXXXX")"

# Remove everything labelled with one of our projects: containers, then the project
# network(s) and named volume(s) berth created for it. Only label-selected objects.
teardown_project() {
  local p="$1" ids
  ids="$(docker ps -aq --filter "label=berth.project=$p" 2>/dev/null || true)"
  if [[ -n "$ids" ]]; then
    # shellcheck disable=SC2086
    docker rm -f $ids >/dev/null 2>&1 || true
  fi
  ids="$(docker network ls -q --filter "label=berth.project=$p" 2>/dev/null || true)"
  if [[ -n "$ids" ]]; then
    # shellcheck disable=SC2086
    docker network rm $ids >/dev/null 2>&1 || true
  fi
  ids="$(docker volume ls -q --filter "label=berth.project=$p" 2>/dev/null || true)"
  if [[ -n "$ids" ]]; then
    # shellcheck disable=SC2086
    docker volume rm $ids >/dev/null 2>&1 || true
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  echo "==> cleanup: removing containers, networks and volumes of projects $P3, $P100" >&2
  teardown_project "$P3"
  teardown_project "$P100"
  if [[ "${BENCH_KEEP_TMP:-0}" == 1 ]]; then
    echo "==> kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: error: line $LINENO: \"$BASH_COMMAND\" exited $?" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

now_us() { local t="$EPOCHREALTIME"; echo "${t/./}"; }

# Children CPU seconds (user+sys) from bash's `times` written to FILE (line 2), as ms.
children_cpu_ms() {
  awk 'NR == 2 {
    n = split($0, f, " "); t = 0
    for (i = 1; i <= n; i++) { split(f[i], ms, "m"); sub(/s$/, "", ms[2]); t += ms[1] * 60 + ms[2] }
    printf "%.0f", t * 1000 }' "$1"
}

# run_timed PREFIX CMD...: runs CMD under /usr/bin/time with stdout/stderr in
# PREFIX.out / PREFIX.err. Sets T_WALL (ms, 0.1 ms resolution), T_START_MS (unix ms of
# the launch), T_CPU (user+sys ms per /usr/bin/time, 10 ms resolution), T_CPU_RU
# (user+sys ms from getrusage via bash `times`, 1 ms resolution, includes
# /usr/bin/time's own ~1 ms), T_RSS (max RSS KiB), T_RC.
run_timed() {
  local pre="$1"; shift
  local s e rc=0
  # No forks between the two `times` snapshots except /usr/bin/time itself.
  times >"$pre.ru0"
  s="$EPOCHREALTIME"
  /usr/bin/time -o "$pre.time" -f '%e %U %S %M' "$@" >"$pre.out" 2>"$pre.err" || rc=$?
  e="$EPOCHREALTIME"
  times >"$pre.ru1"
  s="${s/./}" e="${e/./}"
  T_RC=$rc
  T_START_MS=$(( s / 1000 ))
  T_WALL="$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.1f", (e - s) / 1000 }')"
  # /usr/bin/time may prefix "Command exited with non-zero status N"; take the last line.
  read -r _ u sy rss < <(tail -n 1 "$pre.time")
  T_CPU="$(awk -v u="$u" -v s="$sy" 'BEGIN { printf "%.0f", (u + s) * 1000 }')"
  T_CPU_RU=$(( $(children_cpu_ms "$pre.ru1") - $(children_cpu_ms "$pre.ru0") ))
  T_RSS="$rss"
}

# Fail loudly (with berth's output) when a berth command did not exit 0.
check_rc() {
  local pre="$1" what="$2"
  if [[ "$T_RC" != 0 ]]; then
    echo "bench: $what exited $T_RC; stdout:" >&2
    sed 's/^/    /' "$pre.out" >&2
    echo "bench: stderr (last 30 lines):" >&2
    strip_ansi <"$pre.err" | tail -n 30 | sed 's/^/    /' >&2
    die "$what failed"
  fi
}

strip_ansi() { sed 's/\x1b\[[0-9;]*m//g'; }

# API calls berth logged in FILE: "TOTAL<TAB>name=n name=n ..." (names sorted).
api_calls() {
  local f="$1" total breakdown
  total="$(strip_ansi <"$f" | grep -c 'docker_api' || true)"
  breakdown="$(strip_ansi <"$f" | grep 'docker_api' | sed -n 's/.*call="\([^"]*\)".*/\1/p' |
    sort | uniq -c | awk '{ printf "%s%s=%s", (NR > 1 ? " " : ""), $2, $1 }')"
  printf '%s\t%s\n' "$total" "${breakdown:--}"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) printf "%.1f", a[(NR + 1) / 2]; else printf "%.1f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
minmax() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s..%s", lo, hi }'; }
mediani() { median "$@" | sed 's/\.0$//'; }
mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.1f", s / NR }'; }

# Docker RFC 3339 timestamp -> unix ms.
ts_ms() { date -d "$1" +%s%3N; }

# First ts_ms of a fixture log event in a container's log.
log_event_ms() {
  local container="$1" event="$2"
  docker logs "$container" 2>&1 | awk -v ev="event=$event" '
    $2 == ev && !done { sub(/^ts_ms=/, "", $1); print $1; done = 1 }'  # no early exit: SIGPIPE
}

# Unix ms of each `docker_api call="CALL"` line berth logged in FILE, in log order
# (the tracing timestamp is taken when berth issues the call).
call_times_ms() {
  strip_ansi <"$1" | awk -v c="call=\"$2\"" 'index($0, "docker_api") && index($0, c) { print $1 }' |
    { grep . || true; } | date -f - +%s%3N
}

# Container IDs of a project, sorted: to prove a no-op changed nothing.
project_ids() { docker ps -aq --no-trunc --filter "label=berth.project=$1" | sort | tr '\n' ' '; }

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

T_BENCH0="$(now_us)"
cd "$REPO_ROOT"

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  note "cargo build --release"
  cargo build --release --quiet
fi
[[ -x "$BERTH" ]] || die "$BERTH not found (build failed?)"

if [[ "${BENCH_SKIP_FIXTURE:-0}" != 1 ]]; then
  note "scripts/build-fixture.sh"
  if ! "$REPO_ROOT/scripts/build-fixture.sh" >"$WORK/build-fixture.log" 2>&1; then
    cat "$WORK/build-fixture.log" >&2
    die "scripts/build-fixture.sh failed"
  fi
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE is missing"

if ss -Hltn "sport = :$BENCH_PORT" 2>/dev/null | grep -q .; then
  die "port $BENCH_PORT is in use; set BENCH_PORT to a free high port"
fi

# Leftovers of an interrupted earlier bench (the lock says no bench is running now).
for p in "$P3" "$P100"; do
  if [[ -n "$(docker ps -aq --filter "label=berth.project=$p")" ]]; then
    note "removing leftovers of project $p from an earlier bench run"
  fi
  teardown_project "$p"
done

BERTH_VERSION="$("$BERTH" --version)"
DOCKER_VERSION="$(docker version -f '{{.Server.Version}} (API {{.Server.APIVersion}})')"
CPUS="$(nproc)"

# ---------------------------------------------------------------------------
# Desired state
# ---------------------------------------------------------------------------

mkdir -p "$WORK/three-tier" "$WORK/hundred"
cat >"$WORK/three-tier/berth.toml" <<EOF
# db <- cache <- app; the gate is pure readiness (min_healthy_time 0s).
[project]
name = "$P3"

[rollout]
healthy_deadline = "30s"
min_healthy_time = "0s"

[services.db]
image = "$IMAGE"
environment = { FIXTURE_READY_AFTER = "1" }
volumes = ["$P3-db-data:/data"]
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }

[services.cache]
image = "$IMAGE"
depends_on = ["db"]
environment = { FIXTURE_READY_AFTER = "1" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }

[services.app]
image = "$IMAGE"
depends_on = ["cache"]
ports = ["127.0.0.1:$BENCH_PORT:8080"]
environment = { FIXTURE_READY_AFTER = "1" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
EOF

{
  printf '# %d independent fixture services, no host ports.\n' "$N100"
  printf '[project]\nname = "%s"\n\n[rollout]\nhealthy_deadline = "60s"\nmin_healthy_time = "0s"\n' "$P100"
  for ((i = 0; i < N100; i++)); do
    printf '\n[services.s%03d]\nimage = "%s"\nenvironment = { FIXTURE_READY_AFTER = "0" }\n' "$i" "$IMAGE"
    printf 'health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }\n'
  done
} >"$WORK/hundred/berth.toml"

"$BERTH" validate -f "$WORK/three-tier/berth.toml" >/dev/null || die "three-tier desired state is invalid"
"$BERTH" validate -f "$WORK/hundred/berth.toml" >/dev/null || die "100-service desired state is invalid"

export BERTH_LOG="berth::runtime=debug"
unset BERTH_FILE BERTH_STATE

echo
echo "berth bench: $BERTH_VERSION | docker engine $DOCKER_VERSION | $CPUS CPUs | work dir $WORK"

# ---------------------------------------------------------------------------
# 1. Three-tier cold converge vs critical path
# ---------------------------------------------------------------------------

echo
note "1. three-tier cold apply ($COLD_RUNS runs; db <- cache <- app, READY_AFTER 1/1/1 s)"
CHAIN=(db cache app)
declare -a C_WALL C_CP C_OVH C_PCT C_HAND C_CREATE C_START C_TAIL
for ((r = 1; r <= COLD_RUNS; r++)); do
  teardown_project "$P3"
  state="$WORK/three-tier/state-$r.db"
  rm -f "$state"*
  pre="$WORK/three-tier/cold-$r"
  run_timed "$pre" "$BERTH" --state "$state" apply -f "$WORK/three-tier/berth.toml"
  check_rc "$pre" "three-tier cold apply (run $r)"
  end_ms=$(( T_START_MS + ${T_WALL%.*} ))
  # Levels start one after another, so the i-th start call is the i-th tier's. Creates
  # run one level ahead (work ahead of the gate): each service's create call and its
  # duration come from the generation's timings (create_ms: asked, created_ms: made).
  mapfile -t starts < <(call_times_ms "$pre.err" start_container)
  [[ ${#starts[@]} == 3 ]] || die "expected 3 start_container calls, got ${#starts[@]}"
  hist="$("$BERTH" --state "$state" history --json)"
  prev="$T_START_MS"
  cp=0 hand=0 cre=0 sta=0 detail="" i=0 floor=0
  for s in "${CHAIN[@]}"; do
    c="$P3-$s"
    read -r asked made < <(python3 -c '
import json, sys
t = json.load(sys.stdin)[0]["timings"][sys.argv[1]]
print(t["create_ms"], t["created_ms"])' "$s" <<<"$hist") || die "no create_ms/created_ms for $s in history --json"
    started="$(ts_ms "$(docker inspect -f '{{.State.StartedAt}}' "$c")")"
    st="$(log_event_ms "$c" start)"
    rd="$(log_event_ms "$c" ready)"
    [[ -n "$st" && -n "$rd" ]] || die "no event=start/event=ready in the log of $c"
    h=$(( starts[i] - prev ))       # berth: prev ready noticed (or launch) -> start call
    k1=$(( made - asked ))          # docker create (its call, made ahead but for db)
    k2=$(( st - starts[i] ))        # docker start -> fixture process runs
    k=$(( rd - st ))                # the service's own readiness: the critical path
    hand=$(( hand + h )); cre=$(( cre + k1 )); sta=$(( sta + k2 )); cp=$(( cp + k ))
    # The floor: Docker's own create and start of the service, then its own
    # start-to-ready: the create call's duration plus start call -> fixture ready;
    # min_healthy_time is 0s here, so no window is added at the end.
    floor=$(( floor + k1 + rd - starts[i] ))
    detail+="$(printf '%-5s %-9s %4d | create call %4d (asked %+d ms from launch) | start call->fixture start %4d (StartedAt %+d) | start->ready %4d' \
      "$s" "$([[ $i == 0 ]] && echo launch || echo handoff)" "$h" "$k1" "$(( asked - T_START_MS ))" "$k2" "$(( started - starts[i] ))" "$k")"$'\n'
    prev="$rd"
    i=$(( i + 1 ))
  done
  tail_ms=$(( end_ms - prev ))
  ovh="$(awk -v w="$T_WALL" -v c="$cp" 'BEGIN { printf "%.1f", w - c }')"
  pct="$(awk -v w="$T_WALL" -v c="$cp" 'BEGIN { printf "%.1f", (w - c) * 100 / c }')"
  IFS=$'\t' read -r ncalls breakdown < <(api_calls "$pre.err")
  C_FLOOR+=("$floor"); C_FRATIO+=("$(awk -v w="$T_WALL" -v f="$floor" 'BEGIN { printf "%.2f", w / f }')")
  C_WALL+=("$T_WALL"); C_CP+=("$cp"); C_OVH+=("$ovh"); C_PCT+=("$pct")
  C_HAND+=("$hand"); C_CREATE+=("$cre"); C_START+=("$sta"); C_TAIL+=("$tail_ms")
  printf '  run %d: apply %7.1f ms | critical path %d ms | overhead %6.1f ms = %5.1f %%\n' \
    "$r" "$T_WALL" "$cp" "$ovh" "$pct"
  printf '         floor (create call + start call -> ready, along the chain) %d ms: apply / floor = %s\n' "$floor" "${C_FRATIO[-1]}"
  printf '         overhead = berth launch+handoffs %d + docker create %d + docker start %d + tail (app ready -> exit) %d ms\n' \
    "$hand" "$cre" "$sta" "$tail_ms"
  printf '%s' "$detail" | sed '/^$/d; s/^/         /'
  printf '         api calls %s: %s\n' "$ncalls" "$breakdown"
done
printf '  median: apply %s ms | critical path %s ms | overhead %s ms = %s %%\n' \
  "$(median "${C_WALL[@]}")" "$(mediani "${C_CP[@]}")" "$(median "${C_OVH[@]}")" "$(median "${C_PCT[@]}")"
printf '  median: floor %s ms | apply / floor = %s (target: 1.10 or less)\n' \
  "$(mediani "${C_FLOOR[@]}")" "$(printf '%s\n' "${C_FRATIO[@]}" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')"
STATE3="$WORK/three-tier/state-$COLD_RUNS.db"

# ---------------------------------------------------------------------------
# No-op measurement (used by 2. and 3.)
# ---------------------------------------------------------------------------

# noop_bench KEY PROJECT STATE FILE: NOOP_RUNS no-op applies and plans. Results in
# R_<KEY>_<cmd>_{wall,cpu,cpuru,rss,calls,breakdown,ok} and R_<KEY>_untouched.
noop_bench() {
  local key="$1" project="$2" state="$3" file="$4" cmd i pre before after n breakdown calls ok first
  local -a walls cpus cpurus rsss totals
  before="$(project_ids "$project")"
  for cmd in apply plan; do
    walls=() cpus=() cpurus=() rsss=() totals=()
    ok=1 first=""
    for ((i = 1; i <= NOOP_RUNS; i++)); do
      pre="$WORK/noop-$key-$cmd-$i"
      if [[ "$cmd" == apply ]]; then
        run_timed "$pre" "$BERTH" --state "$state" apply -f "$file"
      else
        run_timed "$pre" "$BERTH" plan -f "$file"
      fi
      check_rc "$pre" "no-op $cmd ($key, run $i)"
      grep -q 'No changes\.' "$pre.out" || ok=0
      IFS=$'\t' read -r n breakdown < <(api_calls "$pre.err")
      if [[ -z "$first" ]]; then
        first="$breakdown"
      elif [[ "$breakdown" != "$first" && "$first" != "(varies)"* ]]; then
        first="(varies) $first"
      fi
      walls+=("$T_WALL"); cpus+=("$T_CPU"); cpurus+=("$T_CPU_RU"); rsss+=("$T_RSS"); totals+=("$n")
    done
    calls="$(minmax "${totals[@]}")"
    [[ "${calls%..*}" != "${calls#*..}" ]] || calls="${calls%..*}"
    printf -v "R_${key}_${cmd}_wall" '%s' "$(median "${walls[@]}")"
    printf -v "R_${key}_${cmd}_cpu" '%s' "$(mediani "${cpus[@]}")"
    printf -v "R_${key}_${cmd}_cpuru" '%s' "$(mediani "${cpurus[@]}")"
    printf -v "R_${key}_${cmd}_rss" '%s' "$(mediani "${rsss[@]}")"
    printf -v "R_${key}_${cmd}_calls" '%s' "$calls"
    printf -v "R_${key}_${cmd}_breakdown" '%s' "$first"
    printf -v "R_${key}_${cmd}_ok" '%s' "$ok"
    printf '  no-op %-5s x%d: wall median %s ms (range %s) | cpu user+sys median: /usr/bin/time %s ms, getrusage %s ms (range %s) | max RSS median %s KiB\n' \
      "$cmd" "$NOOP_RUNS" "$(median "${walls[@]}")" "$(minmax "${walls[@]}")" \
      "$(mediani "${cpus[@]}")" "$(mediani "${cpurus[@]}")" "$(minmax "${cpurus[@]}")" "$(mediani "${rsss[@]}")"
    printf '                   docker api calls per run: %s (%s)%s\n' "$calls" "$first" \
      "$([[ $ok == 1 ]] || echo ' | WARNING: output was not "No changes."')"
  done
  after="$(project_ids "$project")"
  if [[ "$before" == "$after" ]]; then
    printf -v "R_${key}_untouched" '%s' 1
  else
    printf -v "R_${key}_untouched" '%s' 0
    echo "  WARNING: the set of $project containers changed during the no-op runs"
  fi
}

echo
note "2. three-tier no-op apply / plan ($NOOP_RUNS runs each, BERTH_LOG=$BERTH_LOG)"
noop_bench t3 "$P3" "$STATE3" "$WORK/three-tier/berth.toml"
teardown_project "$P3"

# ---------------------------------------------------------------------------
# 3. 100 independent services
# ---------------------------------------------------------------------------

echo
note "3. $N100 independent services (READY_AFTER 0, http probe every 100ms, no host ports)"
STATE100="$WORK/hundred/state.db"
pre="$WORK/hundred/cold"
run_timed "$pre" "$BERTH" --state "$STATE100" apply -f "$WORK/hundred/berth.toml"
check_rc "$pre" "100-service cold apply"
H_COLD="$T_WALL" H_COLD_CPU="$T_CPU_RU" H_COLD_RSS="$T_RSS"
IFS=$'\t' read -r H_COLD_CALLS H_COLD_BREAKDOWN < <(api_calls "$pre.err")
mapfile -t ids < <(docker ps -aq --filter "label=berth.project=$P100")
running="$(docker ps -q --filter "label=berth.project=$P100" --filter status=running | wc -l)"
# Timeline relative to berth's launch: berth's calls (its log) and Docker's timestamps.
rel() { awk -v t0="$T_START_MS" 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "+%d..+%d ms", lo - t0, hi - t0; else printf "-" }'; }
first_call="$(strip_ansi <"$pre.err" | awk 'index($0, "docker_api") && !done { print $1; done = 1 }' | date -f - +%s%3N)"
tl_creates="$(call_times_ms "$pre.err" create_container | sort -n | rel)"
tl_starts="$(call_times_ms "$pre.err" start_container | sort -n | rel)"
tl_created="$(docker inspect -f '{{.Created}}' "${ids[@]}" | date -f - +%s%3N | sort -n | rel)"
tl_started="$(docker inspect -f '{{.State.StartedAt}}' "${ids[@]}" | date -f - +%s%3N | sort -n | rel)"
printf '  cold apply: %.1f ms | %d/%d containers running | berth cpu (getrusage) %s ms, max RSS %s KiB\n' \
  "$H_COLD" "$running" "$N100" "$H_COLD_CPU" "$H_COLD_RSS"
printf '              timeline from launch: first api call +%d ms; create calls %s; Docker Created %s;\n' \
  "$(( first_call - T_START_MS ))" "$tl_creates" "$tl_created"
printf '              start calls %s; Docker StartedAt %s; berth exit +%.0f ms\n' \
  "$tl_starts" "$tl_started" "$H_COLD"
printf '              docker api calls %s: %s\n' "$H_COLD_CALLS" "$H_COLD_BREAKDOWN"
noop_bench h100 "$P100" "$STATE100" "$WORK/hundred/berth.toml"
teardown_project "$P100"

T_BENCH1="$(now_us)"

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------

# Count of one call name in a breakdown string ("a=1 b=2").
count_of() { awk -v k="$2" 'BEGIN { n = 0 } { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) n = kv[2] } } END { print n }' <<<"$1"; }
verdict() { if [[ "$1" == 1 ]]; then echo PASS; else echo FAIL; fi; }
LINE="----------------------------------------------------------------------------------------------------------"

echo
echo "${LINE//-/=}"
echo " berth bench summary   ($BERTH_VERSION, docker $DOCKER_VERSION, $CPUS CPUs)"
echo "${LINE//-/=}"
printf ' %-40s %s\n' "scenario" "result"
echo "$LINE"
for ((r = 0; r < COLD_RUNS; r++)); do
  printf ' %-40s apply %7.1f ms   critical path %4d ms   overhead %6.1f ms = %5.1f %%\n' \
    "3-tier cold apply, run $((r + 1))" "${C_WALL[r]}" "${C_CP[r]}" "${C_OVH[r]}" "${C_PCT[r]}"
done
printf ' %-40s apply %7s ms   critical path %4s ms   overhead %6s ms = %5s %%\n' \
  "3-tier cold apply, median" "$(median "${C_WALL[@]}")" "$(mediani "${C_CP[@]}")" \
  "$(median "${C_OVH[@]}")" "$(median "${C_PCT[@]}")"
printf ' %-40s berth launch+handoffs %s + docker create %s + docker start %s + tail %s ms\n' \
  "  overhead split (median of each part)" "$(mediani "${C_HAND[@]}")" "$(mediani "${C_CREATE[@]}")" \
  "$(mediani "${C_START[@]}")" "$(mediani "${C_TAIL[@]}")"
printf ' %-40s %-7s %-10s %-16s %-10s %s\n' "no-op (median of $NOOP_RUNS)" "" "wall ms" "cpu ms rusage/time" "rss KiB" "docker api calls"
for key in t3 h100; do
  label="3-tier"; [[ "$key" == h100 ]] && label="$N100 services"
  for cmd in apply plan; do
    w="R_${key}_${cmd}_wall" c="R_${key}_${cmd}_cpu" cr="R_${key}_${cmd}_cpuru" m="R_${key}_${cmd}_rss"
    n="R_${key}_${cmd}_calls" b="R_${key}_${cmd}_breakdown"
    printf ' %-40s %-7s %-10s %-16s %-10s %s (%s)\n' "  $label" "$cmd" "${!w}" "${!cr} / ${!c}" "${!m}" "${!n}" "${!b}"
  done
done
printf ' %-40s apply %.1f ms   berth cpu %s ms   rss %s KiB\n' "$N100 services cold apply" "$H_COLD" "$H_COLD_CPU" "$H_COLD_RSS"
printf ' %-40s %s (%s)\n' "  docker api calls" "$H_COLD_CALLS" "$H_COLD_BREAKDOWN"
echo "$LINE"
echo " targets, $N100-service no-op:"
for cmd in apply plan; do
  n="R_h100_${cmd}_calls" b="R_h100_${cmd}_breakdown" cr="R_h100_${cmd}_cpuru" ok="R_h100_${cmd}_ok"
  lists="$(count_of "${!b}" list_containers)"
  inspects="$(count_of "${!b}" inspect_container)"
  printf '   %-5s one list call: %s (list_containers=%s) | no per-container inspect: %s (inspect_container=%s) | cpu < 100 ms: %s (%s ms) | "No changes.": %s\n' \
    "$cmd" "$(verdict "$([[ $lists == 1 ]] && echo 1)")" "$lists" \
    "$(verdict "$([[ $inspects == 0 ]] && echo 1)")" "$inspects" \
    "$(verdict "$(awk -v c="${!cr}" 'BEGIN { print (c < 100) }')")" "${!cr}" "$(verdict "${!ok}")"
done
printf '   containers left untouched by the no-op runs: 3-tier %s, %d services %s\n' \
  "$(verdict "$R_t3_untouched")" "$N100" "$(verdict "$R_h100_untouched")"
echo "$LINE"
cat <<EOF
 notes: critical path = sum over db, cache, app of (fixture event=ready ts_ms - event=start ts_ms);
        overhead = apply wall - critical path. launch+handoffs = berth launch -> db start call, and
        previous tier's ready -> next start call (probe detection + berth); docker create = the create
        calls' durations (cache and app made ahead, off the path); docker start = start call -> fixture
        event=start; tail = app ready -> exit.
        api calls = stderr lines containing docker_api under BERTH_LOG=$BERTH_LOG (bollard's API
        version negotiation at connect is not logged). cpu: getrusage of the child via bash 'times'
        (1 ms resolution, includes /usr/bin/time's own share) / /usr/bin/time %U+%S (10 ms resolution).
        Each cold 3-tier run starts with no state db, containers, network or volume of $P3.
EOF
awk -v a="$T_BENCH0" -v b="$T_BENCH1" 'BEGIN { printf " total bench time (incl. build): %.0f s\n", (b - a) / 1e6 }'
