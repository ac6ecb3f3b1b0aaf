// One row change -> the fields of one stream entry, as the record contract lays them out.
// Pure; buffers are reused from change to change, so the returned fields live until the next call.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "json.h"
#include "relation_cache.h"

namespace walstream {

// One column value of a decoded tuple, independent of the decoder's types.
struct Cell {
  enum class State : std::uint8_t { Null, Unchanged, Text };
  State state = State::Null;
  std::string_view text;
};

using Field = std::pair<std::string_view, std::string_view>;

// Per-transaction text shared by its records.
struct TxnContext {
  std::string xid;
  std::string ts;  // RFC 3339 commit time
};

class RecordBuilder {
 public:
  std::span<const Field> insert(const TableInfo& t, const TxnContext& tx, std::string_view lsn,
                                std::span<const Cell> new_row);
  // old_kind: 0 when no old row was sent, 'K' when only identity columns were, 'O' for the whole row.
  std::span<const Field> update(const TableInfo& t, const TxnContext& tx, std::string_view lsn, char old_kind,
                                std::span<const Cell> old_row, std::span<const Cell> new_row);
  std::span<const Field> remove(const TableInfo& t, const TxnContext& tx, std::string_view lsn, char old_kind,
                                std::span<const Cell> old_row);
  std::span<const Field> truncate(const TableInfo& t, const TxnContext& tx, std::string_view lsn);
  // A row read by the initial snapshot (op `r`).
  std::span<const Field> snapshot(const TableInfo& t, const TxnContext& tx, std::string_view lsn,
                                  std::span<const Cell> row);

 private:
  void begin(std::string_view op, const TableInfo& t, const TxnContext& tx, std::string_view lsn);
  void add(std::string_view name, const JsonWriter& value);
  // Writes {col: value} for the chosen columns; returns false when a key column had no value.
  bool write_key(const TableInfo& t, std::span<const Cell> row);
  void write_row(JsonWriter& w, const TableInfo& t, std::span<const Cell> row, bool identity_only);
  void write_after(const TableInfo& t, std::span<const Cell> new_row, std::span<const Cell> old_row);

  std::array<Field, 10> fields_;
  std::size_t count_ = 0;
  JsonWriter key_, after_, before_, unchanged_;
};

}  // namespace walstream
