#include "units.h"

#include <gtest/gtest.h>

#include <stdexcept>

using namespace walstream;
using namespace std::chrono_literals;

TEST(Units, ByteSizesArePowersOf1024InAnyCase) {
  EXPECT_EQ(parse_byte_size("1073741824"), 1ull << 30);
  EXPECT_EQ(parse_byte_size("512B"), 512u);
  EXPECT_EQ(parse_byte_size("64MB"), 64ull << 20);
  EXPECT_EQ(parse_byte_size("1GiB"), 1ull << 30);
  EXPECT_EQ(parse_byte_size("16kB"), 16ull << 10);
  EXPECT_EQ(parse_byte_size("2t"), 2ull << 40);
  for (auto bad : {"", "GB", "1.5GB", "1 GB", "-1", "1PB", "0", "99999999999999999999", "17000000TB"}) {
    EXPECT_EQ(parse_byte_size(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(parse_byte_size("0B", true), 0u);
}

TEST(Units, DurationsNeedAUnit) {
  EXPECT_EQ(parse_duration("30s"), 30s);
  EXPECT_EQ(parse_duration("15m"), 15min);
  EXPECT_EQ(parse_duration("1h"), 1h);
  EXPECT_EQ(parse_duration("7d"), 7 * 24h);
  EXPECT_EQ(parse_duration("250ms"), 250ms);
  EXPECT_EQ(parse_duration("0s"), 0s);
  for (auto bad : {"", "5x", "s", "-1s", "+1s", "1.5h", "1h30m", " 1h", "1h ", "10", "99999999999999d"}) {
    EXPECT_EQ(parse_duration(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(format_duration(3600s), "1h");
  EXPECT_EQ(format_duration(7 * 86400s), "7d");
  EXPECT_EQ(format_duration(900s), "15m");
  EXPECT_EQ(format_duration(90s), "90s");
}

TEST(Units, LagWarnItemsReplaceTheDefaultOfTheirKind) {
  auto d = parse_lag_warn("1GiB,5m");
  EXPECT_EQ(d.bytes, 1ull << 30);
  EXPECT_EQ(d.time, 5min);
  auto bytes_only = parse_lag_warn("512MB");
  EXPECT_EQ(bytes_only.bytes, 512ull << 20);
  EXPECT_EQ(bytes_only.time, 5min);  // the default stays
  auto time_only = parse_lag_warn("30s");
  EXPECT_EQ(time_only.bytes, 1ull << 30);
  EXPECT_EQ(time_only.time, 30s);
  auto off = parse_lag_warn("0B,0s");
  EXPECT_EQ(off.bytes, 0u);
  EXPECT_EQ(off.time, 0s);
  EXPECT_THROW(parse_lag_warn("5x"), std::invalid_argument);
  EXPECT_THROW(parse_lag_warn("1GB,"), std::invalid_argument);
  try {
    parse_lag_warn("1GB,soon");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "'soon' is neither a size (512MB, 1GiB) nor a duration (30s, 5m, 1h)");
  }
}

TEST(Units, BytesText) {
  EXPECT_EQ(bytes_text(512), "512 B");
  EXPECT_EQ(bytes_text(1536), "1.5 KiB (1536 B)");
  EXPECT_EQ(bytes_text(3LL << 30), "3.0 GiB (3221225472 B)");
}
