#include "record.h"

namespace walstream {
namespace {

void write_cell(JsonWriter& w, const ColumnInfo& col, const Cell& cell) {
  if (cell.state == Cell::State::Text) {
    write_typed_value(w, col.type, cell.text);
  } else {
    w.null();
  }
}

}  // namespace

void RecordBuilder::begin(std::string_view op, const TableInfo& t, const TxnContext& tx, std::string_view lsn) {
  count_ = 0;
  fields_[count_++] = {"op", op};
  fields_[count_++] = {"table", t.qualified};
  fields_[count_++] = {"lsn", lsn};
  fields_[count_++] = {"xid", tx.xid};
  fields_[count_++] = {"ts", tx.ts};
  fields_[count_++] = {"schema", t.version};
}

void RecordBuilder::add(std::string_view name, const JsonWriter& value) {
  fields_[count_++] = {name, value.view()};
}

bool RecordBuilder::write_key(const TableInfo& t, std::span<const Cell> row) {
  JsonWriter& w = key_;
  w.clear();
  w.start_object();
  for (std::size_t i = 0; i < t.columns.size() && i < row.size(); ++i) {
    const auto& col = t.columns[i];
    if (!col.key) continue;
    // A key column whose value was not sent cannot be named: leave the key out rather than guess.
    if (row[i].state == Cell::State::Unchanged) return false;
    w.member(col.json_member);
    write_cell(w, col, row[i]);
  }
  w.end_object();
  return true;
}

void RecordBuilder::write_row(JsonWriter& w, const TableInfo& t, std::span<const Cell> row, bool identity_only) {
  w.clear();
  w.start_object();
  for (std::size_t i = 0; i < t.columns.size() && i < row.size(); ++i) {
    const auto& col = t.columns[i];
    if (identity_only && !col.identity) continue;
    if (row[i].state == Cell::State::Unchanged) continue;
    w.member(col.json_member);
    write_cell(w, col, row[i]);
  }
  w.end_object();
}

// The new row; an unchanged TOASTed value is taken from the whole old row when there is one
// (REPLICA IDENTITY FULL), otherwise it is listed in `unchanged` and left out: never invented.
void RecordBuilder::write_after(const TableInfo& t, std::span<const Cell> new_row, std::span<const Cell> old_row) {
  JsonWriter& w = after_;
  JsonWriter& u = unchanged_;
  w.clear();
  u.clear();
  w.start_object();
  for (std::size_t i = 0; i < t.columns.size() && i < new_row.size(); ++i) {
    const auto& col = t.columns[i];
    const Cell* cell = &new_row[i];
    if (cell->state == Cell::State::Unchanged && i < old_row.size() &&
        old_row[i].state != Cell::State::Unchanged) {
      cell = &old_row[i];
    }
    if (cell->state == Cell::State::Unchanged) {
      if (u.empty()) u.start_array();
      u.string(col.name);
      continue;
    }
    w.member(col.json_member);
    write_cell(w, col, *cell);
  }
  w.end_object();
  if (!u.empty()) u.end_array();
}

std::span<const Field> RecordBuilder::insert(const TableInfo& t, const TxnContext& tx, std::string_view lsn,
                                             std::span<const Cell> new_row) {
  begin("c", t, tx, lsn);
  if (t.has_key && write_key(t, new_row)) add("key", key_);
  write_after(t, new_row, {});
  add("after", after_);
  if (!unchanged_.empty()) add("unchanged", unchanged_);
  return {fields_.data(), count_};
}

std::span<const Field> RecordBuilder::update(const TableInfo& t, const TxnContext& tx, std::string_view lsn,
                                             char old_kind, std::span<const Cell> old_row,
                                             std::span<const Cell> new_row) {
  begin("u", t, tx, lsn);
  std::span<const Cell> whole_old = old_kind == 'O' ? old_row : std::span<const Cell>{};
  write_after(t, new_row, whole_old);
  if (t.has_key) {
    // The key names the row as it is now; an unchanged TOASTed key column falls back to the old row.
    if (write_key(t, new_row) || (!whole_old.empty() && write_key(t, whole_old))) add("key", key_);
  }
  add("after", after_);
  if (old_kind == 'O' || old_kind == 'K') {
    write_row(before_, t, old_row, old_kind == 'K');
    add("before", before_);
  }
  if (!unchanged_.empty()) add("unchanged", unchanged_);
  return {fields_.data(), count_};
}

std::span<const Field> RecordBuilder::remove(const TableInfo& t, const TxnContext& tx, std::string_view lsn,
                                             char old_kind, std::span<const Cell> old_row) {
  begin("d", t, tx, lsn);
  // A primary key outside a USING INDEX identity is not in the old tuple (its columns come as
  // NULLs): leave `key` out rather than name the row by values PostgreSQL did not send.
  bool key_sent = old_kind == 'O' || t.key_in_identity;
  if (t.has_key && key_sent && write_key(t, old_row)) add("key", key_);
  write_row(before_, t, old_row, old_kind == 'K');
  add("before", before_);
  return {fields_.data(), count_};
}

std::span<const Field> RecordBuilder::snapshot(const TableInfo& t, const TxnContext& tx, std::string_view lsn,
                                               std::span<const Cell> row) {
  begin("r", t, tx, lsn);
  if (t.has_key && write_key(t, row)) add("key", key_);
  write_after(t, row, {});
  add("after", after_);
  return {fields_.data(), count_};
}

std::span<const Field> RecordBuilder::truncate(const TableInfo& t, const TxnContext& tx, std::string_view lsn) {
  begin("t", t, tx, lsn);
  return {fields_.data(), count_};
}

}  // namespace walstream
