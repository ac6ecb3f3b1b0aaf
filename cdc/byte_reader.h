// Bounds-checked big-endian reader over one protocol message.
// Pure: no I/O, no allocation; every read past the end throws DecodeError with the offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace walstream {

class DecodeError : public std::runtime_error {
 public:
  DecodeError(const std::string& what, std::size_t offset);
  std::size_t offset() const { return offset_; }

 private:
  std::size_t offset_;
};

class ByteReader {
 public:
  explicit ByteReader(std::string_view bytes) : bytes_(bytes) {}

  std::uint8_t u8();
  std::int16_t i16();
  std::int32_t i32();
  std::uint32_t u32();
  std::int64_t i64();
  std::uint64_t u64();
  // NUL-terminated string; the view points into the input.
  std::string_view cstring();
  // n raw bytes; the view points into the input.
  std::string_view bytes(std::size_t n);

  std::size_t offset() const { return pos_; }
  std::size_t remaining() const { return bytes_.size() - pos_; }
  bool at_end() const { return pos_ == bytes_.size(); }
  [[noreturn]] void fail(const std::string& what) const;
  [[noreturn]] void fail_at(const std::string& what, std::size_t offset) const;

 private:
  void need(std::size_t n, const char* what) const;
  // Reads an n-byte (n <= 8) big-endian unsigned integer; `what` names it in the error.
  std::uint64_t big_endian(std::size_t n, const char* what);
  std::string_view bytes_;
  std::size_t pos_ = 0;
};

}  // namespace walstream
