#!/usr/bin/env bash
# berth run (the daemon) on the real engine, with the Local Assistant stack's four local
# services (postgres, redis, chroma, prometheus; grafana excluded: its image cannot be
# had here), from the shipped desired-state/local-assistant.toml:
#
#   scripts/bench-daemon.sh          (~3 min plus the release build)
#
#   1. docker kill of a service (redis, 3 times) -> the repair starting: from the
#      container's `die` event (the engine's timestamp) to berth's first call that acts
#      on it (`start_container`, `create_container` or `remove_container` in berth's own
#      debug log, same clock), and to the engine's `start` event (the start call done);
#      -> healthy again: the first moment /api/v1/status says converged with one more
#      repair (polled every 50 ms).
#   2. an edit of the desired state (atomic rename, 3 times; prometheus gets a new
#      environment value, so a new config hash and a new generation) -> the converge
#      starting: from just before the rename to berth's own first engine call of the new
#      generation that acts on a container (`create_container`, `stop_container`,
#      `remove_container` or `start_container` in its debug log, same clock: here the
#      create of the new prometheus, made ahead), cross-checked by the engine's `create`
#      event of the container labelled with the new generation and a config hash not
#      seen before the edit. Not any project event: the images' own HEALTHCHECK execs
#      (exec_create/exec_start/exec_die) pass the project's label filter all the time.
#      Also shown: the reconcile's first engine call of any kind after the edit (the
#      pre-flight's, before the plan: what precedes it is the file watcher's debounce);
#      and edit -> converged again.
#   3. the idle daemon over one minute with the stack converged: resident memory
#      (VmRSS, and the peak VmHWM) and CPU (utime+stime from /proc over 60 s).
#
# Everything it creates belongs to project benchd-<pid> (label berth.project) and is
# removed on exit; the data directories live in a temp dir. Knobs:
#   BENCH_SKIP_BUILD=1   use the existing target/release/berth
#   BENCH_IDLE_S=60      length of the idle measurement
#   BENCH_KEEP_TMP=1     keep the temp dir (daemon log, events, state db)
set -euo pipefail
export LC_ALL=C

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BERTH="$REPO_ROOT/target/release/berth"
IDLE_S="${BENCH_IDLE_S:-60}"
P="benchd-$$"

for img in berth-postgres:15 berth-redis:7 berth-chroma:latest berth-prometheus:2; do
  docker image inspect "$img" >/dev/null 2>&1 || {
    echo "missing image $img: run scripts/build-images.sh first" >&2
    exit 1
  }
done
[ -n "${BENCH_SKIP_BUILD:-}" ] || cargo build --release --quiet --manifest-path "$REPO_ROOT/Cargo.toml"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ns() { date +%s%N; }
ms() { echo "scale=0; ($1) / 1000000" | bc; }

TMP="$(mktemp -d)"
DAEMON_PID=""
EVENTS_PID=""
cleanup() {
  [ -n "$DAEMON_PID" ] && kill -TERM "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
  [ -n "$EVENTS_PID" ] && kill "$EVENTS_PID" 2>/dev/null || true
  docker ps -aq --filter "label=berth.project=$P" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=berth.project=$P" | xargs -r docker network rm >/dev/null
  if [ -n "${BENCH_KEEP_TMP:-}" ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

mkdir -p "$TMP/desired-state"
ln -s "$REPO_ROOT/config" "$TMP/config"
ln -s "$REPO_ROOT/migrations" "$TMP/migrations"
FILE="$TMP/desired-state/local-assistant.toml"
cp "$REPO_ROOT/desired-state/local-assistant.toml" "$FILE"
sed -e 's/change-me-too/bench-grafana-pw/' -e "s/change-me/bench-pw-$$/" "$REPO_ROOT/.env.example" >"$TMP/.env"
chmod 600 "$TMP/.env"
export BERTH_PROJECT="$P"
export POSTGRES_HOST_PORT="$(free_port)" REDIS_HOST_PORT="$(free_port)"
export CHROMA_HOST_PORT="$(free_port)" PROMETHEUS_HOST_PORT="$(free_port)"
PORT="$(free_port)"
API="http://127.0.0.1:$PORT/api/v1/status"

# One line per event: time, action, container name, its berth.generation and
# berth.config-hash labels (the engine sends a container's labels with each event).
docker events --filter type=container --filter "label=berth.project=$P" \
  --format '{{.TimeNano}} {{.Action}} {{.Actor.Attributes.name}} g={{index .Actor.Attributes "berth.generation"}} h={{index .Actor.Attributes "berth.config-hash"}}' >"$TMP/events" &
EVENTS_PID=$!

BERTH_LOG="${BERTH_LOG:-info,berth::runtime=debug}" "$BERTH" --state "$TMP/state.db" run -f "$FILE" --exclude grafana \
  --listen "127.0.0.1:$PORT" --log-format json >"$TMP/daemon.log" 2>&1 &
DAEMON_PID=$!

# berth's first engine call of one of the given kinds after a time (ns), from its JSON
# log, as "NS CALL"; with the kind "any", its first engine call of any kind.
first_call_after() { # ns call...
  python3 - "$TMP/daemon.log" "$@" <<'PY'
import json, sys, datetime
log, after, calls = sys.argv[1], int(sys.argv[2]), set(sys.argv[3:])
for line in open(log):
    if not line.startswith("{"):
        continue
    l = json.loads(line)
    call = l.get("fields", {}).get("call")
    if call is None or ("any" not in calls and call not in calls):
        continue
    ts = l["timestamp"].rstrip("Z")
    whole, _, frac = ts.partition(".")
    t = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.timezone.utc)
    ns = int(t.timestamp()) * 10**9 + int((frac + "000000000")[:9])
    if ns > after:
        print(ns, call)
        break
PY
}
status() { curl -s --max-time 2 "$API" || true; }
converged() { status | grep -q '"status": "converged"'; }
repairs() { status | sed -n 's/.*"repairs": \([0-9]*\).*/\1/p' | head -1; }
wait_until() { # what limit_s command...
  local what="$1" limit="$2"; shift 2
  local start; start=$(now_ns)
  until "$@"; do
    if (( ($(now_ns) - start) / 1000000000 > limit )); then
      echo "timed out waiting for $what; daemon log:" >&2; tail -20 "$TMP/daemon.log" >&2; exit 1
    fi
    sleep 0.05
  done
}

t0=$(now_ns)
wait_until "the first converge" 300 converged
echo "first converge of the 4-service stack under berth run: $(ms "$(now_ns) - $t0") ms"
sleep 3

echo
echo "1. docker kill redis -> the repair starting (berth's log, the engine's events) / healthy again (status API)"
for i in 1 2 3; do
  before=$(repairs)
  since=$(now_ns)
  docker kill "$P-redis" >/dev/null
  t_kill=$(now_ns)
  wait_until "the repair of redis" 60 bash -c "curl -s --max-time 2 '$API' | grep -q '\"status\": \"converged\"' && [ \"\$(curl -s --max-time 2 '$API' | sed -n 's/.*\"repairs\": \\([0-9]*\\).*/\\1/p' | head -1)\" -gt $before ]"
  t_healthy=$(now_ns)
  sleep 0.5
  die=$(awk -v s="$since" -v n="$P-redis" '$1 >= s && $2 == "die" && $3 == n {print $1; exit}' "$TMP/events")
  act=$(first_call_after "$die" start_container create_container remove_container)
  act=${act%% *}
  started=$(awk -v d="$die" -v n="$P-redis" '$1 > d && $2 == "start" && $3 == n {print $1; exit}' "$TMP/events")
  echo "  run $i: die -> berth's repair call $(ms "$act - $die") ms, -> engine's start event $(ms "$started - $die") ms; kill -> converged again $(ms "$t_healthy - $t_kill") ms"
  sleep 2
done

echo
echo "2. desired-state edit (atomic rename) -> converge start (berth's first engine call of the new generation that acts on a container) / converged"
for i in 1 2 3; do
  gen=$((i + 1))
  sed "s|^image = \"berth-prometheus:2\"|image = \"berth-prometheus:2\"\nenvironment = { BENCH_EDIT = \"$i\" }|" \
    "$REPO_ROOT/desired-state/local-assistant.toml" >"$TMP/desired-state/.edit.tmp"
  grep -q "BENCH_EDIT = \"$i\"" "$TMP/desired-state/.edit.tmp"
  t_edit=$(now_ns)
  mv "$TMP/desired-state/.edit.tmp" "$FILE"
  wait_until "the edit to converge" 120 bash -c "curl -s --max-time 2 '$API' | grep -q '\"generation\": $gen,' && curl -s --max-time 2 '$API' | grep -q '\"status\": \"converged\"'"
  t_done=$(now_ns)
  sleep 0.5
  any=$(first_call_after "$t_edit" any)
  any_call=${any#* } any=${any%% *}
  act=$(first_call_after "$t_edit" create_container stop_container remove_container start_container)
  act_call=${act#* } act=${act%% *}
  # The engine's create of the new generation's container, with a config hash not seen
  # on any event before the edit.
  created=$(awk -v s="$t_edit" -v g="g=$gen" '
    $1 <= s { for (f = 4; f <= NF; f++) if ($f ~ /^h=./) seen[$f] = 1; next }
    $2 == "create" && $4 == g && !($5 in seen) { print $1; exit }' "$TMP/events")
  [ -n "$act" ] && [ -n "$created" ] && [ -n "$any" ] || {
    echo "  run $i: could not find berth's calls or the create event (any='$any' act='$act' create='$created')" >&2; exit 1; }
  echo "  run $i: edit -> converge start (berth's $act_call) $(ms "$act - $t_edit") ms, -> the engine's create event of generation $gen $(ms "$created - $t_edit") ms; edit -> the reconcile's first engine call ($any_call) $(ms "$any - $t_edit") ms; edit -> converged $(ms "$t_done - $t_edit") ms"
  sleep 2
done

echo
echo "3. idle daemon over ${IDLE_S} s (stack converged, resync 5 min)"
sleep 5
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat"; }
c0=$(cpu)
sleep "$IDLE_S"
c1=$(cpu)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$DAEMON_PID/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$DAEMON_PID/status")
echo "  resident: $((rss / 1024)) MiB now (VmRSS $rss kB), peak since start $((hwm / 1024)) MiB (VmHWM $hwm kB)"
echo "  cpu: $((c1 - c0)) ticks of 1/$tck s in ${IDLE_S} s = $(echo "scale=3; ($c1 - $c0) * 100 / $tck / $IDLE_S" | bc) % of a core"
