#include "pg_time.h"

#include <chrono>

#include <fmt/format.h>

namespace walstream {
namespace {

// Writes n decimal digits of v (zero-padded) ending just before `end`; returns where they start.
char* put_digits(char* end, std::int64_t v, int n) {
  for (int i = 0; i < n; ++i, v /= 10) *--end = static_cast<char>('0' + v % 10);
  return end;
}

}  // namespace

// Called once per transaction, so a 4-change pgbench transaction pays for it four times less than
// a change does: calendar arithmetic and fixed-width digits instead of gmtime_r (a lock and the
// time zone machinery) and format parsing, which cost ~5k instructions a call.
std::string format_pg_timestamp(std::int64_t pg_micros) {
  using namespace std::chrono;
  const sys_time<microseconds> t{microseconds(pg_micros + kPgEpochUnixMicros)};
  const sys_days day = floor<days>(t);  // floor: instants before 1970 keep a positive time of day
  const year_month_day ymd(day);
  const hh_mm_ss<microseconds> tod(t - day);
  const int y = static_cast<int>(ymd.year());
  if (y < 0 || y > 9999) {
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", y, static_cast<unsigned>(ymd.month()),
                       static_cast<unsigned>(ymd.day()), tod.hours().count(), tod.minutes().count(),
                       tod.seconds().count(), tod.subseconds().count());
  }
  std::string out = "0000-00-00T00:00:00.000000Z";
  char* p = out.data();
  put_digits(p + 4, y, 4);
  put_digits(p + 7, static_cast<unsigned>(ymd.month()), 2);
  put_digits(p + 10, static_cast<unsigned>(ymd.day()), 2);
  put_digits(p + 13, tod.hours().count(), 2);
  put_digits(p + 16, tod.minutes().count(), 2);
  put_digits(p + 19, tod.seconds().count(), 2);
  put_digits(p + 26, tod.subseconds().count(), 6);
  return out;
}

}  // namespace walstream
