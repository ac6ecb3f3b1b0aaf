#include "pipeline.h"

#include <fmt/format.h>

#include "errors.h"
#include "log.h"
#include "metrics.h"
#include "pg_time.h"

#include <algorithm>

namespace walstream {

Pipeline::Pipeline(Catalog& catalog, ChangeWriter& writer, Options options, WaitUntil wait_until)
    : catalog_(catalog), writer_(writer), options_(std::move(options)), wait_until_(std::move(wait_until)) {
  if (options_.transactions) transactions_stream_ = writer_.stream(keys_.transactions());
}

void Pipeline::handle(const copy::XLogData& data) {
  current_lsn_ = data.data_start;
  auto message = pgoutput::decode(data.payload);
  std::visit([this](const auto& m) { on(m); }, message);
}

void Pipeline::require_transaction(const char* what) const {
  if (!in_txn_) throw PgError(false, fmt::format("protocol error: {} outside a transaction", what));
}

void Pipeline::on(const pgoutput::Begin& m) {
  if (in_txn_) throw PgError(false, "protocol error: Begin inside a transaction");
  in_txn_ = true;
  // Begin's final_lsn is the commit record's LSN, so entries get their final IDs as they stream.
  commit_lsn_ = m.final_lsn;
  seq_ = 0;
  txn_.xid = std::to_string(m.xid);
  if (backfill_) backfill_->on_begin(m.xid);
  txn_.ts = format_pg_timestamp(m.commit_time);
  commit_time_ = m.commit_time;
  txn_streams_.clear();
  txn_changes_.clear();
  writer_.begin_transaction();
}

void Pipeline::on(const pgoutput::Commit& m) {
  require_transaction("Commit");
  if (m.commit_lsn != commit_lsn_) {
    throw PgError(false, fmt::format("protocol error: Commit at {} for a transaction begun at {}",
                                     copy::format_lsn(m.commit_lsn), copy::format_lsn(commit_lsn_)));
  }
  // The marker goes into the chunk that holds the transaction's last entries: once a consumer sees
  // it, every entry of the transaction is readable.
  if (options_.transactions && !txn_streams_.empty()) add_marker();
  in_txn_ = false;
  writer_.mark_commit(m.end_lsn);
  last_commit_end_ = m.end_lsn;
  last_commit_time_ = commit_time_;
  ++transactions_;
  if (unsettled_.empty() || (commit_time_ - unsettled_.back().commit_time >= 10'000 &&
                             unsettled_.size() < kUnsettledMax)) {
    unsettled_.push_back({m.end_lsn, commit_time_, 0, {}});
  }
  auto& u = unsettled_.back();
  u.end_lsn = m.end_lsn;
  ++u.transactions;
  for (const auto& [counter, n] : txn_changes_) {
    auto it = std::find_if(u.changes.begin(), u.changes.end(), [&](const auto& c) { return c.first == counter; });
    if (it == u.changes.end()) {
      u.changes.emplace_back(counter, n);
    } else {
      it->second += n;
    }
  }
}

void Pipeline::settle(std::uint64_t acked_lsn) {
  auto& m = metrics::registry();
  while (!unsettled_.empty() && unsettled_.front().end_lsn <= acked_lsn) {
    const auto& u = unsettled_.front();
    m.transactions.add(u.transactions);
    for (const auto& [counter, n] : u.changes) counter->add(n);
    unsettled_.pop_front();
  }
}

std::optional<double> Pipeline::unsettled_since() const {
  if (unsettled_.empty()) return std::nullopt;
  return static_cast<double>(unsettled_.front().commit_time + kPgEpochUnixMicros) / 1e6;
}

void Pipeline::count_change(Target& t) {
  for (auto& [counter, n] : txn_changes_) {
    if (counter == t.published) {
      ++n;
      return;
    }
  }
  txn_changes_.emplace_back(t.published, 1);
}

void Pipeline::add_marker() {
  ensure_hwm(writer_, transactions_stream_, wait_until_);
  std::uint64_t changes = 0;
  marker_json_.clear();
  marker_json_.start_object();
  for (const auto& [stream, n] : txn_streams_) {
    changes += n;
    marker_json_.key(writer_.key(stream));
    marker_json_.number(n);
  }
  marker_json_.end_object();
  marker_changes_ = std::to_string(changes);
  lsn_text_ = copy::format_lsn(commit_lsn_);
  fields_.assign({{"xid", txn_.xid},
                  {"lsn", lsn_text_},
                  {"ts", txn_.ts},
                  {"changes", marker_changes_},
                  {"streams", marker_json_.view()}});
  writer_.add_entry(transactions_stream_, StreamId{commit_lsn_, 0}, fields_);
}

// pg_logical_emit_message: transactional ones are entries of their transaction; the others are
// sent by pgoutput as they are decoded, between transactions, and get an ID from their own LSN —
// above every transaction committed before them, below every one committed after. The LSN pgoutput
// gives a message is where its record ends, which is where the next record — maybe a commit — starts:
// the ID's first part is that LSN - 1, never a record start (records are 8-byte aligned), so never a
// commit LSN, and a transaction committing right after the message can neither collide with it nor
// have its own entries taken for replays.
//
// Entry IDs must not depend on walstream's flags, or a restart with other flags after a crash would
// number the resent transactions differently (a row written twice, or one skipped as a replay). So
// every transactional message takes its seq whether it is published or not (pgoutput always sends
// them: run_loop asks for messages whatever --messages says), as do an outbox's updates, deletes and
// truncates: the IDs depend only on what the publication sends.
void Pipeline::on(const pgoutput::Message& m) {
  if (m.transactional) require_transaction("transactional Message");
  // walstream's own messages are never published: a backfill request (an entry of its transaction: it
  // takes its seq like any message not published) and the backfill's watermarks.
  if (m.transactional && m.prefix == Backfill::kRequestPrefix) {
    ++seq_;
    if (backfill_) backfill_->on_request(m.content, commit_lsn_);
    return;
  }
  if (m.transactional && m.prefix == Backfill::kFlushPrefix) {
    ++seq_;
    return;
  }
  if (!m.transactional && m.prefix == Backfill::kWatermarkPrefix) {
    if (in_txn_) throw PgError(false, "protocol error: a non-transactional Message inside a transaction");
    if (backfill_) backfill_->on_watermark(m.content, m.lsn);
    return;
  }
  const bool selected = options_.messages &&
                        (options_.message_prefixes.empty() ||
                         std::find(options_.message_prefixes.begin(), options_.message_prefixes.end(), m.prefix) !=
                             options_.message_prefixes.end());
  if (!selected) {
    if (m.transactional) ++seq_;
    return;
  }
  if (!m.transactional && in_txn_) {
    throw PgError(false, "protocol error: a non-transactional Message inside a transaction");
  }
  auto stream = writer_.stream(keys_.messages(m.prefix));  // the writer keeps streams by key
  ensure_hwm(writer_, stream, wait_until_);
  lsn_text_ = copy::format_lsn(m.lsn);
  fields_.assign({{"prefix", m.prefix}, {"content", m.content}, {"transactional", m.transactional ? "1" : "0"},
                  {"lsn", lsn_text_}});
  if (m.transactional) {
    fields_.push_back({"xid", txn_.xid});
    fields_.push_back({"ts", txn_.ts});
    add(stream, StreamId{commit_lsn_, ++seq_}, fields_);
    return;
  }
  writer_.begin_transaction();
  send_if_full(writer_, wait_until_);
  writer_.add_entry(stream, StreamId{m.lsn - 1, 1}, fields_);
  writer_.mark_commit(m.lsn);
}

bool Pipeline::add(ChangeWriter::Handle stream, StreamId id, ChangeWriter::Fields fields) {
  // Full before adding, not after: the transaction's last entries then stay in the chunk its commit
  // (and its marker) closes.
  send_if_full(writer_, wait_until_);
  bool added = writer_.add_entry(stream, id, fields);
  if (!options_.transactions) return added;
  for (auto& [s, n] : txn_streams_) {
    if (s == stream) {
      ++n;
      return added;
    }
  }
  txn_streams_.emplace_back(stream, 1);
  return added;
}

void Pipeline::on(const pgoutput::Relation& m) {
  TableInfo table;
  table.relid = m.relid;
  table.schema = m.nspname.empty() ? "pg_catalog" : std::string(m.nspname);
  table.name = std::string(m.relname);
  table.replident = m.replident;
  for (const auto& c : m.columns) {
    ColumnInfo col;
    col.name = std::string(c.name);
    col.type_oid = c.type_oid;
    col.type_mod = c.type_mod;
    col.identity = c.key;
    table.columns.push_back(std::move(col));
  }
  catalog_.describe(table);
  const auto& stored = relations_.put(std::move(table));
  auto& t = targets_[m.relid];
  t.table = &stored;
  t.published = &metrics::registry().changes.at(stored.qualified);
  t.registered = false;
  t.outbox.reset();
  if (std::find(options_.outbox_tables.begin(), options_.outbox_tables.end(), stored.qualified) ==
      options_.outbox_tables.end()) {
    t.stream = writer_.stream(keys_.stream(stored.qualified));
    if (backfill_ && in_txn_) backfill_->on_relation(stored, commit_lsn_);
    return;
  }
  // An outbox table: its inserts are events; its own row stream is never written.
  const auto& names = options_.outbox_columns;
  auto find = [&](const std::string& name, const char* flag, bool required) {
    for (std::size_t i = 0; i < stored.columns.size(); ++i) {
      if (stored.columns[i].name == name) return i;
    }
    if (required) {
      throw ConfigError(fmt::format("outbox table {} has no column \"{}\" ({} names it)", stored.qualified, name, flag));
    }
    return static_cast<std::size_t>(-1);
  };
  Outbox o;
  o.id = find(names.id, "--outbox-id-column", false);  // id and aggregate id may be absent (setup warns)
  o.aggregate_type = find(names.aggregate_type, "--outbox-aggregate-type-column", true);
  o.aggregate_id = find(names.aggregate_id, "--outbox-aggregate-id-column", false);
  o.type = find(names.type, "--outbox-type-column", true);
  o.payload = find(names.payload, "--outbox-payload-column", true);
  for (std::size_t i = 0; i < stored.columns.size(); ++i) {
    if (i == o.id || i == o.aggregate_type || i == o.aggregate_id || i == o.type || i == o.payload) continue;
    // A header named like an event field would give the entry that field twice.
    for (std::string_view reserved : {"id", "type", "aggregate_id", "payload", "lsn", "xid", "ts"}) {
      if (stored.columns[i].name == reserved) {
        throw ConfigError(fmt::format("outbox table {} has a column \"{}\", the name of an event field: rename "
                                      "it, or name it with the matching --outbox-…-column flag",
                                      stored.qualified, reserved));
      }
    }
    o.headers.push_back(i);
  }
  t.outbox = std::move(o);
}

ChangeWriter::Handle Pipeline::event_stream(std::string_view aggregate_type) {
  auto stream = writer_.stream(keys_.events(aggregate_type));  // the writer keeps streams by key
  ensure_hwm(writer_, stream, wait_until_);
  return stream;
}

// One outbox row -> one event on <prefix>events:<aggregate type>, an entry of its transaction. A row
// that is not an event (no aggregate type, no type, no payload) goes to events:_invalid with the
// reason, so the feed never stops on it and nothing vanishes.
void Pipeline::publish_event(Target& t, const pgoutput::Insert& m) {
  const auto& o = *t.outbox;
  const auto& row = cells(m.new_tuple, new_cells_);
  auto text = [&](std::size_t i) -> std::optional<std::string_view> {
    if (i >= row.size() || row[i].state != Cell::State::Text) return std::nullopt;
    return row[i].text;
  };
  lsn_text_ = copy::format_lsn(current_lsn_);
  std::string reason;
  auto aggregate_type = text(o.aggregate_type);
  if (!aggregate_type || aggregate_type->empty()) {
    reason = fmt::format("{} is null or empty", t.table->columns[o.aggregate_type].name);
  } else if (!text(o.type)) {
    reason = fmt::format("{} is null", t.table->columns[o.type].name);
  } else if (!text(o.payload)) {
    reason = fmt::format("{} is null", t.table->columns[o.payload].name);
  } else if (aggregate_type->find_first_of(" \t\r\n\v\f") != std::string_view::npos) {
    reason = fmt::format("{} '{}' contains white space", t.table->columns[o.aggregate_type].name, *aggregate_type);
  } else if (*aggregate_type == "_invalid") {
    reason = fmt::format("{} '_invalid' is reserved for rows that are not events",
                         t.table->columns[o.aggregate_type].name);
  }
  fields_.clear();
  if (reason.empty()) {
    if (auto id = text(o.id)) fields_.push_back({"id", *id});
    fields_.push_back({"type", *text(o.type)});
    if (auto id = text(o.aggregate_id)) fields_.push_back({"aggregate_id", *id});
    fields_.push_back({"payload", *text(o.payload)});
    for (auto i : o.headers) {
      if (auto v = text(i)) fields_.push_back({t.table->columns[i].name, *v});
    }
    fields_.push_back({"lsn", lsn_text_});
    fields_.push_back({"xid", txn_.xid});
    fields_.push_back({"ts", txn_.ts});
    if (add(event_stream(*aggregate_type), StreamId{commit_lsn_, ++seq_}, fields_)) count_change(t);
    return;
  }
  log::warn("outbox row of {} at {} is not an event ({}): published on {}", t.table->qualified, lsn_text_, reason,
            keys_.events("_invalid"));
  auto stream = event_stream("_invalid");
  auto record = builder_.insert(*t.table, txn_, lsn_text_, row);
  for (const auto& [name, value] : record) {
    if (name == "after") fields_.push_back({"row", value});
  }
  fields_.push_back({"table", t.table->qualified});
  fields_.push_back({"reason", reason});
  fields_.push_back({"lsn", lsn_text_});
  fields_.push_back({"xid", txn_.xid});
  fields_.push_back({"ts", txn_.ts});
  if (add(stream, StreamId{commit_lsn_, ++seq_}, fields_)) count_change(t);
}

void Pipeline::note_change(const Target& t, const pgoutput::Tuple& tuple) {
  std::string key;
  const auto& columns = t.table->columns;
  for (std::size_t i = 0; i < columns.size() && i < tuple.size(); ++i) {
    if (columns[i].key) Backfill::append_key_part(key, tuple[i].data);
  }
  backfill_->changed(std::move(key));
}

void Pipeline::on(const pgoutput::Type& m) { catalog_.forget_type(m.oid); }

Pipeline::Target& Pipeline::target(std::uint32_t relid) {
  auto it = targets_.find(relid);
  if (it == targets_.end() || !it->second.table) {
    throw PgError(false, fmt::format("protocol error: change for relation {} before its Relation message", relid));
  }
  auto& t = it->second;
  if (!t.outbox) ensure_hwm(writer_, t.stream, wait_until_);
  return t;
}

const std::vector<Cell>& Pipeline::cells(const pgoutput::Tuple& tuple, std::vector<Cell>& out) {
  out.clear();
  for (const auto& v : tuple) {
    Cell c;
    switch (v.kind) {
      case pgoutput::ValueKind::Null:
        c.state = Cell::State::Null;
        break;
      case pgoutput::ValueKind::Unchanged:
        c.state = Cell::State::Unchanged;
        break;
      case pgoutput::ValueKind::Text:
      case pgoutput::ValueKind::Binary:  // never requested; carried as its bytes if it ever comes
        c.state = Cell::State::Text;
        c.text = v.data;
        break;
    }
    out.push_back(c);
  }
  return out;
}

void Pipeline::emit(Target& t, std::span<const Field> fields) {
  ++changes_;
  send_if_full(writer_, wait_until_);
  if (!t.registered) {
    // The registry entry goes first in the same chunk: a subscriber never sees a version it cannot look up.
    writer_.add_hset(keys_.registry(t.table->qualified), t.table->version, t.table->registry_json);
    t.registered = true;
  }
  if (add(t.stream, StreamId{commit_lsn_, ++seq_}, fields)) count_change(t);
}

void Pipeline::on(const pgoutput::Insert& m) {
  require_transaction("Insert");
  auto& t = target(m.relid);
  if (t.outbox) return publish_event(t, m);
  if (backfill_ && backfill_->watching(m.relid)) note_change(t, m.new_tuple);
  lsn_text_ = copy::format_lsn(current_lsn_);
  emit(t, builder_.insert(*t.table, txn_, lsn_text_, cells(m.new_tuple, new_cells_)));
}

void Pipeline::on(const pgoutput::Update& m) {
  require_transaction("Update");
  auto& t = target(m.relid);
  if (t.outbox) {
    ++seq_;  // only inserts are events ("insert then delete" keeps the table empty); the seq is taken
    return;
  }
  if (backfill_ && backfill_->watching(m.relid)) {
    note_change(t, m.new_tuple);
    if (m.old_kind) note_change(t, m.old_tuple);  // a key that changed: the old row is gone
  }
  lsn_text_ = copy::format_lsn(current_lsn_);
  emit(t, builder_.update(*t.table, txn_, lsn_text_, m.old_kind, cells(m.old_tuple, old_cells_),
                          cells(m.new_tuple, new_cells_)));
}

void Pipeline::on(const pgoutput::Delete& m) {
  require_transaction("Delete");
  auto& t = target(m.relid);
  if (t.outbox) {
    ++seq_;
    return;
  }
  if (backfill_ && backfill_->watching(m.relid)) note_change(t, m.old_tuple);
  lsn_text_ = copy::format_lsn(current_lsn_);
  emit(t, builder_.remove(*t.table, txn_, lsn_text_, m.old_kind, cells(m.old_tuple, old_cells_)));
}

void Pipeline::on(const pgoutput::Truncate& m) {
  require_transaction("Truncate");
  lsn_text_ = copy::format_lsn(current_lsn_);
  for (auto relid : m.relids) {
    auto& t = target(relid);
    if (t.outbox) {
      ++seq_;
      continue;
    }
    if (backfill_ && backfill_->watching(relid)) backfill_->truncated();
    emit(t, builder_.truncate(*t.table, txn_, lsn_text_));
  }
}

}  // namespace walstream
