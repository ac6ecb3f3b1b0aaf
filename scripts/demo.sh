#!/usr/bin/env bash
# walstream end to end on this machine: installs what is missing, builds, starts PostgreSQL and
# Redis on loopback in .local/ of the checkout, loads the shared store (sql/) with sample data,
# starts walstream as its least-privilege role with the store's outbox (initial snapshot, then
# streaming) with its metrics endpoint on a free loopback port, makes a few changes through SQL, shows
# the records and the order's OrderPlaced event arriving with `walstream tail`, then `walstream status`.
# Ctrl-C stops everything.
#   scripts/demo.sh          interactive: keeps tailing the streams until Ctrl-C
#   scripts/demo.sh --check  makes the changes, checks the records, the event, the status and the metrics
#                            (/metrics, /readyz), stops (used by CI)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-follow}
LOCAL="$ROOT/.local"

scripts/deps.sh
scripts/build.sh
WALSTREAM="$ROOT/build/cdc/cli/walstream"

scripts/servers.sh start "$LOCAL"
# shellcheck disable=SC1091
source "$LOCAL/env"
WS_PID=""
cleanup() {
  if [ -n "$WS_PID" ]; then kill -TERM "$WS_PID" 2>/dev/null && wait "$WS_PID" 2>/dev/null || true; fi
  scripts/servers.sh stop "$LOCAL"
  echo "stopped walstream, PostgreSQL and Redis"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The administrator's part: the store, the walstream role, the publication, sample data.
[ "$(psql -tAc "SELECT 1 FROM pg_database WHERE datname = 'store'")" = 1 ] || psql -qc "CREATE DATABASE store"
export PGDATABASE=store
for f in sql/0[1-4]_*.sql; do psql -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null; done

# walstream's part, as the least-privilege role (trust authentication on this loopback server); every
# INSERT into public.outbox becomes an event on walstream:events:<aggregatetype>. Metrics, /healthz and
# /readyz on a free loopback port, picked like scripts/servers.sh picks the servers'.
export WALSTREAM_PG="postgresql://walstream@127.0.0.1:$PGPORT/store"
METRICS=127.0.0.1:$(/usr/bin/python3 -c '
import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
"$WALSTREAM" run --outbox public.outbox --status-interval 1 --metrics-listen "$METRICS" 2>"$LOCAL/walstream.log" &
WS_PID=$!
for _ in $(seq 300); do
  [ "$(psql -tAc "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'walstream'")" = 1 ] && break
  kill -0 "$WS_PID" 2>/dev/null || { cat "$LOCAL/walstream.log"; exit 1; }
  sleep 0.1
done
echo "walstream is streaming (log: $LOCAL/walstream.log)"
echo "metrics: http://$METRICS/metrics (and /healthz, /readyz)"
echo

tail_streams() { "$WALSTREAM" tail public.users public.orders public.inventory --events order "$@"; }

echo "== the snapshot: walstream tail public.users --from-start --count 3"
timeout 20 "$WALSTREAM" tail public.users --from-start --count 3
echo

# The events stream's last entry before the order (the stream outlives a demo run, as .local does).
before=$(redis-cli -p "$REDIS_PORT" --raw XREVRANGE walstream:events:order + - COUNT 1)
before=${before%%$'\n'*}
echo "== changes through SQL: Ada changes her name; Grace orders (sql/queries/reserve_stock.sql)"
psql -q -v ON_ERROR_STOP=1 -c "UPDATE users SET name = 'Ada King' WHERE email = 'ada@example.com'"
grace=$(psql -tAc "SELECT id FROM users WHERE email = 'grace@example.com'")
order=$(psql -qtA -v ON_ERROR_STOP=1 -v user_id="$grace" -v items='[{"sku": "KB-01", "qty": 1}]' \
  -f sql/queries/reserve_stock.sql)
echo "order $order placed, with its OrderPlaced event in the same transaction"
echo
echo "== the records: walstream tail public.users public.orders public.inventory --from <snapshot end>"
# Everything after the snapshot rows: the snapshot's IDs are <consistent point - 1>-n.
cp=$(redis-cli -p "$REDIS_PORT" HGET walstream:snapshot:walstream consistent_point)
from=$(/usr/bin/python3 -c "import sys; hi, lo = sys.argv[1].split('/'); print(f'{(int(hi, 16) << 32 | int(lo, 16)) - 1}-999999999')" "$cp")
out=$(timeout 20 "$WALSTREAM" tail public.users public.orders public.inventory --from "$from" --count 3)
echo "$out"
echo
echo "== the event: walstream tail --events order --count 1 (the outbox itself stays empty)"
event=$(timeout 20 "$WALSTREAM" tail --events order --from "${before:-0-0}" --count 1)
echo "$event"
echo
echo "== walstream status (the same WALSTREAM_PG and WALSTREAM_REDIS, default --slot and --prefix)"
status_rc=0
timeout 20 "$WALSTREAM" status || status_rc=$?
echo "(exit code $status_rc)"

if [ "$MODE" = "--check" ]; then
  grep -q '"op":"u".*Ada King' <<<"$out" || { echo "demo check failed: no update of Ada"; cat "$LOCAL/walstream.log"; exit 1; }
  grep -q '"table":"public.orders"' <<<"$out" || { echo "demo check failed: no order"; cat "$LOCAL/walstream.log"; exit 1; }
  grep -q '"table":"public.inventory"' <<<"$out" || { echo "demo check failed: no reservation"; cat "$LOCAL/walstream.log"; exit 1; }
  grep -q "\"type\":\"OrderPlaced\",\"aggregate_id\":\"$order\",\"payload\":{.*\"order_id\":$order[,}]" <<<"$event" ||
    { echo "demo check failed: no OrderPlaced event for order $order"; cat "$LOCAL/walstream.log"; exit 1; }
  [ "$(psql -tAc "SELECT count(*) FROM outbox")" = 0 ] || { echo "demo check failed: the outbox is not empty"; exit 1; }
  [ "$status_rc" = 0 ] ||
    { echo "demo check failed: walstream status exited $status_rc"; cat "$LOCAL/walstream.log"; exit 1; }
  # The metrics of the active instance, within 20 s (counters move after the entries are stored).
  /usr/bin/python3 - "http://$METRICS" <<'PY' || { cat "$LOCAL/walstream.log"; exit 1; }
import re, sys, time, urllib.error, urllib.request

def get(path):
    try:
        with urllib.request.urlopen(sys.argv[1] + path, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return None, str(error)

wanted = {  # what is missing: the line that shows it
    "walstream_active 1": r"^walstream_active 1(\.0+)?$",
    'walstream_changes_total{table="public.users"} >= 1': r'^walstream_changes_total\{table="public\.users"\} [1-9]',
}
deadline = time.monotonic() + 20
while True:
    status, metrics = get("/metrics")
    missing = [what for what, line in wanted.items() if not re.search(line, metrics, re.M)]
    ready, body = get("/readyz")
    if ready != 200:
        missing.append(f"/readyz answered {ready} {body.strip()!r}")
    if not missing:
        break
    if time.monotonic() > deadline:
        sys.exit(f"demo check failed: /metrics ({status}) and /readyz: " + "; ".join(missing))
    time.sleep(0.2)
for line in metrics.splitlines():
    if line.startswith(("walstream_active ", 'walstream_changes_total{table="public.users"}')):
        print(line)
print("/readyz: 200", body.strip())
PY
  echo "demo check passed"
  exit 0
fi

echo
echo "Tailing new records and order events: change rows with psql (source $LOCAL/env; PGDATABASE=store), or"
echo "place an order: psql -v user_id=1 -v items='[{\"sku\": \"MS-02\", \"qty\": 1}]' -f sql/queries/reserve_stock.sql"
echo "and watch. Ctrl-C stops."
tail_streams
