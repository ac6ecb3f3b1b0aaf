#include "wal_guard.h"

#include <gtest/gtest.h>

using namespace walstream;
using namespace std::chrono_literals;

namespace {

LagWarn thresholds() {
  LagWarn w;
  w.bytes = 1 << 20;
  w.time = 60s;
  return w;
}

}  // namespace

TEST(WalGuard, QuietWhileUnderEveryThreshold) {
  WalGuard g(thresholds(), "walstream");
  auto t = WalGuard::Clock::now();
  EXPECT_TRUE(g.check(t, {1 << 20, 60, "reserved"}).empty());  // at the threshold is not over it
  EXPECT_TRUE(g.check(t + 5s, {0, 0, "extended"}).empty());
  for (int r = 0; r < 3; ++r) EXPECT_FALSE(g.holds(static_cast<WalGuard::Reason>(r)));
}

TEST(WalGuard, WarnsOnceThenEveryMinuteThenSaysWhenItClears) {
  WalGuard g(thresholds(), "walstream");
  auto t = WalGuard::Clock::now();
  auto lines = g.check(t, {(1 << 20) + 1, 0, "reserved"});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].first, log::Level::Warn);
  EXPECT_EQ(lines[0].second,
            "lag: slot 'walstream' is 1.0 MiB (1048577 B) of WAL behind the server, over --lag-warn 1.0 MiB (1048576 "
            "B); PostgreSQL keeps that WAL until walstream confirms it (wal_status reserved)");
  EXPECT_TRUE(g.holds(WalGuard::Bytes));
  EXPECT_TRUE(g.check(t + 5s, {2 << 20, 0, "reserved"}).empty());   // still over: not said again yet
  EXPECT_TRUE(g.check(t + 59s, {2 << 20, 0, "reserved"}).empty());
  EXPECT_EQ(g.check(t + 60s, {2 << 20, 0, "reserved"}).size(), 1u);  // a minute later: said again
  auto cleared = g.check(t + 65s, {100, 0, "reserved"});
  ASSERT_EQ(cleared.size(), 1u);
  EXPECT_EQ(cleared[0].first, log::Level::Info);
  EXPECT_EQ(cleared[0].second, "lag: slot 'walstream' is back under --lag-warn 1.0 MiB (1048576 B) (100 B behind)");
  EXPECT_FALSE(g.holds(WalGuard::Bytes));
  EXPECT_TRUE(g.check(t + 70s, {100, 0, "reserved"}).empty());
  // Over again after clearing: said at once.
  EXPECT_EQ(g.check(t + 71s, {2 << 20, 0, "reserved"}).size(), 1u);
}

TEST(WalGuard, SecondsAndUnreservedAreTheirOwnWarnings) {
  WalGuard g(thresholds(), "s1");
  auto t = WalGuard::Clock::now();
  auto lines = g.check(t, {0, 61, "unreserved"});
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].second, "lag: the oldest transaction not yet in Redis was committed 61 s ago, over --lag-warn 60 s");
  EXPECT_NE(lines[1].second.find("slot 's1' has wal_status = unreserved"), std::string::npos);
  EXPECT_NE(lines[1].second.find("--resnapshot"), std::string::npos);
  EXPECT_FALSE(g.holds(WalGuard::Bytes));
  EXPECT_TRUE(g.holds(WalGuard::Seconds));
  EXPECT_TRUE(g.holds(WalGuard::Unreserved));
  auto back = g.check(t + 5s, {0, 0.5, "extended"});
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].second, "lag: transactions reach Redis within --lag-warn 60 s again (0.5 s)");
  EXPECT_EQ(back[1].second, "slot 's1': wal_status is extended again");
}

TEST(WalGuard, ZeroTurnsAThresholdOff) {
  LagWarn off;
  off.bytes = 0;
  off.time = 0s;
  WalGuard g(off, "walstream");
  auto t = WalGuard::Clock::now();
  EXPECT_TRUE(g.check(t, {1LL << 40, 1e6, "reserved"}).empty());
  EXPECT_EQ(g.check(t, {1LL << 40, 1e6, "unreserved"}).size(), 1u);  // unreserved is always said
}
