#!/usr/bin/python3
"""Initial snapshot speed: walstream's snapshot against the read limit and the write limit.

    bench/snapshot.py [--rows 2000000] [--reps 3] [--bin PATH] [--out bench/snapshot.json] [--experiments]

Two tables of at least --rows rows, each in a database of its own with a publication of that table
alone: pgbench_accounts (`pgbench -i` at the scale that gives --rows: scale 20 = 2,000,000) and
bench_wide (bench/run.py's 22-column table and generator). Per table and rep, three measurements
(medians reported):
  read limit   `psql -c "COPY t (<the columns walstream selects>) TO STDOUT"` (walstream's own form for a
               plain table without a row filter) with psql's
               stdout on /dev/null: what PostgreSQL can hand out, with no Python in the way;
  snapshot     `walstream run --snapshot initial` on a fresh slot and prefix: wall time from spawn to
               the log line `initial snapshot published` (the line's own timestamp), walstream CPU and
               peak RSS (VmHWM) at that moment, Redis CPU (INFO used_cpu_user + used_cpu_sys) per
               entry; XLEN must equal the table's rows; SIGTERM, slot dropped, FLUSHALL;
  write limit  the same entries, pre-built: after the first snapshot the stream is dumped (XRANGE in
               pages) into a file of RESP `XADD <key> <id> <field> <value>…` commands, grouped in
               MULTI/EXEC chunks the way walstream closes them (4096 entries or 1 MiB of XADDs), and a
               second file without MULTI/EXEC; `redis-cli --pipe < file` loads each into an empty
               Redis: wall time and Redis CPU per entry; then the chunked file again while the read
               limit's COPY runs in a loop beside it (write_limit_beside_copy: PostgreSQL busy on the
               machine as during a snapshot; what sharing two cores costs Redis for the same bytes);
  backfill     `walstream backfill <table>` into a walstream streaming a fresh slot made without a
               snapshot: wall time from the request to `backfill …: done`, CPU, RSS, Redis CPU per entry
               (skip with --no-backfill).
Ratios: snapshot / write limit, snapshot / read limit, backfill / write limit. The PostgreSQL backend serving the COPY is
sampled from /proc (read limit and snapshot), and Redis's CPU is split into user and sys (sys is mostly
page faults: after FLUSHALL Redis returns its memory, so every run grows it again, as a first snapshot
into an empty Redis does). The machine is shared: each measurement waits until no build or test process
runs, records the machine's busy CPU beyond the measured processes (foreign_cpu_s), and is taken again
(at most 3 times in all) when it was disturbed. Before the reps an untimed snapshot fills Redis once (its
entries make the loader files): the first fill of a few GB on this VM costs twice the Redis CPU of every
later one (memory the host never backed yet), and would otherwise land on rep 1's snapshot alone.

--experiments adds loader runs (the same entries; Redis CPU per entry is the figure) for chunk sizes
256, 1024, 4096, 16384 entries per MULTI/EXEC (entry counts only, no byte limit), no MULTI/EXEC, and
fewer arguments per XADD: the record's fields as walstream writes them (8 fields) against the six
metadata fields merged into one JSON field (3 fields) and the whole record as one JSON field (1 field),
all three in chunks of 4096. Measurements only: subscribers would read a different format.

Starts its own PostgreSQL 15 and Redis 7 (bench/run.py's Servers: scripts/servers.sh, Redis with
appendonly no) in a temporary folder and stops them at the end, whatever happens. Loopback only; every
subprocess is bounded by a timeout. Not a test: nothing here runs under ctest.
"""

import argparse
import datetime
import importlib.util
import json
import math
import mmap
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

PUBLICATION = "snap"
CHUNK_ENTRIES = 4096  # walstream's StreamWriter::Options::chunk_commands
CHUNK_BYTES = 1 << 20  # …and chunk_bytes: a chunk closes at whichever comes first
EXPERIMENT_CHUNKS = (256, 1024, 4096, 16384)
DUMP_PAGE = 5000  # entries per XRANGE page
MULTI = b"*1\r\n$5\r\nMULTI\r\n"
EXEC = b"*1\r\n$4\r\nEXEC\r\n"
PUBLISHED = "initial snapshot published"
log = bench.log
BenchError = bench.BenchError


def redis_cpu(r):
    """Redis's (user, sys) CPU seconds, and its resident memory before, in MiB."""
    i = r.info()
    return float(i["used_cpu_user"]), float(i["used_cpu_sys"]), i["used_memory_rss"] / 2**20


def redis_cpu_since(r, before):
    now = redis_cpu(r)
    return {"redis_cpu_s": now[0] + now[1] - before[0] - before[1], "redis_cpu_sys_s": round(now[1] - before[1], 3),
            "redis_rss_mb_before": round(before[2], 1), "redis_rss_mb_after": round(now[2], 1)}


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


# ----------------------------------------------------------------------------------------------
# the machine: 2 cores shared with other work

FOREIGN = re.compile(r"^(cc1plus|ctest|ld|collect2|c\+\+|g\+\+|cmake|gmake|make|promtool|valgrind.*|.*_test)$")
QUIET_WAIT_S = 900  # the longest a measurement waits for other builds and tests to end


def foreign_processes():
    """Names of build and test processes running on the machine (other agents' work, CI)."""
    names = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                comm = (d / "comm").read_text().strip()
            except OSError:
                continue
            if FOREIGN.match(comm):
                names.add(comm)
    return sorted(names)


def wait_quiet(what):
    """Waits (bounded) until no build or test process runs; returns the seconds waited and what was seen."""
    t0 = time.monotonic()
    seen = set()
    quiet_since = None
    while time.monotonic() - t0 < QUIET_WAIT_S:
        busy = foreign_processes()
        if not busy:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 2:  # two quiet seconds in a row
                break
        else:
            quiet_since = None
            if not seen:
                log(f"{what}: waiting for {', '.join(busy)} to end (at most {QUIET_WAIT_S} s)")
            seen.update(busy)
        time.sleep(0.5)
    return round(time.monotonic() - t0, 1), sorted(seen)


def machine_busy_s():
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice: guest time is inside user
    return (sum(v[:8]) - v[3] - v[4]) / bench.CLK_TCK


class Watch:
    """Around one measurement: the machine's busy CPU, and which build/test processes of others were
    seen (sampled every 0.5 s). foreign_cpu_s = machine busy CPU - the CPU of the measured processes."""

    def __init__(self):
        self.busy0 = machine_busy_s()
        self.seen = set()
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._loop, daemon=True)
        self._th.start()

    def _loop(self):
        while not self._stop.wait(0.5):
            self.seen.update(foreign_processes())

    def done(self, known_cpu_s):
        busy = machine_busy_s() - self.busy0
        self._stop.set()
        self._th.join(5)
        return {"machine_busy_cpu_s": round(busy, 3), "foreign_cpu_s": round(busy - known_cpu_s, 3),
                "foreign_processes_seen": sorted(self.seen)}


class BackendCpu:
    """CPU of the PostgreSQL backend running a `COPY …` in database db: found in pg_stat_activity,
    then sampled from /proc every 10 ms until it exits or stop() is called (the last sample before it
    exits is up to 10 ms short)."""

    def __init__(self, srv, db):
        self.srv, self.db = srv, db
        self.pid = None
        self.cpu_s = None
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._loop, daemon=True)
        self._th.start()

    def _loop(self):
        conn = self.srv.connect(self.db)
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set() and self.pid is None:
                    cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                                "AND query LIKE 'COPY %%'", (self.db,))
                    row = cur.fetchone()
                    if row:
                        self.pid = row[0]
                    else:
                        time.sleep(0.005)
        finally:
            conn.close()
        while self.pid is not None and not self._stop.is_set():
            try:
                self.cpu_s = bench.proc_cpu_s(self.pid)
            except (OSError, ValueError, IndexError):
                return
            time.sleep(0.01)

    def stop(self):
        self._stop.set()
        self._th.join(5)
        return self.cpu_s


class DbBackendsCpu:
    """CPU of every PostgreSQL backend of database db (walstream's walsender decoding the WAL and its
    backfill connection reading the chunks) between start and stop(): their pids are listed at both
    ends from pg_stat_activity and read from /proc (a backend that began meanwhile counts from 0)."""

    def __init__(self, srv, db):
        self.srv, self.db = srv, db
        self.before = self._sample()

    def _sample(self):
        conn = self.srv.connect(self.db)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            (self.db,))
                pids = [r[0] for r in cur.fetchall()]
        finally:
            conn.close()
        out = {}
        for pid in pids:
            try:
                out[pid] = bench.proc_cpu_s(pid)
            except (OSError, ValueError, IndexError):
                pass
        return out

    def stop(self):
        after = self._sample()
        return sum(cpu - self.before.get(pid, 0.0) for pid, cpu in after.items())


# ----------------------------------------------------------------------------------------------
# tables


def fresh_db(srv, db):
    admin = srv.connect("postgres")
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {db}")
        cur.execute(f"CREATE DATABASE {db}")
    admin.close()
    return srv.connect(db)


def settle(conn, table):
    """Hint bits set, statistics (walstream's row estimate) fresh, no checkpoint pending during the runs."""
    with conn.cursor() as cur:
        cur.execute(f"VACUUM (FREEZE, ANALYZE) {table}")
        cur.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE {table}")
        cur.execute("CHECKPOINT")


def build_pgbench(srv, rows):
    db = "snap_pgbench"
    conn = fresh_db(srv, db)
    scale = math.ceil(rows / 100_000)
    t0 = time.perf_counter()
    bench.run(["pgbench", "-i", "-q", "-s", str(scale)], timeout=1800, env=srv.proc_env(db))
    settle(conn, "pgbench_accounts")
    n = bench.q1(conn, "SELECT count(*) FROM pgbench_accounts")
    log(f"{db}: pgbench -i -s {scale}: {n:,} rows in {time.perf_counter() - t0:.1f} s")
    return {"name": "pgbench_accounts", "database": db, "table": "public.pgbench_accounts", "rows": n,
            "pgbench_scale": scale, "conn": conn}


def build_wide(srv, rows):
    db = "snap_wide"
    conn = fresh_db(srv, db)
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(bench.WIDE_DDL)
        step = 200_000
        for lo in range(1, rows + 1, step):
            cur.execute(bench.WIDE_INSERT, (lo, min(rows, lo + step - 1)))
    settle(conn, "bench_wide")
    n = bench.q1(conn, "SELECT count(*) FROM bench_wide")
    log(f"{db}: bench_wide (bench/run.py's 22 columns): {n:,} rows in {time.perf_counter() - t0:.1f} s")
    return {"name": "bench_wide", "database": db, "table": "public.bench_wide", "rows": n, "conn": conn}


def table_facts(t):
    """The SELECT walstream's snapshot issues (the publication's columns, in attnum order) and sizes."""
    schema, name = t["table"].split(".")
    with t["conn"].cursor() as cur:
        cur.execute("SELECT a.attname FROM pg_attribute a JOIN pg_publication_tables pt ON pt.pubname = %s "
                    "AND pt.schemaname = %s AND pt.tablename = %s WHERE a.attrelid = %s::regclass AND a.attnum > 0 "
                    "AND NOT a.attisdropped AND a.attgenerated = '' AND a.attname = ANY(pt.attnames) "
                    "ORDER BY a.attnum", (PUBLICATION, schema, name, t["table"]))
        cols = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT pg_table_size(%s::regclass)", (t["table"],))
        t["table_bytes"] = cur.fetchone()[0]
    quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in cols)
    t["columns"] = len(cols)
    t["copy_sql"] = f'COPY "{schema}"."{name}" ({quoted}) TO STDOUT'


# ----------------------------------------------------------------------------------------------
# measurements


def read_limit(srv, t):
    cmd = [str(bench.PGBIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", t["copy_sql"]]
    waited, before = wait_quiet("read limit")
    watch = Watch()
    backend = BackendCpu(srv, t["database"])
    try:
        rc, wall, ru, err = bench.spawn_wait4(cmd, 900, env=srv.proc_env(t["database"]))
    finally:
        backend_cpu = backend.stop()
    if rc != 0:
        raise BenchError(f"psql COPY exit {rc}: {err.strip()[-500:]}")
    psql_cpu = ru.ru_utime + ru.ru_stime
    return {"wall_s": wall, "psql_cpu_s": psql_cpu, "backend_cpu_s": backend_cpu, "waited_quiet_s": waited,
            "foreign_before": before, **watch.done(psql_cpu + (backend_cpu or 0))}


def log_ts(line):
    ts = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
    return ts.replace(tzinfo=datetime.timezone.utc).timestamp()


def wait_log(ws, needle, timeout):
    """Follows walstream's log until a line contains needle; returns (line, perf_counter when seen)."""
    deadline = time.monotonic() + timeout
    pos = 0
    rest = b""
    with open(ws.logfile, "rb") as f:
        while True:
            f.seek(pos)
            chunk = f.read()
            pos += len(chunk)
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for raw in lines:
                line = raw.decode(errors="replace")
                if needle in line:
                    return line, time.perf_counter()
                if " ERROR " in line:
                    raise BenchError(f"walstream: {line}")
            if not ws.alive():
                raise BenchError(f"walstream exited with {ws.proc.returncode} before '{needle}'; log {ws.logfile}")
            if time.monotonic() > deadline:
                raise BenchError(f"no '{needle}' in walstream's log within {timeout}s; log {ws.logfile}")
            time.sleep(0.02)


def snapshot_run(binary, srv, r, t, tag, logdir, live):
    r.flushall()
    slot, prefix = f"snap_{tag}", f"{tag}:"
    ws = bench.Walstream(binary, srv, t["database"], slot, prefix, str(logdir / f"{tag}.log"))
    ws.cmd = [binary, "run", "--pg", srv.url(t["database"]), "--redis", srv.redis_url(), "--slot", slot,
              "--publication", PUBLICATION, "--prefix", prefix, "--snapshot", "initial"]
    live.append(ws)
    waited, before = wait_quiet("snapshot")
    watch = Watch()
    cpu0 = redis_cpu(r)
    t0 = time.perf_counter()
    ws.start()
    backend = BackendCpu(srv, t["database"])
    try:
        line, seen = wait_log(ws, PUBLISHED, max(900, t["rows"] / 2000))
        sample = ws.sample()
        rcpu = redis_cpu_since(r, cpu0)
    finally:
        backend_cpu = backend.stop()
        rc = ws.stop(120)
        live.remove(ws)
    machine = watch.done(sample["cpu_s"] + rcpu["redis_cpu_s"] + (backend_cpu or 0))
    if rc != 0:
        raise BenchError(f"walstream exit {rc} after SIGTERM; log {ws.logfile}")
    key = prefix + t["table"]
    stored = r.xlen(key)
    if stored != t["rows"]:
        raise BenchError(f"{key} holds {stored} entries, expected {t['rows']}")
    copy_s = created = None
    for l in ws.log_lines():
        m = re.search(r"snapshot of \S+: \d+ rows in ([0-9.]+) s", l)
        if m:
            copy_s = float(m.group(1))
        if "created replication slot" in l:
            created = log_ts(l) - ws.spawned_at
    return {"wall_s": log_ts(line) - ws.spawned_at, "wall_seen_s": seen - t0, "copy_log_s": copy_s,
            "slot_created_s": created, "cpu_s": sample["cpu_s"], "peak_rss_mb": sample["peak_rss_mb"],
            **rcpu, "backend_cpu_s": backend_cpu, "waited_quiet_s": waited,
            "foreign_before": before, **machine, "redis_used_memory_mb": r.info("memory")["used_memory"] / 2**20,
            "entries": stored, "key": key, "slot": slot, "last_id": r.xinfo_stream(key)["last-generated-id"].decode()}


def backfill_run(binary, srv, r, t, tag, logdir, live):
    """`walstream backfill <table>` into a walstream that streams a fresh slot created without a
    snapshot: wall time from the request to the log line `backfill …: done` (both timestamps from the
    logs' clocks: the request's is taken just before `walstream backfill` runs), walstream CPU and peak
    RSS, Redis CPU per entry, and the CPU of every PostgreSQL backend of the database (the walsender
    and the backfill's reads: backend_cpu_s). XLEN must equal the table's rows."""
    r.flushall()
    slot, prefix = f"snap_{tag}", f"{tag}:"
    ws = bench.Walstream(binary, srv, t["database"], slot, prefix, str(logdir / f"{tag}.log"))
    ws.cmd = [binary, "run", "--pg", srv.url(t["database"]), "--redis", srv.redis_url(), "--slot", slot,
              "--publication", PUBLICATION, "--prefix", prefix, "--snapshot", "never"]
    live.append(ws)
    ws.start()
    try:
        wait_log(ws, "streaming from slot", 120)
        waited, before = wait_quiet("backfill")
        watch = Watch()
        cpu_before = ws.sample()["cpu_s"]
        cpu0 = redis_cpu(r)
        t0 = time.perf_counter()
        requested = datetime.datetime.now(datetime.timezone.utc).timestamp()
        backend = DbBackendsCpu(srv, t["database"])
        bench.run([binary, "backfill", t["table"], "--pg", srv.url(t["database"]), "--slot", slot,
                   "--publication", PUBLICATION], timeout=120)
        try:
            line, seen = wait_log(ws, ": done", max(900, t["rows"] / 2000))
            sample = ws.sample()
            rcpu = redis_cpu_since(r, cpu0)
        finally:
            backend_cpu = backend.stop()
    finally:
        rc = ws.stop(120)
        live.remove(ws)
    cpu = sample["cpu_s"] - cpu_before
    machine = watch.done(cpu + rcpu["redis_cpu_s"] + (backend_cpu or 0))
    if rc != 0:
        raise BenchError(f"walstream exit {rc} after SIGTERM; log {ws.logfile}")
    key = prefix + t["table"]
    stored = r.xlen(key)
    if stored != t["rows"]:
        raise BenchError(f"{key} holds {stored} entries after the backfill, expected {t['rows']}")
    return {"wall_s": log_ts(line) - requested, "wall_seen_s": seen - t0, "cpu_s": cpu,
            "peak_rss_mb": sample["peak_rss_mb"], **rcpu, "backend_cpu_s": backend_cpu, "waited_quiet_s": waited,
            "foreign_before": before, **machine, "entries": stored, "key": key, "slot": slot}


class CopyBeside:
    """The table's read-limit COPY run again and again until stop(): PostgreSQL busy on the machine as it
    is during a snapshot, to see what that costs Redis for the same entries. stop() ends the loop and
    returns the CPU the COPYs (psql and backend) used until then."""

    def __init__(self, srv, t):
        self.srv, self.t = srv, t
        self.cpu_s = 0.0
        self.copies = 0
        self._stop = threading.Event()
        self._proc = None
        self._th = threading.Thread(target=self._loop, daemon=True)
        self._th.start()

    def _loop(self):
        cmd = [str(bench.PGBIN / "psql"), "-X", "-q", "-c", self.t["copy_sql"]]
        while not self._stop.is_set():
            backend = BackendCpu(self.srv, self.t["database"])
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          env=self.srv.proc_env(self.t["database"]))
            self._proc.wait()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.cpu_s += (backend.stop() or 0) + (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
            self.copies += 1

    def stop(self):
        self._stop.set()
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
        self._th.join(60)
        return self.cpu_s


def loader_run(srv, r, path, key, rows, beside=None):
    """`redis-cli --pipe < path` into an empty Redis; with beside (a table), while that table's COPY
    runs in a loop (CopyBeside)."""
    r.flushall()
    waited, before = wait_quiet("loader")
    copying = CopyBeside(srv, beside) if beside else None
    if copying:
        time.sleep(0.2)  # the first COPY under way
    watch = Watch()
    cpu0 = redis_cpu(r)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(path, "rb") as f:
        t0 = time.perf_counter()
        try:
            p = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(srv.redis_port), "--pipe"], stdin=f,
                               capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"redis-cli --pipe < {path} timed out after 900 s") from e
        wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rcpu = redis_cpu_since(r, cpu0)
    cli_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    beside_cpu = copying.stop() if copying else 0.0
    # The COPYs' CPU is known, not foreign (a COPY still running at the end counts in part).
    machine = watch.done(rcpu["redis_cpu_s"] + cli_cpu + beside_cpu)
    if copying:
        machine["foreign_cpu_s"] = max(0.0, machine["foreign_cpu_s"])
        rcpu["copies_beside"] = copying.copies
    m = re.search(r"errors: (\d+), replies: (\d+)", p.stdout)
    if p.returncode != 0 or not m or m.group(1) != "0":
        raise BenchError(f"redis-cli --pipe exit {p.returncode}: {(p.stdout + p.stderr).strip()[-500:]}")
    stored = r.xlen(key)
    if stored != rows:
        raise BenchError(f"the loader left {stored} entries in {key}, expected {rows}")
    r.flushall()
    return {"wall_s": wall, **rcpu, "replies": int(m.group(2)), "redis_cli_cpu_s": cli_cpu,
            "waited_quiet_s": waited, "foreign_before": before, **machine}


# ----------------------------------------------------------------------------------------------
# the loader's files


def dump_stream(port, key, path):
    """Writes every entry of stream `key` as a RESP `XADD key id field value…` command to path, in ID
    order, byte for byte the bulk strings Redis returned. Returns the commands' offsets (plus the end)."""
    keyb = b"$%d\r\n%s\r\n" % (len(key.encode()), key.encode())
    offsets = array("q", [0])
    pos = 0
    start = b"-"
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock, \
            sock.makefile("rb", buffering=1 << 20) as f, open(path, "wb", buffering=1 << 22) as out:
        while True:
            sock.sendall(resp(b"XRANGE", key, start, b"+", b"COUNT", DUMP_PAGE))
            head = f.readline()
            if not head.startswith(b"*"):
                raise BenchError(f"XRANGE {key}: {head!r}")
            n = int(head[1:])
            if n == 0:
                break
            for _ in range(n):
                f.readline()  # *2: id, fields
                idline = f.readline()
                idb = f.read(int(idline[1:]) + 2)
                nf = int(f.readline()[1:])
                parts = [b"*%d\r\n$4\r\nXADD\r\n" % (nf + 3), keyb, idline, idb]
                for _ in range(nf):
                    line = f.readline()
                    parts.append(line)
                    parts.append(f.read(int(line[1:]) + 2))
                cmd = b"".join(parts)
                out.write(cmd)
                pos += len(cmd)
                offsets.append(pos)
            start = b"(" + idb[:-2]
    return offsets


def write_chunked(plain, offsets, path, entries, max_bytes=None):
    """plain's commands in MULTI/EXEC chunks of `entries` (closed earlier at max_bytes of XADDs, as
    walstream does). Returns the number of chunks."""
    chunks = 0
    with open(plain, "rb") as src, mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as mm, \
            open(path, "wb", buffering=1 << 22) as out:
        i, n = 0, len(offsets) - 1
        while i < n:
            j = min(n, i + entries)
            if max_bytes:
                k = i + 1
                while k < j and offsets[k] - offsets[i] < max_bytes:
                    k += 1
                j = k
            out.write(MULTI)
            out.write(mm[offsets[i]:offsets[j]])
            out.write(EXEC)
            chunks += 1
            i = j
    return chunks


def read_commands(path):
    """Yields each RESP command of path as a list of bytes arguments."""
    with open(path, "rb", buffering=1 << 22) as f:
        while True:
            head = f.readline()
            if not head:
                return
            args = []
            for _ in range(int(head[1:])):
                line = f.readline()
                args.append(f.read(int(line[1:]) + 2)[:-2])
            yield args


JSON_FIELDS = {b"key", b"after", b"before", b"unchanged"}  # values that are JSON already
META_FIELDS = (b"op", b"table", b"lsn", b"xid", b"ts", b"schema")


def json_object(pairs):
    parts = []
    for name, value in pairs:
        v = value if name in JSON_FIELDS else json.dumps(value.decode()).encode()
        parts.append(b'"%s":%s' % (name, v))
    return b"{" + b",".join(parts) + b"}"


def command_bytes(args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def write_merged(plain, path, mode, entries):
    """The same entries with fewer XADD arguments, in MULTI/EXEC chunks of `entries`:
    meta3: the six metadata fields as one JSON field `m`, then key and after; one1: the whole record
    as one JSON field `e`."""
    n = 0
    with open(path, "wb", buffering=1 << 22) as out:
        for args in read_commands(plain):
            if n % entries == 0:
                if n:
                    out.write(EXEC)
                out.write(MULTI)
            pairs = list(zip(args[3::2], args[4::2]))
            if mode == "meta3":
                meta = [(k, v) for k, v in pairs if k in META_FIELDS]
                rest = [x for kv in pairs if kv[0] not in META_FIELDS for x in kv]
                new = args[:3] + [b"m", json_object(meta)] + rest
            else:
                new = args[:3] + [b"e", json_object(pairs)]
            out.write(command_bytes(new))
            n += 1
        if n:
            out.write(EXEC)


# ----------------------------------------------------------------------------------------------
# report


def med(runs, field):
    return statistics.median(x[field] for x in runs)


def us(runs, field, rows):
    v = [x[field] for x in runs if x.get(field) is not None]
    return round(statistics.median(v) / rows * 1e6, 3) if len(v) == len(runs) else None


def summarize(t, runs, loads):
    rows = t["rows"]
    rl, sn = runs["read_limit"], runs["snapshot"]
    s = {
        "rows": rows,
        "read_limit": {"wall_s": round(med(rl, "wall_s"), 3), "rows_per_s": round(rows / med(rl, "wall_s")),
                       "wall_s_all": [round(x["wall_s"], 3) for x in rl],
                       "psql_cpu_s": round(med(rl, "psql_cpu_s"), 3),
                       "backend_cpu_us_per_row": us(rl, "backend_cpu_s", rows)},
        "snapshot": {"wall_s": round(med(sn, "wall_s"), 3), "rows_per_s": round(rows / med(sn, "wall_s")),
                     "wall_s_all": [round(x["wall_s"], 3) for x in sn],
                     "copy_log_s": round(med(sn, "copy_log_s"), 3) if all(x["copy_log_s"] for x in sn) else None,
                     "slot_created_s": round(med(sn, "slot_created_s"), 3)
                     if all(x["slot_created_s"] is not None for x in sn) else None,
                     "walstream_cpu_us_per_row": round(med(sn, "cpu_s") / rows * 1e6, 3),
                     "peak_rss_mb": round(med(sn, "peak_rss_mb"), 1),
                     "peak_rss_mb_max": round(max(x["peak_rss_mb"] for x in sn), 1),
                     "redis_cpu_us_per_entry": round(med(sn, "redis_cpu_s") / rows * 1e6, 3),
                     "redis_cpu_sys_us_per_entry": us(sn, "redis_cpu_sys_s", rows),
                     "backend_cpu_us_per_row": us(sn, "backend_cpu_s", rows),
                     "redis_used_memory_mb": round(med(sn, "redis_used_memory_mb"), 1)},
    }
    # The three processes a snapshot keeps busy share the machine's cores: their CPU over the cores is
    # the shortest the snapshot could take here, however well they overlapped.
    x = s["snapshot"]
    if x["backend_cpu_us_per_row"] is not None:
        per_row = x["walstream_cpu_us_per_row"] + x["redis_cpu_us_per_entry"] + x["backend_cpu_us_per_row"]
        x["cpu_us_per_row_all_three"] = round(per_row, 3)
        x["cpu_bound_wall_s"] = round(per_row * rows / 1e6 / (os.cpu_count() or 1), 3)
    for name, rs in (("read_limit", rl), ("snapshot", sn)):
        s[name]["foreign_cpu_s_all"] = [x.get("foreign_cpu_s") for x in rs]
    for name, lr in loads.items():
        s[name] = {"wall_s": round(med(lr, "wall_s"), 3), "rows_per_s": round(rows / med(lr, "wall_s")),
                   "wall_s_all": [round(x["wall_s"], 3) for x in lr],
                   "redis_cpu_us_per_entry": round(med(lr, "redis_cpu_s") / rows * 1e6, 3),
                   "redis_cpu_sys_us_per_entry": us(lr, "redis_cpu_sys_s", rows),
                   "redis_cpu_us_per_entry_all": [round(x["redis_cpu_s"] / rows * 1e6, 3) for x in lr],
                   "foreign_cpu_s_all": [x.get("foreign_cpu_s") for x in lr]}
    bf = runs.get("backfill") or []
    if bf:
        s["backfill"] = {"wall_s": round(med(bf, "wall_s"), 3), "rows_per_s": round(rows / med(bf, "wall_s")),
                         "wall_s_all": [round(x["wall_s"], 3) for x in bf],
                         "walstream_cpu_us_per_row": round(med(bf, "cpu_s") / rows * 1e6, 3),
                         "peak_rss_mb": round(med(bf, "peak_rss_mb"), 1),
                         "peak_rss_mb_max": round(max(x["peak_rss_mb"] for x in bf), 1),
                         "redis_cpu_us_per_entry": round(med(bf, "redis_cpu_s") / rows * 1e6, 3),
                         "backend_cpu_us_per_row": us(bf, "backend_cpu_s", rows),
                         "foreign_cpu_s_all": [x.get("foreign_cpu_s") for x in bf]}
    w = s["snapshot"]["wall_s"]
    if bf:
        s["ratio_backfill_over_write_limit"] = round(s["backfill"]["wall_s"] / s["write_limit"]["wall_s"], 2)
        s["ratio_backfill_over_snapshot"] = round(s["backfill"]["wall_s"] / w, 2)
    s["ratio_snapshot_over_write_limit"] = round(w / s["write_limit"]["wall_s"], 2)
    s["ratio_snapshot_over_write_limit_no_multi"] = round(w / s["write_limit_no_multi"]["wall_s"], 2)
    s["ratio_snapshot_over_read_limit"] = round(w / s["read_limit"]["wall_s"], 2)
    if "write_limit_beside_copy" in s:
        s["ratio_snapshot_over_write_limit_beside_copy"] = round(w / s["write_limit_beside_copy"]["wall_s"], 2)
    return s


def table(results):
    out = []
    hdr = ("table", "rows", "measurement", "wall s", "rows/s", "Redis µs/entry", "walstream CPU µs/row",
           "PG backend µs/row", "peak RSS MB", "ratio")
    lines = [hdr]
    for t in results["tables"]:
        s = t["summary"]
        names = ("read_limit", "snapshot") + (("backfill",) if "backfill" in s else ()) + \
            ("write_limit", "write_limit_no_multi") + (("write_limit_beside_copy",) if "write_limit_beside_copy" in s else ())
        for i, name in enumerate(names):
            x = s[name]
            ratio = {"snapshot": "", "read_limit": f"snap/read {s['ratio_snapshot_over_read_limit']:.2f}",
                     "backfill": f"backfill/write {s.get('ratio_backfill_over_write_limit', 0):.2f}",
                     "write_limit": f"snap/write {s['ratio_snapshot_over_write_limit']:.2f}",
                     "write_limit_no_multi": f"snap/write {s['ratio_snapshot_over_write_limit_no_multi']:.2f}",
                     "write_limit_beside_copy": f"snap/write {s.get('ratio_snapshot_over_write_limit_beside_copy', 0):.2f}"}[name]
            lines.append((t["name"] if i == 0 else "", f"{s['rows']:,}" if i == 0 else "", name,
                          f"{x['wall_s']:.2f}", f"{x['rows_per_s']:,}",
                          f"{x['redis_cpu_us_per_entry']:.2f}" if "redis_cpu_us_per_entry" in x else "",
                          f"{x['walstream_cpu_us_per_row']:.2f}" if name in ("snapshot", "backfill") else "",
                          f"{x['backend_cpu_us_per_row']:.2f}" if x.get("backend_cpu_us_per_row") is not None else "",
                          f"{x['peak_rss_mb']:.1f}" if name in ("snapshot", "backfill") else "", ratio))
    widths = [max(len(l[i]) for l in lines) for i in range(len(hdr))]
    for j, l in enumerate(lines):
        out.append("  ".join(c.ljust(widths[i]) if i in (0, 2, 9) else c.rjust(widths[i])
                             for i, c in enumerate(l)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    for t in results["tables"]:
        x = t["summary"]["snapshot"]
        if "cpu_bound_wall_s" in x:
            out.append(f"{t['name']}: walstream + Redis + PostgreSQL backend spend {x['cpu_us_per_row_all_three']:.2f} "
                       f"µs of CPU per row: {x['cpu_bound_wall_s']:.2f} s on {os.cpu_count()} cores at best")
    for t in results["tables"]:
        e = t.get("experiments")
        if not e:
            continue
        out.append("")
        out.append(f"{t['name']}: loader variants (medians of {results['config']['reps']}), Redis CPU µs per entry")
        for name, x in e.items():
            out.append(f"  {name:14} {x['redis_cpu_us_per_entry']:6.2f} µs/entry "
                       f"(sys {x['redis_cpu_sys_us_per_entry']:5.2f})  wall {x['wall_s']:6.2f} s  "
                       f"{x['rows_per_s']:>9,} rows/s  file {x['file_mb']:,.0f} MB  {x['what']}")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000, help="rows per table, at least (default 2,000,000)")
    ap.add_argument("--reps", type=int, default=3, help="runs per measurement (default 3; medians reported)")
    ap.add_argument("--bin", help="walstream binary (default: build-release/, built as bench/run.py does)")
    ap.add_argument("--out", default=str(REPO / "bench" / "snapshot.json"))
    ap.add_argument("--experiments", action="store_true",
                    help="also load the entries with other chunk sizes, without MULTI/EXEC and with fewer arguments")
    ap.add_argument("--tables", default="pgbench_accounts,bench_wide", help="which tables (default both)")
    ap.add_argument("--no-backfill", action="store_true", help="skip the backfill runs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (servers, logs, loader files)")
    args = ap.parse_args()
    if args.rows < 1000 or args.reps < 1:
        ap.error("--rows needs at least 1000 and --reps at least 1")
    builders = {"pgbench_accounts": build_pgbench, "bench_wide": build_wide}
    wanted = [x for x in args.tables.split(",") if x]
    if not wanted or any(x not in builders for x in wanted):
        ap.error(f"--tables takes a comma-separated subset of {','.join(builders)}")
    binary = str(Path(args.bin).resolve()) if args.bin else bench.build_release()[0]

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="walstream-snapbench-"))
    os.chmod(tmp, 0o755)  # PostgreSQL runs as postgres when we are root
    srv = bench.Servers(tmp / "srv")
    live = []
    ok = False
    results = {"config": {"rows": args.rows, "reps": args.reps, "binary": binary, "experiments": args.experiments,
                          "redis_appendonly": "no", "chunk_entries": CHUNK_ENTRIES, "chunk_bytes": CHUNK_BYTES,
                          "quiet": f"each measurement waits (at most {QUIET_WAIT_S} s) until no build or test "
                                   f"process of others runs, and is taken again (at most {MAX_ATTEMPTS} times in "
                                   f"all) when one was seen during it or the machine's other CPU exceeded "
                                   f"{FOREIGN_CPU_SHARE} x its wall time (and 0.5 s)",
                          "read_limit": "psql -X -c 'COPY <table> (<columns>) TO STDOUT', stdout /dev/null",
                          "write_limit": "redis-cli --pipe < RESP file of XADDs (dumped from walstream's stream)",
                          "write_limit_beside_copy": "the same load while the read limit's COPY runs again and "
                                                     "again beside it (PostgreSQL busy as during a snapshot): "
                                                     "what sharing the cores costs Redis for the same entries"},
               "tables": []}

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        log(f"servers in {tmp}")
        srv.start()
        results["machine"] = bench.machine_info(srv, binary)
        r = srv.redis()
        logdir = tmp / "logs"
        logdir.mkdir()
        for name in wanted:
            t = builders[name](srv, args.rows)
            table_facts(t)
            results["tables"].append(measure(binary, srv, r, t, args, tmp, logdir, live))
            t["conn"].close()
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
            log(f"kept {tmp}")
    if not ok:
        return 1
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    print(f"\nresults: {out}  ({results['total_s']} s in all)")
    return 0


MAX_ATTEMPTS = 3  # a measurement disturbed by other work is taken again, at most this often in all
FOREIGN_CPU_SHARE = 0.3  # disturbed: other build/test processes seen, or foreign CPU above this share of wall


def disturbed(x):
    return bool(x["foreign_processes_seen"]) or x["foreign_cpu_s"] > max(0.5, FOREIGN_CPU_SHARE * x["wall_s"])


def undisturbed(what, run, discard=None):
    """run() until a measurement is not disturbed (at most MAX_ATTEMPTS); the last one is kept, the
    others are recorded in its `discarded`; discard(x) cleans up after a discarded one."""
    gone = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        x = run(attempt)
        if not disturbed(x) or attempt == MAX_ATTEMPTS:
            x["attempts"], x["disturbed"] = attempt, disturbed(x)
            x["discarded"] = [{k: y[k] for k in ("wall_s", "foreign_cpu_s", "foreign_processes_seen")} for y in gone]
            return x
        log(f"{what}: disturbed (foreign CPU {x['foreign_cpu_s']:.2f} s, seen {x['foreign_processes_seen']}); again")
        if discard:
            discard(x)
        gone.append(x)


def measure(binary, srv, r, t, args, tmp, logdir, live):
    name, rows = t["name"], t["rows"]
    res = {k: t[k] for k in ("name", "database", "table", "rows", "columns", "table_bytes", "copy_sql")}
    if "pgbench_scale" in t:
        res["pgbench_scale"] = t["pgbench_scale"]
    read_limit(srv, t)  # warm-up: the table in the page cache for every contender
    runs = {"read_limit": [], "snapshot": [], "backfill": []}
    loads = {"write_limit": [], "write_limit_no_multi": [], "write_limit_beside_copy": []}
    files = {}
    variants = {}
    # Warm-up, untimed: a first snapshot, whose entries the loader files are made of. The first fill of
    # this much memory is slow on this VM (the first snapshot of 2M wide rows took 25-28 s with Redis at
    # 10.7-11.9 µs/entry in two runs, the next ones 12-17 s at 4.3-5.9), and whichever contender came
    # first would pay for it.
    x = snapshot_run(binary, srv, r, t, f"{name[:6]}w", logdir, live)
    log(f"{name} warm-up snapshot {x['wall_s']:7.2f} s  Redis {x['redis_cpu_s'] / rows * 1e6:5.2f} µs/entry (not counted)")
    t0 = time.perf_counter()
    key = x["key"]
    plain = tmp / f"{name}.plain.resp"
    offsets = dump_stream(srv.redis_port, key, plain)
    if len(offsets) - 1 != rows:
        raise BenchError(f"dumped {len(offsets) - 1} entries of {key}, expected {rows}")
    files["write_limit_no_multi"] = plain
    files["write_limit"] = tmp / f"{name}.multi.resp"
    files["write_limit_beside_copy"] = files["write_limit"]
    res["write_limit_chunks"] = write_chunked(plain, offsets, files["write_limit"], CHUNK_ENTRIES, CHUNK_BYTES)
    res["xadd_bytes_per_entry"] = round(offsets[-1] / rows, 1)
    if args.experiments:
        for c in EXPERIMENT_CHUNKS:
            files[f"chunk_{c}"] = tmp / f"{name}.chunk{c}.resp"
            n = write_chunked(plain, offsets, files[f"chunk_{c}"], c)
            variants[f"chunk_{c}"] = f"{c} entries per MULTI/EXEC, 8 fields ({n} chunks)"
        variants["no_multi"] = "no MULTI/EXEC, 8 fields"
        files["no_multi"] = plain
        for mode, what in (("meta3", "3 fields: op..schema merged into one JSON field, key, after"),
                           ("one1", "1 field: the whole record as one JSON object")):
            files[f"fields_{mode}"] = tmp / f"{name}.{mode}.resp"
            write_merged(plain, files[f"fields_{mode}"], mode, 4096)
            variants[f"fields_{mode}"] = f"4096 entries per MULTI/EXEC, {what}"
    log(f"{name}: {rows:,} entries dumped into loader files in {time.perf_counter() - t0:.1f} s "
        f"({offsets[-1] / 2**20:,.0f} MB of XADDs, {res['write_limit_chunks']} walstream-sized chunks)")
    bench.drop_slot(t["conn"], x["slot"])
    r.flushall()

    def walstream_run(kind, run, tag, rep):
        # A run that was disturbed is dropped with its slot and entries, and taken again.
        x = undisturbed(f"{name} {kind}",
                        lambda a: run(binary, srv, r, t, f"{tag}{rep}{'abc'[a - 1]}", logdir, live),
                        lambda x: (bench.drop_slot(t["conn"], x["slot"]), r.flushall()))
        runs[kind].append(x)
        log(f"{name} rep {rep} {kind:12} {x['wall_s']:7.2f} s  cpu {x['cpu_s']:6.2f} s  "
            f"rss {x['peak_rss_mb']:6.1f} MB  Redis {x['redis_cpu_s'] / rows * 1e6:5.2f} µs/entry")
        bench.drop_slot(t["conn"], x["slot"])
        r.flushall()

    for rep in range(1, args.reps + 1):
        x = undisturbed(f"{name} read limit", lambda _: read_limit(srv, t))
        runs["read_limit"].append(x)
        log(f"{name} rep {rep} read limit   {x['wall_s']:7.2f} s")
        walstream_run("snapshot", snapshot_run, name[:6], rep)
        if not args.no_backfill:
            walstream_run("backfill", backfill_run, f"bf{name[:6]}", rep)
        for kind in loads:
            beside = t if kind == "write_limit_beside_copy" else None
            y = undisturbed(f"{name} {kind}", lambda _: loader_run(srv, r, files[kind], key, rows, beside))
            loads[kind].append(y)
            log(f"{name} rep {rep} {kind:20} {y['wall_s']:7.2f} s  "
                f"Redis {y['redis_cpu_s'] / rows * 1e6:5.2f} µs/entry")
    res["runs"] = {**runs, **loads}
    res["summary"] = summarize(t, runs, loads)
    res["summary"]["write_limit"]["chunks"] = res["write_limit_chunks"]
    res["summary"]["write_limit"]["entries_per_chunk"] = round(rows / res["write_limit_chunks"], 1)
    if args.experiments:
        ex = {k: [] for k in variants}
        for rep in range(1, args.reps + 1):
            for kind in variants:
                y = undisturbed(f"{name} {kind}", lambda _: loader_run(srv, r, files[kind], key, rows))
                ex[kind].append(y)
                log(f"{name} experiments rep {rep} {kind:14} {y['wall_s']:7.2f} s  "
                    f"Redis {y['redis_cpu_s'] / rows * 1e6:5.2f} µs/entry")
        res["runs"]["experiments"] = ex
        res["experiments"] = {k: {"what": variants[k], "file_mb": round(files[k].stat().st_size / 2**20, 1),
                                  "wall_s": round(med(v, "wall_s"), 3), "rows_per_s": round(rows / med(v, "wall_s")),
                                  "redis_cpu_us_per_entry": round(med(v, "redis_cpu_s") / rows * 1e6, 3),
                                  "redis_cpu_sys_us_per_entry": us(v, "redis_cpu_sys_s", rows),
                                  "redis_cpu_us_per_entry_all": [round(y["redis_cpu_s"] / rows * 1e6, 3) for y in v]}
                              for k, v in ex.items()}
    for f in set(files.values()):
        f.unlink(missing_ok=True)
    return res


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
