#include "copy_text.h"

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

void parse_row(std::string_view line, std::vector<std::optional<std::string>>& out) {
  std::size_t n = 0;
  std::size_t start = 0;
  for (;;) {
    std::size_t end = start;
    // A tab inside a value is always escaped, so the first raw tab ends the field.
    while (end < line.size() && line[end] != '\t') {
      end += line[end] == '\\' ? 2 : 1;
    }
    if (end > line.size()) throw std::invalid_argument("COPY text: dangling backslash");
    std::string_view raw = line.substr(start, end - start);
    if (n == out.size()) out.emplace_back();
    auto& field = out[n++];
    if (raw == "\\N") {
      field.reset();
    } else {
      if (!field) field.emplace();
      unescape(raw, *field);
    }
    if (end >= line.size()) break;
    start = end + 1;
  }
  out.resize(n);
}

}  // namespace walstream::copy_text
