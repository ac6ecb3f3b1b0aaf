// Timestamps on the wire (microseconds since 2000-01-01 UTC) -> RFC 3339 text for the `ts` field.
// Pure.
#pragma once

#include <cstdint>
#include <string>

namespace walstream {

// PostgreSQL's epoch (2000-01-01) in Unix microseconds.
inline constexpr std::int64_t kPgEpochUnixMicros = 946'684'800'000'000;

// "2026-11-27T01:35:15.123456Z"
std::string format_pg_timestamp(std::int64_t pg_micros);

// Microseconds since 2000-01-01 UTC for a Unix time in microseconds (what the 'r' message carries).
inline std::int64_t unix_to_pg_micros(std::int64_t unix_micros) { return unix_micros - kPgEpochUnixMicros; }

}  // namespace walstream
