// CopyData envelope of the streaming replication protocol (PostgreSQL docs, "Streaming Replication
// Protocol"): all integers big-endian, times in microseconds since 2000-01-01 UTC.
#include "copy_protocol.h"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

namespace walstream::copy {
namespace {

// 'w': dataStart, walEnd, sendTime, then the WAL data (for logical slots: one pgoutput message).
XLogData read_xlogdata(ByteReader& r) {
  XLogData x;
  x.data_start = r.u64();
  x.wal_end = r.u64();
  x.send_time = r.i64();
  x.payload = r.bytes(r.remaining());
  return x;
}

// 'k': walEnd, sendTime, and whether the server wants a status update now (else it may
// eventually time the connection out after wal_sender_timeout).
Keepalive read_keepalive(ByteReader& r) {
  Keepalive k;
  k.wal_end = r.u64();
  k.send_time = r.i64();
  k.reply_requested = r.u8() != 0;
  if (!r.at_end()) r.fail(fmt::format("{} trailing bytes after keepalive", r.remaining()));
  return k;
}

void put_u64(std::string& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// One half of an LSN: 1 to 8 hex digits and nothing else, as pg_lsn_in accepts.
std::uint32_t parse_lsn_half(std::string_view half, std::string_view text) {
  const bool ok = !half.empty() && half.size() <= 8 &&
                  std::all_of(half.begin(), half.end(), [](char c) { return is_hex(c); });
  if (!ok) throw std::invalid_argument(fmt::format("invalid LSN \"{}\"", text));
  std::uint32_t v = 0;
  std::from_chars(half.data(), half.data() + half.size(), v, 16);  // cannot fail: <= 8 hex digits
  return v;
}

}  // namespace

ServerMessage parse_server_message(std::string_view bytes) {
  ByteReader r(bytes);
  const std::uint8_t tag = r.u8();
  switch (tag) {
    case 'w': return read_xlogdata(r);
    case 'k': return read_keepalive(r);
    default: r.fail_at(fmt::format("unknown CopyData message tag 0x{:02x}", tag), 0);
  }
}

// 'r': written, flushed, applied positions, our clock, and whether we want a reply.
// The server takes `flushed` as the slot's confirmed_flush_lsn.
std::string encode_status_update(const StatusUpdate& s) {
  std::string out;
  out.reserve(34);
  out.push_back('r');
  put_u64(out, s.written);
  put_u64(out, s.flushed);
  put_u64(out, s.applied);
  put_u64(out, static_cast<std::uint64_t>(s.send_time));
  out.push_back(s.reply_requested ? 1 : 0);
  return out;
}

namespace {

// Upper-case hex without leading zeros (at least one digit), written backwards from `end`.
char* put_hex_backwards(char* end, std::uint32_t v) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  do {
    *--end = kHex[v & 15];
    v >>= 4;
  } while (v != 0);
  return end;
}

}  // namespace

// PostgreSQL prints an LSN as "%X/%X" of its high and low 32 bits. Called for every change: a
// digit loop, no format parsing, no allocation (the result fits the small-string buffer).
std::string format_lsn(std::uint64_t lsn) {
  char buf[17];
  char* const end = buf + sizeof buf;
  char* p = put_hex_backwards(end, static_cast<std::uint32_t>(lsn));
  *--p = '/';
  p = put_hex_backwards(p, static_cast<std::uint32_t>(lsn >> 32));
  return std::string(p, end);
}

std::uint64_t parse_lsn(std::string_view text) {
  const std::size_t slash = text.find('/');
  if (slash == std::string_view::npos) throw std::invalid_argument(fmt::format("invalid LSN \"{}\"", text));
  const std::uint64_t hi = parse_lsn_half(text.substr(0, slash), text);
  const std::uint64_t lo = parse_lsn_half(text.substr(slash + 1), text);
  return (hi << 32) | lo;
}

}  // namespace walstream::copy
