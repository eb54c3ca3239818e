#!/bin/sh
# Entrypoint modelled on the upstream redis image's docker-entrypoint.sh:
# start as root, give redis the data directory (a bind-mounted host directory
# is typically root-owned, mode 700), then drop privileges.
set -e

# `docker run berth-redis:7 --maxmemory 100mb` or `... /path/redis.conf`
# -> redis-server <args>
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi

# Started as root (the default; `--user` skips this): chown what redis does
# not own yet under the working directory (WORKDIR /data, where the default
# CMD's --dir points), then re-run this script as redis.
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

# Like upstream: files redis creates (dump.rdb, appendonly files) are private
# unless a umask was set deliberately.
if [ "$(umask)" = 0022 ]; then
  umask 0077
fi

exec "$@"
