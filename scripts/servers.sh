#!/usr/bin/env bash
# Starts (or stops) a private PostgreSQL 15 and Redis 7 on free loopback ports, in a folder.
#   scripts/servers.sh start DIR   -> writes DIR/env (WALSTREAM_PG, WALSTREAM_REDIS, PG*, REDIS_PORT)
#   scripts/servers.sh stop DIR
# The same settings as docker-compose.yml: wal_level=logical, Redis with AOF (appendfsync everysec).
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
cmd=${1:?usage: servers.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: servers.sh start|stop DIR}")

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  mkdir -p "$dir"
  if [ ! -s "$dir/pgdata/PG_VERSION" ]; then
    mkdir -p "$dir/pgdata" "$dir/pgsock" "$dir/pglog"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$dir/pgdata" "$dir/pgsock" "$dir/pglog"
    as_postgres "$PGBIN/initdb" -D "$dir/pgdata" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1
  fi
  [ "$(id -u)" = 0 ] && chmod a+rx "$dir"
  local pgport redisport
  pgport=$(free_port)
  redisport=$(free_port)
  as_postgres "$PGBIN/pg_ctl" -D "$dir/pgdata" -l "$dir/pglog/postgres.log" -w -t 60 start -o \
    "-c port=$pgport -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir/pgsock \
     -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20 -c fsync=off" >/dev/null
  mkdir -p "$dir/redis"
  redis-server --port "$redisport" --bind 127.0.0.1 --dir "$dir/redis" --daemonize yes \
    --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" \
    --appendonly yes --appendfsync everysec --save '' >/dev/null
  for _ in $(seq 100); do redis-cli -p "$redisport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  cat >"$dir/env" <<ENV
export PGHOST=127.0.0.1 PGPORT=$pgport PGUSER=postgres PGDATABASE=postgres
export REDIS_PORT=$redisport
export WALSTREAM_PG=postgresql://postgres@127.0.0.1:$pgport/postgres
export WALSTREAM_REDIS=redis://127.0.0.1:$redisport
ENV
  echo "PostgreSQL on 127.0.0.1:$pgport, Redis on 127.0.0.1:$redisport (source $dir/env)"
}

stop() {
  if [ -f "$dir/redis/redis.pid" ]; then
    kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true
    rm -f "$dir/redis/redis.pid"
  fi
  if [ -f "$dir/pgdata/postmaster.pid" ]; then
    as_postgres "$PGBIN/pg_ctl" -D "$dir/pgdata" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: servers.sh start|stop DIR" >&2; exit 2 ;;
esac
