#!/usr/bin/python3
"""Profile walstream on a fixed backlog: the loop used to find and check the speed-ups (issue 3).

    bench/profile.py setup [--dir D] [--changes 300000]   servers in D/srv + one backlog (bench/run.py's mix)
    bench/profile.py drain [--dir D] [--tls] BIN [WRAPPER...]
                                                   drain a copy of the backlog with BIN, under WRAPPER;
                                                   --tls: into a Redis of its own over rediss://
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
import redis
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


class TlsRedis:
    """--tls: a second redis-server in D/tls with a TLS port (certificates made once with openssl: a CA
    and a server certificate for 127.0.0.1) and a plain port for the checks; the same settings as
    scripts/servers.sh's (no persistence). Stopped by stop()."""

    def __init__(self, folder):
        self.dir = Path(folder) / "tls"
        self.dir.mkdir(exist_ok=True)
        if not (self.dir / "server.crt").exists():
            for cmd in ("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 "
                        "-subj '/CN=walstream bench CA'",
                        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=127.0.0.1'",
                        "printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext",
                        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 1 -days 30 "
                        "-extfile server.ext -out server.crt"):
                subprocess.run(cmd, shell=True, cwd=self.dir, check=True, capture_output=True, timeout=60)
        self.port, self.tls_port = bench.free_port(), bench.free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--tls-port", str(self.tls_port), "--tls-cert-file", str(self.dir / "server.crt"),
             "--tls-key-file", str(self.dir / "server.key"), "--tls-ca-cert-file", str(self.dir / "ca.crt"),
             "--tls-auth-clients", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=120)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def url(self):
        return f"rediss://127.0.0.1:{self.tls_port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def redis_cpu_s(r):
    info = r.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def drain(args):
    srv = servers(args.dir, attach=True)
    backlog = json.loads((Path(args.dir) / "backlog.json").read_text())
    conn = srv.connect(DB)
    tls = TlsRedis(args.dir) if args.tls else None
    try:
        r = tls.client if tls else srv.redis()
        r.flushall()
        if bench.q1(conn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)):
            bench.drop_slot(conn, SLOT)
        bench.copy_slot(conn, SLOT)
        ws = bench.Walstream(args.bin, srv, DB, SLOT, PREFIX, str(Path(args.dir) / "walstream.log"))
        if tls:
            at = ws.cmd.index("--redis")
            ws.cmd[at + 1] = tls.url()
            ws.cmd[at + 2:at + 2] = ["--redis-tls-ca", str(tls.dir / "ca.crt")]
        ws.cmd = args.wrapper + ws.cmd
        rcpu0 = redis_cpu_s(r)
        t0 = time.perf_counter()
        ws.start()
        try:
            t1 = bench.wait_slot(conn, SLOT, backlog["end_lsn"], ws, 3600)
            fig = proc_figures(ws.proc.pid)
            rcpu = redis_cpu_s(r) - rcpu0
        finally:
            ws.stop(600)
        stored = sum(bench.stream_counts(r, PREFIX).values())
        bench.drop_slot(conn, SLOT)
        r.flushall()
    finally:
        if tls:
            tls.stop()
    n = backlog["changes"]
    cpu = fig["user_s"] + fig["sys_s"]
    print(f"{'TLS: ' if tls else ''}{n} changes, {stored} in Redis; wall {t1 - t0:.2f} s; CPU {cpu:.2f} s = "
          f"{cpu / n * 1e6:.2f} µs/change (user {fig['user_s']:.2f}, sys {fig['sys_s']:.2f}); Redis "
          f"{rcpu / n * 1e6:.2f} µs/change; {fig['voluntary_switches']} voluntary context switches; peak RSS "
          f"{fig['peak_rss_mb']:.1f} MB")
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
            p.add_argument("--tls", action="store_true",
                           help="write to a Redis of its own over rediss:// (TlsRedis) instead of the servers' Redis")
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
