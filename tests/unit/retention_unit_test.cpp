// Retention's pure parts (publisher/retention): durations, the commit time -> LSN index (monotone,
// bounded, the point for a given now) and the accounting of what a trim took from consumer groups.
// The trim itself runs in Redis (a Lua script) and is tested against a real server in
// tests/integration/retention_test.cpp.
#include "retention.h"

#include <gtest/gtest.h>

#include <string>

namespace walstream {
namespace {

constexpr std::int64_t kS = 1'000'000;  // one second in microseconds

RetentionOptions retain(std::chrono::seconds f, std::optional<std::chrono::seconds> max = std::nullopt) {
  RetentionOptions o;
  o.retain_for = f;
  o.retain_max = max;
  return o;
}

TEST(CommitTimeIndex, NoSampleOldEnoughMeansNoPoint) {
  CommitTimeIndex index(kS, 3600 * kS);
  EXPECT_EQ(index.point(1000 * kS), std::nullopt);
  index.add(500, 100 * kS);
  EXPECT_EQ(index.point(100 * kS - 1), std::nullopt);
  EXPECT_EQ(index.point(100 * kS), 500u);
  EXPECT_EQ(index.point(200 * kS), 500u);
}

TEST(CommitTimeIndex, PointIsTheNewestSampleAtOrBeforeTheCutoff) {
  CommitTimeIndex index(kS, 3600 * kS);
  for (std::int64_t s = 0; s < 100; ++s) index.add(static_cast<std::uint64_t>(1000 + s * 10), s * kS);
  // now = 130 s, retain 60 s: the newest commit at or before 70 s.
  EXPECT_EQ(index.point(130 * kS - 60 * kS), 1000u + 70 * 10);
  EXPECT_EQ(index.point(70 * kS - 1), 1000u + 69 * 10);
  EXPECT_EQ(index.point(-1), std::nullopt);
}

TEST(CommitTimeIndex, TimesAreARunningMaximumAndLsnsOnlyGrow) {
  CommitTimeIndex index(kS, 3600 * kS);
  index.add(1000, 50 * kS);
  // Committed later in the WAL with an earlier timestamp (clocks, or a commit time taken before its
  // record went in): it must not make its LSN look older than the commit before it.
  index.add(2000, 40 * kS);
  EXPECT_EQ(index.point(45 * kS), std::nullopt);
  EXPECT_EQ(index.point(50 * kS), 2000u);
  // A position at or below the newest says nothing new (a replay, a session's start below it).
  index.add(1500, 80 * kS);
  index.add(2000, 90 * kS);
  EXPECT_EQ(index.point(85 * kS), 2000u);
  EXPECT_EQ(index.size(), 2u);
}

TEST(CommitTimeIndex, SamplesCloserThanTheSpacingMoveTheNewestOne) {
  CommitTimeIndex index(kS, 3600 * kS);
  index.add(100, 0);
  // A thousand commits within one second: one sample follows the newest.
  for (int i = 1; i <= 1000; ++i) index.add(100 + static_cast<std::uint64_t>(i), i * 900);
  EXPECT_EQ(index.size(), 2u);
  EXPECT_EQ(index.point(900 * 1000), 1100u);
  EXPECT_EQ(index.point(900 * 1000 - 1), 100u);  // conservative: the replaced samples are gone
}

TEST(CommitTimeIndex, BoundedWhateverTheRetention) {
  for (auto o : {retain(std::chrono::hours(1)), retain(std::chrono::seconds(30), std::chrono::hours(24 * 7))}) {
    auto index = CommitTimeIndex::for_retention(o);
    auto horizon = std::max(o.retain_for, o.retain_max.value_or(std::chrono::seconds(0))).count() * kS;
    std::size_t most = 0;
    // A commit every second for twice the horizon (the index pruned as retention does every pass).
    std::int64_t end = 2 * horizon;
    for (std::int64_t t = 0; t < end; t += kS) {
      index.add(static_cast<std::uint64_t>(t / kS + 1), t);
      if (t % (10 * kS) == 0) index.prune(t);
      most = std::max(most, index.size());
    }
    EXPECT_LE(most, 4096u + 16) << o.retain_for.count();
    EXPECT_GT(most, 100u);
    // Still answers the oldest query it must: now - horizon, within one spacing.
    auto now = end - kS;
    index.prune(now);
    auto p = index.point(now - horizon);
    ASSERT_TRUE(p.has_value());
    auto spacing = std::max(kS, horizon / 4096);
    EXPECT_LE(static_cast<std::int64_t>(*p - 1) * kS, now - horizon);
    EXPECT_GE(static_cast<std::int64_t>(*p - 1) * kS, now - horizon - 2 * spacing);
  }
  // Never pruned: the hard cap drops the oldest samples (which only ever means trimming less).
  CommitTimeIndex index(kS, 3600 * kS);
  for (std::int64_t s = 0; s < 20'000; ++s) index.add(static_cast<std::uint64_t>(s + 1), s * kS);
  EXPECT_EQ(index.size(), CommitTimeIndex::kMaxSamples);
  EXPECT_EQ(index.point(0), std::nullopt);
}

TEST(CommitTimeIndex, PruneKeepsWhatTheOldestQueryNeeds) {
  CommitTimeIndex index(kS, 60 * kS);
  for (std::int64_t s = 0; s < 300; ++s) index.add(static_cast<std::uint64_t>(s + 1), s * kS);
  auto before = index.point(299 * kS - 60 * kS);
  index.prune(299 * kS);
  EXPECT_EQ(index.point(299 * kS - 60 * kS), before);
  EXPECT_LE(index.size(), 62u);
  EXPECT_EQ(index.point(299 * kS - 61 * kS), std::nullopt);
}

StreamId id(std::uint64_t ms, std::uint64_t seq = 1) { return {ms, seq}; }

GroupView group(const std::string& name, StreamId last, std::optional<std::uint64_t> read) {
  GroupView g;
  g.name = name;
  g.last_delivered = last;
  g.entries_read = read;
  g.need = {last.ms, last.seq + 1};
  return g;
}

TEST(RetentionLosses, UnreadGoneCountsWhatTheGroupNeverGot) {
  // 50 entries 1-1 … 50-1 added; the stream holds 21-1 … 50-1.
  auto g = group("g", id(3), 3);
  EXPECT_EQ(unread_gone(g, 50, 30, id(21)), 17u);  // 4-1 … 20-1
  EXPECT_EQ(unread_gone(group("g", id(20), 20), 50, 30, id(21)), 0u);  // read up to the gap: nothing lost
  EXPECT_EQ(unread_gone(group("g", id(25), std::nullopt), 50, 30, id(21)), 0u);  // reading what is there
  EXPECT_EQ(unread_gone(group("g", id(3), std::nullopt), 50, 30, id(21)), std::nullopt);  // Redis cannot tell
  EXPECT_EQ(unread_gone(group("g", StreamId{}, std::nullopt), 50, 30, id(21)), 20u);  // created at 0, never read
  EXPECT_EQ(unread_gone(group("g", id(3), 3), 50, 0, std::nullopt), 47u);  // all trimmed
  EXPECT_EQ(unread_gone(group("g", id(3), 3), 50, 60, id(21)), 0u);  // odd counts never underflow
}

TrimResult result(std::uint64_t added, std::uint64_t len_before, std::optional<StreamId> first_before,
                  std::uint64_t len_after, std::optional<StreamId> first_after, std::vector<GroupView> groups) {
  TrimResult r;
  r.key = "p:public.t";
  r.entries_added = added;
  r.length_before = len_before;
  r.first_before = first_before;
  r.length_after = len_after;
  r.first_after = first_after;
  r.trimmed = len_before - len_after;
  r.rule = len_before > len_after ? TrimRule::Group : TrimRule::None;
  r.groups = std::move(groups);
  return r;
}

bool has(const Assessment& a, const std::string& text) {
  for (const auto& n : a.notices) {
    if (n.text.find(text) != std::string::npos) return true;
  }
  return false;
}

TEST(RetentionLosses, MaxlenLossIsWarnedOncePerGroupAndCountedAsItGrows) {
  std::map<std::string, GroupMemory> memory;
  auto lagging = group("slow", id(3), 3);
  auto caught_up = group("fast", id(50), 50);
  auto a = assess(result(50, 30, id(21), 30, id(21), {lagging, caught_up}), memory, "");
  ASSERT_EQ(a.notices.size(), 1u);
  EXPECT_EQ(a.notices[0].level, RetentionNotice::Level::Warn);
  EXPECT_EQ(a.notices[0].text, "retention: --maxlen trimmed 17 entries group 'slow' of stream p:public.t had not read");
  EXPECT_EQ(a.unread_trimmed, 17u);
  // Nothing new: nothing said, nothing counted.
  a = assess(result(50, 30, id(21), 30, id(21), {lagging, caught_up}), memory, "");
  EXPECT_TRUE(a.notices.empty());
  EXPECT_EQ(a.unread_trimmed, 0u);
  // Ten more added and trimmed: counted, not warned again.
  caught_up = group("fast", id(60), 60);
  a = assess(result(60, 30, id(31), 30, id(31), {lagging, caught_up}), memory, "");
  EXPECT_TRUE(a.notices.empty());
  EXPECT_EQ(a.unread_trimmed, 10u);
}

// The metric counts per group, as the README says: an entry two groups had not read counts twice.
TEST(RetentionLosses, EachLaggingGroupsLossIsCountedAndWarned) {
  std::map<std::string, GroupMemory> memory;
  auto a = assess(result(50, 30, id(21), 30, id(21), {group("a", id(3), 3), group("b", id(10), 10)}), memory, "");
  EXPECT_EQ(a.unread_trimmed, 17u + 10u);  // 'a' lost 4-1 … 20-1, 'b' 11-1 … 20-1
  EXPECT_EQ(a.notices.size(), 2u);
  EXPECT_TRUE(has(a, "--maxlen trimmed 17 entries group 'a'"));
  EXPECT_TRUE(has(a, "--maxlen trimmed 10 entries group 'b'"));
}

TEST(RetentionLosses, AGroupPastTheTrimmedEntriesLostNothing) {
  std::map<std::string, GroupMemory> memory;
  // Its last-delivered entry itself is gone (walstream's IDs leave gaps: 20-1 is followed by 21-1 here,
  // by another LSN in life), but it had read everything before the first entry.
  auto a = assess(result(50, 30, id(21), 30, id(21), {group("g", id(20), 20)}), memory, "");
  EXPECT_TRUE(a.notices.empty());
  // Redis cannot count for this one, and no pass saw an entry after its position go: no false alarm.
  a = assess(result(50, 30, id(21), 30, id(21), {group("h", id(15), std::nullopt)}), memory, "");
  EXPECT_TRUE(a.notices.empty());
  EXPECT_EQ(a.unread_trimmed, 0u);
}

TEST(RetentionLosses, UnknownCountIsSaidWhenAnEntryAfterTheGroupWentUnread) {
  std::map<std::string, GroupMemory> memory;
  auto g = group("g", id(15), std::nullopt);
  g.next_after = id(16);
  auto a = assess(result(50, 40, id(11), 40, id(11), {g}), memory, "");
  EXPECT_TRUE(a.notices.empty());
  // 16-1 is gone and the group never got it.
  a = assess(result(60, 40, id(21), 40, id(21), {g}), memory, "");
  ASSERT_EQ(a.notices.size(), 1u);
  EXPECT_NE(a.notices[0].text.find("--maxlen trimmed unknown entries group 'g' of stream p:public.t had not read"),
            std::string::npos)
      << a.notices[0].text;
  EXPECT_EQ(a.unread_trimmed, 0u);  // not counted: the count is unknown
}

TEST(RetentionLosses, PendingEntriesTrimmedAreWarnedOnce) {
  std::map<std::string, GroupMemory> memory;
  auto g = group("g", id(30), 30);
  g.pending = 3;
  g.oldest_pending = id(5);
  auto a = assess(result(50, 30, id(21), 30, id(21), {g}), memory, "");
  ASSERT_EQ(a.notices.size(), 1u);
  EXPECT_NE(a.notices[0].text.find("entries pending in group 'g' of stream p:public.t"), std::string::npos);
  a = assess(result(50, 30, id(21), 30, id(21), {g}), memory, "");
  EXPECT_TRUE(a.notices.empty());
}

TEST(RetentionLosses, RetainMaxTakingWhatAGroupNeedsIsWarnedWithTheCountAndNotBlamedOnMaxlen) {
  std::map<std::string, GroupMemory> memory;
  auto abandoned = group("old", StreamId{}, std::nullopt);  // created at 0, never read
  auto current = group("new", id(50), 50);
  auto r = result(50, 50, id(1), 20, id(31), {abandoned, current});
  r.rule = TrimRule::RetainMax;
  r.cut = id(31, 0);
  auto a = assess(r, memory, "2h");
  ASSERT_EQ(a.notices.size(), 1u);
  EXPECT_EQ(a.notices[0].text.rfind("retention: --retain-max 2h trimmed 30 entries group 'old' of stream p:public.t "
                                    "had not read",
                                    0),
            0u)
      << a.notices[0].text;
  EXPECT_EQ(a.retain_max_trimmed, 30u);
  EXPECT_EQ(a.unread_trimmed, 0u);
  // The next pass finds the gap this one made: it is not --maxlen's.
  a = assess(result(50, 20, id(31), 20, id(31), {abandoned, current}), memory, "2h");
  EXPECT_TRUE(a.notices.empty());
  EXPECT_EQ(a.unread_trimmed, 0u);
  // More taken later: counted, said once only.
  r = result(60, 30, id(31), 10, id(51), {abandoned, group("new", id(60), 60)});
  r.rule = TrimRule::RetainMax;
  a = assess(r, memory, "2h");
  EXPECT_TRUE(a.notices.empty());
  EXPECT_EQ(a.retain_max_trimmed, 20u);
}

TEST(RetentionLosses, RetainMaxThatStoppedShortOfAGroupSaysNothing) {
  std::map<std::string, GroupMemory> memory;
  auto g = group("g", id(40), 40);  // needs 40-2 on; the trim (whole nodes) stopped at 31-1
  auto r = result(50, 50, id(1), 20, id(31), {g});
  r.rule = TrimRule::RetainMax;
  auto a = assess(r, memory, "1d");
  EXPECT_TRUE(a.notices.empty());
  EXPECT_EQ(a.retain_max_trimmed, 0u);
}

TEST(RetentionLosses, GroupsGoneAreForgotten) {
  std::map<std::string, GroupMemory> memory;
  assess(result(50, 30, id(21), 30, id(21), {group("a", id(3), 3), group("b", id(50), 50)}), memory, "");
  EXPECT_EQ(memory.size(), 2u);
  assess(result(50, 30, id(21), 30, id(21), {group("b", id(50), 50)}), memory, "");
  EXPECT_EQ(memory.size(), 1u);
  // Recreated: a new group, warned about again.
  auto a = assess(result(50, 30, id(21), 30, id(21), {group("a", id(3), 3)}), memory, "");
  EXPECT_TRUE(has(a, "group 'a'"));
}

}  // namespace
}  // namespace walstream
