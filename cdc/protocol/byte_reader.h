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

  // Inline: the decoder makes several reads per column of every change. The signed reads convert
  // modulo 2^N (well defined since C++20): the wire carries two's complement.
  std::uint8_t u8() { return big_endian<std::uint8_t>("byte"); }
  std::int16_t i16() { return static_cast<std::int16_t>(big_endian<std::uint16_t>("int16")); }
  std::int32_t i32() { return static_cast<std::int32_t>(big_endian<std::uint32_t>("int32")); }
  std::uint32_t u32() { return big_endian<std::uint32_t>("uint32"); }
  std::int64_t i64() { return static_cast<std::int64_t>(big_endian<std::uint64_t>("int64")); }
  std::uint64_t u64() { return big_endian<std::uint64_t>("uint64"); }
  // NUL-terminated string; the view points into the input.
  std::string_view cstring();
  // n raw bytes; the view points into the input.
  std::string_view bytes(std::size_t n) {
    if (remaining() < n) truncated_value(n);
    const std::string_view v = bytes_.substr(pos_, n);
    pos_ += n;
    return v;
  }

  std::size_t offset() const { return pos_; }
  std::size_t remaining() const { return bytes_.size() - pos_; }
  bool at_end() const { return pos_ == bytes_.size(); }
  [[noreturn]] void fail(const std::string& what) const;
  [[noreturn]] void fail_at(const std::string& what, std::size_t offset) const;

 private:
  // Reads a big-endian unsigned integer of T's size; `what` names it in the error. The fixed trip
  // count lets the compiler turn the loop into one load and a byte swap.
  template <class T>
  T big_endian(const char* what) {
    if (remaining() < sizeof(T)) truncated(what);
    T v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      v = static_cast<T>((v << 8) | static_cast<unsigned char>(bytes_[pos_ + i]));
    }
    pos_ += sizeof(T);
    return v;
  }
  [[noreturn]] void truncated(const char* what) const;
  [[noreturn]] void truncated_value(std::size_t n) const;
  std::string_view bytes_;
  std::size_t pos_ = 0;
};

}  // namespace walstream
