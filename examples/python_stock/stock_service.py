#!/usr/bin/python3
"""The warehouse's side of a new order: react to each OrderPlaced event on walstream's stream
walstream:events:order through a Redis consumer group, and put the order's lines on the pick list.

The event contract (docs/design.md) is the whole interface: the order service inserts the event into
the store's outbox in the transaction that places the order (sql/queries/reserve_stock.sql), and
`walstream run --outbox public.outbox` publishes it once that transaction commits. Each entry's fields
are strings: `id` (the event's id), `type`, `aggregate_id`, `payload` (the event as JSON: order_id,
user_id, currency, total, items with sku and quantity), `lsn`, `xid`, `ts`. For every OrderPlaced it prints

    pick order <order_id> for user <user_id>: <quantity> x <sku>, ...

Handled exactly once: the pick list (a Redis hash here, field = event id) is written in the same
MULTI/EXEC as the XACK, so an event is either handled and acknowledged or neither. A restart first
re-reads what this consumer was given and never acknowledged, then continues with new entries. An
event already on the pick list (a replay: XGROUP SETID … 0) is acknowledged and not handled again.
A crash between the EXEC and the print can lose a printed line, never a pick.

    stock_service.py [--redis redis://host:port/0] [--stream walstream:events:order]
                     [--group stock-service] [--consumer NAME] [--picks stock:picks]
                     [--max N] [--exit-when-idle]
                     [--redis-tls-ca FILE] [--redis-tls-cert FILE --redis-tls-key FILE]

Over TLS: a rediss:// URL, with the flags walstream takes. The server's certificate and host name are
verified, against --redis-tls-ca and the system's CAs (redis-py 4.3 always loads those).
"""
import argparse
import json
import os
import re
import signal
import socket
import ssl
import sys
import urllib.parse

import redis

stopping = False


def on_signal(signum, frame):
    global stopping
    stopping = True


def pick_lines(payload):
    """An OrderPlaced payload -> (order id, user id, [(sku, quantity)]); ValueError when it is not one."""
    try:
        event = json.loads(payload)
        items = [(str(item["sku"]), int(item["quantity"])) for item in event["items"]]
        return int(event["order_id"]), int(event["user_id"]), items
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not an OrderPlaced payload: {e!r}") from None


def handle(r, args, entry_id, fields):
    """One entry, acknowledged whatever it holds; True when it was an OrderPlaced handled just now."""
    if not fields or fields.get("type") != "OrderPlaced":
        r.xack(args.stream, args.group, entry_id)  # other events of orders, or an entry trimmed away
        return False
    try:
        order, user, items = pick_lines(fields.get("payload", ""))
    except ValueError as e:
        # Retrying cannot fix it: say so and go on, so that one bad event never stops the service.
        print(f"stock_service: skipping entry {entry_id}: {e}", file=sys.stderr, flush=True)
        r.xack(args.stream, args.group, entry_id)
        return False
    event_id = fields.get("id") or entry_id  # an outbox without an id column: the entry ID is stable too
    pick = json.dumps({"order_id": order, "user_id": user, "entry": entry_id,
                       "lines": [{"sku": sku, "quantity": qty} for sku, qty in items]})
    tx = r.pipeline(transaction=True)
    tx.hsetnx(args.picks, event_id, pick)
    tx.xack(args.stream, args.group, entry_id)
    new, _ = tx.execute()
    if not new:
        print(f"stock_service: event {event_id} (order {order}) is on the pick list already: acknowledged",
              file=sys.stderr, flush=True)
        return False
    lines = ", ".join(f"{qty} x {sku}" for sku, qty in items)
    print(f"pick order {order} for user {user}: {lines}", flush=True)
    return True


def tls_options(parser, args):
    """redis-py's keyword arguments for the --redis-tls-* flags (which need a rediss:// URL)."""
    files = {"--redis-tls-ca": args.redis_tls_ca, "--redis-tls-cert": args.redis_tls_cert,
             "--redis-tls-key": args.redis_tls_key}
    given = [flag for flag, path in files.items() if path]
    if not args.redis.startswith("rediss://"):
        if given:
            parser.error(f"{', '.join(given)}: only with a rediss:// URL")
        return {}
    if bool(args.redis_tls_cert) != bool(args.redis_tls_key):
        parser.error("--redis-tls-cert and --redis-tls-key go together")
    for flag in given:
        if not os.access(files[flag], os.R_OK):
            parser.error(f"{flag}: cannot read {files[flag]}")
    # Verification on: the certificate must chain to the CA, and name the host (redis-py 4.3 checks
    # no host name unless asked).
    options = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    # A bound on every read, the handshake's too: a plain port never answers a TLS client's hello.
    # Longer than the longest XREADGROUP BLOCK.
    options["socket_timeout"] = args.block_ms / 1000 + 10
    if args.redis_tls_ca:
        options["ssl_ca_certs"] = args.redis_tls_ca
    if args.redis_tls_cert:
        options["ssl_certfile"], options["ssl_keyfile"] = args.redis_tls_cert, args.redis_tls_key
    return options


TLS_HINTS = {  # OpenSSL's reason -> what to do about it
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": " (a client certificate it trusts: --redis-tls-cert and --redis-tls-key)",
    "WRONG_VERSION_NUMBER": " (is it a TLS port?)",
}


def describe(error, url):
    """One line for a Redis error; for a TLS failure what was wrong, not redis-py's wrapping of it."""
    cause = error
    for _ in range(10):  # the TLS error redis-py caught, if any, is in the chain of causes
        if cause is None or isinstance(cause, ssl.SSLError):
            break
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(error).split())
    parts = urllib.parse.urlsplit(url)
    try:
        where = f"{parts.hostname}:{parts.port or 6379}"
    except ValueError:
        where = str(parts.hostname)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS: the certificate of Redis at {where} fails verification: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError):
        reason = re.sub(r" \(_ssl\.c:\d+\)$", "", cause.args[1] if len(cause.args) > 1 else str(cause))
        return f"TLS: Redis at {where}: {reason}{TLS_HINTS.get(cause.reason, '')}"
    if parts.scheme == "rediss" and isinstance(error, redis.TimeoutError) and "connecting" in text:
        return f"TLS: Redis at {where}: no answer to the TLS handshake (is it a TLS port?)"
    return text


def main():
    parser = argparse.ArgumentParser(description="Put each new order from walstream's order events on the pick list.")
    parser.add_argument("--redis", default=os.environ.get("WALSTREAM_REDIS", "redis://127.0.0.1:6379"),
                        help="Redis URL (default $WALSTREAM_REDIS or redis://127.0.0.1:6379)")
    parser.add_argument("--stream", default="walstream:events:order")
    parser.add_argument("--group", default="stock-service", help="consumer group, created when missing")
    parser.add_argument("--consumer", default=socket.gethostname(),
                        help="this process's name in the group; keep it across restarts (default: host name)")
    parser.add_argument("--start", default="0",
                        help="where a new group starts: 0 = the stream's first entry (default), $ = only new ones")
    parser.add_argument("--picks", default="stock:picks", help="hash of the pick list: event id -> lines (JSON)")
    parser.add_argument("--max", type=int, default=0, help="exit after handling N orders (default: run until stopped)")
    parser.add_argument("--exit-when-idle", action="store_true",
                        help="exit once nothing is pending and a read of new entries comes back empty")
    parser.add_argument("--block-ms", type=int, default=1000, help="longest wait of one read")
    parser.add_argument("--redis-tls-ca", default=os.environ.get("WALSTREAM_REDIS_TLS_CA"),
                        help="PEM CA bundle a rediss:// server's certificate may chain to, besides the system's CAs")
    parser.add_argument("--redis-tls-cert", default=os.environ.get("WALSTREAM_REDIS_TLS_CERT"),
                        help="client certificate, for a Redis with tls-auth-clients yes")
    parser.add_argument("--redis-tls-key", default=os.environ.get("WALSTREAM_REDIS_TLS_KEY"),
                        help="the client certificate's key")
    args = parser.parse_args()
    tls = tls_options(parser, args)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        r = redis.Redis.from_url(args.redis, decode_responses=True, **tls)
        try:
            r.xgroup_create(args.stream, args.group, id=args.start, mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):  # BUSYGROUP: the group exists and keeps its position
                raise
    except (redis.RedisError, ValueError) as e:
        print(f"stock_service: {describe(e, args.redis)}", file=sys.stderr)
        return 1

    try:
        handled = 0
        pending = True  # first what this consumer was given before a crash and never acknowledged
        while not stopping and (args.max == 0 or handled < args.max):
            want = 100 if args.max == 0 else min(100, args.max - handled)
            reply = r.xreadgroup(args.group, args.consumer, {args.stream: "0" if pending else ">"},
                                 count=want, block=None if pending else args.block_ms)
            entries = reply[0][1] if reply else []
            if not entries:
                if not pending and args.exit_when_idle:
                    break
                pending = False
                continue
            for entry_id, fields in entries:
                if stopping or (args.max and handled >= args.max):
                    break  # the rest stays pending and comes first next time
                if handle(r, args, entry_id, fields):
                    handled += 1
    except redis.RedisError as e:
        print(f"stock_service: {describe(e, args.redis)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
