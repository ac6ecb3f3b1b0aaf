// judge_sentinels (publisher/sentinel.h): when a position acknowledged by the master a session writes
// to may be confirmed to PostgreSQL, from what the sentinels said.
#include <gtest/gtest.h>

#include "sentinel.h"

using walstream::judge_sentinels;
using walstream::RedisEndpoint;
using walstream::SentinelJudgement;
using walstream::SentinelView;
using Verdict = SentinelJudgement::Verdict;

namespace {

const RedisEndpoint kOurs{"10.0.0.1", 6379};
const RedisEndpoint kOther{"10.0.0.2", 6379};

SentinelView named(std::vector<RedisEndpoint> nodes) {
  SentinelView v;
  v.named = std::move(nodes);
  return v;
}

}  // namespace

TEST(SentinelJudge, AllAgreeingVouch) {
  EXPECT_EQ(judge_sentinels(named({kOurs, kOurs, kOurs}), kOurs, 3).verdict, Verdict::Vouch);
  EXPECT_EQ(judge_sentinels(named({kOurs}), kOurs, 1).verdict, Verdict::Vouch);
}

TEST(SentinelJudge, TheSilentMustBeTooFewToElectALeader) {
  // 3 sentinels, 1 answering: the 2 others could run a failover unseen (a partition with the old master).
  EXPECT_EQ(judge_sentinels(named({kOurs}), kOurs, 3).verdict, Verdict::Hold);
  EXPECT_EQ(judge_sentinels(named({kOurs, kOurs}), kOurs, 3).verdict, Verdict::Vouch);
  // 2 sentinels, 1 answering: one alone is no majority of 2.
  EXPECT_EQ(judge_sentinels(named({kOurs}), kOurs, 2).verdict, Verdict::Vouch);
  EXPECT_EQ(judge_sentinels(named({kOurs, kOurs}), kOurs, 5).verdict, Verdict::Hold);
  EXPECT_EQ(judge_sentinels(named({}), kOurs, 1).verdict, Verdict::Hold);
}

TEST(SentinelJudge, AMajorityNamingAnotherMeansMovedAMinorityHolds) {
  auto moved = judge_sentinels(named({kOther, kOther, kOurs}), kOurs, 3);
  EXPECT_EQ(moved.verdict, Verdict::Moved);
  EXPECT_EQ(moved.moved_to, kOther);
  EXPECT_NE(moved.why.find("2 of 3"), std::string::npos) << moved.why;
  // One stale (or the only one that already knows): neither reconnect nor confirm.
  EXPECT_EQ(judge_sentinels(named({kOther, kOurs, kOurs}), kOurs, 3).verdict, Verdict::Hold);
  EXPECT_EQ(judge_sentinels(named({kOther}), kOurs, 1).verdict, Verdict::Moved);
}

TEST(SentinelJudge, AFailoverInProgressOrAMasterSeenDownHolds) {
  auto v = named({kOurs, kOurs, kOurs});
  v.failover_in_progress = true;
  v.flags = "127.0.0.1:26379 says master,failover_in_progress";
  auto j = judge_sentinels(v, kOurs, 3);
  EXPECT_EQ(j.verdict, Verdict::Hold);
  EXPECT_NE(j.why.find("failover is in progress"), std::string::npos) << j.why;
  v.failover_in_progress = false;
  v.down = true;
  EXPECT_EQ(judge_sentinels(v, kOurs, 3).verdict, Verdict::Hold);
}
