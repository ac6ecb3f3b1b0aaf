// Bounds-checked big-endian reads; the only place that touches raw protocol bytes.
#include "byte_reader.h"

#include <cstring>

#include <fmt/format.h>

namespace walstream {

DecodeError::DecodeError(const std::string& what, std::size_t offset)
    : std::runtime_error(fmt::format("{} at offset {}", what, offset)), offset_(offset) {}

void ByteReader::fail(const std::string& what) const { fail_at(what, pos_); }

void ByteReader::fail_at(const std::string& what, std::size_t offset) const { throw DecodeError(what, offset); }

void ByteReader::truncated(const char* what) const { fail(fmt::format("truncated {}", what)); }

void ByteReader::truncated_value(std::size_t n) const {
  fail(fmt::format("truncated {}-byte value ({} bytes left)", n, remaining()));
}

std::string_view ByteReader::cstring() {
  const std::string_view rest = bytes_.substr(pos_);
  const std::size_t nul = rest.find('\0');
  if (nul == std::string_view::npos) fail("unterminated string");
  pos_ += nul + 1;
  return rest.substr(0, nul);
}

}  // namespace walstream
