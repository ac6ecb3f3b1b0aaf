// The backfill's check that a chunk's read saw every commit streamed before its low mark.
#include <gtest/gtest.h>

#include <stdexcept>

#include "backfill.h"

namespace walstream {
namespace {

// Captured from PostgreSQL 15: two transactions (725, 726) in progress, 727 committed, and the asking
// transaction itself (728, `SELECT pg_current_snapshot(), txid_current()`) not yet completed.
constexpr const char* kTwoRunning = "725:728:725,726";
constexpr const char* kNoneRunning = "729:729:";  // the same server once they all ended

TEST(XidSnapshot, ParsesWhatPostgresWrites) {
  auto s = XidSnapshot::parse(kTwoRunning);
  EXPECT_EQ(s.xmin, 725u);
  EXPECT_EQ(s.xmax, 728u);
  EXPECT_EQ(s.xip, (std::vector<std::uint64_t>{725, 726}));
  auto e = XidSnapshot::parse(kNoneRunning);
  EXPECT_EQ(e.xmin, 729u);
  EXPECT_EQ(e.xmax, 729u);
  EXPECT_TRUE(e.xip.empty());
}

TEST(XidSnapshot, RefusesWhatIsNotASnapshot) {
  for (const char* bad : {"", "725", "725:728", "x:728:", "725:728:725,", "729:728:", "725:728:7a"}) {
    EXPECT_THROW(XidSnapshot::parse(bad), std::invalid_argument) << bad;
  }
}

TEST(XidSnapshot, SeesCommitsBelowXmaxNotInProgress) {
  auto s = XidSnapshot::parse(kTwoRunning);
  EXPECT_TRUE(s.sees_committed(724));   // below xmin
  EXPECT_FALSE(s.sees_committed(725));  // in progress for it
  EXPECT_FALSE(s.sees_committed(726));
  EXPECT_TRUE(s.sees_committed(727));
  EXPECT_FALSE(s.sees_committed(728));  // at xmax: completed after the snapshot was taken
  EXPECT_FALSE(s.sees_committed(900));
  EXPECT_TRUE(XidSnapshot::parse(kNoneRunning).sees_committed(728));
}

TEST(XidSnapshot, WrapsAroundRelativeToXmax) {
  // Epoch 1: xids 4 (in progress) and 5 (committed); 2^32 - 1 belongs to epoch 0.
  auto s = XidSnapshot::parse("4294967300:4294967302:4294967300");
  EXPECT_TRUE(s.sees_committed(0xFFFFFFFFu));
  EXPECT_FALSE(s.sees_committed(4));
  EXPECT_TRUE(s.sees_committed(5));
  EXPECT_FALSE(s.sees_committed(6));
}

TEST(XidSnapshot, FullXidsTakeXmaxsEpoch) {
  auto s = XidSnapshot::parse("4294967300:4294967302:4294967300");
  EXPECT_EQ(s.full(4), 4294967300u);
  EXPECT_EQ(s.full(7), 4294967303u);           // ahead of xmax
  EXPECT_EQ(s.full(0xFFFFFFFFu), 4294967295u);  // the epoch before
  EXPECT_EQ(XidSnapshot::parse(kTwoRunning).full(726), 726u);
}

TEST(XidSnapshot, UnseenCommitsSkipsUnusedSlots) {
  auto s = XidSnapshot::parse(kTwoRunning);
  EXPECT_EQ(unseen_commits(s, {0, 720, 726, 727, 0, 728}), (std::vector<std::uint32_t>{726, 728}));
  EXPECT_TRUE(unseen_commits(s, {0, 0, 0}).empty());
}

}  // namespace
}  // namespace walstream
