#!/usr/bin/python3
"""Drain cost on a Redis Cluster: walstream draining the same backlog into one Redis and into a 3-master cluster.

    bench/cluster.py [--changes 600000] [--reps 3] [--bin PATH] [--out bench/cluster.json]

What it does:
  1. starts a private PostgreSQL 15 and Redis 7 with scripts/servers.sh (as bench/run.py does), and a
     Redis Cluster of 3 masters without replicas (`redis-server --cluster-enabled yes` on free loopback
     ports, `redis-cli --cluster create … --cluster-replicas 0`), all with appendonly no and no RDB;
  2. builds bench/run.py's backlog (pgbench -i, the 22-column wide table written by many small
     transactions with updates and deletes, a pgbench tpcb-like run) behind a slot, and counts its
     changes exactly from the slot;
  3. per rep, on identical copies of the slot (pg_copy_logical_replication_slot): pg_recvlogical (the
     baseline: PostgreSQL's own client draining the same slot into /dev/null), walstream into the one
     Redis, walstream into the cluster (`--redis redis://h:p1,h:p2,h:p3`, the seeds); a drain ends when
     the copy's confirmed_flush_lsn reaches the backlog's end and Redis (every master) holds every change;
  4. reports wall time, walstream CPU per change, Redis CPU per change (the one Redis, or the three
     masters together), peak RSS, how the streams spread over the masters, and the ratios cluster / one
     Redis of walstream's CPU per change (the figure issue 12 bounds at 1.5x) and of wall time.

Only loopback addresses; every subprocess is bounded by a timeout; servers stopped at the end whatever
happens. Not a test: nothing here runs under ctest. Medians of --reps.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

REPO = bench.REPO
MASTERS = 3


def log(msg):
    bench.log(msg)


def crc16(data):
    """CRC16-XMODEM, Redis Cluster's key hash."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key):
    k = key.encode()
    start = k.find(b"{")
    if start >= 0:
        end = k.find(b"}", start + 1)
        if end > start + 1:
            k = k[start + 1:end]
    return crc16(k) % 16384


class Cluster:
    """Three cluster-enabled redis-server processes on free loopback ports, joined by redis-cli."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.ports = []
        self.procs = []

    def start(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        for i in range(MASTERS):
            port = bench.free_port()
            d = self.folder / str(port)
            d.mkdir()
            self.procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
                 "--save", "", "--appendonly", "no", "--logfile", str(d / "redis.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.ports.append(port)
        for port in self.ports:
            self._wait(lambda: self.node(port).ping(), f"redis-server on {port}")
        bench.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                   "--cluster-replicas", "0", "--cluster-yes"], timeout=60)
        for port in self.ports:
            self._wait(lambda: self.node(port).execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") >= 0,
                       f"cluster_state:ok on {port}")

    def _wait(self, ready, what, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise bench.BenchError(f"{what} not ready within {timeout} s")
            time.sleep(0.05)

    def node(self, port):
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=120)

    def master_of(self, key):
        slot = key_slot(key)
        for lo, hi, master, *_ in self.node(self.ports[0]).execute_command("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                return int(master[1])
        raise bench.BenchError(f"no master serves slot {slot}")

    def spread_prefix(self, base, tables):
        """A prefix (no hash tag) under which the heaviest streams land on different masters and every
        master gets one: tables in decreasing size."""
        for k in range(1000):
            prefix = f"{base}{k}:"
            masters = [self.master_of(prefix + "public." + t) for t in tables]
            if len(set(masters[:MASTERS])) == MASTERS:
                return prefix
        raise bench.BenchError("no prefix spreads the streams over every master")

    def url(self):
        return "redis://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def cpu_s(self):
        return sum(bench.redis_cpu_s(self.node(p)) for p in self.ports)

    def stream_counts(self, prefix):
        """Streams under prefix on every master: {table: entries}, and {port: entries} (how they spread)."""
        counts, per_master = {}, {}
        for p in self.ports:
            n = 0
            r = self.node(p)
            for key in r.scan_iter(match=prefix.encode() + b"*", count=1000, _type="stream"):
                length = r.xlen(key)
                counts[key.decode()[len(prefix):]] = counts.get(key.decode()[len(prefix):], 0) + length
                n += length
            per_master[p] = n
        return counts, per_master

    def flushall(self):
        for p in self.ports:
            self.node(p).flushall()

    def used_memory_mb(self):
        return sum(self.node(p).info("memory")["used_memory"] for p in self.ports) / 2**20

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def drain(binary, srv, conn, target, backlog, slot, prefix, logdir, live):
    """walstream drains a copy of the backlog's slot into `target` (the one Redis or the cluster)."""
    bench.copy_slot(conn, slot)
    ws = bench.Walstream(binary, srv, backlog["database"], slot, prefix, str(logdir / f"{slot}.log"))
    if isinstance(target, Cluster):
        ws.cmd[ws.cmd.index("--redis") + 1] = target.url()
        cpu_of, counts_of = target.cpu_s, target.stream_counts
    else:
        cpu_of = lambda: bench.redis_cpu_s(target)  # noqa: E731
        counts_of = lambda p: (bench.stream_counts(target, p), {})  # noqa: E731
    live.append(ws)
    expected = backlog["changes"]
    timeout = bench.drain_timeout(expected)
    redis_cpu0 = cpu_of()
    t0 = time.perf_counter()
    ws.start()
    try:
        deadline = time.monotonic() + timeout
        t_end = bench.wait_slot(conn, slot, backlog["end_lsn"], ws, timeout)
        while True:
            counts, per_master = counts_of(prefix)
            total = sum(counts.values())
            if total == expected:
                break
            if total > expected or time.monotonic() > deadline:
                raise bench.BenchError(f"{slot}: Redis holds {total} entries under {prefix}, expected {expected}")
            time.sleep(bench.POLL_S)
            t_end = time.perf_counter()
        sample = ws.sample()
    finally:
        rc = ws.stop()
        live.remove(ws)
    redis_cpu = cpu_of() - redis_cpu0
    if rc != 0:
        raise bench.BenchError(f"walstream exit {rc} after SIGTERM; log {ws.logfile}")
    mismatched = {t: (counts.get(t, 0), n) for t, n in backlog["changes_per_table"].items() if counts.get(t, 0) != n}
    if mismatched:
        raise bench.BenchError(f"{slot}: per-stream counts differ from the slot's: {mismatched}")
    memory = target.used_memory_mb() if isinstance(target, Cluster) else target.info("memory")["used_memory"] / 2**20
    bench.drop_slot(conn, slot)
    target.flushall()
    return {"wall_s": t_end - t0, "cpu_s": sample["cpu_s"], "peak_rss_mb": sample["peak_rss_mb"],
            "redis_cpu_s": redis_cpu, "redis_used_memory_mb": round(memory, 1),
            "entries_per_master": {str(k): v for k, v in per_master.items()},
            "warnings": [l for l in ws.log_lines() if " WARN " in l or " ERROR " in l][:20]}


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=600_000, help="backlog size in changes, about (default 600,000)")
    ap.add_argument("--scale", type=int, default=10, help="pgbench scale of the backlog's first part (default 10)")
    ap.add_argument("--reps", type=int, default=3, help="drains per contender (default 3; medians reported)")
    ap.add_argument("--bin", help="walstream binary (default: build-release/, built as bench/run.py does)")
    ap.add_argument("--out", default=str(REPO / "bench" / "cluster.json"))
    args = ap.parse_args()
    binary = str(Path(args.bin).resolve()) if args.bin else bench.build_release()[0]

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="walstream-clusterbench-"))
    os.chmod(tmp, 0o755)  # PostgreSQL runs as postgres when we are root
    srv = bench.Servers(tmp / "srv")
    cluster = Cluster(tmp / "cluster")
    live = []
    ok = False

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        log(f"servers in {tmp}")
        srv.start()
        cluster.start()
        log(f"cluster: {cluster.url()}")
        machine = bench.machine_info(srv, binary)
        r = srv.redis()
        logdir = tmp / "logs"
        logdir.mkdir()
        plan = bench.plan_backlog(args.changes, args.scale, True)
        backlog = bench.build_backlog(srv, "clusterbench", plan)
        conn = srv.connect(backlog["database"])
        log(f"backlog: {backlog['changes']:,} changes in {len(backlog['changes_per_table'])} tables")
        # The streams' names under the prefix (public.<table>), heaviest first: spread over the masters.
        by_size = [t.split(".", 1)[-1] for t, _ in sorted(backlog["changes_per_table"].items(), key=lambda kv: -kv[1])]
        runs = {"pg_recvlogical": [], "one_redis": [], "cluster": []}
        for rep in range(1, args.reps + 1):
            x = bench.drain_recvlogical(srv, conn, backlog, f"cb_rl_{rep}")
            runs["pg_recvlogical"].append(x)
            log(f"rep {rep} pg_recvlogical  {x['wall_s']:6.2f} s  cpu {x['cpu_s']:5.2f} s")
            for name, target in (("one_redis", r), ("cluster", cluster)):
                prefix = cluster.spread_prefix(f"cb{rep}{name[:3]}", by_size)
                x = drain(binary, srv, conn, target, backlog, f"cb_{name[:3]}_{rep}", prefix, logdir, live)
                runs[name].append(x)
                log(f"rep {rep} {name:14}  {x['wall_s']:6.2f} s  cpu {x['cpu_s']:5.2f} s  "
                    f"Redis {x['redis_cpu_s']:5.2f} s  rss {x['peak_rss_mb']:5.1f} MB"
                    + (f"  per master {x['entries_per_master']}" if x["entries_per_master"] else ""))
        changes = backlog["changes"]
        summary = {}
        for name, rs in runs.items():
            s = {"wall_s": round(med(rs, "wall_s"), 3), "wall_s_all": [round(x["wall_s"], 3) for x in rs],
                 "changes_per_s": round(changes / med(rs, "wall_s")),
                 "cpu_us_per_change": round(med(rs, "cpu_s") / changes * 1e6, 3),
                 "peak_rss_mb": round(med(rs, "peak_rss_mb"), 1)}
            if name != "pg_recvlogical":
                s["redis_cpu_us_per_change"] = round(med(rs, "redis_cpu_s") / changes * 1e6, 3)
                s["entries_per_master"] = rs[-1]["entries_per_master"]
            summary[name] = s
        one, cl, rl = summary["one_redis"], summary["cluster"], summary["pg_recvlogical"]
        summary["ratio_cluster_over_one_cpu_per_change"] = round(cl["cpu_us_per_change"] / one["cpu_us_per_change"], 3)
        summary["ratio_cluster_over_one_wall"] = round(cl["wall_s"] / one["wall_s"], 3)
        summary["ratio_cluster_over_one_redis_cpu"] = round(
            cl["redis_cpu_us_per_change"] / one["redis_cpu_us_per_change"], 3)
        summary["ratio_one_over_pg_recvlogical_wall"] = round(one["wall_s"] / rl["wall_s"], 3)
        summary["ratio_cluster_over_pg_recvlogical_wall"] = round(cl["wall_s"] / rl["wall_s"], 3)
        results = {"config": {"changes": changes, "reps": args.reps, "binary": binary, "masters": MASTERS,
                              "replicas": 0, "redis_appendonly": "no",
                              "changes_per_table": backlog["changes_per_table"]},
                   "machine": machine, "runs": runs, "summary": summary,
                   "total_s": round(time.perf_counter() - t_start, 1)}
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"{'contender':16} {'wall s':>8} {'changes/s':>10} {'CPU µs/chg':>11} {'Redis µs/chg':>13} {'RSS MB':>7}")
        for name in ("pg_recvlogical", "one_redis", "cluster"):
            s = summary[name]
            print(f"{name:16} {s['wall_s']:8.2f} {s['changes_per_s']:10,} {s['cpu_us_per_change']:11.2f} "
                  f"{s.get('redis_cpu_us_per_change', float('nan')):13.2f} {s['peak_rss_mb']:7.1f}")
        print(f"cluster / one Redis: walstream CPU per change x{summary['ratio_cluster_over_one_cpu_per_change']}, "
              f"wall x{summary['ratio_cluster_over_one_wall']}, Redis CPU x{summary['ratio_cluster_over_one_redis_cpu']}; "
              f"entries per master {cl['entries_per_master']}")
        print(f"results: {args.out}  ({results['total_s']} s in all)")
        ok = True
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        for ws in list(live):
            try:
                ws.stop(10)
            except Exception as e:  # noqa: BLE001
                log(f"stopping walstream: {e}")
        cluster.stop()
        srv.stop()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp} for a look")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench.BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
