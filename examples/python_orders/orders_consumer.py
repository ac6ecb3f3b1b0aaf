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


def handle(fields):
    """One entry's reaction; True when it was a new order."""
    if not fields or fields.get("op") != "c":
        return False  # updates, deletes, truncates, snapshot rows (`r`): not new orders
    order = json.loads(fields["after"])
    print(f"new order {order['id']} for user {order['user_id']} total {order['total']}", flush=True)
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
        print(f"orders_consumer: {describe(e, args.redis)}", file=sys.stderr)
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
        print(f"orders_consumer: {describe(e, args.redis)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
