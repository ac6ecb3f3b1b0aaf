#!/usr/bin/python3
"""Outbox events against plain row changes: the same inserts drained twice from identical slot copies.

    bench/events.py [--events 200000] [--batch 10] [--reps 3] [--bin PATH] [--out bench/events.json]

One table shaped like an outbox (id uuid, aggregatetype, aggregateid, type, payload jsonb, tenant) gets
--events inserts in transactions of --batch rows. walstream then drains copies of the slot alternately,
--reps times each: once with `--outbox public.outbox` (every insert an event on events:order), once
without (every insert a row change on public.outbox). Same WAL, same walsender work, same number of
entries: the ratio is what an event costs against a row change. Reported (medians): wall time,
entries/s, walstream CPU µs per entry, peak RSS, Redis entries checked.
Starts its own PostgreSQL 15 and Redis 7 (bench/run.py's Servers, Redis without persistence) in a
temporary folder and stops them. Not a test; only loopback servers it started itself.
"""

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

DB = "events"


def build(srv, events, batch):
    admin = srv.connect("postgres")
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB}")
    conn = srv.connect(DB)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text NOT NULL, "
                    "aggregateid text NOT NULL, type text NOT NULL, payload jsonb NOT NULL, tenant text)")
        cur.execute("CREATE PUBLICATION walstream FOR ALL TABLES")
        cur.execute("SELECT lsn FROM pg_create_logical_replication_slot('src', 'pgoutput')")
        t0 = time.perf_counter()
        for start in range(0, events, batch):
            n = min(batch, events - start)
            cur.execute(
                "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, tenant) "
                "SELECT 'order', g::text, 'OrderPlaced', jsonb_build_object('order', g, 'user', g %% 977, "
                "'items', jsonb_build_array(jsonb_build_object('sku', 'sku-' || (g %% 50), 'qty', 1 + g %% 3)), "
                "'total', (g %% 10000) / 100.0), 'acme' FROM generate_series(%s, %s) g",
                (start + 1, start + n))
        cur.execute("SELECT pg_current_wal_insert_lsn()::text")
        end = cur.fetchone()[0]
    bench.log(f"{events:,} inserts in transactions of {batch} generated in {time.perf_counter() - t0:.1f} s, "
              f"end {end}")
    return conn, end


def drain(binary, srv, conn, r, end, events, slot, outbox, logdir):
    r.flushall()
    bench.copy_slot(conn, slot)
    prefix = f"{slot}:"
    ws = bench.Walstream(binary, srv, DB, slot, prefix, str(Path(logdir) / f"{slot}.log"))
    if outbox:
        ws.cmd += ["--outbox", "public.outbox"]
    t0 = time.perf_counter()
    ws.start()
    try:
        t1 = bench.wait_slot(conn, slot, end, ws, bench.drain_timeout(events))
        cpu = bench.proc_cpu_s(ws.proc.pid)
        rss = bench.proc_hwm_mb(ws.proc.pid)
    finally:
        ws.stop(120)
    key = prefix + ("events:order" if outbox else "public.outbox")
    stored = r.xlen(key)
    bench.drop_slot(conn, slot)
    if stored != events:
        raise bench.BenchError(f"{key} holds {stored} entries, expected {events}")
    return {"wall_s": t1 - t0, "cpu_s": cpu, "peak_rss_mb": rss, "entries": stored}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=10, help="inserts per transaction (default 10)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bin", help="walstream binary (default: build-release/, built as bench/run.py does)")
    ap.add_argument("--out", default=str(REPO / "bench" / "events.json"))
    args = ap.parse_args()
    binary = args.bin or bench.build_release()[0]
    with tempfile.TemporaryDirectory(prefix="walstream-events-") as tmp:
        Path(tmp).chmod(0o755)  # PostgreSQL runs as its own user and must reach its folder
        srv = bench.Servers(Path(tmp) / "srv")
        srv.start()
        try:
            conn, end = build(srv, args.events, args.batch)
            r = srv.redis()
            runs = {"events": [], "rows": []}
            for rep in range(args.reps):
                for kind in ("events", "rows"):
                    res = drain(binary, srv, conn, r, end, args.events, f"{kind}_{rep}", kind == "events", tmp)
                    runs[kind].append(res)
                    bench.log(f"rep {rep + 1} {kind:6} {res['wall_s']:6.2f} s  cpu {res['cpu_s']:5.2f} s  "
                              f"rss {res['peak_rss_mb']:5.1f} MB")
        finally:
            srv.stop()
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("wall_s", "cpu_s", "peak_rss_mb")}
           for k, v in runs.items()}
    n = args.events
    print(f"{'':8} {'wall s':>7} {'entries/s':>10} {'CPU µs/entry':>13} {'peak RSS MB':>12}")
    for kind in ("rows", "events"):
        m = med[kind]
        print(f"{kind:8} {m['wall_s']:7.2f} {n / m['wall_s']:10,.0f} {m['cpu_s'] / n * 1e6:13.2f} "
              f"{m['peak_rss_mb']:12.1f}")
    ratio_wall = med["events"]["wall_s"] / med["rows"]["wall_s"]
    ratio_cpu = med["events"]["cpu_s"] / med["rows"]["cpu_s"]
    print(f"events / rows: wall {ratio_wall:.2f}x, walstream CPU {ratio_cpu:.2f}x")
    Path(args.out).write_text(json.dumps({"events": n, "batch": args.batch, "reps": args.reps, "runs": runs,
                                          "medians": med, "ratio_wall": ratio_wall, "ratio_cpu": ratio_cpu},
                                         indent=1))
    print(f"results: {args.out}")


if __name__ == "__main__":
    try:
        main()
    except bench.BenchError as e:
        sys.exit(f"bench/events.py: {e}")
