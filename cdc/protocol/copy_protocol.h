// The streaming replication CopyData envelope: 'w' XLogData and 'k' keepalive from the server,
// 'r' standby status update from us. Pure; the pgoutput payload inside 'w' is pgoutput.h's business.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "byte_reader.h"

namespace walstream::copy {

struct XLogData {
  std::uint64_t data_start = 0;  // LSN of the WAL record the payload came from
  std::uint64_t wal_end = 0;     // server's current end of WAL
  std::int64_t send_time = 0;    // microseconds since 2000-01-01 UTC
  std::string_view payload;      // one pgoutput message
};

struct Keepalive {
  std::uint64_t wal_end = 0;
  std::int64_t send_time = 0;
  bool reply_requested = false;
};

using ServerMessage = std::variant<XLogData, Keepalive>;

// Throws DecodeError on an unknown tag or a short message.
ServerMessage parse_server_message(std::string_view bytes);

struct StatusUpdate {
  std::uint64_t written = 0;
  std::uint64_t flushed = 0;
  std::uint64_t applied = 0;
  std::int64_t send_time = 0;
  bool reply_requested = false;
};

// The 34-byte 'r' message.
std::string encode_status_update(const StatusUpdate& s);

// "16/B374D848" <-> 0x16B374D848; parse_lsn throws std::invalid_argument on bad text.
std::string format_lsn(std::uint64_t lsn);
std::uint64_t parse_lsn(std::string_view text);

}  // namespace walstream::copy
