#!/usr/bin/env bash
# What one pending migration adds to a deploy: PostgreSQL (the stack's
# berth-postgres:15) and a fixture app that `depends_on = ["migrations"]`, converged once
# with the repository's migrations/; then, alternating, 3 deploys that only change the app
# (no pending migration) and 3 that change the app AND add one small migration
# (CREATE TABLE + its down). Each deploy is one timed `berth apply` (release build). Run
# with backup = false (the migration alone) and backup = true (pg_dump before it).
#
#   scripts/bench-migrate.sh      (~2 min plus the release build)
#
# Everything belongs to project benchm-<pid> and is removed on exit (the database lives in
# a bind-mounted directory of the temp dir). Timings are reported, never asserted.
# Knobs: BENCH_SKIP_BUILD=1 (use the existing target/release/berth).
set -euo pipefail
export LC_ALL=C

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BERTH="$REPO_ROOT/target/release/berth"
for img in berth-postgres:15 berth-fixture:test; do
  docker image inspect "$img" >/dev/null 2>&1 || {
    echo "missing image $img: run scripts/build-images.sh and scripts/build-fixture.sh" >&2
    exit 1
  }
done
[ -n "${BENCH_SKIP_BUILD:-}" ] || cargo build --release --quiet --manifest-path "$REPO_ROOT/Cargo.toml"

TMP="$(mktemp -d)"
P="benchm-$$"
cleanup() {
  docker ps -aq --filter "label=berth.project=$P" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=berth.project=$P" | xargs -r docker network rm >/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

write() { # version backup
  cat >"$TMP/berth.toml" <<EOF
[project]
name = "$P"

[rollout]
min_healthy_time = "500ms"

[services.postgres]
image = "berth-postgres:15"
environment = { POSTGRES_USER = "assistant", POSTGRES_PASSWORD = "bench-pw", POSTGRES_DB = "assistant" }
volumes = ["./pgdata:/var/lib/postgresql/data"]
health = { probe = "postgres", port = 5432, user = "assistant", password = "bench-pw", database = "assistant", interval = "250ms" }

[services.app]
image = "berth-fixture:test"
depends_on = ["migrations"]
environment = { VERSION = "$1" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }

[migrations]
service = "postgres"
url = "postgresql://assistant:bench-pw@postgres:5432/assistant"
source = "migrations"
backup = $2
backup_dir = "backups"
EOF
}

apply_ms() {
  local t0 t1
  t0=$(now_ns)
  "$BERTH" --state "$TMP/state.db" apply -f "$TMP/berth.toml" >"$TMP/apply.log" 2>&1 || {
    echo "berth apply failed:" >&2; cat "$TMP/apply.log" >&2; exit 1
  }
  t1=$(now_ns)
  echo $(((t1 - t0) / 1000000))
}

cp -r "$REPO_ROOT/migrations" "$TMP/migrations"
write 0 false
echo "cold apply (postgres first start, 3 migrations): $(apply_ms) ms"

n=3
for backup in false true; do
  plain=()
  migr=()
  for i in 1 2 3; do
    write "plain-$backup-$i" "$backup"
    plain+=("$(apply_ms)")
    grep -q "migrations: applying" "$TMP/apply.log" && { echo "a plain deploy ran migrations" >&2; exit 1; }
    n=$((n + 1))
    v=$(printf '%04d' "$n")
    echo "CREATE TABLE bench_$n (id bigint PRIMARY KEY, note text);" >"$TMP/migrations/${v}_bench_$n.up.sql"
    echo "DROP TABLE bench_$n;" >"$TMP/migrations/${v}_bench_$n.down.sql"
    write "migr-$backup-$i" "$backup"
    migr+=("$(apply_ms)")
    grep -q "migrations: applied" "$TMP/apply.log" || { echo "the migration deploy applied nothing:" >&2; cat "$TMP/apply.log" >&2; exit 1; }
  done
  p=$(printf '%s\n' "${plain[@]}" | median)
  m=$(printf '%s\n' "${migr[@]}" | median)
  echo "backup = $backup: deploy without a migration ${plain[*]} ms (median $p); with one pending migration ${migr[*]} ms (median $m); added $((m - p)) ms"
done
