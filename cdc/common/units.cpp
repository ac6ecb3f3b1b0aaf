#include "units.h"

#include <fmt/format.h>

#include <cctype>
#include <stdexcept>

namespace walstream {
namespace {

// The leading digits of text (nullopt without any, or on overflow); the rest, lower-cased, in unit.
std::optional<std::uint64_t> split_number(std::string_view text, std::string& unit) {
  std::size_t i = 0;
  std::uint64_t n = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    auto d = static_cast<std::uint64_t>(text[i] - '0');
    if (n > (UINT64_MAX - d) / 10) return std::nullopt;
    n = n * 10 + d;
    ++i;
  }
  if (i == 0) return std::nullopt;
  unit.clear();
  for (char c : text.substr(i)) unit.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return n;
}

}  // namespace

std::optional<std::uint64_t> parse_byte_size(std::string_view text, bool allow_zero) {
  std::string unit;
  auto n = split_number(text, unit);
  if (!n) return std::nullopt;
  int shift = 0;
  if (unit.empty() || unit == "b") {
    shift = 0;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    shift = 10;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    shift = 20;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    shift = 30;
  } else if (unit == "t" || unit == "tb" || unit == "tib") {
    shift = 40;
  } else {
    return std::nullopt;
  }
  if ((*n == 0 && !allow_zero) || *n > (UINT64_MAX >> shift)) return std::nullopt;
  return *n << shift;
}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  std::string unit;
  auto n = split_number(text, unit);
  if (!n) return std::nullopt;
  std::uint64_t ms_per = 0;
  if (unit == "ms") {
    ms_per = 1;
  } else if (unit == "s") {
    ms_per = 1000;
  } else if (unit == "m") {
    ms_per = 60'000;
  } else if (unit == "h") {
    ms_per = 3'600'000;
  } else if (unit == "d") {
    ms_per = 86'400'000;
  } else {
    return std::nullopt;
  }
  if (*n > static_cast<std::uint64_t>(INT64_MAX) / ms_per) return std::nullopt;
  return std::chrono::milliseconds(static_cast<std::int64_t>(*n * ms_per));
}

std::string format_duration(std::chrono::seconds d) {
  auto s = d.count();
  if (s > 0 && s % 86400 == 0) return fmt::format("{}d", s / 86400);
  if (s > 0 && s % 3600 == 0) return fmt::format("{}h", s / 3600);
  if (s > 0 && s % 60 == 0) return fmt::format("{}m", s / 60);
  return fmt::format("{}s", s);
}

std::string bytes_text(long long n) {
  if (n < 1024) return fmt::format("{} B", n);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = -1;
  while (v >= 1024 && u < 3) v /= 1024, ++u;
  return fmt::format("{:.1f} {} ({} B)", v, units[u], n);
}

LagWarn parse_lag_warn(std::string_view text) {
  LagWarn w;
  while (true) {
    auto comma = text.find(',');
    auto item = text.substr(0, comma);
    if (auto d = parse_duration(item)) {
      w.time = *d;
    } else if (auto b = parse_byte_size(item, true)) {
      w.bytes = *b;
    } else {
      throw std::invalid_argument(
          fmt::format("'{}' is neither a size (512MB, 1GiB) nor a duration (30s, 5m, 1h)", item));
    }
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return w;
}

}  // namespace walstream
