// Bounds-checked big-endian reads; the only place that touches raw protocol bytes.
#include "byte_reader.h"

#include <cstring>

#include <fmt/format.h>

namespace walstream {

DecodeError::DecodeError(const std::string& what, std::size_t offset)
    : std::runtime_error(fmt::format("{} at offset {}", what, offset)), offset_(offset) {}

void ByteReader::fail(const std::string& what) const { fail_at(what, pos_); }

void ByteReader::fail_at(const std::string& what, std::size_t offset) const { throw DecodeError(what, offset); }

void ByteReader::need(std::size_t n, const char* what) const {
  if (remaining() < n) fail(fmt::format("truncated {}", what));
}

std::uint64_t ByteReader::big_endian(std::size_t n, const char* what) {
  need(n, what);
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(bytes_[pos_ + i]);
  pos_ += n;
  return v;
}

std::uint8_t ByteReader::u8() { return static_cast<std::uint8_t>(big_endian(1, "byte")); }
// The signed reads convert modulo 2^N (well defined since C++20): the wire carries two's complement.
std::int16_t ByteReader::i16() { return static_cast<std::int16_t>(big_endian(2, "int16")); }
std::int32_t ByteReader::i32() { return static_cast<std::int32_t>(big_endian(4, "int32")); }
std::uint32_t ByteReader::u32() { return static_cast<std::uint32_t>(big_endian(4, "uint32")); }
std::int64_t ByteReader::i64() { return static_cast<std::int64_t>(big_endian(8, "int64")); }
std::uint64_t ByteReader::u64() { return big_endian(8, "uint64"); }

std::string_view ByteReader::cstring() {
  const std::string_view rest = bytes_.substr(pos_);
  const std::size_t nul = rest.find('\0');
  if (nul == std::string_view::npos) fail("unterminated string");
  pos_ += nul + 1;
  return rest.substr(0, nul);
}

std::string_view ByteReader::bytes(std::size_t n) {
  if (remaining() < n) fail(fmt::format("truncated {}-byte value ({} bytes left)", n, remaining()));
  const std::string_view v = bytes_.substr(pos_, n);
  pos_ += n;
  return v;
}

}  // namespace walstream
