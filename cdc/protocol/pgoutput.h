// pgoutput logical replication protocol, version 1: bytes of one XLogData payload -> message struct.
// Pure (no I/O, no logging); mirrors logicalrep_read_* in PostgreSQL's proto.c. Views point into the input.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "byte_reader.h"

namespace walstream::pgoutput {

using Lsn = std::uint64_t;
// Microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL's epoch).
using PgTimestamp = std::int64_t;

struct Begin {
  Lsn final_lsn = 0;  // LSN of the commit record: equals Commit::commit_lsn
  PgTimestamp commit_time = 0;
  std::uint32_t xid = 0;
};

struct Commit {
  std::uint8_t flags = 0;  // always 0 in protocol 1
  Lsn commit_lsn = 0;
  Lsn end_lsn = 0;  // end of the commit record: the position to confirm
  PgTimestamp commit_time = 0;
};

struct Origin {
  Lsn commit_lsn = 0;
  std::string_view name;
};

struct Column {
  bool key = false;  // flags bit 1: part of the replica identity
  std::string_view name;
  std::uint32_t type_oid = 0;
  std::int32_t type_mod = -1;
};

struct Relation {
  std::uint32_t relid = 0;
  std::string_view nspname;  // "" stands for pg_catalog
  std::string_view relname;
  char replident = 'd';  // 'd' default, 'n' nothing, 'f' full, 'i' index
  std::vector<Column> columns;
};

struct Type {
  std::uint32_t oid = 0;
  std::string_view nspname;
  std::string_view typname;
};

enum class ValueKind : char { Null = 'n', Unchanged = 'u', Text = 't', Binary = 'b' };

struct Value {
  ValueKind kind = ValueKind::Null;
  std::string_view data;  // the value's bytes for Text and Binary
};

using Tuple = std::vector<Value>;

struct Insert {
  std::uint32_t relid = 0;
  Tuple new_tuple;
};

struct Update {
  std::uint32_t relid = 0;
  char old_kind = 0;  // 0 (no old tuple), 'K' (key columns only) or 'O' (whole old row)
  Tuple old_tuple;
  Tuple new_tuple;
};

struct Delete {
  std::uint32_t relid = 0;
  char old_kind = 'K';  // 'K' or 'O'
  Tuple old_tuple;
};

struct Truncate {
  std::uint8_t options = 0;  // bit 1 CASCADE, bit 2 RESTART IDENTITY
  std::vector<std::uint32_t> relids;
};

struct Message {
  bool transactional = false;
  Lsn lsn = 0;
  std::string_view prefix;
  std::string_view content;
};

using Decoded = std::variant<Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate, Message>;

// Decodes one whole pgoutput message; throws DecodeError (with the offset) when the bytes are
// truncated, carry trailing garbage, an unknown message type or tuple kind, or non-zero flags.
Decoded decode(std::string_view bytes);

}  // namespace walstream::pgoutput
