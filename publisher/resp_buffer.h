// RESP command framing written straight into one growable buffer: the hot path of every XADD,
// so no per-argument allocation and no intermediate strings. Pure.
#pragma once

#include <charconv>
#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>

namespace walstream {

class RespBuffer {
 public:
  // "*<argc>\r\n"
  void command(std::size_t argc) {
    char* p = reserve(24);
    *p++ = '*';
    p = std::to_chars(p, p + 20, argc).ptr;
    *p++ = '\r';
    *p++ = '\n';
    size_ = static_cast<std::size_t>(p - buf_.data());
  }

  // "$<len>\r\n<bytes>\r\n"
  void arg(std::string_view a) {
    char* p = reserve(a.size() + 26);
    *p++ = '$';
    p = std::to_chars(p, p + 20, a.size()).ptr;
    *p++ = '\r';
    *p++ = '\n';
    if (!a.empty()) std::memcpy(p, a.data(), a.size());
    p += a.size();
    *p++ = '\r';
    *p++ = '\n';
    size_ = static_cast<std::size_t>(p - buf_.data());
  }

  void append(const RespBuffer& other) {
    char* p = reserve(other.size_);
    if (other.size_) std::memcpy(p, other.buf_.data(), other.size_);
    size_ += other.size_;
  }

  const char* data() const { return buf_.data(); }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void clear() { size_ = 0; }  // keeps the capacity for the next chunk
  std::string_view view() const { return {buf_.data(), size_}; }

 private:
  // Room for n more bytes after size_; returns where they go.
  char* reserve(std::size_t n) {
    if (size_ + n > buf_.size()) buf_.resize(std::max(buf_.size() * 2, size_ + n + 4096));
    return buf_.data() + size_;
  }

  std::string buf_;
  std::size_t size_ = 0;
};

}  // namespace walstream
