#!/usr/bin/env bash
# How long the daemon takes to serve the status page of a project with 100 services.
#
#   scripts/bench-status-page.sh     (~3 min plus the release build)
#
# A project of N=100 fixture services (berth-fixture:test, each gated on a tcp probe) is
# converged by `berth apply` (generation 1); then one service's deploy never gets healthy
# and the whole stack is reverted (generation 2, with evidence and a diff), so the page
# holds a history, a failed generation's evidence and a 100-row timeline. `berth run`
# serves it on loopback; `curl` asks for `/` REQUESTS times in a row, and its
# time_total (the whole response, on loopback) is reported: median, 95th percentile and
# max, in milliseconds. The page's size is reported too. Nothing is asserted: the figures
# go in bench/status-page-results.txt.
#
# Everything made is labelled with the project `bench-page-$$` and removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}
REQUESTS=${REQUESTS:-50}
project=bench-page-$$
dir=$(mktemp -d /tmp/bench-page.XXXXXX)
port=$((20000 + RANDOM % 20000))
daemon=

cleanup() {
  set +e
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  docker ps -aq --filter "label=berth.project=$project" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=berth.project=$project" | xargs -r docker network rm >/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

cargo build --release -q
berth=$PWD/target/release/berth
docker image inspect berth-fixture:test >/dev/null 2>&1 || scripts/build-fixture.sh

write() {
  {
    printf '[project]\nname = "%s"\n[rollout]\nhealthy_deadline = "20s"\nmin_healthy_time = "200ms"\nprogress_deadline = "10m"\n' "$project"
    for i in $(seq 1 "$N"); do
      printf '[services.s%03d]\nimage = "berth-fixture:test"\nenvironment = { ROLE = "s%03d", VERSION = "%s"%s }\nhealth = { probe = "tcp", port = 8080, interval = "250ms" }\n' \
        "$i" "$i" "$1" "$([ "$i" = 1 ] && [ "$1" = 2 ] && printf ', FIXTURE_PRINT_LINES = "20", FIXTURE_EXIT_AFTER = "0"')"
    done
  } >"$dir/berth.toml"
}
export BERTH_STATE=$dir/state.db BERTH_FILE=$dir/berth.toml

write 1
echo "== apply of $N services"
"$berth" apply >/dev/null
write 2
echo "== a failing deploy, reverted"
set +e; "$berth" apply >/dev/null; code=$?; set -e
echo "   apply exited $code (3: reverted)"
[ "$code" = 3 ] || { echo "the failing deploy was not reverted (exit $code)" >&2; exit 1; }
write 1

"$berth" run --listen "127.0.0.1:$port" >"$dir/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
# Measured once the daemon's first turn is over (nothing to do: generation 1's spec).
for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$port/api/v1/status" | grep -q '"progressing"' || break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$port/" -o "$dir/page.html"
bytes=$(wc -c <"$dir/page.html")
rows=$(grep -o 'class="service"' "$dir/page.html" | wc -l)
bars=$(grep -o 'class="bar"' "$dir/page.html" | wc -l)

times=()
for _ in $(seq "$REQUESTS"); do
  t=$(curl -fs -o /dev/null -w '%{time_total}' "http://127.0.0.1:$port/")
  times+=("$(awk -v t="$t" 'BEGIN { printf "%.1f", t * 1000 }')")
done
sorted=$(printf '%s\n' "${times[@]}" | sort -g)
median=$(echo "$sorted" | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
p95=$(echo "$sorted" | awk -v n="$REQUESTS" '{ a[NR] = $1 } END { i = int(n * 0.95 + 0.999); if (i < 1) i = 1; print a[i] }')
max=$(echo "$sorted" | tail -1)

echo "status page of $N services ($rows service rows, $bars timeline bars, $bytes bytes), $REQUESTS requests on loopback:"
echo "  median ${median} ms, p95 ${p95} ms, max ${max} ms (curl time_total: the whole response)"
