#include "json.h"

#include <algorithm>
#include <charconv>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace walstream {
namespace {

// RFC 8259 §7: a string must escape the quote, the backslash and the control characters U+0000..U+001F.
constexpr bool needs_escape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }

// Length of the longest prefix of s[0, n) that needs no escaping. Text columns are most of a
// record's bytes and nearly never hold a character to escape, so where SSE2 exists (every x86-64
// CPU) 16 bytes are tested at once, and the last block is tested whole too: the caller guarantees
// that 15 bytes past the end may be read (what they hold does not matter).
std::size_t clean_prefix(const char* s, std::size_t n) {
  std::size_t i = 0;
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i backslash = _mm_set1_epi8('\\');
  const __m128i last_control = _mm_set1_epi8(0x1f);
  for (; i < n; i += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    // Unsigned v <= 0x1f exactly when min(v, 0x1f) == v.
    const __m128i control = _mm_cmpeq_epi8(_mm_min_epu8(v, last_control), v);
    const __m128i hit = _mm_or_si128(control, _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)));
    if (const int mask = _mm_movemask_epi8(hit)) return std::min(n, i + static_cast<std::size_t>(__builtin_ctz(mask)));
  }
  return n;
#else
  while (i < n && !needs_escape(static_cast<unsigned char>(s[i]))) ++i;
  return i;
#endif
}

// The short escapes JSON has, and \u00XX for the other control characters.
std::size_t write_escape(unsigned char c, char* out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  out[0] = '\\';
  switch (c) {
    case '"': out[1] = '"'; return 2;
    case '\\': out[1] = '\\'; return 2;
    case '\b': out[1] = 'b'; return 2;
    case '\f': out[1] = 'f'; return 2;
    case '\n': out[1] = 'n'; return 2;
    case '\r': out[1] = 'r'; return 2;
    case '\t': out[1] = 't'; return 2;
    default:
      std::memcpy(out + 1, "u00", 3);
      out[4] = kHex[c >> 4];
      out[5] = kHex[c & 15];
      return 6;
  }
}

}  // namespace

void JsonWriter::grow(std::size_t n) { buf_.resize(std::max(buf_.size() * 2, size_ + n + 256)); }

// The text is copied first and scanned where it landed: the buffer's slack makes reading whole
// blocks past its end safe. From the first character that needs an escape on, the rest is written
// run by run.
void JsonWriter::escaped(std::string_view text) {
  const std::size_t n = text.size();
  char* out = reserve(n + kScanSlack);
  if (n != 0) std::memcpy(out, text.data(), n);
  const std::size_t clean = clean_prefix(out, n);
  size_ += clean;
  for (std::size_t i = clean; i < n;) {
    size_ += write_escape(static_cast<unsigned char>(text[i]), reserve(6));
    ++i;
    char* rest = reserve(n - i + kScanSlack);
    if (i < n) std::memcpy(rest, text.data() + i, n - i);
    const std::size_t run = clean_prefix(rest, n - i);
    size_ += run;
    i += run;
  }
}

void JsonWriter::string(std::string_view text) {
  separate();
  put('"');
  escaped(text);
  put('"');
  comma_ = true;
}

void JsonWriter::key(std::string_view name) {
  string(name);
  put(':');
  comma_ = false;
}

void JsonWriter::number(std::uint64_t n) {
  char buf[24];
  const auto end = std::to_chars(buf, buf + sizeof buf, n).ptr;
  raw({buf, static_cast<std::size_t>(end - buf)});
}

std::string json_member(std::string_view name) {
  JsonWriter w;
  w.key(name);
  return std::string(w.view());
}

}  // namespace walstream
