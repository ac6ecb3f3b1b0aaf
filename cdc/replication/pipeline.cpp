#include "pipeline.h"

#include <fmt/format.h>

#include "errors.h"
#include "pg_time.h"

#include <algorithm>

namespace walstream {

Pipeline::Pipeline(Catalog& catalog, StreamWriter& writer, Options options, WaitUntil wait_until)
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
  txn_.ts = format_pg_timestamp(m.commit_time);
  txn_streams_.clear();
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
// above every transaction committed before them, below every one committed after.
void Pipeline::on(const pgoutput::Message& m) {
  if (!options_.messages) return;
  if (!options_.message_prefixes.empty() &&
      std::find(options_.message_prefixes.begin(), options_.message_prefixes.end(), m.prefix) ==
          options_.message_prefixes.end()) {
    return;
  }
  std::string prefix(m.prefix);
  auto it = message_streams_.find(prefix);
  if (it == message_streams_.end()) it = message_streams_.emplace(prefix, writer_.stream(keys_.messages(prefix))).first;
  auto stream = it->second;
  ensure_hwm(writer_, stream, wait_until_);
  lsn_text_ = copy::format_lsn(m.lsn);
  fields_.assign({{"prefix", m.prefix}, {"content", m.content}, {"transactional", m.transactional ? "1" : "0"},
                  {"lsn", lsn_text_}});
  if (m.transactional) {
    require_transaction("transactional Message");
    fields_.push_back({"xid", txn_.xid});
    fields_.push_back({"ts", txn_.ts});
    add(stream, StreamId{commit_lsn_, ++seq_}, fields_);
    return;
  }
  if (in_txn_) {
    // Not expected from pgoutput (a transaction is sent whole at its commit), but if it comes, it
    // rides in the open chunk without touching the transaction's accounting.
    send_if_full(writer_, wait_until_);
    writer_.add_entry(stream, StreamId{m.lsn, 1}, fields_);
    return;
  }
  writer_.begin_transaction();
  send_if_full(writer_, wait_until_);
  writer_.add_entry(stream, StreamId{m.lsn, 1}, fields_);
  writer_.mark_commit(m.lsn);
}

void Pipeline::add(StreamWriter::Handle stream, StreamId id, StreamWriter::Fields fields) {
  // Full before adding, not after: the transaction's last entries then stay in the chunk its commit
  // (and its marker) closes.
  send_if_full(writer_, wait_until_);
  writer_.add_entry(stream, id, fields);
  if (!options_.transactions) return;
  for (auto& [s, n] : txn_streams_) {
    if (s == stream) {
      ++n;
      return;
    }
  }
  txn_streams_.emplace_back(stream, 1);
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
  t.stream = writer_.stream(keys_.stream(stored.qualified));
  t.registered = false;
}

void Pipeline::on(const pgoutput::Type& m) { catalog_.forget_type(m.oid); }

Pipeline::Target& Pipeline::target(std::uint32_t relid) {
  auto it = targets_.find(relid);
  if (it == targets_.end() || !it->second.table) {
    throw PgError(false, fmt::format("protocol error: change for relation {} before its Relation message", relid));
  }
  auto& t = it->second;
  ensure_hwm(writer_, t.stream, wait_until_);
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
  add(t.stream, StreamId{commit_lsn_, ++seq_}, fields);
}

void Pipeline::on(const pgoutput::Insert& m) {
  require_transaction("Insert");
  auto& t = target(m.relid);
  lsn_text_ = copy::format_lsn(current_lsn_);
  emit(t, builder_.insert(*t.table, txn_, lsn_text_, cells(m.new_tuple, new_cells_)));
}

void Pipeline::on(const pgoutput::Update& m) {
  require_transaction("Update");
  auto& t = target(m.relid);
  lsn_text_ = copy::format_lsn(current_lsn_);
  emit(t, builder_.update(*t.table, txn_, lsn_text_, m.old_kind, cells(m.old_tuple, old_cells_),
                          cells(m.new_tuple, new_cells_)));
}

void Pipeline::on(const pgoutput::Delete& m) {
  require_transaction("Delete");
  auto& t = target(m.relid);
  lsn_text_ = copy::format_lsn(current_lsn_);
  emit(t, builder_.remove(*t.table, txn_, lsn_text_, m.old_kind, cells(m.old_tuple, old_cells_)));
}

void Pipeline::on(const pgoutput::Truncate& m) {
  require_transaction("Truncate");
  lsn_text_ = copy::format_lsn(current_lsn_);
  for (auto relid : m.relids) {
    auto& t = target(relid);
    emit(t, builder_.truncate(*t.table, txn_, lsn_text_));
  }
}

}  // namespace walstream
