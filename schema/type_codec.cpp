// PostgreSQL text output + type kind -> typed JSON value, per the record contract's table.
// Every writer below either writes the typed value or declines having written nothing, and the
// text is written instead: a value is never lost and nothing throws out of write_typed_value.
#include "type_codec.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace walstream {
namespace {

constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }

constexpr int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// array_in's notion of white space (array_isspace), which array_out quotes.
constexpr bool is_array_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// A forward-only reader over text; the small parsers below are sequences of its calls.
class Cursor {
 public:
  explicit Cursor(std::string_view text) : text_(text) {}

  bool done() const { return pos_ == text_.size(); }
  std::size_t pos() const { return pos_; }
  char peek() const { return done() ? '\0' : text_[pos_]; }

  void advance() { ++pos_; }

  bool eat(char c) {
    if (done() || text_[pos_] != c) return false;
    ++pos_;
    return true;
  }

  bool eat(std::string_view word) {
    if (!text_.substr(pos_).starts_with(word)) return false;
    pos_ += word.size();
    return true;
  }

  // Consumes a run of digits and returns its length.
  std::size_t skip_digits() {
    const std::size_t start = pos_;
    while (!done() && is_digit(text_[pos_])) ++pos_;
    return pos_ - start;
  }

  bool exact_digits(std::size_t n) { return skip_digits() == n; }

  void skip_array_space() {
    while (!done() && is_array_space(text_[pos_])) ++pos_;
  }

  void skip_json_space() {
    while (!done() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

 private:
  std::string_view text_;
  std::size_t pos_ = 0;
};

// ---- reusable buffers --------------------------------------------------------------------------

// Per-thread buffers reused from value to value: most values are small, and reusing capacity saves
// an allocation per value on the hot path. One buffer per use, because they nest: an array element
// is unescaped into `element`, then encoded into `base64` (bytea) or checked with `json_nesting`.
struct Scratch {
  std::string element;
  std::string base64;
  std::string json_nesting;
};

Scratch& scratch() {
  thread_local Scratch buffers;
  return buffers;
}

// Lends a scratch string, emptied; gives the memory of a rare huge value back on return instead of
// holding it for the life of the thread.
class ScratchLease {
 public:
  explicit ScratchLease(std::string& s) : s_(s) { s_.clear(); }
  ~ScratchLease() {
    if (s_.capacity() > kMaxKeptCapacity) std::string().swap(s_);
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;

  std::string& str() { return s_; }

 private:
  static constexpr std::size_t kMaxKeptCapacity = 64 * 1024;
  std::string& s_;
};

// ---- strings and numbers -----------------------------------------------------------------------

// JSON's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, any size.
bool eat_json_number(Cursor& c) {
  c.eat('-');
  if (!c.eat('0') && c.skip_digits() == 0) return false;
  if (c.eat('.') && c.skip_digits() == 0) return false;
  if (c.eat('e') || c.eat('E')) {
    if (!c.eat('+')) c.eat('-');
    if (c.skip_digits() == 0) return false;
  }
  return true;
}

// PostgreSQL's integer and float output (1.5, -0, 1e+300, 1.5e-07) always is a JSON number; only
// the float words NaN, Infinity and -Infinity are not, and they fall through to their text, which
// is the contract's string form for them.
bool is_json_number(std::string_view text) {
  Cursor c(text);
  return eat_json_number(c) && c.done();
}

// int2/int4/int8/oid output, -?(0|[1-9][0-9]*): the common case, checked without the general grammar.
bool is_plain_integer(std::string_view text) {
  std::size_t i = !text.empty() && text[0] == '-' ? 1 : 0;
  if (i == text.size() || (text[i] == '0' && text.size() > i + 1)) return false;
  for (; i < text.size(); ++i) {
    if (!is_digit(text[i])) return false;
  }
  return true;
}

bool write_number(JsonWriter& w, std::string_view text) {
  if (!is_plain_integer(text) && !is_json_number(text)) return false;
  w.raw(text);
  return true;
}

bool write_bool(JsonWriter& w, std::string_view text) {
  if (text != "t" && text != "f") return false;
  w.boolean(text == "t");
  return true;
}

// ---- json, jsonb -------------------------------------------------------------------------------

// What may follow a backslash in a JSON string: one of its escapes, or 'u' and four hex digits
// (any code, as the grammar has it).
bool eat_json_escape(Cursor& c) {
  if (c.eat('u')) {
    for (int i = 0; i < 4; ++i) {
      if (hex_value(c.peek()) < 0) return false;
      c.advance();
    }
    return true;
  }
  for (char escape : std::string_view("\"\\/bfnrt")) {
    if (c.eat(escape)) return true;
  }
  return false;
}

// A JSON string holds no raw control characters.
bool eat_json_string(Cursor& c) {
  if (!c.eat('"')) return false;
  while (!c.eat('"')) {
    if (c.done() || static_cast<unsigned char>(c.peek()) < 0x20) return false;
    if (!c.eat('\\')) {
      c.advance();
    } else if (!eat_json_escape(c)) {
      return false;
    }
  }
  return true;
}

// Chosen by the first character: a failed attempt has consumed input, so no second try.
bool eat_json_scalar(Cursor& c) {
  switch (c.peek()) {
    case '"':
      return eat_json_string(c);
    case 't':
      return c.eat("true");
    case 'f':
      return c.eat("false");
    case 'n':
      return c.eat("null");
    default:
      return eat_json_number(c);
  }
}

// An object member's name and colon; the value follows.
bool eat_json_name(Cursor& c) {
  c.skip_json_space();
  if (!eat_json_string(c)) return false;
  c.skip_json_space();
  return c.eat(':');
}

// PostgreSQL checked json on input and prints jsonb itself, so this holds unless the text was
// mangled on its way here; it is checked because one bad embedded value would make the whole record
// unparseable. Grammar only (RFC 8259): jsonb prints numeric of any size, and json keeps any \u
// escape, even an unpaired surrogate. Iterative, with the open brackets in a buffer, because
// PostgreSQL nests as deep as its stack allows. (rapidjson's Reader would not do: 1.1.0 rejects a
// number beyond double's range even when asked for numbers as strings.)
bool is_valid_json(std::string_view text) {
  ScratchLease lease(scratch().json_nesting);
  std::string& closers = lease.str();  // what closes each open container, innermost last
  Cursor c(text);
  bool expect_value = true;
  for (;;) {
    if (expect_value) {
      c.skip_json_space();
      if (c.eat('[')) {
        c.skip_json_space();
        if (c.peek() != ']') {
          closers.push_back(']');
          continue;
        }
        c.advance();
      } else if (c.eat('{')) {
        c.skip_json_space();
        if (c.peek() != '}') {
          closers.push_back('}');
          if (!eat_json_name(c)) return false;
          continue;
        }
        c.advance();
      } else if (!eat_json_scalar(c)) {
        return false;
      }
    }
    // After a value: close its container, or a comma and the next member, or the end of the text.
    c.skip_json_space();
    if (closers.empty()) return c.done();
    expect_value = false;
    if (c.eat(closers.back())) {
      closers.pop_back();
    } else if (c.eat(',')) {
      if (closers.back() == '}' && !eat_json_name(c)) return false;
      expect_value = true;
    } else {
      return false;
    }
  }
}

bool write_json(JsonWriter& w, std::string_view text) {
  if (!is_valid_json(text)) return false;
  w.raw(text);
  return true;
}

// ---- bytea -------------------------------------------------------------------------------------

// Byte views for append_base64: plain bytes, or the bytes behind pairs of hex digits, so that bytea
// is encoded straight from its text without decoding into a buffer first.
struct RawBytes {
  std::string_view bytes;
  std::size_t size() const { return bytes.size(); }
  std::uint32_t operator[](std::size_t i) const { return static_cast<unsigned char>(bytes[i]); }
};

struct HexBytes {
  std::string_view hex;  // even length, hex digits only
  std::size_t size() const { return hex.size() / 2; }
  std::uint32_t operator[](std::size_t i) const {
    return static_cast<std::uint32_t>(hex_value(hex[2 * i]) * 16 + hex_value(hex[2 * i + 1]));
  }
};

// Appends the first `significant` sextets of the 24-bit group, then '=' up to four characters.
void append_base64_group(std::string& out, std::uint32_t group, int significant) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (int k = 0; k < 4; ++k) {
    out.push_back(k < significant ? kAlphabet[(group >> (18 - 6 * k)) & 63] : '=');
  }
}

template <class Bytes>
void append_base64(const Bytes& bytes, std::string& out) {
  const std::size_t n = bytes.size();
  out.reserve(out.size() + (n + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= n; i += 3) append_base64_group(out, bytes[i] << 16 | bytes[i + 1] << 8 | bytes[i + 2], 4);
  if (n - i == 1) append_base64_group(out, bytes[i] << 16, 2);
  if (n - i == 2) append_base64_group(out, bytes[i] << 16 | bytes[i + 1] << 8, 3);
}

// bytea_output=hex prints "\x" then two hex digits per byte (an empty value is just "\x").
bool write_bytea(JsonWriter& w, std::string_view text) {
  if (!text.starts_with("\\x")) return false;
  const std::string_view hex = text.substr(2);
  if (hex.size() % 2 != 0 || !std::all_of(hex.begin(), hex.end(), [](char c) { return hex_value(c) >= 0; })) {
    return false;
  }
  ScratchLease out(scratch().base64);
  append_base64(HexBytes{hex}, out.str());
  w.string(out.str());
  return true;
}

// ---- date, timestamp, timestamptz ---------------------------------------------------------------

// DateStyle=ISO output: a date is "Y…Y-MM-DD", a timestamp that, ' ' and "HH:MM:SS[.f…]", a
// timestamptz a timestamp and its offset. The year has four digits or more (past 9999) and counts
// from 1 AD: a value before it ends in " BC" (a timestamptz's after its offset: "…+00 BC").
constexpr std::string_view kBc = " BC";

bool eat_iso_date(Cursor& c) {
  return c.skip_digits() >= 4 && c.eat('-') && c.exact_digits(2) && c.eat('-') && c.exact_digits(2);
}

bool eat_iso_time(Cursor& c) {
  bool ok = c.eat(' ') && c.exact_digits(2) && c.eat(':') && c.exact_digits(2) && c.eat(':') && c.exact_digits(2);
  if (ok && c.eat('.')) ok = c.skip_digits() > 0;
  return ok;
}

// Appends the year before 1 AD printed as `bc_year` (digits, "0044" for 44 BC) in ISO 8601's
// astronomical numbering, at least four digits: 1 BC is 0000, 2 BC -0001, 44 BC -0043. Declines
// year 0 BC, which PostgreSQL never prints, and a year too long for 32 bits (its earliest is 4714 BC).
bool append_astronomical_year(std::string_view bc_year, char*& out) {
  if (bc_year.size() > 9) return false;
  std::uint32_t year = 0;
  for (char d : bc_year) year = year * 10 + static_cast<std::uint32_t>(d - '0');
  if (year == 0) return false;
  std::uint32_t magnitude = year - 1;
  if (magnitude != 0) *out++ = '-';
  std::array<char, 10> digits;
  std::size_t n = 0;
  for (; magnitude != 0 || n < 4; magnitude /= 10) digits[n++] = static_cast<char>('0' + magnitude % 10);
  out = std::reverse_copy(digits.data(), digits.data() + n, out);
  return true;
}

// Writes a checked "Y…Y-MM-DD[ HH:MM:SS[.f…]]" in ISO 8601 form, then `suffix`, as a JSON string
// built on the stack: 'T' between date and time, and the year of a `bc` value astronomical. A year
// past 9999 keeps its digits as printed, with no '+' sign. Digits and separators: nothing to escape.
bool write_iso8601(JsonWriter& w, std::string_view datetime, bool bc, std::string_view suffix) {
  std::array<char, 64> buf;
  if (datetime.size() + suffix.size() + 3 > buf.size()) return false;  // quotes, and a '-' for BC
  char* out = buf.data();
  *out++ = '"';
  if (bc) {
    const std::size_t year_end = datetime.find('-');
    if (!append_astronomical_year(datetime.substr(0, year_end), out)) return false;
    datetime.remove_prefix(year_end);
  }
  out = std::replace_copy(datetime.begin(), datetime.end(), out, ' ', 'T');
  out = std::copy(suffix.begin(), suffix.end(), out);
  *out++ = '"';
  w.raw({buf.data(), static_cast<std::size_t>(out - buf.data())});
  return true;
}

// infinity and -infinity have no ISO 8601 form: they stay text, like anything else that does not parse.
bool write_date(JsonWriter& w, std::string_view text) {
  Cursor c(text);
  if (!eat_iso_date(c)) return false;
  const std::size_t n = c.pos();
  const bool bc = c.eat(kBc);
  return c.done() && write_iso8601(w, text.substr(0, n), bc, "");
}

bool write_timestamp(JsonWriter& w, std::string_view text) {
  Cursor c(text);
  if (!eat_iso_date(c) || !eat_iso_time(c)) return false;
  const std::size_t n = c.pos();
  const bool bc = c.eat(kBc);
  return c.done() && write_iso8601(w, text.substr(0, n), bc, "");
}

// With TimeZone=UTC PostgreSQL prints the offset as "+00" ("+00:00", "+00:00:00" are its forms for
// zones with minutes or seconds). A non-zero offset means the session is not in UTC: instead of
// shifting the clock here, such a value keeps its text, which is exact and shows the misconfiguration.
bool is_zero_utc_offset(std::string_view offset) {
  return offset == "+00" || offset == "+00:00" || offset == "+00:00:00";
}

bool write_timestamptz(JsonWriter& w, std::string_view text) {
  Cursor c(text);
  if (!eat_iso_date(c) || !eat_iso_time(c)) return false;
  const std::size_t n = c.pos();
  std::string_view offset = text.substr(n);
  const bool bc = offset.ends_with(kBc);
  if (bc) offset.remove_suffix(kBc.size());
  return is_zero_utc_offset(offset) && write_iso8601(w, text.substr(0, n), bc, "Z");
}

// ---- scalars -----------------------------------------------------------------------------------

// Writes the value as its kind, or declines (false, nothing written) when the text does not parse.
bool write_as_kind(JsonWriter& w, TypeKind kind, std::string_view text) {
  switch (kind) {
    case TypeKind::Bool:
      return write_bool(w, text);
    case TypeKind::Integer:
    case TypeKind::Float:
      return write_number(w, text);
    case TypeKind::Json:
      return write_json(w, text);
    case TypeKind::Jsonb:
      // jsonb_out prints the document from its binary form, so its output is JSON by construction;
      // checking it again cost ~2k instructions per document (callgrind, bench backlog).
      // The first character is still looked at: a value that is not text output at all (binary
      // jsonb starts with a version byte) must not go into the record as JSON.
      if (text.empty() || std::string_view("{[\"-0123456789tfn").find(text[0]) == std::string_view::npos) return false;
      w.raw(text);
      return true;
    case TypeKind::Bytea:
      return write_bytea(w, text);
    case TypeKind::Date:
      return write_date(w, text);
    case TypeKind::Timestamp:
      return write_timestamp(w, text);
    case TypeKind::TimestampTz:
      return write_timestamptz(w, text);
    case TypeKind::Text:
    case TypeKind::Numeric:  // a string by contract, exact as printed
    case TypeKind::Array:    // only reachable as an element kind, which PostgreSQL never has
      return false;
  }
  return false;
}

void write_scalar(JsonWriter& w, TypeKind kind, std::string_view text) {
  if (!write_as_kind(w, kind, text)) w.string(text);
}

// ---- arrays ------------------------------------------------------------------------------------

// Reads array_out's format as a stream of tokens. The literal is an optional dimension decoration
// ("[0:1][-1:0]=", printed when a lower bound is not 1) and nested braces. Elements are separated by
// the element type's delimiter; array_out double-quotes one (escaping " and \ with \) when it is
// empty, equals NULL in any case, or holds a brace, quote, backslash, the delimiter or white space.
// An unquoted NULL (any case) is SQL NULL; a quoted "NULL" is the string.
class ArrayScanner {
 public:
  enum class Token { Open, Close, Null, Element, End, Malformed };

  ArrayScanner(std::string_view text, char delimiter) : text_(text), in_(text), delimiter_(delimiter) {}

  Token next() {
    const Token t = scan();
    if (t == Token::Malformed) state_ = State::Malformed;
    return t;
  }

  // The last Element as printed: a quoted one without its quotes but still escaped.
  std::string_view element() const { return element_; }
  bool escaped() const { return escaped_; }

 private:
  enum class State { Start, AfterOpen, AfterDelimiter, AfterValue, Done, Malformed };

  Token scan() {
    if (state_ == State::Malformed) return Token::Malformed;
    in_.skip_array_space();
    if (state_ == State::Start) return start();
    if (state_ == State::Done) return in_.done() ? Token::End : Token::Malformed;  // "{1}}", "{1}x"
    if (in_.done()) return Token::Malformed;                                        // "{1"
    if (state_ == State::AfterValue) return after_value();
    if (in_.peek() == '{') return open();
    if (in_.peek() == '}' && state_ == State::AfterOpen) return close();     // "{}"
    if (in_.peek() == '}' || in_.peek() == delimiter_) return Token::Malformed;  // "{1,}", "{,1}"
    state_ = State::AfterValue;
    return in_.peek() == '"' ? quoted_element() : unquoted_element();
  }

  Token start() {
    if (in_.peek() == '[' && !skip_dimensions()) return Token::Malformed;
    in_.skip_array_space();
    return in_.peek() == '{' ? open() : Token::Malformed;
  }

  // "[lb:ub]" per dimension, then '='; the bounds have no JSON counterpart.
  bool skip_dimensions() {
    auto bound = [this] {
      in_.eat('-');
      return in_.skip_digits() > 0;
    };
    while (in_.eat('[')) {
      if (!(bound() && in_.eat(':') && bound() && in_.eat(']'))) return false;
    }
    return in_.eat('=');
  }

  Token after_value() {
    if (in_.peek() == '}') return close();
    if (!in_.eat(delimiter_)) return Token::Malformed;  // "{\"a\"b}"
    state_ = State::AfterDelimiter;
    return scan();
  }

  Token open() {
    in_.advance();
    ++depth_;
    state_ = State::AfterOpen;
    return Token::Open;
  }

  Token close() {
    in_.advance();
    --depth_;
    state_ = depth_ == 0 ? State::Done : State::AfterValue;
    return Token::Close;
  }

  Token quoted_element() {
    in_.advance();
    const std::size_t start = in_.pos();
    escaped_ = false;
    for (; !in_.done() && in_.peek() != '"'; in_.advance()) {
      if (in_.peek() != '\\') continue;
      escaped_ = true;
      in_.advance();
      if (in_.done()) return Token::Malformed;
    }
    if (in_.done()) return Token::Malformed;  // no closing quote
    element_ = text_.substr(start, in_.pos() - start);
    in_.advance();
    return Token::Element;
  }

  // Runs to the delimiter or '}'. array_out quotes anything with a brace, quote or backslash, so
  // those cannot sit in an unquoted element; trailing white space is not part of it (array_in).
  Token unquoted_element() {
    const std::size_t start = in_.pos();
    for (; !in_.done() && in_.peek() != delimiter_ && in_.peek() != '}'; in_.advance()) {
      if (in_.peek() == '{' || in_.peek() == '"' || in_.peek() == '\\') return Token::Malformed;
    }
    std::size_t end = in_.pos();
    while (is_array_space(text_[end - 1])) --end;  // stops at the first character, not a space
    element_ = text_.substr(start, end - start);
    escaped_ = false;
    return is_null(element_) ? Token::Null : Token::Element;
  }

  static bool is_null(std::string_view s) {
    auto same_letter = [](char c, char upper) { return c == upper || c == upper - 'A' + 'a'; };
    return s.size() == 4 && std::equal(s.begin(), s.end(), "NULL", same_letter);
  }

  std::string_view text_;
  Cursor in_;
  char delimiter_;
  int depth_ = 0;
  State state_ = State::Start;
  std::string_view element_;
  bool escaped_ = false;
};

// Inside quotes a backslash makes the next character literal.
void unescape_into(std::string_view quoted, std::string& out) {
  for (std::size_t i = 0; i < quoted.size(); ++i) {
    if (quoted[i] == '\\') ++i;
    out.push_back(quoted[i]);
  }
}

void write_element(JsonWriter& w, TypeKind kind, const ArrayScanner& scanner) {
  if (!scanner.escaped()) {
    write_scalar(w, kind, scanner.element());
    return;
  }
  ScratchLease element(scratch().element);
  unescape_into(scanner.element(), element.str());
  write_scalar(w, kind, element.str());
}

// Written as it is scanned; a literal found malformed part-way is taken back and written as its text.
void write_array(JsonWriter& w, const TypeInfo& type, std::string_view text) {
  const JsonWriter::Mark start = w.mark();
  ArrayScanner scanner(text, type.delimiter);
  for (;;) {
    switch (scanner.next()) {
      case ArrayScanner::Token::Open:
        w.start_array();
        break;
      case ArrayScanner::Token::Close:
        w.end_array();
        break;
      case ArrayScanner::Token::Null:
        w.null();
        break;
      case ArrayScanner::Token::Element:
        write_element(w, type.element, scanner);
        break;
      case ArrayScanner::Token::End:
        return;
      case ArrayScanner::Token::Malformed:
        w.rewind(start);
        w.string(text);
        return;
    }
  }
}

}  // namespace

TypeKind kind_for_base_type(std::uint32_t oid) {
  switch (oid) {
    case 16:
      return TypeKind::Bool;
    case 20:  // int8
    case 21:  // int2
    case 23:  // int4
    case 26:  // oid
      return TypeKind::Integer;
    case 700:  // float4
    case 701:  // float8
      return TypeKind::Float;
    case 1700:
      return TypeKind::Numeric;
    case 114:  // json
      return TypeKind::Json;
    case 3802:  // jsonb
      return TypeKind::Jsonb;
    case 17:
      return TypeKind::Bytea;
    case 1082:
      return TypeKind::Date;
    case 1114:
      return TypeKind::Timestamp;
    case 1184:
      return TypeKind::TimestampTz;
    default:
      return TypeKind::Text;
  }
}

void write_typed_value(JsonWriter& w, const TypeInfo& type, std::string_view text) {
  if (type.kind != TypeKind::Array) {
    write_scalar(w, type.kind, text);
  } else {
    write_array(w, type, text);
  }
}

std::string base64_encode(std::string_view bytes) {
  std::string out;
  append_base64(RawBytes{bytes}, out);
  return out;
}

}  // namespace walstream
