#!/usr/bin/python3
"""walstream benchmark: drain throughput against pg_recvlogical, live latency, growth with backlog size.

    bench/run.py [--scale N] [--sizes 600000,2400000] [--out bench/results.json] [--bin PATH] [--probe PATH] [--reps 3]

What it does (see the "Benchmark" section of README.md):
  1. builds walstream and bench/latency_probe in Release into build-release/ (unless --bin is given);
  2. starts a private PostgreSQL 15 and Redis 7 with scripts/servers.sh in a temporary folder
     (Redis with appendonly no), and stops them at the end whatever happens;
  3. for each backlog size: in a fresh database, creates the publication and a pgoutput slot first,
     then generates the backlog (pgbench -i, a table of wide rows written by many small transactions
     with updates and deletes, a pgbench tpcb-like run), records the end LSN and counts the changes
     exactly from the slot; then pg_recvlogical and walstream alternately drain an identical copy of
     the slot (pg_copy_logical_replication_slot), --reps times each, and the medians are reported;
  4. latency: walstream streams a live pgbench -R 1000 run while a subscriber XREADs the four pgbench
     streams; latency = arrival time - the entry's commit time (`ts`). The subscriber is
     bench/latency_probe (C++, built with walstream), so its own overhead stays out of the tail; a
     Python thread stands in if the probe is not built;
  5. prints a table and writes every figure with machine information to a JSON file.

Only loopback addresses are used; every subprocess is bounded by a timeout. Not a test: nothing here
runs under ctest.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import psycopg2.errors
import redis

REPO = Path(__file__).resolve().parent.parent
PGBIN = Path(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL_S = 0.02  # how often the drain's end is checked
SCRAPE_EVERY_S = 0.1  # the scraped walstream drain: /metrics GET this often


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ----------------------------------------------------------------------------------------------
# processes


def run(cmd, timeout, env=None, cwd=None, check=True):
    """Runs cmd to completion (bounded by timeout), returns CompletedProcess with text output."""
    try:
        p = subprocess.run(cmd, env=env, cwd=cwd, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"timed out after {timeout}s: {' '.join(map(str, cmd))}") from e
    if check and p.returncode != 0:
        raise BenchError(f"exit {p.returncode}: {' '.join(map(str, cmd))}\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return p


def spawn_wait4(cmd, timeout, env=None):
    """Runs cmd and reaps it with wait4: returns (exit code, wall seconds, rusage, stderr). Kills it on
    timeout or interruption."""
    err_file = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_file)
    result = {}

    def reap():
        _, status, ru = os.wait4(p.pid, 0)
        result["t"] = time.perf_counter()
        result["status"] = status
        result["ru"] = ru

    th = threading.Thread(target=reap, daemon=True)
    th.start()
    try:
        th.join(timeout)
    finally:
        if th.is_alive():  # timed out, or interrupted
            os.kill(p.pid, signal.SIGKILL)
            th.join(10)
            p.returncode = -9
    if p.returncode == -9:
        raise BenchError(f"timed out after {timeout}s: {' '.join(cmd)}")
    p.returncode = os.waitstatus_to_exitcode(result["status"])
    err_file.seek(0)
    err = err_file.read().decode(errors="replace")
    err_file.close()
    return p.returncode, result["t"] - t0, result["ru"], err


class WalsenderCpu:
    """Follows the CPU time of the walsender serving a slot (PostgreSQL's decoding side of a drain):
    finds it from pg_replication_slots.active_pid and samples /proc/<pid>/stat every 20 ms until it
    exits or stop() is called. The last sample before the walsender exits is up to 20 ms short."""

    def __init__(self, srv, db, slot):
        self.srv, self.db, self.slot = srv, db, slot
        self.pid = None
        self.cpu_s = None
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._loop, daemon=True)
        self._th.start()

    def _loop(self):
        try:
            conn = self.srv.connect(self.db)
        except psycopg2.Error:
            return
        try:
            while not self._stop.is_set() and self.pid is None:
                self.pid = q1(conn, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (self.slot,))
                if self.pid is None:
                    time.sleep(0.01)
        except psycopg2.Error:
            return
        finally:
            conn.close()
        while self.pid is not None and not self._stop.is_set():
            if not self.sample():
                return
            time.sleep(0.02)

    def sample(self):
        try:
            self.cpu_s = proc_cpu_s(self.pid)
            return True
        except (OSError, ValueError, IndexError):
            return False

    def stop(self):
        self._stop.set()
        self._th.join(5)
        return self.cpu_s


def redis_cpu_s(r):
    i = r.info("cpu")
    return float(i["used_cpu_user"]) + float(i["used_cpu_sys"])


def proc_cpu_s(pid):
    """utime + stime of a live process, in seconds (from /proc/<pid>/stat, clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_hwm_mb(pid):
    """Peak resident set size (VmHWM) of a live process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ----------------------------------------------------------------------------------------------
# servers


class Servers:
    def __init__(self, folder):
        self.folder = Path(folder)
        self.env = None
        self.started = False

    def start(self):
        self.started = True
        run([str(REPO / "scripts/servers.sh"), "start", str(self.folder)], timeout=180)
        env = {}
        for line in (self.folder / "env").read_text().splitlines():
            line = line.strip()
            if line.startswith("export "):
                for kv in line[len("export "):].split():
                    k, _, v = kv.partition("=")
                    env[k] = v
        self.env = env
        self.pg_port = int(env["PGPORT"])
        self.redis_port = int(env["REDIS_PORT"])
        for host in (env["PGHOST"],):
            if not host.startswith("127."):
                raise BenchError(f"servers.sh gave a non-loopback address {host}")
        r = self.redis()
        r.config_set("appendonly", "no")  # the benchmark measures walstream, not Redis's disk
        r.config_set("save", "")
        r.close()

    def stop(self):
        if self.started:
            try:
                run([str(REPO / "scripts/servers.sh"), "stop", str(self.folder)], timeout=120, check=False)
            except BenchError as e:
                log(f"stopping the servers: {e}")
            self.started = False

    def redis(self):
        return redis.Redis(host="127.0.0.1", port=self.redis_port, socket_timeout=120)

    def conninfo(self, db):
        return f"host=127.0.0.1 port={self.pg_port} user=postgres dbname={db}"

    def url(self, db):
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{db}"

    def redis_url(self):
        return f"redis://127.0.0.1:{self.redis_port}"

    def connect(self, db):
        c = psycopg2.connect(self.conninfo(db), connect_timeout=10, options="-c statement_timeout=900000")
        c.autocommit = True
        return c

    def proc_env(self, db):
        env = dict(os.environ)
        env.update(self.env)
        env["PGDATABASE"] = db
        env["PATH"] = f"{PGBIN}:{env.get('PATH', '')}"
        return env


def q1(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0] if cur.description else None


# ----------------------------------------------------------------------------------------------
# backlog

WIDE_DDL = """
CREATE TABLE bench_wide (
  id         bigint PRIMARY KEY,
  uid        uuid NOT NULL,
  account    integer NOT NULL,
  qty        smallint,
  big        bigint,
  price      numeric(12,2),
  amount     numeric,
  ratio      double precision,
  score      real,
  active     boolean,
  flagged    boolean,
  created    timestamptz,
  updated    timestamptz,
  day        date,
  title      text,
  body       text,
  note       varchar(64),
  code       char(8),
  region     text,
  tags       text[],
  counts     integer[],
  attrs      jsonb
)"""

WIDE_INSERT = """
INSERT INTO bench_wide
SELECT g, md5(g::text)::uuid, g %% 100000, (g %% 1000)::int2, g::bigint * 7919, (g %% 100000) / 100.0, g * 1.000001,
       g / 7.0, (g %% 1000) / 3.0, g %% 2 = 0, g %% 3 = 0,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', clock_timestamp(),
       date '2024-01-01' + (g %% 365), 'title ' || g,
       repeat(md5(g::text), 7),
       'note ' || g, lpad((g %% 100000000)::text, 8, '0'), 'region-' || (g %% 20),
       ARRAY['tag' || (g %% 10), 'tag' || (g %% 7), 'x y'], ARRAY[g %% 10, g %% 100, g %% 1000],
       jsonb_build_object('g', g, 'name', 'item ' || g, 'nested', jsonb_build_object('a', g %% 3, 'b', ARRAY[1, 2, 3]),
                          'ok', true, 'price', (g %% 997) / 10.0)
FROM generate_series(%s, %s) g"""

WIDE_UPDATE = """
UPDATE bench_wide SET qty = qty + 1, price = price + 0.01, updated = clock_timestamp(), active = NOT active,
       attrs = attrs || jsonb_build_object('v', %s), tags = tags || 'upd'::text
WHERE id BETWEEN %s AND %s"""

WIDE_DELETE = "DELETE FROM bench_wide WHERE id BETWEEN %s AND %s"

# Counts, per table, the entries walstream writes for the pgoutput messages of a slot up to an LSN:
# one per Insert/Update/Delete (relid at bytes 1..4) and one per relation of a Truncate
# ('T', int32 nrelations, int8 options, int32 relid...). Protocol 1: no xid prefix.
COUNT_SQL = """
WITH m AS MATERIALIZED (
  SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL,
                                                       'proto_version', '1', 'publication_names', 'walstream')
), rel AS (
  SELECT ((get_byte(data, 1)::bigint << 24) | (get_byte(data, 2) << 16) | (get_byte(data, 3) << 8)
          | get_byte(data, 4))::oid AS relid
  FROM m WHERE get_byte(data, 0) IN (73, 85, 68)
  UNION ALL
  SELECT ((get_byte(data, 6 + 4 * i)::bigint << 24) | (get_byte(data, 7 + 4 * i) << 16)
          | (get_byte(data, 8 + 4 * i) << 8) | get_byte(data, 9 + 4 * i))::oid
  FROM m, generate_series(0, ((get_byte(data, 1) << 24) | (get_byte(data, 2) << 16)
                              | (get_byte(data, 3) << 8) | get_byte(data, 4)) - 1) AS i
  WHERE get_byte(data, 0) = 84
)
SELECT coalesce(n.nspname || '.' || c.relname, 'oid ' || rel.relid::text), count(*)
FROM rel LEFT JOIN pg_class c ON c.oid = rel.relid LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
GROUP BY 1 ORDER BY 1"""

COMMITS_SQL = """
SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL,
                                                        'proto_version', '1', 'publication_names', 'walstream')
WHERE get_byte(data, 0) = 67"""


def plan_backlog(target, scale, first_target):
    """The workload for a backlog of about `target` changes.

    Two thirds of the changes are pgbench_accounts rows from `pgbench -i` (one large transaction,
    100,000 rows per scale unit); of the last third, three quarters go to the wide-row table (many
    small transactions: inserts, then updates and deletes among them) and a quarter to a pgbench
    tpcb-like run (4 changes per transaction). With --scale, the pgbench scale of the first backlog
    is given, the others scale with their size, and the extra workload is a third of the target."""
    if scale:
        s = max(1, round(scale * target / first_target))
    else:
        s = max(1, round(target * 2 / 3 / 100_000))
    extra = max(target // 3 if scale else target - 100_011 * s - 4, target // 10)
    pgbench_txns = max(100, round(extra * 0.25 / 4))
    wide = extra - pgbench_txns * 4
    inserts = max(100, round(wide * 0.75))
    updates = max(10, round(wide * 0.17))
    deletes = max(10, round(wide * 0.08))
    return {
        "target_changes": target,
        "pgbench_scale": s,
        "pgbench_init_rows": 100_011 * s,
        "wide_inserts": inserts,
        "wide_updates": updates,
        "wide_deletes": deletes,
        "wide_rows_per_insert_txn": 10,
        "wide_rows_per_update_txn": 5,
        "wide_rows_per_delete_txn": 5,
        "pgbench_clients": 2,
        "pgbench_txns_per_client": math.ceil(pgbench_txns / 2),
    }


def generate_wide(conn, plan):
    n_ins = plan["wide_inserts"]
    per_ins, per_upd, per_del = plan["wide_rows_per_insert_txn"], plan["wide_rows_per_update_txn"], plan[
        "wide_rows_per_delete_txn"]
    ins_batches = math.ceil(n_ins / per_ins)
    upd_batches = math.ceil(plan["wide_updates"] / per_upd)
    del_batches = math.ceil(plan["wide_deletes"] / per_del)
    # Updates and deletes are spread evenly among the inserts (from the first third on, so rows exist);
    # deletes eat the oldest rows, updates walk the rows above them, so every statement finds its rows
    # (the count from the slot is exact whatever happens; this keeps the workload what the plan says).
    start = ins_batches // 3
    span = max(1, ins_batches - start)
    inserted = 0
    del_next = 1
    upd_next = None
    upd_done = del_done = 0
    with conn.cursor() as cur:
        cur.execute(WIDE_DDL)
        for b in range(ins_batches):
            lo = inserted + 1
            hi = min(n_ins, inserted + per_ins)
            cur.execute(WIDE_INSERT, (lo, hi))
            inserted = hi
            if b < start:
                continue
            progress = (b - start + 1) / span
            while del_done < del_batches * progress and del_next + per_del - 1 < inserted // 2:
                cur.execute(WIDE_DELETE, (del_next, del_next + per_del - 1))
                del_next += per_del
                del_done += 1
            while upd_done < upd_batches * progress:
                if upd_next is None or upd_next + per_upd - 1 > inserted:
                    upd_next = max(del_next, inserted // 2)
                cur.execute(WIDE_UPDATE, (upd_done, upd_next, upd_next + per_upd - 1))
                upd_next += per_upd
                upd_done += 1


def build_backlog(srv, db, plan):
    """Creates database `db` with the publication and slot 'src' first, then the workload."""
    t0 = time.perf_counter()
    admin = srv.connect("postgres")
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {db}")
        cur.execute(f"CREATE DATABASE {db}")
    admin.close()
    conn = srv.connect(db)
    with conn.cursor() as cur:
        cur.execute("CREATE PUBLICATION walstream FOR ALL TABLES")
        cur.execute("SELECT lsn FROM pg_create_logical_replication_slot('src', 'pgoutput')")
        start_lsn = cur.fetchone()[0]
    env = srv.proc_env(db)
    log(f"{db}: pgbench -i -s {plan['pgbench_scale']}")
    run(["pgbench", "-i", "-s", str(plan["pgbench_scale"])], timeout=900, env=env)
    log(f"{db}: wide table, {plan['wide_inserts']} inserts, {plan['wide_updates']} updates, "
        f"{plan['wide_deletes']} deletes in small transactions")
    generate_wide(conn, plan)
    log(f"{db}: pgbench -c 2 -t {plan['pgbench_txns_per_client']}")
    p = run(["pgbench", "-n", "-c", str(plan["pgbench_clients"]), "-j", str(plan["pgbench_clients"]),
             "-t", str(plan["pgbench_txns_per_client"])], timeout=900, env=env)
    end_lsn = q1(conn, "SELECT pg_current_wal_lsn()")
    gen_s = time.perf_counter() - t0
    log(f"{db}: counting the changes in the slot up to {end_lsn}")
    t1 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(COUNT_SQL, ("src", end_lsn))
        per_table = {name: int(n) for name, n in cur.fetchall()}
    commits = int(q1(conn, COMMITS_SQL, ("src", end_lsn)))
    count_s = time.perf_counter() - t1
    wal_bytes = int(q1(conn, "SELECT %s::pg_lsn - %s::pg_lsn", (end_lsn, start_lsn)))
    changes = sum(per_table.values())
    conn.close()
    tps = re.search(r"tps = ([0-9.]+)", p.stdout)
    return {
        "database": db,
        "plan": plan,
        "start_lsn": start_lsn,
        "end_lsn": end_lsn,
        "wal_bytes": wal_bytes,
        "changes": changes,
        "transactions": commits,
        "changes_per_table": per_table,
        "generate_s": round(gen_s, 2),
        "count_s": round(count_s, 2),
        "pgbench_run_tps": float(tps.group(1)) if tps else None,
    }


# ----------------------------------------------------------------------------------------------
# drains


def copy_slot(conn, name):
    q1(conn, "SELECT slot_name FROM pg_copy_logical_replication_slot('src', %s)", (name,))


def drop_slot(conn, name, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            q1(conn, "SELECT pg_drop_replication_slot(%s) FROM pg_replication_slots WHERE slot_name = %s",
               (name, name))
            return
        except psycopg2.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise BenchError(f"slot {name} still active after {timeout}s")
            time.sleep(0.1)


def stream_counts(r, prefix):
    counts = {}
    for key in r.scan_iter(match=prefix.encode() + b"*", count=1000, _type="stream"):
        counts[key.decode()[len(prefix):]] = r.xlen(key)
    return counts


def drain_timeout(changes):
    return max(300, changes / 2000)


def drain_recvlogical(srv, conn, backlog, slot):
    copy_slot(conn, slot)
    cmd = [str(PGBIN / "pg_recvlogical"), "-d", srv.conninfo(backlog["database"]), "--slot", slot, "--start",
           "-E", backlog["end_lsn"], "-o", "proto_version=1", "-o", "publication_names=walstream",
           "-f", "/dev/null", "--no-loop"]
    ws_cpu = WalsenderCpu(srv, backlog["database"], slot)
    try:
        rc, wall, ru, err = spawn_wait4(cmd, drain_timeout(backlog["changes"]), env=srv.proc_env(backlog["database"]))
    finally:
        walsender_cpu = ws_cpu.stop()
    if rc != 0:
        raise BenchError(f"pg_recvlogical exit {rc}: {err.strip()}")
    confirmed = q1(conn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    drop_slot(conn, slot)
    return {
        "contender": "pg_recvlogical",
        "wall_s": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_mb": ru.ru_maxrss / 1024.0,
        "walsender_cpu_s": walsender_cpu,
        "confirmed_flush_lsn": confirmed,
        "stderr": err.strip()[-500:],
    }


class Walstream:
    """One walstream child process; always stopped by stop() (SIGTERM, then SIGKILL)."""

    def __init__(self, binary, srv, db, slot, prefix, logfile, extra=()):
        self.logfile = logfile
        self.cmd = [binary, "run", "--pg", srv.url(db), "--redis", srv.redis_url(), "--slot", slot,
                    "--publication", "walstream", "--prefix", prefix, "--status-interval", "0.1",
                    "--adopt-slot", *extra]
        self.proc = None

    def start(self):
        self.spawned_at = time.time()
        self._log = open(self.logfile, "wb")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def sample(self):
        return {"cpu_s": proc_cpu_s(self.proc.pid), "peak_rss_mb": proc_hwm_mb(self.proc.pid)}

    def stop(self, timeout=60):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self._log.close()
                raise BenchError(f"walstream did not stop within {timeout}s of SIGTERM")
        self._log.close()
        return self.proc.returncode

    def startup_s(self):
        """Seconds from spawn to the log line that says it streams (setup checks and connections)."""
        for line in self.log_lines():
            if " INFO streaming from slot " in line:
                ts = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
                return ts.replace(tzinfo=datetime.timezone.utc).timestamp() - self.spawned_at
        return None

    def log_lines(self):
        try:
            return Path(self.logfile).read_text(errors="replace").splitlines()
        except OSError:
            return []


def wait_slot(conn, slot, lsn, ws, timeout):
    """Polls until the slot's confirmed_flush_lsn reaches lsn; returns the perf_counter time it did."""
    deadline = time.monotonic() + timeout
    while True:
        if q1(conn, "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
              (lsn, slot)):
            return time.perf_counter()
        if ws is not None and not ws.alive():
            raise BenchError(f"walstream exited with {ws.proc.returncode} before confirming {lsn}")
        if time.monotonic() > deadline:
            raise BenchError(f"slot {slot} did not reach {lsn} within {timeout}s")
        time.sleep(POLL_S)


class Scraper:
    """GETs walstream's /metrics every SCRAPE_EVERY_S (ten times as often as a busy Prometheus) while it drains."""

    def __init__(self, port):
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.scrapes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        import urllib.request
        while not self._stop.wait(SCRAPE_EVERY_S):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as res:
                    if res.status == 200 and b"walstream_entries_written_total" in res.read():
                        self.scrapes += 1
                        continue
            except OSError:
                pass
            self.failures += 1

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        return self.scrapes


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drain_walstream(binary, srv, conn, r, backlog, slot, prefix, logdir, live, scrape=False):
    copy_slot(conn, slot)
    port = free_port() if scrape else None
    extra = ["--metrics-listen", f"127.0.0.1:{port}"] if scrape else []
    ws = Walstream(binary, srv, backlog["database"], slot, prefix, str(logdir / f"{slot}.log"), extra)
    live.append(ws)
    expected = backlog["changes"]
    timeout = drain_timeout(expected)
    redis_cpu0 = redis_cpu_s(r)
    t0 = time.perf_counter()
    ws.start()
    scraper = Scraper(port) if scrape else None
    wsnd = WalsenderCpu(srv, backlog["database"], slot)
    try:
        deadline = time.monotonic() + timeout
        t_lsn = wait_slot(conn, slot, backlog["end_lsn"], ws, timeout)
        # walstream confirms only what Redis acknowledged, so Redis should hold everything already: if
        # it does at the first look, both conditions held at t_lsn; otherwise the drain ends later.
        t_end = t_lsn
        while True:
            counts = stream_counts(r, prefix)
            total = sum(counts.values())
            if total == expected:
                break
            if total > expected or time.monotonic() > deadline:
                raise BenchError(f"{slot}: Redis holds {total} entries under {prefix}, expected {expected} "
                                 f"(slot confirmed {backlog['end_lsn']})")
            time.sleep(POLL_S)
            t_end = time.perf_counter()
        sample = ws.sample()
        wsnd.sample()
    finally:
        walsender_cpu = wsnd.stop()
        scrapes = scraper.stop() if scraper else None
        rc = ws.stop()
        live.remove(ws)
    redis_cpu = redis_cpu_s(r) - redis_cpu0
    if rc != 0:
        raise BenchError(f"walstream exit {rc} after SIGTERM; log {ws.logfile}")
    mismatched = {t: (counts.get(t, 0), n) for t, n in backlog["changes_per_table"].items() if counts.get(t, 0) != n}
    info = r.info("memory")
    drop_slot(conn, slot)
    r.flushall()
    lines = ws.log_lines()
    if scraper and scrapes < 1:
        raise BenchError(f"{slot}: no successful scrape of {scraper.url} during the drain")
    return {
        "contender": "walstream_scraped" if scrape else "walstream",
        "scrapes": scrapes,
        "wall_s": t_end - t0,
        "cpu_s": sample["cpu_s"],
        "peak_rss_mb": sample["peak_rss_mb"],
        "redis_complete_at_confirm": t_end == t_lsn,
        "startup_s": ws.startup_s(),
        "walsender_cpu_s": walsender_cpu,
        "redis_cpu_s": redis_cpu,
        "redis_used_memory_mb": info["used_memory"] / 2**20,
        "per_stream_mismatch": {t: {"redis": a, "expected": b} for t, (a, b) in mismatched.items()},
        "log_warnings": [l for l in lines if " WARN " in l or " ERROR " in l],
        "log_lines": len(lines),
    }


def summarize(runs, changes):
    out = {}
    for name in ("pg_recvlogical", "walstream", "walstream_scraped"):
        rs = [x for x in runs if x["contender"] == name]
        if not rs:
            continue
        wall = statistics.median(x["wall_s"] for x in rs)
        cpu = statistics.median(x["cpu_s"] for x in rs)
        out[name] = {
            "runs": len(rs),
            "wall_s": round(wall, 3),
            "wall_s_all": [round(x["wall_s"], 3) for x in rs],
            "changes_per_s": round(changes / wall),
            "wall_us_per_change": round(wall / changes * 1e6, 3),
            "cpu_s": round(cpu, 3),
            "cpu_us_per_change": round(cpu / changes * 1e6, 3),
            "peak_rss_mb": round(statistics.median(x["peak_rss_mb"] for x in rs), 1),
            "peak_rss_mb_max": round(max(x["peak_rss_mb"] for x in rs), 1),
        }
        ws_cpu = [x["walsender_cpu_s"] for x in rs if x.get("walsender_cpu_s") is not None]
        if ws_cpu:
            out[name]["walsender_cpu_us_per_change"] = round(statistics.median(ws_cpu) / changes * 1e6, 3)
        if name == "walstream_scraped":
            out[name]["scrapes"] = [x["scrapes"] for x in rs]
        if name.startswith("walstream"):
            out[name]["redis_cpu_us_per_change"] = round(
                statistics.median(x["redis_cpu_s"] for x in rs) / changes * 1e6, 3)
            out[name]["redis_used_memory_mb"] = round(statistics.median(x["redis_used_memory_mb"] for x in rs), 1)
            out[name]["redis_complete_at_confirm"] = all(x["redis_complete_at_confirm"] for x in rs)
            starts = [x["startup_s"] for x in rs if x.get("startup_s") is not None]
            out[name]["startup_s"] = round(statistics.median(starts), 3) if starts else None
    out["ratio_wall_walstream_over_recvlogical"] = round(out["walstream"]["wall_s"] / out["pg_recvlogical"]["wall_s"], 2)
    if "walstream_scraped" in out:
        # What serving /metrics costs: CPU per change with a scraper at 10 Hz over CPU per change without.
        out["ratio_cpu_scraped_over_unscraped"] = round(
            out["walstream_scraped"]["cpu_s"] / out["walstream"]["cpu_s"], 3)
        out["ratio_wall_scraped_over_unscraped"] = round(
            out["walstream_scraped"]["wall_s"] / out["walstream"]["wall_s"], 3)
    return out


def drains(binary, srv, r, backlog, reps, logdir, live):
    conn = srv.connect(backlog["database"])
    runs = []
    try:
        for rep in range(1, reps + 1):
            for name in ("pg_recvlogical", "walstream", "walstream_scraped"):
                slot = f"copy_{ {'pg_recvlogical': 'rl', 'walstream': 'ws', 'walstream_scraped': 'wm'}[name] }_{rep}"
                if name == "pg_recvlogical":
                    res = drain_recvlogical(srv, conn, backlog, slot)
                else:
                    res = drain_walstream(binary, srv, conn, r, backlog, slot, f"bench{rep}:", logdir, live,
                                          scrape=name == "walstream_scraped")
                res["rep"] = rep
                runs.append(res)
                log(f"{backlog['database']} rep {rep} {name:14s} {res['wall_s']:7.2f} s  "
                    f"cpu {res['cpu_s']:6.2f} s  rss {res['peak_rss_mb']:6.1f} MB")
    finally:
        conn.close()
    return runs


# ----------------------------------------------------------------------------------------------
# latency

PGBENCH_TABLES = ["public.pgbench_accounts", "public.pgbench_tellers", "public.pgbench_branches",
                  "public.pgbench_history"]


def parse_ts(raw):
    s = raw.decode()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    return datetime.datetime.fromisoformat(s).timestamp()


def nearest_rank(sorted_ms, q):
    n = len(sorted_ms)
    return round(sorted_ms[min(n - 1, max(0, math.ceil(q * n) - 1))], 3) if n else None


class ProbeSubscriber:
    """The latency subscriber: bench/latency_probe (C++, hiredis), so that the reader's own overhead
    (a Python thread's GIL, parsing, scheduling) stays out of the measured tail. It XREADs the streams
    from their current end (here, from their first entry: they do not exist yet), takes the arrival
    time right after each reply and, at SIGTERM, reads what the streams already hold and prints its
    figures as JSON. `dump`: a file for one "arrival commit latency_ms" line per entry."""

    name = "latency_probe"

    def __init__(self, probe, port, keys, seconds, logfile, dump=None):
        self.cmd = [probe, "--port", str(port), "--streams", ",".join(keys),
                    "--seconds", str(seconds + 300)]  # a bound only: finish() stops it with SIGTERM
        if dump:
            self.cmd += ["--out", dump]
        self.logfile = logfile
        self.proc = None
        self._log = None
        self.result = None

    def _err(self):
        try:
            return Path(self.logfile).read_text(errors="replace").strip()[-2000:]
        except OSError:
            return ""

    def start(self):
        self._log = open(self.logfile, "wb")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log)
        deadline = time.monotonic() + 30
        while "ready" not in self._err().splitlines():  # last IDs resolved, XREAD loop next
            if self.proc.poll() is not None:
                raise BenchError(f"latency_probe exited with {self.proc.returncode}: {self._err()}")
            if time.monotonic() > deadline:
                raise BenchError("latency_probe not ready within 30 s")
            time.sleep(0.01)

    def finish(self, total):
        """Stops the probe once the streams hold all `total` entries: it reads those still unread first."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired as e:
            raise BenchError("latency_probe did not stop within 60 s of SIGTERM") from e
        if self.proc.returncode != 0:
            raise BenchError(f"latency_probe exit {self.proc.returncode}: {self._err()}")
        try:
            self.result = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError) as e:
            raise BenchError(f"latency_probe printed no JSON: {out[-500:]!r}") from e

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def figures(self):
        x = self.result
        return {"entries_received": x["count"], "entries_without_ts": x["skipped"], "subscriber_cpu_s": x["cpu_s"],
                **{k: x[k] for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "min_ms")}}


class PythonSubscriber:
    """The fallback when bench/latency_probe is not built: a Python thread blocked in XREAD. Its own
    overhead (GIL, parsing, scheduling) shows in the tail; the JSON says which subscriber measured."""

    name = "python"

    def __init__(self, port, keys, dump=None):
        self.port, self.keys, self.dump = port, keys, dump
        self.arrivals = []  # (arrival time, ts field)
        self.errors = []
        self.cpu = []
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        rs = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30)
        last = {k: "0-0" for k in self.keys}
        try:
            while not self._stop.is_set():
                resp = rs.xread(last, count=5000, block=200)
                now = time.time()
                for key, entries in resp or []:
                    for eid, fields in entries:
                        self.arrivals.append((now, fields[b"ts"]))
                    last[key.decode()] = entries[-1][0].decode()
        except Exception as e:  # reported after the run
            self.errors.append(repr(e))
        finally:
            self.cpu.append(time.thread_time())
            rs.close()

    def start(self):
        self._th.start()

    def finish(self, total):
        deadline = time.monotonic() + 60
        while len(self.arrivals) < total and time.monotonic() < deadline and self._th.is_alive():
            time.sleep(0.05)
        self.close()
        if self.errors:
            raise BenchError(f"latency subscriber failed: {self.errors[0]}")

    def close(self):
        self._stop.set()
        if self._th.is_alive():
            self._th.join(10)

    def figures(self):
        lat_ms = sorted((now - parse_ts(ts)) * 1000.0 for now, ts in self.arrivals)
        if self.dump:
            with open(self.dump, "w") as f:
                for now, ts in self.arrivals:
                    f.write(f"{now:.6f} {parse_ts(ts):.6f} {(now - parse_ts(ts)) * 1000.0:.3f}\n")
        return {"entries_received": len(lat_ms), "entries_without_ts": 0,
                "subscriber_cpu_s": round(self.cpu[0], 3) if self.cpu else None,
                "p50_ms": nearest_rank(lat_ms, 0.50), "p90_ms": nearest_rank(lat_ms, 0.90),
                "p99_ms": nearest_rank(lat_ms, 0.99), "p999_ms": nearest_rank(lat_ms, 0.999),
                "max_ms": round(lat_ms[-1], 3) if lat_ms else None, "min_ms": round(lat_ms[0], 3) if lat_ms else None}


def latency(binary, probe, srv, db, logdir, live, rate, seconds):
    conn = srv.connect(db)
    slot, prefix = "lat", "lat:"
    q1(conn, "SELECT lsn FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    ws = Walstream(binary, srv, db, slot, prefix, str(logdir / "latency.log"))
    live.append(ws)
    keys = [prefix + t for t in PGBENCH_TABLES]
    # for a closer look: "arrival commit latency_ms" per entry, times in epoch seconds
    dump = os.environ.get("BENCH_LATENCY_DUMP")
    if probe and os.access(probe, os.X_OK):
        sub = ProbeSubscriber(probe, srv.redis_port, keys, seconds, str(logdir / "latency_probe.log"), dump)
    else:
        log(f"latency: no latency_probe binary{f' at {probe}' if probe else ''}; falling back to the Python "
            "subscriber, whose own overhead inflates the tail")
        sub = PythonSubscriber(srv.redis_port, keys, dump)
    try:
        ws.start()
        # wait until walstream streams (its slot is active) before the load starts
        deadline = time.monotonic() + 60
        while not q1(conn, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)):
            if not ws.alive() or time.monotonic() > deadline:
                raise BenchError(f"walstream did not start streaming; log {ws.logfile}")
            time.sleep(0.05)
        sub.start()
        cpu0 = proc_cpu_s(ws.proc.pid)
        log(f"latency: pgbench -c 2 -R {rate} -T {seconds} -n, subscriber {sub.name}")
        p = run(["pgbench", "-n", "-c", "2", "-j", "2", "-R", str(rate), "-T", str(seconds)], timeout=seconds + 120,
                env=srv.proc_env(db))
        end_lsn = q1(conn, "SELECT pg_current_wal_lsn()")
        wait_slot(conn, slot, end_lsn, ws, 120)
        # walstream confirms only what Redis acknowledged: the streams hold every entry now
        r = srv.redis()
        total = sum(r.xlen(k) for k in keys)
        r.close()
        sub.finish(total)
        sample = ws.sample()
        cpu = sample["cpu_s"] - cpu0
    finally:
        sub.close()
        rc = ws.stop()
        live.remove(ws)
    drop_slot(conn, slot)
    conn.close()
    if rc != 0:
        raise BenchError(f"walstream exit {rc} after SIGTERM; log {ws.logfile}")
    figures = sub.figures()
    if figures["entries_received"] != total or figures["entries_without_ts"]:
        log(f"latency: the subscriber received {figures['entries_received']} entries "
            f"({figures['entries_without_ts']} without a readable ts), the streams hold {total}")
    processed = re.search(r"number of transactions actually processed: (\d+)", p.stdout)
    tps = re.search(r"tps = ([0-9.]+)", p.stdout)
    pg_lat = re.search(r"latency average = ([0-9.]+) ms", p.stdout)
    pg_lag = re.search(r"schedule lag: avg ([0-9.]+) \(max ([0-9.]+)\) ms", p.stdout)
    lines = ws.log_lines()
    return {
        "rate_tps_requested": rate,
        "seconds": seconds,
        "pgbench_tps": float(tps.group(1)) if tps else None,
        "pgbench_transactions": int(processed.group(1)) if processed else None,
        "pgbench_latency_avg_ms": float(pg_lat.group(1)) if pg_lat else None,
        "pgbench_schedule_lag_avg_ms": float(pg_lag.group(1)) if pg_lag else None,
        "subscriber": sub.name,
        "entries_in_redis": total,
        **figures,
        "walstream_cpu_s": round(cpu, 3),
        "walstream_cpu_pct_of_one_core": round(100 * cpu / seconds, 1),
        "walstream_peak_rss_mb": round(sample["peak_rss_mb"], 1),
        "log_warnings": [l for l in lines if " WARN " in l or " ERROR " in l],
    }


# ----------------------------------------------------------------------------------------------
# machine, build


def machine_info(srv, binary):
    info = {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
        info["loadavg_at_start"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    conn = srv.connect("postgres")
    info["postgresql"] = q1(conn, "SELECT version()")
    conn.close()
    r = srv.redis()
    info["redis"] = r.info("server")["redis_version"]
    r.close()
    git = run(["git", "-C", str(REPO), "rev-parse", "HEAD"], timeout=30, check=False)
    dirty = run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], timeout=30, check=False)
    untracked = run(["git", "-C", str(REPO), "status", "--porcelain"], timeout=30, check=False)
    info["walstream_commit"] = git.stdout.strip() or None
    info["walstream_worktree_modified"] = bool(dirty.stdout.strip())
    info["walstream_worktree_untracked_files"] = any(l.startswith("??") for l in untracked.stdout.splitlines())
    ver = run([binary, "--version"], timeout=30, check=False)
    info["walstream_version"] = (ver.stdout or ver.stderr).strip()
    info["walstream_binary"] = binary
    return info


RELEASE_DIR = REPO / "build-release"
PROBE_BIN = RELEASE_DIR / "bench" / "latency_probe"


def build_release():
    """Configures build-release/ as scripts/build.sh does (Release) and builds the walstream and
    latency_probe targets. Returns (walstream binary, latency_probe binary or None if it did not build:
    the latency run then falls back to a Python subscriber)."""
    bdir = RELEASE_DIR
    log("building walstream and latency_probe (Release) into build-release/")
    run(["cmake", "-S", str(REPO), "-B", str(bdir), "-DCMAKE_BUILD_TYPE=Release"], timeout=600)
    run(["cmake", "--build", str(bdir), "-j", str(os.cpu_count() or 2), "--target", "walstream"], timeout=1800)
    binary = bdir / "cdc" / "cli" / "walstream"
    if not binary.exists():
        raise BenchError(f"no binary at {binary}")
    p = run(["cmake", "--build", str(bdir), "-j", str(os.cpu_count() or 2), "--target", "latency_probe"],
            timeout=600, check=False)
    if p.returncode != 0 or not PROBE_BIN.exists():
        log(f"latency_probe did not build (exit {p.returncode}): {(p.stdout + p.stderr).strip()[-300:]}")
        return str(binary), None
    return str(binary), str(PROBE_BIN)


# ----------------------------------------------------------------------------------------------
# report


def table(results):
    rows = [("backlog", "changes", "contender", "wall s", "changes/s", "µs/change", "CPU µs/chg", "peak RSS MB",
             "walsender µs/chg", "Redis µs/chg", "ws/rl")]
    for b in results["backlogs"]:
        s = b["summary"]
        for i, name in enumerate(n for n in ("pg_recvlogical", "walstream", "walstream_scraped") if n in s):
            x = s[name]
            rows.append((f"{b['plan']['target_changes']:,}" if i == 0 else "", f"{b['changes']:,}" if i == 0 else "",
                         name, f"{x['wall_s']:.2f}", f"{x['changes_per_s']:,}", f"{x['wall_us_per_change']:.2f}",
                         f"{x['cpu_us_per_change']:.2f}", f"{x['peak_rss_mb']:.1f}",
                         f"{x['walsender_cpu_us_per_change']:.2f}" if "walsender_cpu_us_per_change" in x else "",
                         f"{x['redis_cpu_us_per_change']:.2f}" if "redis_cpu_us_per_change" in x else "",
                         f"{s['ratio_wall_walstream_over_recvlogical']:.2f}" if name == "walstream" else
                         f"cpu x{s['ratio_cpu_scraped_over_unscraped']:.3f}" if name == "walstream_scraped" else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        cells = [r[i].ljust(widths[i]) if i in (0, 2) else r[i].rjust(widths[i]) for i in range(len(r))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    g = results.get("growth")
    if g:
        lines.append("")
        lines.append(f"growth {g['changes'][0]:,} -> {g['changes'][1]:,} changes (x{g['size_ratio']:.2f}): "
                     f"walstream wall x{g['walstream_wall_ratio']:.2f}, µs/change {g['walstream_wall_us_per_change'][0]:.2f}"
                     f" -> {g['walstream_wall_us_per_change'][1]:.2f}, peak RSS {g['walstream_peak_rss_mb'][0]:.1f} -> "
                     f"{g['walstream_peak_rss_mb'][1]:.1f} MB; pg_recvlogical wall x{g['recvlogical_wall_ratio']:.2f}")
    lat = results.get("latency")
    if lat:
        lines.append(f"latency (pgbench -R {lat['rate_tps_requested']} -T {lat['seconds']}, achieved {lat['pgbench_tps']:.0f} tps): "
                     f"{lat['entries_received']:,} entries read by {lat['subscriber']}, p50 {lat['p50_ms']} ms, "
                     f"p90 {lat['p90_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms; "
                     f"walstream {lat['walstream_cpu_pct_of_one_core']}% of a core, "
                     f"peak RSS {lat['walstream_peak_rss_mb']} MB")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="600000,2400000",
                    help="approximate changes per backlog, comma-separated (default 600000,2400000: pgbench scale 4 and 16)")
    ap.add_argument("--scale", type=int, default=None,
                    help="pgbench scale of the first backlog (later ones scale with their size); default: two "
                         "thirds of each size come from pgbench -i (scale 4 and 16 by default)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results.json"), help="JSON output (default bench/results.json)")
    ap.add_argument("--bin", default=None, help="walstream binary to use instead of building build-release/")
    ap.add_argument("--probe", default=None,
                    help="latency_probe binary for the latency run (default: the one built into build-release/; "
                         "with --bin, build-release/bench/latency_probe if it exists; without one, a Python "
                         "subscriber measures)")
    ap.add_argument("--reps", type=int, default=3, help="drains per contender and backlog (default 3; medians reported)")
    ap.add_argument("--latency-rate", type=int, default=1000, help="pgbench -R for the latency run (default 1000)")
    ap.add_argument("--latency-seconds", type=int, default=15, help="pgbench -T for the latency run (default 15)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (servers' data and logs)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    if not sizes or min(sizes) < 1000:
        ap.error("--sizes needs at least one size of 1000 changes or more")

    t_start = time.perf_counter()
    if args.bin:
        binary = str(Path(args.bin).resolve())
        probe = str(PROBE_BIN) if PROBE_BIN.exists() else None
    else:
        binary, probe = build_release()
    if args.probe:
        probe = str(Path(args.probe).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="walstream-bench-"))
    os.chmod(tmp, 0o755)  # PostgreSQL runs as postgres when we are root
    srv = Servers(tmp)
    live = []  # walstream processes to stop on the way out
    ok = False
    results = {"config": {"sizes": sizes, "scale": args.scale, "reps": args.reps, "binary": binary,
                          "latency_probe": probe, "latency_rate": args.latency_rate,
                          "latency_seconds": args.latency_seconds,
                          "redis_appendonly": "no", "poll_interval_s": POLL_S, "status_interval_s": 0.1},
               "backlogs": []}

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        log(f"servers in {tmp}")
        srv.start()
        results["machine"] = machine_info(srv, binary)
        r = srv.redis()
        r.flushall()
        logdir = tmp / "logs"
        logdir.mkdir()
        for i, size in enumerate(sizes):
            plan = plan_backlog(size, args.scale, sizes[0])
            db = f"bench_{i}"
            backlog = build_backlog(srv, db, plan)
            log(f"{db}: {backlog['changes']:,} changes in {backlog['transactions']:,} transactions, "
                f"{backlog['wal_bytes'] / 2**20:.0f} MiB of WAL, generated in {backlog['generate_s']} s")
            backlog["runs"] = drains(binary, srv, r, backlog, args.reps, logdir, live)
            backlog["summary"] = summarize(backlog["runs"], backlog["changes"])
            results["backlogs"].append(backlog)
            conn = srv.connect(db)
            drop_slot(conn, "src")
            conn.close()
        if len(results["backlogs"]) >= 2:
            a, b = results["backlogs"][0], results["backlogs"][-1]
            sa, sb = a["summary"], b["summary"]
            results["growth"] = {
                "changes": [a["changes"], b["changes"]],
                "size_ratio": b["changes"] / a["changes"],
                "walstream_wall_ratio": sb["walstream"]["wall_s"] / sa["walstream"]["wall_s"],
                "recvlogical_wall_ratio": sb["pg_recvlogical"]["wall_s"] / sa["pg_recvlogical"]["wall_s"],
                "walstream_wall_us_per_change": [sa["walstream"]["wall_us_per_change"],
                                                 sb["walstream"]["wall_us_per_change"]],
                "walstream_cpu_us_per_change": [sa["walstream"]["cpu_us_per_change"],
                                                sb["walstream"]["cpu_us_per_change"]],
                "recvlogical_wall_us_per_change": [sa["pg_recvlogical"]["wall_us_per_change"],
                                                   sb["pg_recvlogical"]["wall_us_per_change"]],
                "walstream_peak_rss_mb": [sa["walstream"]["peak_rss_mb"], sb["walstream"]["peak_rss_mb"]],
                "walstream_peak_rss_ratio": sb["walstream"]["peak_rss_mb"] / sa["walstream"]["peak_rss_mb"],
            }
        # Latency on the first backlog's database: its pgbench tables are there, its slots are gone.
        results["latency"] = latency(binary, probe, srv, results["backlogs"][0]["database"], logdir, live,
                                     args.latency_rate, args.latency_seconds)
        r.close()
        warnings = {}
        for b in results["backlogs"]:
            for x in b["runs"]:
                for l in x.get("log_warnings", []):
                    msg = re.sub(r"^\S+Z ", "", l)
                    warnings[msg] = warnings.get(msg, 0) + 1
        for l in results["latency"]["log_warnings"]:
            msg = re.sub(r"^\S+Z ", "", l)
            warnings[msg] = warnings.get(msg, 0) + 1
        results["walstream_log_warnings"] = [{"message": m, "runs": n} for m, n in warnings.items()]
        results["total_s"] = round(time.perf_counter() - t_start, 1)
        results["machine"]["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
        ok = True
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        for ws in list(live):
            try:
                ws.stop(30)
            except Exception as e:  # keep going: the servers must stop
                log(f"stopping walstream: {e}")
        srv.stop()
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp} (servers' data and walstream logs)")
    if not ok:
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    if results["walstream_log_warnings"]:
        print("\nwalstream log warnings/errors:")
        for w in results["walstream_log_warnings"]:
            print(f"  [{w['runs']} run(s)] {w['message']}")
    print(f"\nresults: {out}  ({results['total_s']} s in all)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
