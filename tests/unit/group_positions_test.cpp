// GroupPositions and judge_groups (publisher/group_positions.h): every branch of the accounting a
// cluster's writer will confirm positions by.
#include <gtest/gtest.h>

#include <stdexcept>

#include "group_positions.h"

using walstream::GroupPositions;
using walstream::judge_groups;
using walstream::ListedGroup;

TEST(GroupPositions, NothingJoinedConfirmsNothing) {
  GroupPositions p;
  EXPECT_EQ(p.confirmable(), std::nullopt);
  EXPECT_EQ(p.slowest(), "");
  EXPECT_EQ(p.size(), 0u);
}

TEST(GroupPositions, TheMinimumOverGroupsIsConfirmed) {
  GroupPositions p;
  p.join("slot", 100);
  p.join("a", 100);
  p.join("b", 100);
  EXPECT_EQ(p.confirmable(), 100u);  // the floors: nothing of this session stored yet
  p.acked("slot", 300);
  p.acked("a", 200);
  EXPECT_EQ(p.confirmable(), 100u);  // b holds nothing past its floor
  EXPECT_EQ(p.slowest(), "b");
  p.acked("b", 250);
  EXPECT_EQ(p.confirmable(), 200u);
  EXPECT_EQ(p.slowest(), "a");
  p.acked("a", 400);
  EXPECT_EQ(p.confirmable(), 250u);
  // An older acknowledgement arriving late moves nothing back.
  p.acked("b", 150);
  EXPECT_EQ(p.confirmable(), 250u);
}

TEST(GroupPositions, AGroupJoiningLateHoldsUpToItsFloor) {
  GroupPositions p;
  p.join("slot", 100);
  p.acked("slot", 500);
  EXPECT_EQ(p.confirmable(), 500u);
  // Joins after transactions up to 480 were handed over: it holds those (they did not touch it), not
  // the one it joins in.
  p.join("late", 480);
  EXPECT_EQ(p.confirmable(), 480u);
  EXPECT_EQ(p.slowest(), "late");
  p.acked("late", 520);
  EXPECT_EQ(p.confirmable(), 500u);
  // Joining again keeps the first floor.
  p.join("late", 900);
  EXPECT_EQ(p.confirmable(), 500u);
  EXPECT_EQ(p.size(), 2u);
}

TEST(GroupPositions, AnAcknowledgementForAnUnknownGroupIsAnError) {
  GroupPositions p;
  p.join("a", 1);
  EXPECT_THROW(p.acked("b", 10), std::logic_error);
  EXPECT_EQ(p.confirmable(), 1u);
}

TEST(GroupPositions, TiesNameTheSmallestGroup) {
  GroupPositions p;
  p.join("c", 7);
  p.join("a", 7);
  p.join("b", 7);
  EXPECT_EQ(p.slowest(), "a");
}

TEST(JudgeGroups, AllAtOrAboveConfirmedPass) {
  EXPECT_EQ(judge_groups("s", 0x100, {}), std::nullopt);
  EXPECT_EQ(judge_groups("s", 0x100, {{"w:public.a", 0x100}, {"w:public.b", 0x200}}), std::nullopt);
}

TEST(JudgeGroups, ACheckpointBelowConfirmedNamesTheRange) {
  auto line = judge_groups("s", 0x200, {{"w:public.a", 0x300}, {"w:public.b", 0x180}, {"w:public.c", std::nullopt}});
  ASSERT_TRUE(line);
  EXPECT_EQ(*line,
            "Redis Cluster: the checkpoint of stream w:public.b (slot 's') is at 0/180, below the slot's "
            "confirmed_flush_lsn 0/200: the shard serving it lost the entries in (0/180, 0/200]; start with "
            "--resnapshot to read every table again");
}

TEST(JudgeGroups, AListedGroupWithoutCheckpointIsALostShard) {
  auto line = judge_groups("s", 0x200, {{"w:public.a", 0x300}, {"w:public.c", std::nullopt}});
  ASSERT_TRUE(line);
  EXPECT_NE(line->find("the checkpoint of stream w:public.c (slot 's') is gone while the slot lists it"),
            std::string::npos)
      << *line;
  EXPECT_NE(line->find("--resnapshot"), std::string::npos);
}
