#include "pg_time.h"

#include <fmt/format.h>

#include <ctime>

namespace walstream {

std::string format_pg_timestamp(std::int64_t pg_micros) {
  std::int64_t unix_micros = pg_micros + kPgEpochUnixMicros;
  // Floor division so that instants before 1970 keep a positive fraction.
  std::int64_t secs = unix_micros / 1'000'000;
  std::int64_t frac = unix_micros % 1'000'000;
  if (frac < 0) {
    frac += 1'000'000;
    secs -= 1;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

}  // namespace walstream
