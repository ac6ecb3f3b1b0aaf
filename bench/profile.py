#!/usr/bin/python3
"""Profile walstream on a fixed backlog: the loop used to find and check the speed-ups (issue 3).

    bench/profile.py setup [--dir D] [--changes 300000]   servers in D/srv + one backlog (bench/run.py's mix)
    bench/profile.py drain [--dir D] BIN [WRAPPER...]     drain a copy of the backlog with BIN, under WRAPPER
    bench/profile.py stop  [--dir D]                      stop the servers

`drain` copies the backlog's slot (pg_copy_logical_replication_slot), runs BIN until the copy's
confirmed_flush_lsn reaches the backlog's end, checks Redis holds every change, and prints walstream's
user and sys CPU, context switches and peak RSS. WRAPPER is a command put in front of BIN, e.g.

    bench/profile.py drain build-prof/cdc/cli/walstream valgrind --tool=callgrind --callgrind-out-file=cg.out

Instruction counts (callgrind) are stable on a shared, noisy machine where times are not; build with
`-DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-g` so the profile is of the code bench/run.py times.
`bench/profile.py sum cg.out 'StreamWriter::on_io\\('` adds up a function's inclusive cost over the
file:function pieces inlining splits it into (callgrind_annotate lists them apart).
Not a test; only loopback servers it started itself.
"""

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

DB = "profile"
SLOT = "profile_copy"
PREFIX = "profile:"


def servers(folder, attach):
    srv = bench.Servers(Path(folder) / "srv")
    if attach:
        env = {}
        for line in (srv.folder / "env").read_text().splitlines():
            if line.strip().startswith("export "):
                for kv in line.strip()[len("export "):].split():
                    k, _, v = kv.partition("=")
                    env[k] = v
        srv.env, srv.pg_port, srv.redis_port, srv.started = env, int(env["PGPORT"]), int(env["REDIS_PORT"]), True
    return srv


def proc_figures(pid):
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = dict(l.split(":", 1) for l in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in l)
    return {
        "user_s": int(stat[11]) / bench.CLK_TCK,
        "sys_s": int(stat[12]) / bench.CLK_TCK,
        "voluntary_switches": int(status["voluntary_ctxt_switches"]),
        "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
    }


def setup(args):
    srv = servers(args.dir, attach=False)
    srv.start()
    backlog = bench.build_backlog(srv, DB, bench.plan_backlog(args.changes, 0, args.changes))
    (Path(args.dir) / "backlog.json").write_text(json.dumps(backlog, indent=1))
    print(f"backlog of {backlog['changes']} changes in {args.dir}: {backlog['changes_per_table']}")


def drain(args):
    srv = servers(args.dir, attach=True)
    backlog = json.loads((Path(args.dir) / "backlog.json").read_text())
    conn, r = srv.connect(DB), srv.redis()
    r.flushall()
    if bench.q1(conn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)):
        bench.drop_slot(conn, SLOT)
    bench.copy_slot(conn, SLOT)
    ws = bench.Walstream(args.bin, srv, DB, SLOT, PREFIX, str(Path(args.dir) / "walstream.log"))
    ws.cmd = args.wrapper + ws.cmd
    t0 = time.perf_counter()
    ws.start()
    try:
        t1 = bench.wait_slot(conn, SLOT, backlog["end_lsn"], ws, 3600)
        fig = proc_figures(ws.proc.pid)
    finally:
        ws.stop(600)
    stored = sum(bench.stream_counts(r, PREFIX).values())
    bench.drop_slot(conn, SLOT)
    r.flushall()
    n = backlog["changes"]
    cpu = fig["user_s"] + fig["sys_s"]
    print(f"{n} changes, {stored} in Redis; wall {t1 - t0:.2f} s; CPU {cpu:.2f} s = {cpu / n * 1e6:.2f} µs/change "
          f"(user {fig['user_s']:.2f}, sys {fig['sys_s']:.2f}); {fig['voluntary_switches']} voluntary context "
          f"switches; peak RSS {fig['peak_rss_mb']:.1f} MB")
    if stored != n:
        sys.exit(f"Redis holds {stored} entries, expected {n}")


def summed(args):
    out = subprocess.run(["callgrind_annotate", "--tree=calling", "--threshold=100", args.file],
                         capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"([\d,]+) \([^)]*\)\s+PROGRAM TOTALS", out).group(1).replace(",", ""))
    print(f"{'PROGRAM TOTALS':40s} {total / 1e6:10.1f} M")
    line = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+(\*|>)\s+[^:]*:(.*?)(?: \(\d[\d,]*x\))?(?: \[.*\])?$")
    for pattern in args.functions:
        rx, cost, inside = re.compile(pattern), 0, False
        for l in out.splitlines():
            m = line.match(l)
            if not m:
                inside = inside and bool(l.strip())
                continue
            n, kind, fn = int(m.group(1).replace(",", "")), m.group(2), m.group(3)
            if kind == "*":  # a function's own cost opens its block…
                inside = bool(rx.search(fn))
                cost += n if inside else 0
            elif inside and not rx.search(fn):  # …then what it calls, except its own inlined pieces
                cost += n
        print(f"{pattern:40s} {cost / 1e6:10.1f} M")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("setup", "drain", "stop"):
        p = sub.add_parser(name)
        p.add_argument("--dir", default="/tmp/walstream-profile")
        if name == "setup":
            p.add_argument("--changes", type=int, default=300_000)
        if name == "drain":
            p.add_argument("bin")
            p.add_argument("wrapper", nargs=argparse.REMAINDER)
    p = sub.add_parser("sum")
    p.add_argument("file")
    p.add_argument("functions", nargs="+")
    args = ap.parse_args()
    if args.cmd == "setup":
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        setup(args)
    elif args.cmd == "drain":
        drain(args)
    elif args.cmd == "stop":
        servers(args.dir, attach=True).stop()
    else:
        summed(args)


if __name__ == "__main__":
    main()
