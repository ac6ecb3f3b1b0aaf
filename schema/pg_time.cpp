#include "pg_time.h"

#include <chrono>
#include <ctime>

#include <fmt/format.h>

namespace walstream {
namespace {

// Writes n decimal digits of v (zero-padded) ending just before `end`; returns where they start.
char* put_digits(char* end, std::int64_t v, int n) {
  for (int i = 0; i < n; ++i, v /= 10) *--end = static_cast<char>('0' + v % 10);
  return end;
}

std::string format_unix_micros_slowly(std::int64_t unix_micros) {
  std::int64_t secs = unix_micros / 1'000'000;
  std::int64_t frac = unix_micros % 1'000'000;
  if (frac < 0) {
    frac += 1'000'000;
    secs -= 1;
  }
  const std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", static_cast<std::int64_t>(tm.tm_year) + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

}  // namespace

// Called once per transaction, so a 4-change pgbench transaction pays for it four times less than
// a change does: calendar arithmetic and fixed-width digits instead of gmtime_r (a lock and the
// time zone machinery) and format parsing, which cost ~5k instructions a call.
std::string format_pg_timestamp(std::int64_t pg_micros) {
  using namespace std::chrono;
  const std::int64_t unix_micros = pg_micros + kPgEpochUnixMicros;
  // Years 0000..9999 here; beyond them (std::chrono::year stops at 32767) the C library's calendar.
  constexpr std::int64_t kYear0 = -62'167'219'200'000'000, kYear10000 = 253'402'300'800'000'000;
  if (unix_micros < kYear0 || unix_micros >= kYear10000) return format_unix_micros_slowly(unix_micros);
  const sys_time<microseconds> t{microseconds(unix_micros)};
  const sys_days day = floor<days>(t);  // floor: instants before 1970 keep a positive time of day
  const year_month_day ymd(day);
  const hh_mm_ss<microseconds> tod(t - day);
  const int y = static_cast<int>(ymd.year());
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
