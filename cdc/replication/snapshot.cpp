#include "snapshot.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <fmt/format.h>

#include "copy_protocol.h"
#include "copy_text.h"
#include "errors.h"
#include "log.h"
#include "metrics.h"
#include "pg_time.h"
#include "record.h"
#include "run_loop.h"
#include "slot_store.h"
#include "stop_signal.h"

namespace walstream {
namespace {

using Clock = std::chrono::steady_clock;

// Rows copied per table: a progress bar on a terminal, a log line every few seconds otherwise.
class Progress {
 public:
  Progress(std::string table, long long estimate)
      : table_(std::move(table)), estimate_(estimate), tty_(isatty(STDERR_FILENO)), start_(Clock::now()),
        last_(start_) {}

  void advance(long long rows) {
    rows_ = rows;
    auto now = Clock::now();
    if (now - last_ < (tty_ ? std::chrono::milliseconds(200) : std::chrono::milliseconds(5000))) return;
    last_ = now;
    show(false);
  }

  void done() { show(true); }

 private:
  void show(bool final) {
    double secs = std::chrono::duration<double>(Clock::now() - start_).count();
    double rate = secs > 0 ? static_cast<double>(rows_) / secs : 0;
    std::string eta = "?";
    if (estimate_ > rows_ && rate > 0) eta = fmt::format("{:.0f}s", static_cast<double>(estimate_ - rows_) / rate);
    if (tty_) {
      int pct = estimate_ > 0 ? static_cast<int>(std::min<long long>(100, rows_ * 100 / estimate_)) : (final ? 100 : 0);
      if (final) pct = 100;
      std::string bar(static_cast<std::size_t>(pct / 5), '#');
      bar.resize(20, '-');
      std::fprintf(stderr, "\r%-32s [%s] %3d%% %lld/%lld rows %.0f rows/s ETA %s   %s", table_.c_str(), bar.c_str(), pct,
                   rows_, std::max(estimate_, rows_), rate, final ? "0s" : eta.c_str(), final ? "\n" : "");
      std::fflush(stderr);
    } else if (final) {
      log::info("snapshot of {}: {} rows in {:.1f} s", table_, rows_, secs);
    } else {
      log::info("snapshot of {}: {} of ~{} rows, {:.0f} rows/s, ETA {}", table_, rows_, std::max(estimate_, 0LL), rate,
                eta);
    }
  }

  std::string table_;
  long long estimate_;
  bool tty_;
  long long rows_ = 0;
  Clock::time_point start_, last_;
};

std::string field(const PgResult& r, int row, int col) { return PQgetvalue(r.get(), row, col); }

}  // namespace

SlotKeeper::SlotKeeper(const Config& config, Catalog& catalog, ChangeWriter& writer, WaitUntil wait_until,
                       RunState& once)
    : config_(config), catalog_(catalog), writer_(writer), wait_until_(std::move(wait_until)), once_(once) {}

PgConnection& SlotKeeper::sql() {
  if (!sql_) sql_.emplace(PgConnection::open(config_.pg, false));
  return *sql_;
}

std::optional<SlotKeeper::SlotState> SlotKeeper::slot_state() {
  auto r = sql().exec_params("SELECT coalesce(confirmed_flush_lsn::text, ''), coalesce(wal_status, '') "
                             "FROM pg_replication_slots WHERE slot_name = $1",
                             {config_.slot}, PGRES_TUPLES_OK);
  if (PQntuples(r.get()) == 0) return std::nullopt;
  SlotState state;
  if (auto lsn = field(r, 0, 0); !lsn.empty()) state.confirmed = copy::parse_lsn(lsn);
  state.wal_status = field(r, 0, 1);
  return state;
}

std::uint64_t SlotKeeper::confirmed_flush() {
  auto r = sql().exec_params("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1", {config_.slot},
                           PGRES_TUPLES_OK);
  if (PQntuples(r.get()) == 0 || PQgetisnull(r.get(), 0, 0)) return 0;
  return copy::parse_lsn(PQgetvalue(r.get(), 0, 0));
}

void SlotKeeper::drop_slot() {
  sql().exec_params("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                  {config_.slot}, PGRES_TUPLES_OK);
}

// One instance at a time sets the slot up. While a slot is created and its snapshot copied, no
// walsender holds the slot (pg_replication_slots.active is false), so the slot cannot tell a second
// instance that the first is busy: without this lock it would take the copy for an interrupted one,
// delete its staging streams and drop the slot under it. A session-level advisory lock on the SQL
// connection: released when prepare() ends, or by PostgreSQL when the holder's connection ends (a
// killed process). A paused holder keeps it, and keeps everyone else waiting rather than racing it.
void SlotKeeper::lock_setup() {
  auto& conn = sql();
  // A holder cut off by the network is let go within about half a minute (TCP; no-op on a socket).
  conn.exec("SET tcp_keepalives_idle = 10", PGRES_COMMAND_OK);
  conn.exec("SET tcp_keepalives_interval = 5", PGRES_COMMAND_OK);
  conn.exec("SET tcp_keepalives_count = 3", PGRES_COMMAND_OK);
  // The connection idles while the copy runs on another: a server's idle_session_timeout must not
  // end it (and with it the lock) in the middle of the copy.
  conn.exec("SET idle_session_timeout = 0", PGRES_COMMAND_OK);
  auto r = conn.exec_params(fmt::format("SELECT pg_try_advisory_lock({}, hashtext($1))", kSetupLockClass),
                            {config_.slot}, PGRES_TUPLES_OK);
  if (field(r, 0, 0) != "t") {
    // Reported like a slot held by another walsender: this instance is a standby until it is free.
    throw PgError(true,
                  fmt::format("another walstream is setting slot '{}' up (creating it, copying or publishing its "
                              "initial snapshot)",
                              config_.slot),
                  "55006");
  }
}

void SlotKeeper::unlock_setup() {
  sql().exec_params(fmt::format("SELECT pg_advisory_unlock({}, hashtext($1))", kSetupLockClass), {config_.slot},
                    PGRES_TUPLES_OK);
}

std::uint64_t SlotKeeper::prepare(PgConnection& repl) {
  SlotStore store(config_.redis, keys());
  store.check_eviction_policy();
  lock_setup();
  auto checkpoint = prepare_locked(repl, store);
  unlock_setup();
  return checkpoint;
}

std::uint64_t SlotKeeper::prepare_locked(PgConnection& repl, SlotStore& store) {
  if (once_.resnapshot) {
    // The way out after Redis lost data or the slot was dropped: a new slot, and every published
    // table's current rows appended to its stream as `r` records, so that subscribers can rebuild.
    log::warn("--resnapshot: dropping slot '{}' if it exists and republishing every published table's rows as `r` "
              "records under a new slot",
              config_.slot);
    return redo(repl, store);
  }

  std::string status = store.snapshot_status();
  if (status == "creating" || status == "copying") {
    // The exported snapshot died with the process that held it (the setup lock says no one else
    // runs it): the partial copy cannot be finished consistently. Its rows are only in staging
    // streams, so no subscriber has seen them.
    log::warn("slot '{}': the initial snapshot was interrupted; discarding the partial copy and starting again under "
              "a new slot",
              config_.slot);
    return redo(repl, store);
  }
  if (status == "publishing") {
    log::info("slot '{}': finishing the publication of the initial snapshot", config_.slot);
    auto tables = store.publish_staging(writer_, wait_until_);
    store.set_snapshot_status("done");
    log::info("slot '{}': initial snapshot published ({} table(s))", config_.slot, tables);
  }

  // The slot first, Redis second: another instance may be streaming (it does not hold the setup
  // lock then), and it writes a checkpoint before it confirms it, so a checkpoint read after the
  // slot's position covers it. Read the other way round, a checkpoint could look behind.
  auto slot = slot_state();
  auto checkpoint = store.checkpoint();
  if (!slot) {
    if (checkpoint && checkpoint->lsn) {
      throw ConfigError(fmt::format(
          "replication slot '{}' does not exist, but Redis holds a checkpoint for it at {}: the slot was dropped, "
          "and the changes committed since are not in Redis and can no longer be streamed; start walstream once "
          "with --resnapshot to republish every published table's rows under a new slot",
          config_.slot, format_lsn_text(*checkpoint->lsn)));
    }
    return create(repl, store, config_.snapshot == SnapshotMode::Initial);
  }
  return verify(store, checkpoint, *slot);
}

// A new slot and its snapshot, from nothing: staging streams, the slot, snapshot state and checkpoint go.
std::uint64_t SlotKeeper::redo(PgConnection& repl, SlotStore& store) {
  store.discard_staging();
  drop_slot();
  store.forget_snapshot();
  store.forget_checkpoint();
  return create(repl, store, true);
}

// Redis must hold at least what PostgreSQL was told is stored. A checkpoint below the slot's
// confirmed_flush_lsn means Redis lost entries: streaming on would leave that hole unnoticed.
std::uint64_t SlotKeeper::verify(SlotStore& store, const std::optional<SlotStore::Checkpoint>& checkpoint,
                                 const SlotState& slot) {
  if (slot.wal_status == "lost") {
    throw ConfigError(fmt::format("replication slot '{}' is invalidated (wal_status = lost): PostgreSQL removed WAL it "
                                  "still needed (max_slot_wal_keep_size), so the changes after its position are lost; "
                                  "start walstream once with --resnapshot to republish every published table's rows "
                                  "under a new slot",
                                  config_.slot));
  }
  const std::uint64_t confirmed = slot.confirmed;
  const std::string confirmed_text = format_lsn_text(confirmed);
  constexpr const char* kCauses =
      "(a FLUSHALL, a restart without persistence, an older backup restored, a failover to a replica that was "
      "behind), or this is not the Redis walstream wrote to";
  constexpr const char* kWayOut =
      "start walstream once with --resnapshot to republish every published table's rows under a new slot, so "
      "subscribers can rebuild";
  if (!checkpoint) {
    if (once_.adopt_slot) {
      log::warn("--adopt-slot: Redis holds no checkpoint for slot '{}': streaming from the slot's position {}",
                config_.slot, confirmed_text);
      store.set_checkpoint(confirmed);
      return confirmed;
    }
    if (store.snapshot_status() == "done") {
      // Streams written by a walstream from before checkpoints, with their snapshot state intact.
      log::warn("Redis holds no checkpoint for slot '{}' but its snapshot state: adopting the slot's position {}",
                config_.slot, confirmed_text);
      store.set_checkpoint(confirmed);
      return confirmed;
    }
    throw ConfigError(fmt::format("Redis is behind slot '{}': it holds no checkpoint, but PostgreSQL was told that "
                                  "everything up to {} is stored; Redis lost data {}; {} (or, if the slot was created "
                                  "outside walstream and nothing was streamed from it yet, start with --adopt-slot)",
                                  config_.slot, confirmed_text, kCauses, kWayOut));
  }
  if (!checkpoint->lsn) {
    // Marked before the slot was created, and the process died before recording its position:
    // nothing was streamed from it yet.
    store.set_checkpoint(confirmed);
    return confirmed;
  }
  if (*checkpoint->lsn < confirmed) {
    throw ConfigError(fmt::format("Redis is behind slot '{}': its checkpoint is at {} but PostgreSQL was told that "
                                  "everything up to {} is stored; changes committed in ({}, {}] are lost from Redis "
                                  "{}; {}",
                                  config_.slot, format_lsn_text(*checkpoint->lsn), confirmed_text,
                                  format_lsn_text(*checkpoint->lsn), confirmed_text, kCauses, kWayOut));
  }
  return *checkpoint->lsn;
}

std::uint64_t SlotKeeper::create(PgConnection& repl, SlotStore& store, bool snapshot) {
  store.mark_creating();
  if (snapshot) store.set_snapshot_status("creating");
  // From here on the snapshot's own state makes a crash redo it: --resnapshot is done with.
  once_.resnapshot = false;
  auto created = repl.exec(fmt::format("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT '{}')",
                                       quote_ident(config_.slot), snapshot ? "export" : "nothing"),
                           PGRES_TUPLES_OK);
  std::string cp_text = field(created, 0, 1);
  std::uint64_t cp = copy::parse_lsn(cp_text);
  log::info("created replication slot '{}' (pgoutput) at {}", config_.slot, cp_text);
  // Snapshot rows get IDs just below the consistent point: WAL written after IDENTIFY_SYSTEM.
  writer_.raise_wal_limit(cp);
  if (snapshot) {
    store.set_snapshot_status("copying", cp_text);
    copy(store, field(created, 0, 2), cp);
    auto tables = store.publish_staging(writer_, wait_until_);
    store.finish_snapshot(cp);
    log::info("slot '{}': initial snapshot published ({} table(s))", config_.slot, tables);
    return cp;
  }
  // The slot starts at its consistent point: that much Redis holds now.
  store.set_checkpoint(cp);
  return cp;
}

// Fills table.columns as the publication sends them (its column list, attnum order, replica identity
// flags) and describes them like a Relation message; returns the quoted column list for a SELECT/COPY.
std::string describe_columns(PgConnection& conn, Catalog& catalog, const std::string& publication, TableInfo& table) {
  auto cols = conn.exec_params(
      "SELECT a.attname, a.atttypid, a.atttypmod, coalesce(a.attnum = ANY(i.indkey), false) "
      "FROM pg_attribute a "
      "LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisreplident "
      "JOIN pg_publication_tables pt ON pt.pubname = $2 AND pt.schemaname = $3 AND pt.tablename = $4 "
      "WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
      "  AND a.attname = ANY(pt.attnames) ORDER BY a.attnum",
      {std::to_string(table.relid), publication, table.schema, table.name}, PGRES_TUPLES_OK);
  std::string select;
  for (int c = 0; c < PQntuples(cols.get()); ++c) {
    ColumnInfo col;
    col.name = PQgetvalue(cols.get(), c, 0);
    col.type_oid = static_cast<std::uint32_t>(std::stoul(PQgetvalue(cols.get(), c, 1)));
    col.type_mod = std::stoi(PQgetvalue(cols.get(), c, 2));
    col.identity = std::string_view(PQgetvalue(cols.get(), c, 3)) == "t";
    select += (c ? ", " : "") + quote_ident(col.name);
    table.columns.push_back(std::move(col));
  }
  catalog.describe(table);
  return select;
}

void SlotKeeper::copy(SlotStore& store, const std::string& snapshot_name, std::uint64_t consistent_point) {
  // This instance holds the new slot while it copies: active (a standby must not alarm), not yet ready.
  metrics::registry().role.store(metrics::Role::Snapshot);
  auto conn = PgConnection::open(config_.pg, false);
  conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", PGRES_COMMAND_OK);
  conn.exec(fmt::format("SET TRANSACTION SNAPSHOT '{}'", snapshot_name), PGRES_COMMAND_OK);
  // The table list, columns and row filters as the publication has them in this very snapshot.
  auto tables = conn.exec_params(
      "SELECT c.oid, pt.schemaname, pt.tablename, c.relreplident, greatest(c.reltuples, 0)::bigint, "
      "       coalesce(pt.rowfilter, ''), (extract(epoch FROM now()) * 1000000)::bigint, c.relkind "
      "FROM pg_publication_tables pt "
      "JOIN pg_namespace n ON n.nspname = pt.schemaname "
      "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename "
      "WHERE pt.pubname = $1 ORDER BY 2, 3",
      {config_.publication}, PGRES_TUPLES_OK);

  // Snapshot rows sit just below the consistent point: under every change streamed after them.
  const std::uint64_t id_ms = consistent_point - 1;
  TxnContext txn;
  txn.xid = "0";
  RecordBuilder builder;
  std::string lsn_text = copy::format_lsn(consistent_point);
  std::vector<std::optional<std::string_view>> values;
  std::deque<std::string> unescaped;
  std::vector<Cell> cells;

  for (int t = 0; t < PQntuples(tables.get()); ++t) {
    TableInfo table;
    table.relid = static_cast<std::uint32_t>(std::stoul(field(tables, t, 0)));
    table.schema = field(tables, t, 1);
    table.name = field(tables, t, 2);
    table.replident = field(tables, t, 3)[0];
    long long estimate = std::stoll(field(tables, t, 4));
    std::string rowfilter = field(tables, t, 5);
    if (t == 0) {
      // now() inside the snapshot's transaction: the time the copy started.
      txn.ts = format_pg_timestamp(unix_to_pg_micros(std::stoll(field(tables, t, 6))));
    }
    std::string select = describe_columns(conn, catalog_, config_.publication, table);
    if (std::find(config_.outbox_tables.begin(), config_.outbox_tables.end(), table.qualified) !=
        config_.outbox_tables.end()) {
      continue;  // an outbox table's rows are events only when inserted, never snapshotted
    }

    auto stream = writer_.stream(store.open_staging(table.qualified));
    ensure_hwm(writer_, stream, wait_until_);
    writer_.add_hset(keys().registry(table.qualified), table.version, table.registry_json);

    std::string from = quote_ident(table.schema) + "." + quote_ident(table.name);
    // A plain table's COPY reads the heap without the executor (~10 % less of PostgreSQL's CPU on wide
    // rows); a row filter, a partitioned table (published through its root) or no column at all need
    // the query form.
    if (rowfilter.empty() && !select.empty() && field(tables, t, 7) == "r") {
      conn.exec(fmt::format("COPY {} ({}) TO STDOUT", from, select), PGRES_COPY_OUT);
    } else {
      conn.exec(fmt::format("COPY (SELECT {} FROM {}{}) TO STDOUT", select, from,
                            rowfilter.empty() ? "" : " WHERE " + rowfilter),
                PGRES_COPY_OUT);
    }
    Progress progress(table.qualified, estimate);
    auto& published = metrics::registry().snapshot_rows.at(table.qualified);
    PgBuffer row;
    int length = 0;
    long long n = 0;
    while (conn.read_copy_row(row, length)) {
      if (stop_requested()) {
        // The exported snapshot dies with this process; the copy is redone at the next start.
        throw PgError(true, "stopped during the initial snapshot; it will start again at the next run");
      }
      std::string_view line(row.get(), static_cast<std::size_t>(length));
      if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
      copy_text::parse_row(line, values, unescaped);
      cells.clear();
      for (const auto& v : values) {
        cells.push_back(v ? Cell{Cell::State::Text, *v} : Cell{Cell::State::Null, {}});
      }
      writer_.add_entry(stream, StreamId{id_ms, static_cast<std::uint64_t>(++n)},
                        builder.snapshot(table, txn, lsn_text, cells));
      published.add();
      send_if_full(writer_, wait_until_);
      progress.advance(n);
    }
    progress.done();
  }
  conn.exec("COMMIT", PGRES_COMMAND_OK);
  // The copy is complete only when Redis holds all of it: the state moves in the last chunk. On a
  // cluster the rows of other slots cannot share that chunk: they are stored first (a crash before the
  // state moved leaves `copying`, and the copy is redone).
  if (config_.redis_cluster) drain(writer_, wait_until_);
  writer_.add_hset(keys().snapshot_state(), "status", "publishing");
  drain(writer_, wait_until_);
}

}  // namespace walstream
