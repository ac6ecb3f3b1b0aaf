#include "snapshot.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fmt/format.h>

#include "copy_protocol.h"
#include "copy_text.h"
#include "errors.h"
#include "log.h"
#include "pg_time.h"
#include "record.h"
#include "run_loop.h"
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

SlotKeeper::SlotKeeper(const Config& config, Catalog& catalog, StreamWriter& writer, WaitUntil wait_until)
    : config_(config), catalog_(catalog), writer_(writer), wait_until_(std::move(wait_until)) {}

PgConnection& SlotKeeper::sql() {
  if (!sql_) sql_.emplace(PgConnection::open(config_.pg, false));
  return *sql_;
}

bool SlotKeeper::slot_exists() {
  auto r = sql().exec_params("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", {config_.slot}, PGRES_TUPLES_OK);
  return PQntuples(r.get()) > 0;
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

void SlotKeeper::prepare(PgConnection& repl) {
  RedisClient redis(config_.redis);
  auto status_reply = redis.checked({"HGET", state_key(), "status"});
  std::string status = status_reply.is_nil() ? "" : std::string(status_reply.str());

  if (status == "creating" || status == "copying") {
    // The exported snapshot died with the process that held it: the partial copy cannot be finished
    // consistently. Its rows are only in staging streams, so no subscriber has seen them.
    log::warn("slot '{}': the initial snapshot was interrupted; discarding the partial copy and starting again under "
              "a new slot",
              config_.slot);
    discard(redis);
    drop_slot();
    redis.checked({"DEL", state_key()});
  } else if (status == "publishing") {
    log::info("slot '{}': finishing the publication of the initial snapshot", config_.slot);
    publish(redis);
  }

  if (slot_exists()) return;

  bool snapshot = config_.snapshot == SnapshotMode::Initial;
  if (snapshot) redis.checked({"HSET", state_key(), "status", "creating"});
  auto created = repl.exec(fmt::format("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT '{}')",
                                       quote_ident(config_.slot), snapshot ? "export" : "nothing"),
                           PGRES_TUPLES_OK);
  std::string cp_text = field(created, 0, 1);
  std::uint64_t cp = copy::parse_lsn(cp_text);
  log::info("created replication slot '{}' (pgoutput) at {}", config_.slot, cp_text);
  if (!snapshot) return;

  redis.checked({"HSET", state_key(), "status", "copying", "consistent_point", cp_text});
  copy(redis, field(created, 0, 2), cp);
  publish(redis);
}

void SlotKeeper::discard(RedisClient& redis) {
  for (const auto& staging : redis.checked({"SMEMBERS", staging_set()}).strings()) redis.checked({"DEL", staging});
  redis.checked({"DEL", staging_set()});
}

void SlotKeeper::copy(RedisClient& redis, const std::string& snapshot_name, std::uint64_t consistent_point) {
  auto conn = PgConnection::open(config_.pg, false);
  conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", PGRES_COMMAND_OK);
  conn.exec(fmt::format("SET TRANSACTION SNAPSHOT '{}'", snapshot_name), PGRES_COMMAND_OK);
  // The table list, columns and row filters as the publication has them in this very snapshot.
  auto tables = conn.exec_params(
      "SELECT c.oid, pt.schemaname, pt.tablename, c.relreplident, greatest(c.reltuples, 0)::bigint, "
      "       coalesce(pt.rowfilter, ''), (extract(epoch FROM now()) * 1000000)::bigint "
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
  std::vector<std::optional<std::string>> values;
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
    auto cols = conn.exec_params(
        "SELECT a.attname, a.atttypid, a.atttypmod, coalesce(a.attnum = ANY(i.indkey), false) "
        "FROM pg_attribute a "
        "LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisreplident "
        "JOIN pg_publication_tables pt ON pt.pubname = $2 AND pt.schemaname = $3 AND pt.tablename = $4 "
        "WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
        "  AND a.attname = ANY(pt.attnames) ORDER BY a.attnum",
        {std::to_string(table.relid), config_.publication, table.schema, table.name}, PGRES_TUPLES_OK);
    std::string select;
    for (int c = 0; c < PQntuples(cols.get()); ++c) {
      ColumnInfo col;
      col.name = field(cols, c, 0);
      col.type_oid = static_cast<std::uint32_t>(std::stoul(field(cols, c, 1)));
      col.type_mod = std::stoi(field(cols, c, 2));
      col.identity = field(cols, c, 3) == "t";
      select += (c ? ", " : "") + quote_ident(col.name);
      table.columns.push_back(std::move(col));
    }
    catalog_.describe(table);

    std::string staging = config_.prefix + "staging:" + table.qualified;
    redis.checked({"DEL", staging});
    redis.checked({"SADD", staging_set(), staging});
    auto stream = writer_.stream(staging);
    ensure_hwm(writer_, stream, wait_until_);
    writer_.add_hset(config_.prefix + "schema:" + table.qualified, table.version, table.registry_json);

    std::string from = quote_ident(table.schema) + "." + quote_ident(table.name);
    conn.exec(fmt::format("COPY (SELECT {} FROM {}{}) TO STDOUT", select.empty() ? "" : select, from,
                          rowfilter.empty() ? "" : " WHERE " + rowfilter),
              PGRES_COPY_OUT);
    Progress progress(table.qualified, estimate);
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
      copy_text::parse_row(line, values);
      cells.clear();
      for (const auto& v : values) {
        cells.push_back(v ? Cell{Cell::State::Text, *v} : Cell{Cell::State::Null, {}});
      }
      writer_.add_entry(stream, StreamId{id_ms, static_cast<std::uint64_t>(++n)},
                        builder.snapshot(table, txn, lsn_text, cells));
      send_if_full(writer_, wait_until_);
      progress.advance(n);
    }
    progress.done();
  }
  conn.exec("COMMIT", PGRES_COMMAND_OK);
  // The copy is complete only when Redis holds all of it: the state moves in the last chunk.
  writer_.add_hset(state_key(), "status", "publishing");
  drain(writer_, wait_until_);
}

void SlotKeeper::publish(RedisClient& redis) {
  auto stagings = redis.checked({"SMEMBERS", staging_set()}).strings();
  const std::string marker = config_.prefix + "staging:";
  for (const auto& staging : stagings) {
    std::string target = config_.prefix + staging.substr(marker.size());
    if (redis.checked({"EXISTS", staging}).integer() == 0) continue;  // published before a crash
    if (redis.checked({"EXISTS", target}).integer() == 0) {
      // The usual case, a new stream: subscribers see the whole table appear at once.
      redis.checked({"RENAME", staging, target});
      continue;
    }
    // The stream holds entries of an earlier slot: append after them, resuming by high-water mark.
    auto stream = writer_.stream(target);
    ensure_hwm(writer_, stream, wait_until_);
    std::string start = "-";
    for (;;) {
      auto batch = redis.checked({"XRANGE", staging, start, "+", "COUNT", "1000"}).entries();
      if (batch.empty()) break;
      std::vector<std::pair<std::string_view, std::string_view>> fields;
      for (const auto& entry : batch) {
        fields.assign(entry.fields.begin(), entry.fields.end());
        auto id = parse_stream_id(entry.id);
        if (!id) throw RedisError(RedisError::Kind::Fatal, fmt::format("bad entry ID {} in {}", entry.id, staging));
        writer_.add_entry(stream, *id, fields);
        send_if_full(writer_, wait_until_);
        start = "(" + entry.id;
      }
      drain(writer_, wait_until_);
    }
    redis.checked({"DEL", staging});
  }
  redis.checked({"DEL", staging_set()});
  redis.checked({"HSET", state_key(), "status", "done"});
  log::info("slot '{}': initial snapshot published ({} table(s))", config_.slot, stagings.size());
}

}  // namespace walstream
