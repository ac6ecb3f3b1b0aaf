#!/usr/bin/python3
"""Drain cost on one Redis against a 3-master Redis Cluster (issue 12 §2), on profile.py's backlog.

    bench/profile.py setup [--dir D] [--changes 300000]    the servers and the backlog, once
    bench/cluster_drain.py [--dir D] [--reps 3] BIN         one Redis and the cluster, alternately

Each rep drains a copy of the backlog's slot with BIN into profile.py's Redis, then into a cluster of
three masters started here (redis-server --cluster-enabled yes, no replicas, no persistence, like
profile.py's Redis; redis-cli --cluster create), checks every change is in Redis, and prints wall time,
walstream's CPU per change and Redis's (summed over the masters). Medians at the end. Not a test; only
loopback servers. The cluster is stopped and removed at the end.
"""

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_profile", REPO / "bench" / "profile.py")
profile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile)
bench = profile.bench


class Cluster:
    def __init__(self, masters=3):
        self.dir = Path(tempfile.mkdtemp(prefix="walstream-cluster-bench-"))
        self.ports = [bench.free_port() for _ in range(masters)]
        self.procs = []
        for p in self.ports:
            d = self.dir / str(p)
            d.mkdir()
            self.procs.append(subprocess.Popen(
                ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(d), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.clients = [redis.Redis(host="127.0.0.1", port=p, socket_timeout=120) for p in self.ports]
        for c in self.clients:
            self._wait(lambda: c.ping())
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        self._wait(lambda: all(c.cluster("info")["cluster_state"] == "ok" for c in self.clients))

    @staticmethod
    def _wait(ok, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ok():
                    return
            except redis.exceptions.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not come up")
            time.sleep(0.05)

    def url(self):
        return "redis://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def cpu_s(self):
        return sum(profile.redis_cpu_s(c) for c in self.clients)

    def stored(self, prefix):
        return sum(sum(bench.stream_counts(c, prefix).values()) for c in self.clients)

    def flush(self):
        for c in self.clients:
            c.flushall()

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def drain_once(args, srv, backlog, cluster):
    conn = srv.connect(profile.DB)
    single = srv.redis()
    single.flushall()
    if cluster:
        cluster.flush()
    if bench.q1(conn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (profile.SLOT,)):
        bench.drop_slot(conn, profile.SLOT)
    bench.copy_slot(conn, profile.SLOT)
    ws = bench.Walstream(args.bin, srv, profile.DB, profile.SLOT, profile.PREFIX,
                         str(Path(args.dir) / ("walstream-cluster.log" if cluster else "walstream-single.log")))
    if cluster:
        ws.cmd[ws.cmd.index("--redis") + 1] = cluster.url()
    cpu0 = cluster.cpu_s() if cluster else profile.redis_cpu_s(single)
    t0 = time.perf_counter()
    ws.start()
    try:
        t1 = bench.wait_slot(conn, profile.SLOT, backlog["end_lsn"], ws, 3600)
        fig = profile.proc_figures(ws.proc.pid)
        rcpu = (cluster.cpu_s() if cluster else profile.redis_cpu_s(single)) - cpu0
    finally:
        ws.stop(600)
    stored = cluster.stored(profile.PREFIX) if cluster else sum(bench.stream_counts(single, profile.PREFIX).values())
    bench.drop_slot(conn, profile.SLOT)
    n = backlog["changes"]
    if stored != n:
        sys.exit(f"Redis holds {stored} entries, expected {n}")
    cpu = fig["user_s"] + fig["sys_s"]
    out = {"wall_s": t1 - t0, "cpu_us": cpu / n * 1e6, "redis_us": rcpu / n * 1e6, "rss_mb": fig["peak_rss_mb"]}
    print(f"{'cluster' if cluster else 'one Redis'}: {n} changes; wall {out['wall_s']:.2f} s; walstream "
          f"{out['cpu_us']:.2f} µs/change; Redis {out['redis_us']:.2f} µs/change; peak RSS {out['rss_mb']:.1f} MB",
          flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/walstream-profile")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("bin")
    args = ap.parse_args()
    srv = profile.servers(args.dir, attach=True)
    backlog = __import__("json").loads((Path(args.dir) / "backlog.json").read_text())
    cluster = Cluster()
    runs = {"single": [], "cluster": []}
    try:
        for _ in range(args.reps):
            runs["single"].append(drain_once(args, srv, backlog, None))
            runs["cluster"].append(drain_once(args, srv, backlog, cluster))
    finally:
        cluster.stop()
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
    s, c = med["single"], med["cluster"]
    print(f"medians of {args.reps}: wall {s['wall_s']:.2f} -> {c['wall_s']:.2f} s; walstream {s['cpu_us']:.2f} -> "
          f"{c['cpu_us']:.2f} µs/change (x{c['cpu_us'] / s['cpu_us']:.2f}); Redis {s['redis_us']:.2f} -> "
          f"{c['redis_us']:.2f} µs/change (x{c['redis_us'] / s['redis_us']:.2f}); peak RSS {s['rss_mb']:.1f} -> "
          f"{c['rss_mb']:.1f} MB")


if __name__ == "__main__":
    main()
