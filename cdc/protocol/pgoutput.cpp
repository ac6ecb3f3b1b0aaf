// pgoutput protocol 1 decoder: one read_* function per message, like logicalrep_read_* in proto.c.
// Every invariant PostgreSQL's own reader checks is checked here, and a few more (no trailing bytes).
#include "pgoutput.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

namespace walstream::pgoutput {
namespace {

// Column flags in a Relation message: the column is part of the replica identity.
constexpr std::uint8_t kColumnIsKey = 1;
// Truncate options: CASCADE and RESTART IDENTITY.
constexpr std::uint8_t kTruncateKnownOptions = 1 | 2;
// Message flags: emitted with transactional = true.
constexpr std::uint8_t kMessageTransactional = 1;

// A protocol byte for an error message: the letter when printable, else its hex value.
std::string describe(std::uint8_t byte) {
  if (std::isprint(byte) != 0) return fmt::format("'{}'", static_cast<char>(byte));
  return fmt::format("0x{:02x}", byte);
}

// Counts are signed on the wire (int16 / int32) but can never be negative.
[[noreturn]] void negative_count(const ByteReader& r, const char* what, std::int64_t n, std::size_t at) {
  r.fail_at(fmt::format("negative {} {}", what, n), at);
}

// Small enough to inline (read for every column of every change); the error is built out of line.
std::size_t read_count16(ByteReader& r, const char* what) {
  const std::int16_t n = r.i16();
  if (n < 0) negative_count(r, what, n, r.offset() - 2);
  return static_cast<std::size_t>(n);
}

std::size_t read_count32(ByteReader& r, const char* what) {
  const std::int32_t n = r.i32();
  if (n < 0) negative_count(r, what, n, r.offset() - 4);
  return static_cast<std::size_t>(n);
}

// Reserve no more elements than the remaining bytes could hold (each takes >= min_size bytes),
// so a corrupt count cannot make us allocate gigabytes before the reads fail.
template <typename T>
void reserve_bounded(std::vector<T>& v, std::size_t count, const ByteReader& r, std::size_t min_size) {
  v.reserve(std::min(count, r.remaining() / min_size));
}

Begin read_begin(ByteReader& r) {
  Begin b;
  const std::size_t at = r.offset();
  b.final_lsn = r.u64();
  // The commit record's LSN is always known when the transaction is sent (it is sent at commit).
  if (b.final_lsn == 0) r.fail_at("final_lsn not set in Begin", at);
  b.commit_time = r.i64();
  b.xid = r.u32();
  return b;
}

Commit read_commit(ByteReader& r) {
  Commit c;
  const std::size_t at = r.offset();
  c.flags = r.u8();
  // Protocol 1 defines no commit flags; anything else is corruption or a protocol we did not ask for.
  if (c.flags != 0) r.fail_at(fmt::format("unrecognized Commit flags {}", c.flags), at);
  c.commit_lsn = r.u64();
  c.end_lsn = r.u64();
  c.commit_time = r.i64();
  return c;
}

Origin read_origin(ByteReader& r) {
  Origin o;
  o.commit_lsn = r.u64();
  o.name = r.cstring();
  return o;
}

// pg_class.relreplident: default, nothing, full, index.
void check_replident(ByteReader& r, char replident, std::size_t at) {
  if (replident != 'd' && replident != 'n' && replident != 'f' && replident != 'i')
    r.fail_at(fmt::format("unknown replica identity {}", describe(static_cast<std::uint8_t>(replident))), at);
}

Column read_column(ByteReader& r) {
  Column c;
  const std::size_t at = r.offset();
  const std::uint8_t flags = r.u8();
  if ((flags & ~kColumnIsKey) != 0) r.fail_at(fmt::format("unrecognized column flags {}", flags), at);
  c.key = (flags & kColumnIsKey) != 0;
  c.name = r.cstring();
  c.type_oid = r.u32();
  c.type_mod = r.i32();
  return c;
}

Relation read_relation(ByteReader& r) {
  Relation rel;
  rel.relid = r.u32();
  rel.nspname = r.cstring();
  rel.relname = r.cstring();
  const std::size_t at = r.offset();
  rel.replident = static_cast<char>(r.u8());
  check_replident(r, rel.replident, at);
  // Dropped and generated columns are not counted and not sent: tuples have exactly these columns.
  const std::size_t ncols = read_count16(r, "column count");
  reserve_bounded(rel.columns, ncols, r, 1 + 1 + 4 + 4);
  for (std::size_t i = 0; i < ncols; ++i) rel.columns.push_back(read_column(r));
  return rel;
}

Type read_type(ByteReader& r) {
  Type t;
  t.oid = r.u32();
  t.nspname = r.cstring();
  t.typname = r.cstring();
  return t;
}

Value read_value(ByteReader& r) {
  Value v;
  const std::size_t at = r.offset();
  const std::uint8_t kind = r.u8();
  switch (kind) {
    case 'n':  // SQL NULL
    case 'u':  // unchanged TOASTed value: PostgreSQL did not send it, and we must not invent it
      v.kind = static_cast<ValueKind>(kind);
      return v;
    case 't':  // text output of the type's output function
    case 'b':  // binary send format (only with the 'binary' option)
      v.kind = static_cast<ValueKind>(kind);
      v.data = r.bytes(read_count32(r, "value length"));
      return v;
    default:
      r.fail_at(fmt::format("unrecognized tuple value kind {}", describe(kind)), at);
  }
}

Tuple read_tuple(ByteReader& r) {
  Tuple t;
  const std::size_t ncols = read_count16(r, "tuple column count");
  reserve_bounded(t, ncols, r, 1);
  for (std::size_t i = 0; i < ncols; ++i) t.push_back(read_value(r));
  return t;
}

// Reads the one-byte marker before a tuple and checks it is one of `allowed`.
char read_marker(ByteReader& r, std::string_view allowed, const char* message) {
  const std::size_t at = r.offset();
  const std::uint8_t marker = r.u8();
  if (allowed.find(static_cast<char>(marker)) == std::string_view::npos)
    r.fail_at(fmt::format("{}: expected tuple marker {}, got {}", message, allowed, describe(marker)), at);
  return static_cast<char>(marker);
}

// Protocol 1 (not streaming): no xid before the relid in Insert/Update/Delete.
Insert read_insert(ByteReader& r) {
  Insert ins;
  ins.relid = r.u32();
  read_marker(r, "N", "Insert");
  ins.new_tuple = read_tuple(r);
  return ins;
}

// 'K' (replica identity key changed; other columns null) or 'O' (REPLICA IDENTITY FULL) may precede
// the new tuple; neither is sent when the key did not change under the default identity.
Update read_update(ByteReader& r) {
  Update up;
  up.relid = r.u32();
  char marker = read_marker(r, "KON", "Update");
  if (marker != 'N') {
    up.old_kind = marker;
    up.old_tuple = read_tuple(r);
    read_marker(r, "N", "Update");
  }
  up.new_tuple = read_tuple(r);
  return up;
}

Delete read_delete(ByteReader& r) {
  Delete del;
  del.relid = r.u32();
  del.old_kind = read_marker(r, "KO", "Delete");
  del.old_tuple = read_tuple(r);
  return del;
}

Truncate read_truncate(ByteReader& r) {
  Truncate tr;
  const std::size_t count = read_count32(r, "relation count");
  const std::size_t at = r.offset();
  tr.options = r.u8();
  if ((tr.options & ~kTruncateKnownOptions) != 0)
    r.fail_at(fmt::format("unrecognized Truncate options {}", tr.options), at);
  reserve_bounded(tr.relids, count, r, 4);
  for (std::size_t i = 0; i < count; ++i) tr.relids.push_back(r.u32());
  return tr;
}

// pg_logical_emit_message(): non-transactional ones arrive outside any Begin/Commit, at once.
Message read_message(ByteReader& r) {
  Message m;
  const std::size_t at = r.offset();
  const std::uint8_t flags = r.u8();
  if ((flags & ~kMessageTransactional) != 0) r.fail_at(fmt::format("unrecognized Message flags {}", flags), at);
  m.transactional = (flags & kMessageTransactional) != 0;
  m.lsn = r.u64();
  m.prefix = r.cstring();
  // The content is arbitrary bytes (bytea), counted, not NUL-terminated.
  m.content = r.bytes(read_count32(r, "message length"));
  return m;
}

// Streaming ('S', 'E', 'c', 'A') and two-phase ('b', 'P', 'K', 'r', 'p') messages only exist in
// protocols 2 and 3, which we never request: they are unknown here like any other byte.
Decoded read_body(ByteReader& r, std::uint8_t type) {
  switch (type) {
    case 'B': return read_begin(r);
    case 'C': return read_commit(r);
    case 'O': return read_origin(r);
    case 'R': return read_relation(r);
    case 'Y': return read_type(r);
    case 'I': return read_insert(r);
    case 'U': return read_update(r);
    case 'D': return read_delete(r);
    case 'T': return read_truncate(r);
    case 'M': return read_message(r);
    default: r.fail_at(fmt::format("unknown pgoutput message type {}", describe(type)), 0);
  }
}

}  // namespace

Decoded decode(std::string_view bytes) {
  ByteReader r(bytes);
  const std::uint8_t type = r.u8();
  Decoded msg = read_body(r, type);
  // One XLogData carries exactly one message: leftover bytes mean we misread its layout.
  if (!r.at_end()) r.fail(fmt::format("{} trailing bytes after {} message", r.remaining(), describe(type)));
  return msg;
}

}  // namespace walstream::pgoutput
