#!/usr/bin/env bash
# Entrypoint for berth-prometheus:2. Like the upstream redis/postgres images:
# start as root, give the prometheus user the TSDB directory (a bind-mounted
# host directory such as berth's data/prometheus is root-owned), then drop
# privileges with setpriv. Started as non-root (`--user`), it just execs.
set -Eeuo pipefail

# The image's default flags. Arguments given to `docker run` are appended to
# them (`docker run berth-prometheus:2 --log.level=debug`); a default whose
# flag is given explicitly (`--storage.tsdb.path=/x`, `--storage.tsdb.path /x`,
# `--no-web.enable-lifecycle`) is left out, since Prometheus rejects a
# repeated flag.
defaults=(
  --config.file=/etc/prometheus/prometheus.yml
  --storage.tsdb.path=/prometheus
  --web.enable-lifecycle
)

# No arguments, or flags only -> prometheus <flags>.
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  set -- prometheus "$@"
fi

if [ "$1" != prometheus ]; then
  # e.g. `docker run berth-prometheus:2 promtool check config ...`
  exec "$@"
fi

shift
args=()
for d in "${defaults[@]}"; do
  flag="${d%%=*}"
  given=0
  for a in "$@"; do
    case "$a" in
      "$flag" | "$flag="* | "--no-${flag#--}") given=1 ;;
    esac
  done
  [ "$given" = 1 ] || args+=("$d")
done
# Idempotent: on the re-exec below every default is already present.
set -- prometheus "${args[@]}" "$@"

if [ "$(id -u)" = 0 ]; then
  # The TSDB directory in effect (the last --storage.tsdb.path wins).
  tsdb=/prometheus
  prev=
  for a in "$@"; do
    case "$a" in
      --storage.tsdb.path=*) tsdb="${a#*=}" ;;
    esac
    [ "$prev" = --storage.tsdb.path ] && tsdb="$a"
    prev="$a"
  done
  mkdir -p "$tsdb"
  # Only what prometheus does not own yet (cheap on restarts, like upstream
  # redis' `find . \! -user redis -exec chown redis '{}' +`).
  find "$tsdb" \! -user prometheus -exec chown prometheus '{}' +
  exec setpriv --reuid=prometheus --regid=prometheus --init-groups "${BASH_SOURCE[0]}" "$@"
fi

# Prometheus replaces this shell and is PID 1 (SIGTERM handled natively).
exec "$@"
