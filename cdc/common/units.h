// Sizes and durations as operators write them on the command line: `512MB`, `1GiB`, `30s`, `15m`, `7d`.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace walstream {

// A byte count: digits and an optional unit, B, k/kB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB (all powers of
// 1024, any case). nullopt when malformed or out of range; 0 only when allow_zero.
std::optional<std::uint64_t> parse_byte_size(std::string_view text, bool allow_zero = false);
// A duration: digits and a unit, ms, s, m, h or d. nullopt when malformed, out of range or without a unit.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);
// The largest unit that divides it: 3600 s -> "1h", 90 s -> "90s".
std::string format_duration(std::chrono::seconds d);
// "1.2 GiB (1288490188 B)", or "512 B".
std::string bytes_text(long long n);

// --lag-warn: thresholds of WAL bytes and of seconds behind; 0 turns one off.
struct LagWarn {
  std::uint64_t bytes = std::uint64_t{1} << 30;
  std::chrono::milliseconds time{std::chrono::minutes(5)};
};
// A comma list of sizes and durations, each replacing the default of its kind ("512MB", "1GiB,10m",
// "0s"). Throws std::invalid_argument naming the bad item.
LagWarn parse_lag_warn(std::string_view text);

}  // namespace walstream
