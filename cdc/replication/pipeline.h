// Decoded pgoutput messages -> records -> the stream writer. Owns the per-session relation cache and
// the transaction's position counter; waits (through the run loop) only for what it must know.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "backfill.h"
#include "catalog.h"
#include "config.h"
#include "copy_protocol.h"
#include "json.h"
#include "keys.h"
#include "metrics.h"
#include "pgoutput.h"
#include "record.h"
#include "relation_cache.h"
#include "stream_writer.h"
#include "writer_flow.h"

namespace walstream {

class Pipeline {
 public:
  struct Options {
    Keys keys;
    bool messages = true;                       // publish logical messages…
    std::vector<std::string> message_prefixes;  // …of these prefixes (empty: all)
    bool transactions = false;                  // a marker entry per transaction that published anything
    std::vector<std::string> outbox_tables;     // qualified names: their inserts become events
    OutboxColumns outbox_columns;
  };
  Pipeline(Catalog& catalog, ChangeWriter& writer, Options options, WaitUntil wait_until);

  // One XLogData payload; data_start is the LSN of the change it carries.
  void handle(const copy::XLogData& data);

  // Backfill requests and watermarks go to it, and the changes of the table whose chunk is out.
  void set_backfill(Backfill* backfill) { backfill_ = backfill; }

  bool in_transaction() const { return in_txn_; }
  std::uint64_t changes() const { return changes_; }
  // The last transaction whose Commit was handled (all its entries added): its end LSN and commit
  // time (PostgreSQL microseconds since 2000-01-01); 0 before the first. transactions() counts them.
  std::uint64_t last_commit_end() const { return last_commit_end_; }
  std::int64_t last_commit_time() const { return last_commit_time_; }
  std::uint64_t transactions() const { return transactions_; }

  // Metrics count what Redis stored, once: a transaction's changes are added to
  // walstream_changes_total{table} and walstream_transactions_total when the writer's acknowledged
  // position passes its end (a transaction received again after a reconnect was never counted; a
  // replay adds nothing). settle() takes the position; unsettled_since() is the commit time (unix
  // seconds) of the oldest transaction received but not yet stored, or nullopt.
  void settle(std::uint64_t acked_lsn);
  std::optional<double> unsettled_since() const;

 private:
  // Where an outbox table's columns are (indexes into its columns; npos when it has none).
  struct Outbox {
    std::size_t id, aggregate_type, aggregate_id, type, payload;
    std::vector<std::size_t> headers;
  };
  struct Target {
    const TableInfo* table = nullptr;
    ChangeWriter::Handle stream = 0;
    bool registered = false;  // the schema version's registry entry is queued in this session
    std::optional<Outbox> outbox;
    metrics::Counter* published = nullptr;  // walstream_changes_total{table}: entries added (not replays)
  };

  void on(const pgoutput::Begin& m);
  void on(const pgoutput::Commit& m);
  void on(const pgoutput::Relation& m);
  void on(const pgoutput::Type& m);
  void on(const pgoutput::Insert& m);
  void on(const pgoutput::Update& m);
  void on(const pgoutput::Delete& m);
  void on(const pgoutput::Truncate& m);
  void on(const pgoutput::Origin&) {}
  void on(const pgoutput::Message& m);

  Target& target(std::uint32_t relid);
  const std::vector<Cell>& cells(const pgoutput::Tuple& tuple, std::vector<Cell>& out);
  void emit(Target& t, std::span<const Field> fields);
  // Adds one entry of the open transaction (the next seq); counts it for the transaction's marker.
  // False when Redis already has it (a replay).
  bool add(ChangeWriter::Handle stream, StreamId id, ChangeWriter::Fields fields);
  void add_marker();
  void publish_event(Target& t, const pgoutput::Insert& m);
  void count_change(Target& t);
  // For the backfill's window: the changed row's key (its key columns' values) in `tuple`.
  void note_change(const Target& t, const pgoutput::Tuple& tuple);  // one more entry of t's table in the open transaction
  ChangeWriter::Handle event_stream(std::string_view aggregate_type);
  void require_transaction(const char* what) const;

  Catalog& catalog_;
  ChangeWriter& writer_;
  Backfill* backfill_ = nullptr;
  Options options_;
  const Keys& keys_ = options_.keys;
  WaitUntil wait_until_;
  RelationCache relations_;
  std::unordered_map<std::uint32_t, Target> targets_;
  RecordBuilder builder_;
  std::vector<Cell> old_cells_, new_cells_;

  bool in_txn_ = false;
  std::uint64_t commit_lsn_ = 0;
  std::uint64_t seq_ = 0;
  TxnContext txn_;
  std::string lsn_text_;
  std::uint64_t current_lsn_ = 0;
  std::uint64_t changes_ = 0;
  std::int64_t commit_time_ = 0;  // the open transaction's
  std::uint64_t last_commit_end_ = 0;
  std::int64_t last_commit_time_ = 0;
  std::uint64_t transactions_ = 0;
  // Received, not yet stored: per run of transactions (coalesced to one per 10 ms of commit time and
  // at most kUnsettledMax, so bounded), the last end LSN, the first commit time, and the counts.
  struct Unsettled {
    std::uint64_t end_lsn = 0;
    std::int64_t commit_time = 0;
    std::uint64_t transactions = 0;
    std::vector<std::pair<metrics::Counter*, std::uint64_t>> changes;
  };
  static constexpr std::size_t kUnsettledMax = 1024;
  std::vector<std::pair<metrics::Counter*, std::uint64_t>> txn_changes_;  // the open transaction's
  std::deque<Unsettled> unsettled_;

  ChangeWriter::Handle transactions_stream_ = 0;
  // The open transaction's entries per stream (for its marker), in first-touched order.
  std::vector<std::pair<ChangeWriter::Handle, std::uint64_t>> txn_streams_;
  std::vector<std::pair<std::string_view, std::string_view>> fields_;
  JsonWriter marker_json_;
  std::string marker_changes_;
};

}  // namespace walstream
