// The JSON writer every encoder uses: appends to one reusable buffer; no DOM, no allocation once the
// buffer has grown, no validation of the document's shape (callers write well-formed documents).
//
// Written for this job rather than taken from rapidjson, because encoding records is most of
// walstream's CPU (callgrind, bench/run.py backlog): PostgreSQL hands over values as text that is
// either JSON already (numbers, checked json) or needs only escaping, so they are copied in runs
// with memcpy instead of a character at a time; column names are escaped once per relation
// (`member`); and a value that turns out malformed half-way can be taken back (`rewind`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace walstream {

class JsonWriter {
 public:
  // Where the document was; rewind() returns to it, dropping everything written since.
  struct Mark {
    std::size_t size = 0;
    bool comma = false;
    int depth = 0;
  };

  void start_object() { open('{'); }
  void end_object() { close('}'); }
  void start_array() { open('['); }
  void end_array() { close(']'); }

  // An object member's name, escaped here.
  void key(std::string_view name);
  // An object member's name rendered by json_member() ("name":), written as is.
  void member(std::string_view rendered) {
    separate();
    append(rendered);
    comma_ = false;
  }

  void string(std::string_view text);
  // Text that is one JSON value already (a number, a checked document): written as is.
  void raw(std::string_view json) {
    separate();
    append(json);
    comma_ = true;
  }
  void boolean(bool b) { raw(b ? std::string_view("true") : std::string_view("false")); }
  void null() { raw("null"); }
  void number(std::uint64_t n);

  Mark mark() const { return {size_, comma_, depth_}; }
  void rewind(Mark m) {
    size_ = m.size;
    comma_ = m.comma;
    depth_ = m.depth;
  }

  // One whole value written and every container closed.
  bool complete() const { return size_ > 0 && depth_ == 0; }
  bool empty() const { return size_ == 0; }
  std::string_view view() const { return {buf_.data(), size_}; }
  void clear() {
    size_ = 0;
    comma_ = false;
    depth_ = 0;
  }

 private:
  // Before a value or a member name: a comma unless it is the container's first.
  void separate() {
    if (comma_) put(',');
  }
  void open(char c) {
    separate();
    put(c);
    comma_ = false;
    ++depth_;
  }
  void close(char c) {
    put(c);
    comma_ = true;
    --depth_;
  }
  void put(char c) { *reserve(1) = c, ++size_; }
  void append(std::string_view s) {
    if (!s.empty()) std::memcpy(reserve(s.size()), s.data(), s.size());
    size_ += s.size();
  }
  void escaped(std::string_view text);
  static constexpr std::size_t kScanSlack = 16;  // bytes past a string the escape scan may read
  // Room for n more bytes after size_; returns where they go.
  char* reserve(std::size_t n) {
    if (buf_.size() - size_ < n) grow(n);
    return buf_.data() + size_;
  }
  void grow(std::size_t n);

  std::string buf_;
  std::size_t size_ = 0;
  bool comma_ = false;  // a value was written in the open container: the next one needs a comma
  int depth_ = 0;
};

// `"name":` with the name escaped, for JsonWriter::member.
std::string json_member(std::string_view name);

}  // namespace walstream
