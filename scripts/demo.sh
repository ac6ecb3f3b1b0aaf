#!/usr/bin/env bash
# walstream end to end on this machine: installs what is missing, builds, starts PostgreSQL and
# Redis on loopback in .local/ of the checkout, starts walstream, makes a few changes through SQL
# and shows the records arriving on Redis Streams. Ctrl-C stops everything it started.
#   scripts/demo.sh          interactive: keeps following the streams until Ctrl-C
#   scripts/demo.sh --check  makes the changes, checks the records, stops (used by CI)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-follow}
LOCAL="$ROOT/.local"

scripts/deps.sh
scripts/build.sh
WALSTREAM="$ROOT/build/cdc/walstream"

scripts/servers.sh start "$LOCAL"
# shellcheck disable=SC1091
source "$LOCAL/env"
WS_PID=""
cleanup() {
  [ -n "$WS_PID" ] && kill -TERM "$WS_PID" 2>/dev/null && wait "$WS_PID" 2>/dev/null || true
  scripts/servers.sh stop "$LOCAL"
  echo "stopped walstream, PostgreSQL and Redis"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql -q -v ON_ERROR_STOP=1 -f sql/demo.sql
"$WALSTREAM" run --status-interval 1 2>"$LOCAL/walstream.log" &
WS_PID=$!
for _ in $(seq 100); do
  [ "$(psql -tAc "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'walstream'")" = 1 ] && break
  kill -0 "$WS_PID" 2>/dev/null || { cat "$LOCAL/walstream.log"; exit 1; }
  sleep 0.1
done
echo "walstream is streaming (log: $LOCAL/walstream.log)"

psql -q -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO users (email, name) VALUES ('ada@example.com', 'Ada'), ('linus@example.com', 'Linus')
  ON CONFLICT (email) DO NOTHING;
BEGIN;
INSERT INTO orders (user_id, total, items)
  SELECT id, 42.50, '[{"sku": "book", "qty": 2}]' FROM users WHERE email = 'ada@example.com';
UPDATE users SET name = 'Ada Lovelace' WHERE email = 'ada@example.com';
COMMIT;
SQL

rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
for _ in $(seq 100); do
  [ "$(rcli XLEN walstream:public.orders)" -ge 1 ] && break
  sleep 0.1
done
echo
echo "== redis-cli XRANGE walstream:public.users - +"
rcli --no-raw XRANGE walstream:public.users - +
echo
echo "== redis-cli XRANGE walstream:public.orders - +"
rcli --no-raw XRANGE walstream:public.orders - +

if [ "$MODE" = "--check" ]; then
  users=$(rcli XLEN walstream:public.users)
  orders=$(rcli XLEN walstream:public.orders)
  [ "$users" -ge 3 ] && [ "$orders" -ge 1 ] || { echo "demo check failed: users=$users orders=$orders"; cat "$LOCAL/walstream.log"; exit 1; }
  echo "demo check passed: $users user records, $orders order records"
  exit 0
fi

echo
echo "Following the streams: change rows with psql (source $LOCAL/env first) and watch them arrive. Ctrl-C stops."
last_users='$' last_orders='$'
while true; do
  rcli --no-raw XREAD BLOCK 0 STREAMS walstream:public.users walstream:public.orders "$last_users" "$last_orders"
  last_users=$(rcli XREVRANGE walstream:public.users + - COUNT 1 | head -1)
  last_orders=$(rcli XREVRANGE walstream:public.orders + - COUNT 1 | head -1)
  last_users=${last_users:-0} last_orders=${last_orders:-0}
done
