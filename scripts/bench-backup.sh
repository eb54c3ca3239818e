#!/usr/bin/env bash
# `berth backup` and `berth restore` of a database of about 100 MB (SQL) against the same
# work done by hand: `docker exec pg_dump | gzip` and `gunzip | docker exec -i psql` into a
# fresh database (the hand restore does no check and no swap). The stack's real image
# berth-postgres:15 with a published loopback port; one table of ~900k rows of hex text.
# Not a test: timings are reported, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
rows=${ROWS:-900000}
cargo build --release -q --bin berth
docker image inspect berth-postgres:15 >/dev/null 2>&1 || scripts/build-images.sh postgres
berth=$PWD/target/release/berth
work=$(mktemp -d)
project=bench-backup
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  docker ps -aq --filter "label=berth.project=$project" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=berth.project=$project" | xargs -r docker network rm >/dev/null
  docker volume ls -q --filter "label=berth.project=$project" | xargs -r docker volume rm >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cleanup; work=$(mktemp -d); mkdir -p "$work/backups" "$work/hand"
export BENCH_PG_PASSWORD=bench-pw-$$
cat >"$work/berth.toml" <<TOML
[project]
name = "$project"
[rollout]
healthy_deadline = "180s"
[services.postgres]
image = "berth-postgres:15"
ports = ["127.0.0.1:$port:5432"]
environment = { POSTGRES_USER = "assistant", POSTGRES_PASSWORD = "\${BENCH_PG_PASSWORD}", POSTGRES_DB = "assistant" }
volumes = ["$project-pgdata:/var/lib/postgresql/data"]
health = { probe = "postgres", port = 5432, user = "assistant", password = "\${BENCH_PG_PASSWORD}", database = "assistant", interval = "250ms" }
[migrations]
service = "postgres"
url = "postgresql://assistant:\${BENCH_PG_PASSWORD}@postgres:5432/assistant"
source = "$PWD/migrations"
backup_dir = "$work/backups"
TOML
b() { "$berth" --state "$work/state.db" "$@" -f "$work/berth.toml"; }
b apply >/dev/null
pg=$project-postgres
psql() { docker exec -i "$pg" psql -X -q -v ON_ERROR_STOP=1 -U assistant "$@"; }
psql -d assistant -c "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS body FROM generate_series(1, $rows) g"
size=$(psql -d assistant -At -c "SELECT pg_size_pretty(pg_database_size('assistant'))")
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

bb=(); hb=(); br=(); hr=()
for i in $(seq 1 "$runs"); do
  rm -f "$work"/backups/* "$work"/hand/*
  t=$(now_ms); b backup >/dev/null; bb+=($(( $(now_ms) - t )))
  t=$(now_ms); docker exec "$pg" pg_dump -U assistant -d assistant | gzip >"$work/hand/dump.sql.gz"; hb+=($(( $(now_ms) - t )))
  file=$(ls "$work"/backups/*.sql.gz | head -1)
  t=$(now_ms); b restore "$file" >/dev/null; br+=($(( $(now_ms) - t )))
  restored=$(psql -d assistant -At -c "SELECT count(*) FROM bulk")
  [ "$restored" = "$rows" ] || { echo "berth restore left $restored rows of $rows" >&2; exit 1; }
  t=$(now_ms)
  psql -d postgres -c "CREATE DATABASE hand_$i TEMPLATE template0"
  gunzip -c "$work/hand/dump.sql.gz" | psql -d "hand_$i" >/dev/null
  hr+=($(( $(now_ms) - t )))
  psql -d postgres -c "DROP DATABASE hand_$i"
  # The databases each restore kept aside: dropped here to keep the runs alike.
  for db in $(psql -d postgres -At -c "SELECT datname FROM pg_database WHERE datname LIKE 'assistant\_before\_restore\_%'"); do
    psql -d postgres -c "DROP DATABASE \"$db\""
  done
  echo "run $i: berth backup ${bb[-1]} ms, pg_dump|gzip ${hb[-1]} ms; berth restore ${br[-1]} ms, gunzip|psql ${hr[-1]} ms"
done
gz=$(du -h "$file" | cut -f1)
mbb=$(printf '%s\n' "${bb[@]}" | median); mhb=$(printf '%s\n' "${hb[@]}" | median)
mbr=$(printf '%s\n' "${br[@]}" | median); mhr=$(printf '%s\n' "${hr[@]}" | median)
echo "database $size, dump $gz gzipped; medians over $runs runs:"
echo "  backup:  berth $mbb ms, by hand $mhb ms, ratio $(python3 -c "print(round($mbb/$mhb, 2))")"
echo "  restore: berth $mbr ms, by hand $mhr ms, ratio $(python3 -c "print(round($mbr/$mhr, 2))")"
