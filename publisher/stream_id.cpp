#include "stream_id.h"

#include <charconv>
#include <fmt/format.h>

namespace walstream {

std::optional<StreamId> parse_stream_id(std::string_view text) {
  auto dash = text.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  StreamId id;
  auto a = std::from_chars(text.data(), text.data() + dash, id.ms);
  auto b = std::from_chars(text.data() + dash + 1, text.data() + text.size(), id.seq);
  if (a.ec != std::errc() || a.ptr != text.data() + dash || b.ec != std::errc() || b.ptr != text.data() + text.size()) {
    return std::nullopt;
  }
  return id;
}

std::string format_lsn_text(std::uint64_t lsn) { return fmt::format("{:X}/{:X}", lsn >> 32, lsn & 0xffffffffu); }

std::optional<std::uint64_t> parse_lsn_text(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::uint32_t hi = 0, lo = 0;
  auto a = std::from_chars(text.data(), text.data() + slash, hi, 16);
  auto b = std::from_chars(text.data() + slash + 1, text.data() + text.size(), lo, 16);
  if (a.ec != std::errc() || a.ptr != text.data() + slash || b.ec != std::errc() ||
      b.ptr != text.data() + text.size() || slash == 0 || slash + 1 == text.size()) {
    return std::nullopt;
  }
  return (std::uint64_t{hi} << 32) | lo;
}

}  // namespace walstream
