#!/usr/bin/python3
"""React to new orders from walstream's stream walstream:public.orders with a Redis consumer group.

Nothing but redis-py: the record contract (docs/design.md) is the whole interface. Each entry's
fields are strings; `after` is the new row as a JSON object (numeric columns such as `total` are
exact decimal strings). For every inserted order (op `c`) it prints

    new order <id> for user <user_id> total <total>

and acknowledges the entry (XACK) once it is handled, so a restarted consumer first re-handles what it
was given but never acknowledged (at least once), then continues with new entries.

    orders_consumer.py [--redis redis://host:port/0] [--stream walstream:public.orders]
                       [--group order-notifier] [--consumer NAME] [--max N]
"""
import argparse
import json
import os
import signal
import socket
import sys

import redis

stopping = False


def on_signal(signum, frame):
    global stopping
    stopping = True


def handle(fields):
    """One entry's reaction; True when it was a new order."""
    if not fields or fields.get("op") != "c":
        return False  # updates, deletes, truncates, snapshot rows (`r`): not new orders
    order = json.loads(fields["after"])
    print(f"new order {order['id']} for user {order['user_id']} total {order['total']}", flush=True)
    return True


def main():
    parser = argparse.ArgumentParser(description="Print each new order from walstream's orders stream.")
    parser.add_argument("--redis", default=os.environ.get("WALSTREAM_REDIS", "redis://127.0.0.1:6379"),
                        help="Redis URL (default $WALSTREAM_REDIS or redis://127.0.0.1:6379)")
    parser.add_argument("--stream", default="walstream:public.orders")
    parser.add_argument("--group", default="order-notifier", help="consumer group, created when missing")
    parser.add_argument("--consumer", default=socket.gethostname(),
                        help="this process's name in the group; keep it across restarts (default: host name)")
    parser.add_argument("--start", default="0",
                        help="where a new group starts: 0 = the stream's first entry (default), $ = only new ones")
    parser.add_argument("--max", type=int, default=0, help="exit after N new orders (default: run until stopped)")
    parser.add_argument("--block-ms", type=int, default=1000, help="longest wait of one read")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        r = redis.Redis.from_url(args.redis, decode_responses=True)
        try:
            r.xgroup_create(args.stream, args.group, id=args.start, mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):  # BUSYGROUP: the group exists and keeps its position
                raise
    except (redis.RedisError, ValueError) as e:
        print(f"orders_consumer: {e}", file=sys.stderr)
        return 1

    try:
        handled = 0
        pending = True  # first what this consumer was given before a crash and never acknowledged
        while not stopping and (args.max == 0 or handled < args.max):
            want = 100 if args.max == 0 else min(100, args.max - handled)
            reply = r.xreadgroup(args.group, args.consumer, {args.stream: "0" if pending else ">"},
                                 count=want, block=None if pending else args.block_ms)
            entries = reply[0][1] if reply else []
            if pending and not entries:
                pending = False
                continue
            for entry_id, fields in entries:
                if stopping or (args.max and handled >= args.max):
                    break  # the rest stays pending and comes first next time
                if handle(fields):
                    handled += 1
                r.xack(args.stream, args.group, entry_id)
    except redis.RedisError as e:
        print(f"orders_consumer: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
