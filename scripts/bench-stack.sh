#!/usr/bin/env bash
# Cold converge of the Local Assistant stack, side by side in one run:
#
#   berth     target/release/berth apply -f desired-state/local-assistant.toml --exclude grafana
#             (the file as shipped: probes every 250 ms, [rollout] min_healthy_time)
#   compose   docker-compose -p benchcompose up -d with bench/compose/docker-compose.yml
#             (same images, ports, env, binds; depends_on condition: service_healthy;
#             in-container healthchecks equivalent to berth's probes), then waiting until
#             all four containers report healthy
#   runbook   the runbook's "Deployment Steps" with its fixed sleeps, same compose file:
#             up -d postgres redis; sleep 15; up -d chroma; sleep 10; up -d prometheus;
#             then waiting until all four are healthy (the runbook's health check).
#             With this compose file each `up -d` also waits for its service_healthy
#             dependencies, so the sleeps are lower bounds, never a premature start.
#
# The stack: the four locally built services postgres (berth-postgres:15), redis
# (berth-redis:7), chroma (berth-chroma:latest, after postgres+redis) and prometheus
# (berth-prometheus:2, after chroma). grafana and jaeger are left out (no image source:
# berth runs with --exclude grafana; jaeger is behind a profile).
#
# Measured per run: wall seconds from the command's start until all four services are
# healthy. berth: until `berth apply` exits 0 (it does only when every gate passed; each
# gate holds its service healthy for min_healthy_time before dependents start or the
# apply ends). compose/runbook: until `docker ps` shows all four containers (healthy)
# (`docker ps` polled every 100 ms; a poll takes ~30-50 ms, so up to ~0.15 s of
# detection lag, against berth's own 250 ms probe interval).
# Also recorded: when each container started (Docker's State.StartedAt) relative to the
# command's start, and when compose's `up -d` returned.
#
# Every run is cold: no containers or networks of the project, a fresh temp root with
# empty data dirs (created with the desired state's [preflight.data_dirs] modes; see
# "Data dirs" below), a fresh berth state db. Image layers and the page cache are warm:
# one untimed compose warm-up round runs first (WARMUP=0 skips it). The contenders'
# order rotates from round to round.
#
# Probe cadence. berth: the file as shipped, every service probed every 250 ms (before its
# first pass berth probes at 25 ms, doubling up to the interval; see src/gate.rs), each
# service then held healthy for min_healthy_time (1 s) before the apply ends. compose: a
# Docker HEALTHCHECK on every service at COMPOSE_HEALTH_INTERVAL (space-separated list,
# default "250ms 1s"). The HEADLINE figure is compose at berth's own probe interval (the
# entry equal to it, 250ms: Docker accepts it; Docker 20.10 has no start_interval, so the
# first check runs one interval after the start). 1s, the most favourable setting a
# compose user would realistically pick, is the second figure. The images' own
# HEALTHCHECKs use 5s (postgres, redis, prometheus) and 10s (chroma). compose runs once
# per interval per round; each contender's cadence is printed beside its result.
# The runbook runs at the headline cadence only (its fixed sleeps dominate it).
#
# The min_healthy_time variant (BERTH_VARIANT_MIN_HEALTHY, default "0s"): berth on a copy
# of the file with that window, reported beside the shipped file, never in the headline.
#
# berth's own timeline: after each berth run, the per-service timings berth recorded in
# its state store (`berth history --json`: create asked/made, started, first probe pass,
# window closed; the migrations step's begin and end), in seconds after the command's
# start, medians over rounds.
#
# Data dirs: as in the desired state (data 755; postgres, redis, chroma 700; prometheus
# 755; grafana 755 owned 472:472; logs backups screenshots documents 755). Created before
# the clock starts, identically for all contenders. The current berth-redis and
# berth-prometheus images start as root and chown their data dir in the entrypoint; an
# older build that runs as a non-root USER gets data/redis and data/prometheus chowned
# to that uid:gid here (prometheus exits at once on a root-owned /prometheus).
# The env file is .env.example (mode 600). config/ is the repository's config/ (symlinked)
# when config/prometheus.yml and config/alerts.yml exist, else a minimal generated one
# (the report says which).
#
# Usage: scripts/bench-stack.sh        (from any cwd; needs docker, docker-compose, cargo)
# Env:
#   ROUNDS=3                      rounds (each round runs every contender once)
#   COMPOSE_HEALTH_INTERVAL="250ms 1s"
#                                 compose healthcheck interval(s); the headline is the
#                                 entry equal to berth's probe interval (else the first)
#   BERTH_VARIANT_MIN_HEALTHY=0s  also run berth on a copy whose [rollout]
#                                 min_healthy_time is set to this (contender
#                                 "berth-mht<value>"; reported beside, never in the
#                                 headline ratios, which use the file as shipped);
#                                 set it empty to leave the variant out
#   RUNBOOK=1                     0 leaves the runbook out
#   WARMUP=1                      one untimed compose round first
#   BENCH_RUN_TIMEOUT=300         seconds a run may take before it counts as failed
#   BENCH_OUT=FILE                also write the report (table + ratios) to FILE
#   BENCH_SKIP_BUILD=1            do not run `cargo build --release`
#   BERTH=PATH                    the berth binary (default target/release/berth; a
#                                 private copy runs)
#   BENCH_KEEP_TMP=1              keep the temp dir (per-run roots and logs)
#   BENCH_SKIP_BERTH=1            leave berth out (to try the compose side alone)
# Runs as root or as a docker-group user: chown/rm of the data dirs then go through a
# throwaway debian:bookworm-slim container.
#
# Everything created belongs to the projects benchberth (label berth.project) and
# benchcompose / benchrunbook (label com.docker.compose.project), on host ports
# 25433 (postgres), 26380 (redis), 28002 (chroma), 29091 (prometheus). Only containers,
# networks and volumes carrying those labels are removed, between runs and on exit.
set -euo pipefail
export LC_ALL=C

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BERTH="${BERTH:-$REPO_ROOT/target/release/berth}"
[[ "$BERTH" == /* ]] || BERTH="$PWD/$BERTH"
STATE_FILE="$REPO_ROOT/desired-state/local-assistant.toml"
COMPOSE_FILE="$REPO_ROOT/bench/compose/docker-compose.yml"
ENV_EXAMPLE="$REPO_ROOT/.env.example"
LOCK_FILE="${TMPDIR:-/tmp}/berth-bench-stack.lock"

ROUNDS="${ROUNDS:-3}"
read -r -a INTERVALS <<<"${COMPOSE_HEALTH_INTERVAL:-250ms 1s}"
BERTH_VARIANT_MIN_HEALTHY="${BERTH_VARIANT_MIN_HEALTHY-0s}"
RUNBOOK="${RUNBOOK:-1}"
WARMUP="${WARMUP:-1}"
RUN_TIMEOUT="${BENCH_RUN_TIMEOUT:-300}"

P_BERTH=benchberth
P_COMPOSE=benchcompose
P_RUNBOOK=benchrunbook
export POSTGRES_HOST_PORT=25433 REDIS_HOST_PORT=26380 CHROMA_HOST_PORT=28002 PROMETHEUS_HOST_PORT=29091
SERVICES=(postgres redis chroma prometheus)

die() { echo "bench-stack: error: $*" >&2; exit 1; }
note() { echo "==> $*" >&2; }

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
((${#INTERVALS[@]})) || die "COMPOSE_HEALTH_INTERVAL is empty"
for iv in "${INTERVALS[@]}"; do
  [[ "$iv" =~ ^[0-9]+(ms|s|m)$ ]] || die "bad COMPOSE_HEALTH_INTERVAL entry: $iv"
done
if [[ -n "$BERTH_VARIANT_MIN_HEALTHY" && ! "$BERTH_VARIANT_MIN_HEALTHY" =~ ^[0-9]+(ms|s)$ ]]; then
  die "bad BERTH_VARIANT_MIN_HEALTHY: $BERTH_VARIANT_MIN_HEALTHY"
fi
for tool in docker docker-compose awk sed sort flock date; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
[[ -f "$STATE_FILE" ]] || die "$STATE_FILE not found"
[[ -f "$COMPOSE_FILE" ]] || die "$COMPOSE_FILE not found"
[[ -f "$ENV_EXAMPLE" ]] || die "$ENV_EXAMPLE not found"

# Interval -> milliseconds ("250ms", "1s", "1m").
to_ms() {
  case "$1" in
    *ms) echo "${1%ms}" ;;
    *s) echo $(( ${1%s} * 1000 )) ;;
    *m) echo $(( ${1%m} * 60000 )) ;;
  esac
}
# berth's probe interval per service of the stack, from the file as shipped: "svc interval".
berth_intervals() {
  awk -v want="${SERVICES[*]}" '
    BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) ok[w[i]] = 1 }
    /^\[services\./ { svc = $0; sub(/^\[services\./, "", svc); sub(/\].*/, "", svc); next }
    /^\[/ { svc = ""; next }
    svc != "" && ok[svc] && /^health[[:space:]]*=/ && match($0, /interval[[:space:]]*=[[:space:]]*"[^"]*"/) {
      m = substr($0, RSTART, RLENGTH); gsub(/^interval[[:space:]]*=[[:space:]]*"|"$/, "", m); print svc, m
    }' "$STATE_FILE"
}
BERTH_IV=""
while read -r svc iv; do
  [[ -z "$BERTH_IV" || "$BERTH_IV" == "$iv" ]] || BERTH_IV="mixed"
  [[ "$BERTH_IV" == mixed ]] || BERTH_IV="$iv"
done < <(berth_intervals)
[[ -n "$BERTH_IV" ]] || BERTH_IV="250ms"   # gate.rs's default when a service sets none
# The headline: compose at berth's own probe interval when the list has it, else the first.
HEADLINE_IV="${INTERVALS[0]}"
HEADLINE_NOTE="NOT berth's cadence ($BERTH_IV): add $BERTH_IV to COMPOSE_HEALTH_INTERVAL"
if [[ "$BERTH_IV" != mixed ]]; then
  for iv in "${INTERVALS[@]}"; do
    if [[ "$(to_ms "$iv")" == "$(to_ms "$BERTH_IV")" ]]; then HEADLINE_IV="$iv"; HEADLINE_NOTE="equal cadence"; break; fi
  done
fi
# The intervals, headline first.
ORDERED_IVS=("$HEADLINE_IV")
for iv in "${INTERVALS[@]}"; do [[ "$iv" == "$HEADLINE_IV" ]] || ORDERED_IVS+=("$iv"); done
WINDOW_SHIPPED="$(sed -n -E 's/^min_healthy_time[[:space:]]*=[[:space:]]*"([^"]*)".*/\1/p' "$STATE_FILE" | head -n1)"
# What each contender probes how often, printed beside its result.
cadence() {
  case "$1" in
    berth) echo "probe every $BERTH_IV (25ms doubling to it until the 1st pass), window ${WINDOW_SHIPPED:-?}" ;;
    berth-mht*) echo "probe every $BERTH_IV (25ms doubling to it until the 1st pass), window ${1#berth-mht}" ;;
    compose@*) echo "HEALTHCHECK every ${1#compose@} (1st check ${1#compose@} after start)" ;;
    runbook@*) echo "sleeps 15s+10s, HEALTHCHECK every ${1#runbook@}" ;;
  esac
}

# One bench-stack at a time on this host: the projects and ports are fixed.
exec 9>"$LOCK_FILE"
flock -n 9 || die "another scripts/bench-stack.sh holds $LOCK_FILE"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-stack.XXXXXX")"
chmod 755 "$WORK"

# Remove the containers (with their anonymous volumes), networks and volumes carrying
# label KEY=PROJECT. Nothing else is touched.
teardown() {
  local key="$1" p="$2" ids
  ids="$(docker ps -aq --filter "label=$key=$p" 2>/dev/null || true)"
  # shellcheck disable=SC2086
  [[ -z "$ids" ]] || docker rm -f -v $ids >/dev/null 2>&1 || true
  ids="$(docker network ls -q --filter "label=$key=$p" 2>/dev/null || true)"
  # shellcheck disable=SC2086
  [[ -z "$ids" ]] || docker network rm $ids >/dev/null 2>&1 || true
  ids="$(docker volume ls -q --filter "label=$key=$p" 2>/dev/null || true)"
  # shellcheck disable=SC2086
  [[ -z "$ids" ]] || docker volume rm $ids >/dev/null 2>&1 || true
}
teardown_all() {
  teardown berth.project "$P_BERTH"
  teardown com.docker.compose.project "$P_COMPOSE"
  teardown com.docker.compose.project "$P_RUNBOOK"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  note "cleanup: removing containers/networks/volumes of $P_BERTH, $P_COMPOSE, $P_RUNBOOK"
  teardown_all
  if [[ "${BENCH_KEEP_TMP:-0}" == 1 ]]; then
    note "kept $WORK"
  else
    # Data dirs hold files owned by container uids; we are their creator (root or not,
    # rm may need to chmod first: postgres's dir is 700).
    as_root rm -rf "$WORK/runs" 2>/dev/null || true
    rm -rf "$WORK" 2>/dev/null || note "could not remove all of $WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

now_us() { local t="$EPOCHREALTIME"; echo "${t/./}"; }
. "$REPO_ROOT/scripts/bench-lib.sh"   # now, secs, median, spread
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# Docker RFC 3339 timestamp -> unix microseconds.
ts_us() { local ns; ns="$(date -d "$1" +%s%N)"; echo $(( ns / 1000 )); }

# Run a command as root: directly, or in a throwaway container that sees $WORK.
as_root() {
  if ((EUID == 0)); then
    "$@"
  else
    docker run --rm --user 0 --network none -v "$WORK:$WORK" --entrypoint "$1" debian:bookworm-slim "${@:2}"
  fi
}
# A run's root is removed after the run (kept with BENCH_KEEP_TMP=1).
drop_root() { [[ "${BENCH_KEEP_TMP:-0}" == 1 ]] || as_root rm -rf "$1"; }

# uid:gid an image's default user runs as.
image_user() { docker run --rm --entrypoint id "$1" -u; }
image_group() { docker run --rm --entrypoint id "$1" -g; }

# data/... dirs and their modes, from the desired state's [preflight.data_dirs].
DATA_DIRS=(
  "data 755" "data/postgres 700" "data/redis 700" "data/chroma 700" "data/prometheus 755"
  "data/grafana 755" "data/logs 755" "data/backups 755" "data/screenshots 755" "data/documents 755"
)

CONFIG_NOTE=""
# A fresh root for one run: desired-state/, compose/, data/, config, migrations, .env.
make_root() {
  local root="$1" mht="${2:-}" d m
  mkdir -p "$root/desired-state" "$root/compose"
  cp "$STATE_FILE" "$root/desired-state/local-assistant.toml"
  ln -s "$REPO_ROOT/migrations" "$root/migrations"
  if [[ -n "$mht" ]]; then
    sed -i -E "s/^(min_healthy_time[[:space:]]*=[[:space:]]*)\"[^\"]*\"/\\1\"$mht\"/" \
      "$root/desired-state/local-assistant.toml"
    grep -q "^min_healthy_time = \"$mht\"" "$root/desired-state/local-assistant.toml" ||
      die "could not set min_healthy_time in the copy"
  fi
  cp "$COMPOSE_FILE" "$root/compose/docker-compose.yml"
  install -m 600 "$ENV_EXAMPLE" "$root/.env"
  for d in "${DATA_DIRS[@]}"; do
    m="${d##* }"; d="${d% *}"
    mkdir -p "$root/$d"
    chmod "$m" "$root/$d"
  done
  as_root chown 472:472 "$root/data/grafana"
  [[ "$REDIS_UG" == 0:* ]] || as_root chown "$REDIS_UG" "$root/data/redis"
  [[ "$PROM_UG" == 0:* ]] || as_root chown "$PROM_UG" "$root/data/prometheus"
  if [[ -n "$REPO_CONFIG" ]]; then
    ln -s "$REPO_ROOT/config" "$root/config"
  else
    cp -r "$WORK/config-minimal" "$root/config"
  fi
}

# Start offsets of the project's containers (seconds after T0_US), as
# "postgres=1.23 redis=... chroma=... prometheus=...".
start_offsets() {
  local key="$1" p="$2" t0="$3" line svc ts out=""
  declare -A st=()
  while read -r svc ts; do
    [[ -n "$svc" ]] || continue
    st[$svc]="$(secs "$t0" "$(ts_us "$ts")")"
  done < <(docker ps -aq --filter "label=$key=$p" | xargs -r docker inspect \
    -f "{{index .Config.Labels \"$SVC_LABEL\"}} {{.State.StartedAt}}")
  for svc in "${SERVICES[@]}"; do out+="$svc=${st[$svc]:-?} "; done
  echo "${out% }"
}

# Wait until all four containers of a compose project are healthy. Fails on an
# unhealthy or exited container, or after RUN_TIMEOUT seconds from T0.
wait_healthy() {
  local p="$1" t0="$2" st n
  while :; do
    # One CLI call per poll: "Up 3 seconds (healthy)", "(health: starting)", "Exited (1) ...".
    st="$(docker ps -a --filter "label=com.docker.compose.project=$p" --format '{{.Status}}')"
    n="$(grep -c '(healthy)' <<<"$st" || true)"
    if ((n == ${#SERVICES[@]})); then return 0; fi
    if grep -qE '\(unhealthy\)|^Exited|^Dead|^Restarting' <<<"$st"; then
      echo "bench-stack: $p: a container is unhealthy, exited or restarting" >&2
      return 1
    fi
    if (( $(now_us) - t0 > RUN_TIMEOUT * 1000000 )); then
      echo "bench-stack: $p: not all healthy after ${RUN_TIMEOUT}s" >&2
      return 1
    fi
    sleep 0.1
  done
}

show_failure() {
  local log="$1" key="$2" p="$3" c
  echo "bench-stack: output of the failed run ($log):" >&2
  sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -n 40 | sed 's/^/    /' >&2
  docker ps -a --filter "label=$key=$p" --format '    {{.Names}}  {{.Status}}' >&2
  for c in $(docker ps -aq --filter "label=$key=$p"); do
    echo "    --- logs $(docker inspect -f '{{.Name}}' "$c") (last 15 lines)" >&2
    docker logs --tail 15 "$c" 2>&1 | sed 's/^/    /' >&2
  done
}

# Results: R_WALL[contender] = "s1 s2 ...", R_UP[contender] (compose up -d returned),
# R_START[contender,round] = start offsets, R_TL[contender,round] = berth's own timeline.
declare -A R_WALL=() R_UP=() R_START=() R_TL=()

# berth's own record of the converge (the newest generation in its state store), as
# "KEY=SECONDS ..." after T0: generation.recorded/finished, SERVICE.create (create call
# made ahead asked), .made (it returned), .begin (its level began for it: the start call
# is asked next), .started (start call returned), .pass1 (first probe pass), .closed
# (stability window closed), migrations.begin/.end.
berth_timeline() { # STATE_DB T0_US
  "$BERTH" --state "$1" history --json 2>/dev/null | python3 -c '
import json, sys
t0 = int(sys.argv[1]) / 1000.0
gens = json.load(sys.stdin)
g = gens[-1] if gens else {}
out = []
def put(key, ms):
    if isinstance(ms, (int, float)):
        out.append("%s=%.3f" % (key, (ms - t0) / 1000.0))
put("generation.recorded", g.get("started_ms"))
put("generation.finished", g.get("finished_ms"))
names = (("create_ms", "create"), ("created_ms", "made"), ("started_ms", "started"),
         ("healthy_ms", "pass1"), ("gate_passed_ms", "closed"), ("begin_ms", "begin"), ("end_ms", "end"))
for svc, t in sorted((g.get("timings") or {}).items()):
    for k, name in names:
        if svc == "migrations" or name != "end":
            put(svc + "." + name, t.get(k))
print(" ".join(out))' "$2" || true
}

# run_berth NAME ROUND [MIN_HEALTHY]
run_berth() {
  local name="$1" r="$2" mht="${3:-}" root log t0 t1 rc=0
  root="$WORK/runs/$name-r$r"; log="$WORK/logs/$name-r$r.log"
  teardown berth.project "$P_BERTH"
  make_root "$root" "$mht"
  SVC_LABEL=berth.service
  t0="$(now_us)"
  BERTH_PROJECT="$P_BERTH" "$BERTH" --state "$root/state.db" \
    apply -f "$root/desired-state/local-assistant.toml" --exclude grafana >"$log" 2>&1 </dev/null || rc=$?
  t1="$(now_us)"
  if ((rc != 0)); then
    show_failure "$log" berth.project "$P_BERTH"
    die "$name round $r: berth apply exited $rc"
  fi
  local running
  running="$(docker ps -q --filter "label=berth.project=$P_BERTH" --filter status=running | wc -l)"
  ((running == ${#SERVICES[@]})) || { show_failure "$log" berth.project "$P_BERTH"; die "$name round $r: $running of ${#SERVICES[@]} containers running after apply"; }
  R_WALL[$name]+="$(secs "$t0" "$t1") "
  R_START[$name,$r]="$(start_offsets berth.project "$P_BERTH" "$t0")"
  R_TL[$name,$r]="$(berth_timeline "$root/state.db" "$t0")"
  note "$name round $r: $(secs "$t0" "$t1") s  (${R_START[$name,$r]})"
  note "$name round $r timeline: ${R_TL[$name,$r]}"
  teardown berth.project "$P_BERTH"
  drop_root "$root"
}

# run_compose NAME ROUND INTERVAL [timed=1]
run_compose() {
  local name="$1" r="$2" iv="$3" timed="${4:-1}" root log t0 tup t1 rc=0
  root="$WORK/runs/$name-r$r"; log="$WORK/logs/$name-r$r.log"
  teardown com.docker.compose.project "$P_COMPOSE"
  make_root "$root"
  SVC_LABEL=com.docker.compose.service
  t0="$(now_us)"
  (cd "$root/compose" && COMPOSE_HEALTH_INTERVAL="$iv" \
    docker-compose -p "$P_COMPOSE" --env-file "$root/.env" up -d) >"$log" 2>&1 </dev/null || rc=$?
  tup="$(now_us)"
  if ((rc == 0)); then wait_healthy "$P_COMPOSE" "$t0" 2>>"$log" || rc=$?; fi
  t1="$(now_us)"
  if ((rc != 0)); then
    show_failure "$log" com.docker.compose.project "$P_COMPOSE"
    die "$name round $r: failed"
  fi
  if ((timed)); then
    R_WALL[$name]+="$(secs "$t0" "$t1") "
    R_UP[$name]+="$(secs "$t0" "$tup") "
    R_START[$name,$r]="$(start_offsets com.docker.compose.project "$P_COMPOSE" "$t0")"
    note "$name round $r: $(secs "$t0" "$t1") s, up -d returned at $(secs "$t0" "$tup") s  (${R_START[$name,$r]})"
  else
    note "$name (warm-up, untimed): $(secs "$t0" "$t1") s"
  fi
  teardown com.docker.compose.project "$P_COMPOSE"
  drop_root "$root"
}

# run_runbook NAME ROUND INTERVAL
run_runbook() {
  local name="$1" r="$2" iv="$3" root log t0 t1 rc=0
  root="$WORK/runs/$name-r$r"; log="$WORK/logs/$name-r$r.log"
  teardown com.docker.compose.project "$P_RUNBOOK"
  make_root "$root"
  SVC_LABEL=com.docker.compose.service
  t0="$(now_us)"
  (
    set -e
    cd "$root/compose"
    export COMPOSE_HEALTH_INTERVAL="$iv"
    dc() { docker-compose -p "$P_RUNBOOK" --env-file "$root/.env" "$@"; }
    # Runbook "Deployment Steps", steps 4 and 6 (step 5, migrations, has nothing to run here).
    dc up -d postgres redis
    sleep 15
    dc up -d chroma
    sleep 10
    dc up -d prometheus   # runbook: `up -d prometheus grafana`; grafana is left out
  ) >"$log" 2>&1 </dev/null || rc=$?
  if ((rc == 0)); then wait_healthy "$P_RUNBOOK" "$t0" 2>>"$log" || rc=$?; fi
  t1="$(now_us)"
  if ((rc != 0)); then
    show_failure "$log" com.docker.compose.project "$P_RUNBOOK"
    die "$name round $r: failed"
  fi
  R_WALL[$name]+="$(secs "$t0" "$t1") "
  R_START[$name,$r]="$(start_offsets com.docker.compose.project "$P_RUNBOOK" "$t0")"
  note "$name round $r: $(secs "$t0" "$t1") s  (${R_START[$name,$r]})"
  teardown com.docker.compose.project "$P_RUNBOOK"
  drop_root "$root"
}

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

cd "$REPO_ROOT"
mkdir -p "$WORK/runs" "$WORK/logs"

for img in berth-postgres:15 berth-redis:7 berth-chroma:latest berth-prometheus:2; do
  docker image inspect "$img" >/dev/null 2>&1 || die "image $img missing: run scripts/build-images.sh"
done

SKIP_BERTH="${BENCH_SKIP_BERTH:-0}"
if [[ "$SKIP_BERTH" != 1 ]]; then
  if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    note "cargo build --release"
    cargo build --release --quiet || die "cargo build --release failed"
  fi
  [[ -x "$BERTH" ]] || die "$BERTH not found (build failed?)"
  # Run a private copy: a concurrent `cargo build` must not swap the binary mid-bench.
  BERTH_INFO="$BERTH built $(date -u -r "$BERTH" +%FT%TZ), sha256 $(sha256sum "$BERTH" | cut -c1-12)"
  cp "$BERTH" "$WORK/berth"
  BERTH="$WORK/berth"
fi

REDIS_UG="$(image_user berth-redis:7):$(image_group berth-redis:7)"
PROM_UG="$(image_user berth-prometheus:2):$(image_group berth-prometheus:2)"

REPO_CONFIG=""
if [[ -f "$REPO_ROOT/config/prometheus.yml" && -f "$REPO_ROOT/config/alerts.yml" ]]; then
  REPO_CONFIG=1
  CONFIG_NOTE="config/: the repository's config/ (symlinked)"
else
  mkdir -p "$WORK/config-minimal"
  cat >"$WORK/config-minimal/prometheus.yml" <<'EOF'
# Minimal stand-in written by scripts/bench-stack.sh (the repository has no config/ yet).
global:
  scrape_interval: 15s
  evaluation_interval: 15s
rule_files:
  - /etc/prometheus/alerts.yml
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["localhost:9090"]
EOF
  printf '# Minimal stand-in written by scripts/bench-stack.sh.\ngroups: []\n' \
    >"$WORK/config-minimal/alerts.yml"
  chmod -R a+rX "$WORK/config-minimal"
  CONFIG_NOTE="config/: TEMPORARY MINIMAL prometheus.yml/alerts.yml (repository config/ missing)"
fi

# Host ports free? (A person's stack, or a leftover of ours.)
teardown_all
for port in "$POSTGRES_HOST_PORT" "$REDIS_HOST_PORT" "$CHROMA_HOST_PORT" "$PROMETHEUS_HOST_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "host port $port is in use"
  fi
done

CONTENDERS=()
if [[ "$SKIP_BERTH" != 1 ]]; then
  CONTENDERS+=(berth)
  [[ -z "$BERTH_VARIANT_MIN_HEALTHY" ]] || CONTENDERS+=("berth-mht$BERTH_VARIANT_MIN_HEALTHY")
fi
for iv in "${ORDERED_IVS[@]}"; do CONTENDERS+=("compose@$iv"); done
[[ "$RUNBOOK" == 0 ]] || CONTENDERS+=("runbook@$HEADLINE_IV")

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
OTHERS="$(docker ps -q | wc -l)"
note "contenders: ${CONTENDERS[*]}; rounds: $ROUNDS; load: $LOAD_BEFORE; other running containers: $OTHERS"
note "$CONFIG_NOTE"

if [[ "$WARMUP" == 1 ]]; then
  run_compose warmup 0 "$HEADLINE_IV" 0
fi

# ---------------------------------------------------------------------------
# Rounds
# ---------------------------------------------------------------------------

run_contender() {
  local c="$1" r="$2"
  case "$c" in
    berth) run_berth "$c" "$r" ;;
    berth-mht*) run_berth "$c" "$r" "$BERTH_VARIANT_MIN_HEALTHY" ;;
    compose@*) run_compose "$c" "$r" "${c#compose@}" ;;
    runbook@*) run_runbook "$c" "$r" "${c#runbook@}" ;;
  esac
}

n=${#CONTENDERS[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < n; i++)); do
    run_contender "${CONTENDERS[$(( (i + r - 1) % n ))]}" "$r"
  done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

report() {
  local c r w med hdr
  echo "berth bench-stack: cold converge to all-healthy, 4 services (postgres, redis, chroma, prometheus)"
  echo "date: $(date -u +%FT%TZ)  host: $(nproc) CPUs  docker $(docker version -f '{{.Server.Version}}' 2>/dev/null)  $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"
  echo "load average before: $LOAD_BEFORE  after: $LOAD_AFTER  other running containers at start: $OTHERS"
  echo "berth: desired-state/local-assistant.toml as shipped ($(grep -E '^(min_healthy_time|healthy_deadline)' "$STATE_FILE" | tr -s ' ' | paste -sd, -); probes every $BERTH_IV)"
  echo "berth binary: ${BERTH_INFO:-not run}"
  echo "compose/runbook: bench/compose/docker-compose.yml, healthcheck interval as named (@interval)"
  echo "headline: compose@$HEADLINE_IV ($HEADLINE_NOTE); second figure(s): the other intervals"
  echo "$CONFIG_NOTE"
  echo
  hdr="$(printf '%-16s' contender)"
  for ((r = 1; r <= ROUNDS; r++)); do hdr+="$(printf ' %8s' "r$r")"; done
  hdr+="$(printf ' %8s  %s' median 'probe cadence; notes')"
  echo "$hdr"
  for c in "${CONTENDERS[@]}"; do
    # shellcheck disable=SC2086
    set -- ${R_WALL[$c]}
    w="$(printf '%-16s' "$c")"
    for r in "$@"; do w+="$(printf ' %8s' "$r")"; done
    med="$(median "$@")"
    w+="$(printf ' %8s' "$med")"
    w+="  $(cadence "$c")"
    if [[ -n "${R_UP[$c]:-}" ]]; then
      # shellcheck disable=SC2086
      w+="; up -d returned at median $(median ${R_UP[$c]}) s"
    fi
    case "$c" in berth-mht*) w+="; VARIANT, not the shipped file" ;; esac
    echo "$w"
  done
  echo
  if [[ -z "${R_WALL[berth]:-}" ]]; then
    echo "berth: not run (BENCH_SKIP_BERTH=1): no ratios"
    echo
    start_table
    return
  fi
  # shellcheck disable=SC2086
  local mb; mb="$(median ${R_WALL[berth]})"
  local iv mc rc what
  for iv in "${ORDERED_IVS[@]}"; do
    # shellcheck disable=SC2086
    mc="$(median ${R_WALL[compose@$iv]})"
    rc="$(ratio "$mb" "$mc")"
    if [[ "$iv" == "$HEADLINE_IV" ]]; then
      what="HEADLINE ($HEADLINE_NOTE), target <= 1.00: $(awk -v x="$rc" 'BEGIN { print (x + 0 <= 1.0 ? "met" : "NOT met") }')"
    else
      what="second figure"
    fi
    printf '%-28s = %s  %s; berth %s | compose %s\n' "berth / compose@$iv" "$rc" "$what" \
      "$(cadence berth)" "$(cadence "compose@$iv")"
  done
  if [[ -n "$BERTH_VARIANT_MIN_HEALTHY" ]]; then
    local v="berth-mht$BERTH_VARIANT_MIN_HEALTHY" mv
    # shellcheck disable=SC2086
    mv="$(median ${R_WALL[$v]})"
    for iv in "${ORDERED_IVS[@]}"; do
      # shellcheck disable=SC2086
      printf '%-28s = %s  variant beside it: min_healthy_time %s | compose %s\n' "$v / compose@$iv" \
        "$(ratio "$mv" "$(median ${R_WALL[compose@$iv]})")" "$BERTH_VARIANT_MIN_HEALTHY" "$(cadence "compose@$iv")"
    done
  fi
  if [[ -n "${R_WALL[runbook@$HEADLINE_IV]:-}" ]]; then
    # shellcheck disable=SC2086
    printf '%-28s = %s\n' "berth / runbook@$HEADLINE_IV" "$(ratio "$mb" "$(median ${R_WALL[runbook@$HEADLINE_IV]})")"
  fi
  echo
  start_table
  echo
  timeline_table
}

start_table() {
  local c r w s vals k
  echo "container start offsets (the engine's State.StartedAt), s after the command started (median over rounds):"
  printf '%-16s %9s %9s %9s %11s %12s\n' contender postgres redis chroma prometheus all-healthy
  for c in "${CONTENDERS[@]}"; do
    w="$(printf '%-16s' "$c")"
    for s in "${SERVICES[@]}"; do
      vals=()
      for ((r = 1; r <= ROUNDS; r++)); do
        for k in ${R_START[$c,$r]}; do
          if [[ "${k%%=*}" == "$s" ]]; then vals+=("${k#*=}"); fi
        done
      done
      w+="$(printf ' %9s' "$(median "${vals[@]}")")"
      if [[ "$s" == prometheus ]]; then w+="  "; fi
    done
    # shellcheck disable=SC2086
    w+="$(printf ' %12s' "$(median ${R_WALL[$c]})")"
    echo "$w"
  done
}

# Median over rounds of one key of berth's timeline ("-" when never recorded).
tl_median() { # CONTENDER KEY
  local r k vals=()
  for ((r = 1; r <= ROUNDS; r++)); do
    for k in ${R_TL[$1,$r]:-}; do
      if [[ "${k%%=*}" == "$2" ]]; then vals+=("${k#*=}"); fi
    done
  done
  if ((${#vals[@]})); then median "${vals[@]}"; else echo -; fi
}

timeline_table() {
  local c s
  for c in "${CONTENDERS[@]}"; do
    [[ "$c" == berth* ]] || continue
    echo "$c: its own timings (state store), s after the command started (median over rounds):"
    printf '  %-12s %8s %8s %8s %8s %8s %8s\n' service create made "to start" started "1st pass" closed
    for s in "${SERVICES[@]}"; do
      printf '  %-12s %8s %8s %8s %8s %8s %8s\n' "$s" "$(tl_median "$c" "$s.create")" "$(tl_median "$c" "$s.made")" \
        "$(tl_median "$c" "$s.begin")" "$(tl_median "$c" "$s.started")" "$(tl_median "$c" "$s.pass1")" "$(tl_median "$c" "$s.closed")"
    done
    printf '  generation recorded %s, migrations step %s..%s, generation finished %s, apply exited %s\n' \
      "$(tl_median "$c" generation.recorded)" "$(tl_median "$c" migrations.begin)" "$(tl_median "$c" migrations.end)" \
      "$(tl_median "$c" generation.finished)" "$(median ${R_WALL[$c]})"
  done
}

echo
report | tee "${BENCH_OUT:-/dev/null}"
