// schema/pg_time: commit timestamps (microseconds since 2000-01-01 UTC, as pgoutput sends them) -> `ts`.
// Expected values computed independently (Python's datetime) for each input.
#include "pg_time.h"

#include <gtest/gtest.h>

namespace walstream {
namespace {

TEST(PgTime, FormatsMicrosecondsSince2000AsRfc3339) {
  EXPECT_EQ(format_pg_timestamp(0), "2000-01-01T00:00:00.000000Z");
  EXPECT_EQ(format_pg_timestamp(849058515123456), "2026-11-27T01:35:15.123456Z");
  EXPECT_EQ(format_pg_timestamp(762525296789012), "2024-02-29T12:34:56.789012Z");
  EXPECT_EQ(format_pg_timestamp(252455615999999999), "9999-12-31T23:59:59.999999Z");
}

// Before either epoch the time of day stays positive (floor, not truncation).
TEST(PgTime, InstantsBeforeTheEpochs) {
  EXPECT_EQ(format_pg_timestamp(-1), "1999-12-31T23:59:59.999999Z");
  EXPECT_EQ(format_pg_timestamp(-946684800000001), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(format_pg_timestamp(-3150575999999999), "1900-03-01T00:00:00.000001Z");
  EXPECT_EQ(format_pg_timestamp(-63082281600000000), "0001-01-01T00:00:00.000000Z");
}

TEST(PgTime, YearsPastFourDigitsKeepAllTheirDigits) {
  EXPECT_EQ(format_pg_timestamp(252455616000000000), "10000-01-01T00:00:00.000000Z");
  // Past std::chrono::year's range (32767): 40000-01-01T00:00:00.5Z.
  EXPECT_EQ(format_pg_timestamp(1'199'164'176'000'500'000), "40000-01-01T00:00:00.500000Z");
}

TEST(PgTime, UnixToPgMicros) {
  EXPECT_EQ(unix_to_pg_micros(kPgEpochUnixMicros), 0);
  EXPECT_EQ(format_pg_timestamp(unix_to_pg_micros(0)), "1970-01-01T00:00:00.000000Z");
}

}  // namespace
}  // namespace walstream
