#include "record_json.h"

#include <array>

#include "json.h"

namespace walstream {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Copies JSON tokens from `text` to `out`, dropping the whitespace between them.
class Compactor {
 public:
  Compactor(std::string_view text, std::string& out) : text_(text), out_(out) {}

  // Iterative, with the open brackets in a string, because a json column nests as deep as
  // PostgreSQL's stack allowed when it was stored.
  bool run() {
    std::string closers;  // what closes each open container, innermost last
    bool expect_value = true;
    for (;;) {
      if (expect_value) {
        skip_space();
        if (eat('[')) {
          skip_space();
          if (!eat(']')) {
            closers.push_back(']');
            continue;
          }
        } else if (eat('{')) {
          skip_space();
          if (!eat('}')) {
            closers.push_back('}');
            if (!name()) return false;
            continue;
          }
        } else if (!scalar()) {
          return false;
        }
      }
      // After a value: the end of the text, or its container's closer, or a comma and the next one.
      skip_space();
      if (closers.empty()) return pos_ == text_.size();
      expect_value = false;
      if (eat(closers.back())) {
        closers.pop_back();
      } else if (eat(',')) {
        if (closers.back() == '}' && !name()) return false;
        expect_value = true;
      } else {
        return false;
      }
    }
  }

 private:
  bool done() const { return pos_ >= text_.size(); }
  char peek() const { return done() ? '\0' : text_[pos_]; }
  void skip_space() {
    while (!done() && is_space(text_[pos_])) ++pos_;
  }
  // Consumes and copies `c` when it is next.
  bool eat(char c) {
    if (done() || text_[pos_] != c) return false;
    out_.push_back(c);
    ++pos_;
    return true;
  }
  bool eat_digits() {
    bool any = false;
    while (!done() && is_digit(text_[pos_])) {
      out_.push_back(text_[pos_++]);
      any = true;
    }
    return any;
  }
  bool eat_word(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    out_.append(word);
    pos_ += word.size();
    return true;
  }

  bool string() {
    if (!eat('"')) return false;
    while (!done()) {
      char c = text_[pos_];
      if (static_cast<unsigned char>(c) < 0x20) return false;  // control characters must be escaped
      out_.push_back(c);
      ++pos_;
      if (c == '"') return true;
      if (c == '\\') {
        char e = peek();
        if (e == 'u') {
          out_.push_back(e);
          ++pos_;
          for (int i = 0; i < 4; ++i) {
            if (!is_hex(peek())) return false;
            out_.push_back(text_[pos_++]);
          }
        } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
          out_.push_back(e);
          ++pos_;
        } else {
          return false;
        }
      }
    }
    return false;
  }

  bool number() {
    eat('-');
    if (!eat('0') && !eat_digits()) return false;
    if (eat('.') && !eat_digits()) return false;
    if (eat('e') || eat('E')) {
      if (!eat('+')) eat('-');
      if (!eat_digits()) return false;
    }
    return true;
  }

  bool scalar() {
    switch (peek()) {
      case '"':
        return string();
      case 't':
        return eat_word("true");
      case 'f':
        return eat_word("false");
      case 'n':
        return eat_word("null");
      default:
        return number();
    }
  }

  // An object member's name and colon; its value follows.
  bool name() {
    skip_space();
    if (!string()) return false;
    skip_space();
    return eat(':');
  }

  std::string_view text_;
  std::string& out_;
  std::size_t pos_ = 0;
};

const std::string* find(std::span<const std::pair<std::string, std::string>> fields, std::string_view name) {
  for (const auto& [k, v] : fields) {
    if (k == name) return &v;
  }
  return nullptr;
}

}  // namespace

bool compact_json(std::string_view text, std::string& out) { return Compactor(text, out).run(); }

std::string record_json_line(std::string_view stream, std::string_view id,
                             std::span<const std::pair<std::string, std::string>> fields) {
  JsonWriter w;
  std::string compact;
  w.start_object();
  w.key("stream_id");
  w.string(stream);
  w.key("id");
  w.string(id);
  struct Member {
    const char* name;
    bool json;
  };
  static constexpr std::array<Member, 7> kMembers{{{"op", false},
                                                  {"table", false},
                                                  {"key", true},
                                                  {"after", true},
                                                  {"before", true},
                                                  {"unchanged", true},
                                                  {"ts", false}}};
  for (const auto& m : kMembers) {
    const std::string* value = find(fields, m.name);
    if (!value) continue;
    w.key(m.name);
    compact.clear();
    if (m.json && compact_json(*value, compact)) {
      w.raw(compact);
    } else {
      w.string(*value);
    }
  }
  w.end_object();
  return std::string(w.view());
}

}  // namespace walstream
