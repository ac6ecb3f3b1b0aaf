// Backfill while streaming (`walstream backfill`): re-reads tables in key order, chunk by chunk, and
// publishes their current rows as `r` records into the live streams, with low/high watermarks in the
// WAL (the DBLog algorithm) so that a row changed while its chunk is read is published only through
// its change. Requests come through the replication stream itself (pg_logical_emit_message, prefix
// kRequestPrefix), ordered with the changes; the state lives in Redis (<prefix>backfill:<slot>),
// written with the rows it accounts for, so a restart resumes from the last chunk stored.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "catalog.h"
#include "config.h"
#include "keys.h"
#include "pg_conn.h"
#include "record.h"
#include "relation_cache.h"
#include "stream_writer.h"
#include "writer_flow.h"

namespace walstream {

// A table as a publication has it: what a backfill needs to know before reading it (also what
// `walstream backfill` checks before sending a request). nullopt: not in the publication.
struct PublishedTable {
  std::uint32_t relid = 0;
  char replident = 'd';
  std::string rowfilter;  // '' when none
  bool has_key = false;   // a primary key or replica identity index to read it in chunks by
};
std::optional<PublishedTable> find_published_table(PgConnection& conn, const std::string& publication,
                                                   const std::string& schema, const std::string& table);

// A PostgreSQL snapshot as pg_current_snapshot() writes it ("xmin:xmax:xip,xip…", 64-bit xids).
struct XidSnapshot {
  std::uint64_t xmin = 0, xmax = 0;
  std::vector<std::uint64_t> xip;  // in progress when it was taken
  // Throws std::invalid_argument on text that is not a snapshot.
  static XidSnapshot parse(std::string_view text);
  // Whether a transaction that committed, known by its 32-bit xid (as pgoutput's Begin carries it), is
  // visible to this snapshot: not at or above xmax, not in progress. Wraparound is taken relative
  // to xmax (a committed xid is within 2^31 below it).
  bool sees_committed(std::uint32_t xid) const;
  // A 32-bit xid as the 64-bit one it is, in xmax's epoch (within 2^31 of xmax either way).
  std::uint64_t full(std::uint32_t xid) const;
};
// Of the committed transactions `xids` (0 entries are unused slots), those `s` does not see, in order.
std::vector<std::uint32_t> unseen_commits(const XidSnapshot& s, const std::vector<std::uint32_t>& xids);

class Backfill {
 public:
  static constexpr std::string_view kRequestPrefix = "walstream.backfill";
  static constexpr std::string_view kWatermarkPrefix = "walstream.watermark";
  static constexpr std::string_view kFlushPrefix = "walstream.flush";  // an empty transaction after a mark
  // What one chunk's result may hold, about: --chunk-rows is lowered for wide rows to stay near it (a
  // chunk being written and the next one read are in memory together).
  static constexpr std::size_t kChunkBytes = 8 << 20;
  static constexpr long long kProbeRows = 16;  // a table's first chunk, to learn its rows' size

  // One request: tables (qualified names), an optional extra WHERE, the chunk size. `id` is the commit
  // LSN of the transaction that carried it.
  struct Request {
    std::string id;
    std::vector<std::string> tables;
    std::string where;
    long long chunk_rows = 10'000;
  };
  // The content of a request message, and back (throws std::invalid_argument on a malformed one).
  static std::string encode(std::string_view slot, const Request& r);
  static Request decode(std::string_view content, std::string* slot);

  Backfill(const Config& config, Catalog& catalog, ChangeWriter& writer, WaitUntil wait_until);

  // At session start: the state Redis holds (a request interrupted by a stop or a crash goes on).
  void resume();
  // A request message in the open transaction (commit LSN commit_lsn): queued, and the state written
  // into that transaction's chunk.
  void on_request(std::string_view content, std::uint64_t commit_lsn);
  // A Relation message inside the transaction committing at commit_lsn: a table that was not in the
  // publication when this session started (and the publication is not FOR ALL TABLES, where a table is
  // published from its creation) is backfilled, with --backfill-new-tables.
  void on_relation(const TableInfo& table, std::uint64_t commit_lsn);
  // Every transaction the stream delivers (its Begin), for the visibility check of a chunk's read.
  void on_begin(std::uint32_t xid) { recent_xids_[recent_next_++ % recent_xids_.size()] = xid; }
  // A watermark message (non-transactional, ending at lsn).
  void on_watermark(std::string_view content, std::uint64_t lsn);
  // Changes streamed between a chunk's watermarks: the key (key_text) of each changed row of that table.
  bool watching(std::uint32_t relid) const { return chunk_ && chunk_->low_seen && chunk_->table.relid == relid; }
  void changed(std::string key) { chunk_->changed.insert(std::move(key)); }
  void truncated() { chunk_->truncated = true; }
  // Between transactions: starts reading the next chunk when none is out (its low watermark, then the
  // SELECT, sent without waiting), and takes a read's result once PostgreSQL has it (then the high
  // watermark, once the low one has streamed and the read is known to see every commit before it).
  // Never blocks on the SELECT: changes and Redis's replies keep flowing meanwhile.
  void step();
  // The connection a chunk's SELECT is out on (poll it for POLLIN, then pump() and, between
  // transactions, step()), or -1.
  int read_fd() const;
  // Moves what PostgreSQL has sent of the SELECT's result into memory (any time: PostgreSQL never
  // waits on a full socket while walstream waits for Redis).
  void pump();
  bool busy() const { return active_.has_value(); }

  // The key of a row: its key columns' text values, length-prefixed (unambiguous whatever they hold).
  static void append_key_part(std::string& key, std::string_view value);

 private:
  struct Chunk {
    std::string request_id;
    long long number = 0;
    TableInfo table;
    PgResult result;         // the chunk's rows (text values, read in place)
    int nrows = 0;
    std::vector<std::size_t> key_at;  // the key columns' positions
    bool refused = false;    // a table not read (its marks are written all the same)
    bool reading = false;    // the SELECT is out; its result has not come yet
    bool pump_failed = false;  // pump() found the connection broken (take_result says so)
    bool sent = false;       // a SELECT went out (reading, or its result taken)
    bool have_rows = false;  // the read's result is here (rows, or `last` without rows)
    bool checked = false;    // the low mark has streamed and the read sees every commit before it
    bool high_written = false;
    std::string query;       // the SELECT and its parameters (the key values to start after)
    std::vector<std::string> params;
    XidSnapshot snapshot;    // the read's (REPEATABLE READ: the SELECT's own)
    std::string invisible;   // commits streamed before the low mark the read did not see (comma list, xid8)
    std::chrono::steady_clock::time_point waiting_since, next_check;
    bool waiting_said = false;
    long long reads = 0;     // SELECTs sent for this chunk (more than one: re-read after an unseen commit)
    long long limit = 0;     // its LIMIT
    std::string after;       // the key values the chunk starts after (JSON array; "" = the table's start)
    std::string next_after;  // state once stored: the key values of its last row, or `after`
    bool last = false;       // fewer rows than asked: the table is done with this chunk
    bool low_seen = false;
    bool truncated = false;
    std::unordered_set<std::string> changed;
    std::string ts;
  };
  struct Active {
    Request request;
    std::size_t table = 0;   // index into request.tables
    std::string after;       // JSON array of the key values after which the next chunk starts ("" = start)
    long long rows = 0;      // published so far
    long long chunks = 0;
    std::size_t row_bytes = 0;  // the last chunk's bytes per row (0: none read yet)
  };

  PgConnection& sql();
  // Chunk `number` of the active request's current table, after the key values `after`.
  void start_read(long long number, const std::string& after);
  void send_read();
  void take_result();
  void check_read();
  void write_high();
  void emit(Chunk& c, std::uint64_t lsn);
  void write_state();
  void finish_table();
  std::string watermark(const Chunk& c, const char* which) const;

  const Config& config_;
  Catalog& catalog_;
  ChangeWriter& writer_;
  WaitUntil wait_until_;
  Keys keys_;
  std::optional<PgConnection> sql_;
  std::optional<Active> active_;
  std::deque<Request> queue_;
  std::optional<Chunk> chunk_;
  std::string last_done_;  // the last request finished in this session
  std::unordered_set<std::uint32_t> published_;  // relids in the publication at session start
  bool all_tables_ = false;                       // the publication is FOR ALL TABLES
  std::uint64_t seen_up_to_ = 0;                  // the newest request's commit LSN known (Redis or stream)
  RecordBuilder builder_;
  std::string nonce_;  // in every watermark of this session
  // The xids of the last transactions streamed (a ring): at a low mark, the commits streamed before
  // it, which the chunk's read must see.
  std::vector<std::uint32_t> recent_xids_ = std::vector<std::uint32_t>(1 << 16, 0);
  std::size_t recent_next_ = 0;
};

}  // namespace walstream
