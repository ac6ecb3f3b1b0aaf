// A Redis stream entry ID, <ms>-<seq>; walstream's are <commit_lsn>-<position in the transaction>.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace walstream {

struct StreamId {
  std::uint64_t ms = 0;
  std::uint64_t seq = 0;
  auto operator<=>(const StreamId&) const = default;
  std::string str() const { return std::to_string(ms) + "-" + std::to_string(seq); }
};

// "123-4" -> {123, 4}; nullopt when malformed.
std::optional<StreamId> parse_stream_id(std::string_view text);

// "0/16B3748" <-> 23803720, as PostgreSQL prints LSNs (upper-case hex, no padding): the form of the
// checkpoint and of messages. (cdc/protocol has its own for the PostgreSQL side; publisher uses no cdc.)
std::string format_lsn_text(std::uint64_t lsn);
std::optional<std::uint64_t> parse_lsn_text(std::string_view text);

}  // namespace walstream
