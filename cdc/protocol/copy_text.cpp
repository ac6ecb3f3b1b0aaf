#include "copy_text.h"

#include <cstring>
#include <stdexcept>

namespace walstream::copy_text {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_octal(char c) { return c >= '0' && c <= '7'; }

// Decodes one field's escapes, as CopyReadAttributesText does on the way in.
void unescape(std::string_view raw, std::string& out) {
  out.clear();
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c != '\\') {
      out.push_back(c);
      continue;
    }
    if (++i == raw.size()) throw std::invalid_argument("COPY text: dangling backslash");
    c = raw[i];
    switch (c) {
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      case 'n': out.push_back('\n'); break;
      case 'r': out.push_back('\r'); break;
      case 't': out.push_back('\t'); break;
      case 'v': out.push_back('\v'); break;
      case 'x': {
        int v = 0, digits = 0;
        while (digits < 2 && i + 1 < raw.size() && hex_value(raw[i + 1]) >= 0) {
          v = v * 16 + hex_value(raw[++i]);
          ++digits;
        }
        if (digits == 0) {
          out.push_back('x');  // "\x" without digits is a plain x, as in PostgreSQL
        } else {
          out.push_back(static_cast<char>(v));
        }
        break;
      }
      default:
        if (is_octal(c)) {
          int v = c - '0', digits = 1;
          while (digits < 3 && i + 1 < raw.size() && is_octal(raw[i + 1])) {
            v = v * 8 + (raw[++i] - '0');
            ++digits;
          }
          out.push_back(static_cast<char>(v & 0xff));
        } else {
          out.push_back(c);  // \\ and any other escaped character stand for themselves
        }
    }
  }
}

}  // namespace

void parse_row(std::string_view line, std::vector<std::optional<std::string_view>>& out,
               std::deque<std::string>& scratch) {
  out.clear();
  const char* p = line.data();
  const char* const end = p + line.size();
  for (;;) {
    // A tab inside a value is always escaped (\t), and a backslash too (\\): the first raw tab ends
    // the field, and a field without a backslash is its own value.
    const char* tab = static_cast<const char*>(std::memchr(p, '\t', static_cast<std::size_t>(end - p)));
    const char* stop = tab ? tab : end;
    std::string_view raw(p, static_cast<std::size_t>(stop - p));
    if (raw.find('\\') == std::string_view::npos) {
      out.emplace_back(raw);
    } else if (raw == "\\N") {
      out.emplace_back(std::nullopt);
    } else {
      if (scratch.size() <= out.size()) scratch.resize(out.size() + 1);
      auto& decoded = scratch[out.size()];
      unescape(raw, decoded);
      out.emplace_back(decoded);
    }
    if (!tab) break;
    p = tab + 1;
  }
}

}  // namespace walstream::copy_text
