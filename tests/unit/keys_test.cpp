// keys.h: the names on one Redis are the ones walstream always used; on a cluster every companion of a
// stream is in the stream's hash slot and every slot-wide key in the replication slot's, all distinct.
#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "cluster_slots.h"
#include "keys.h"

using namespace walstream;

TEST(Keys, OneRedisKeepsItsNames) {
  Keys k{"walstream:", "s1"};
  EXPECT_EQ(k.stream("public.users"), "walstream:public.users");
  EXPECT_EQ(k.registry("public.users"), "walstream:schema:public.users");
  EXPECT_EQ(k.staging("public.users"), "walstream:staging:public.users");
  EXPECT_EQ(k.snapshot_state(), "walstream:snapshot:s1");
  EXPECT_EQ(k.staging_set(), "walstream:snapshot:s1:staging");
  EXPECT_EQ(k.checkpoint(), "walstream:checkpoint:s1");
  EXPECT_EQ(k.epoch(), "walstream:epoch:s1");
  EXPECT_EQ(k.backfill(), "walstream:backfill:s1");
}

TEST(Keys, ClusterNames) {
  Keys k{"walstream:", "s1", true};
  EXPECT_EQ(k.stream("public.users"), "walstream:public.users");
  EXPECT_EQ(k.registry("public.users"), "walstream:schema:{walstream:public.users}");
  EXPECT_EQ(k.staging("public.users"), "walstream:staging:{walstream:public.users}");
  EXPECT_EQ(k.group_checkpoint("walstream:public.users"), "walstream:checkpoint:s1:{walstream:public.users}");
  EXPECT_EQ(k.group_epoch("walstream:public.users"), "walstream:epoch:s1:{walstream:public.users}");
  EXPECT_EQ(k.snapshot_state(), "walstream:snapshot:{walstream:s1}");
  EXPECT_EQ(k.staging_set(), "walstream:snapshot:{walstream:s1}:staging");
  EXPECT_EQ(k.checkpoint(), "walstream:checkpoint:{walstream:s1}");
  EXPECT_EQ(k.epoch(), "walstream:epoch:{walstream:s1}");
  EXPECT_EQ(k.backfill(), "walstream:backfill:{walstream:s1}");
  EXPECT_EQ(k.groups(), "walstream:groups:{walstream:s1}");
}

// What must be atomic with a stream (RENAME staging -> stream, a chunk's registry HSET and checkpoint)
// is in its slot; what is the replication slot's is in one slot.
void expect_layout(const Keys& k, const std::vector<std::string>& tables) {
  std::set<std::string> names;
  auto add = [&](const std::string& key) { EXPECT_TRUE(names.insert(key).second) << "twice: " << key; };
  for (const auto& t : tables) {
    auto stream = k.stream(t);
    auto slot = key_slot(stream);
    for (const auto& companion : {k.registry(t), k.staging(t), k.group_checkpoint(stream), k.group_epoch(stream)}) {
      EXPECT_EQ(key_slot(companion), slot) << companion << " is not in the slot of " << stream;
      add(companion);
    }
    add(stream);
    EXPECT_EQ(k.stream_of_staging(k.staging(t)), stream);
  }
  auto slot = key_slot(k.checkpoint());
  for (const auto& key : {k.snapshot_state(), k.staging_set(), k.epoch(), k.backfill(), k.groups()}) {
    EXPECT_EQ(key_slot(key), slot) << key;
    add(key);
  }
  add(k.checkpoint());
}

TEST(Keys, ClusterCompanionsShareTheirStreamsSlot) {
  std::vector<std::string> tables;
  for (int i = 0; i < 200; ++i) tables.push_back("public.t" + std::to_string(i));
  tables.push_back("public.\"a{b}\"");  // a tag inside the table name: the stream's slot is the tag's
  expect_layout(Keys{"walstream:", "s1", true}, tables);
  // Streams spread over the slots (and so over the masters).
  std::set<std::uint16_t> slots;
  for (const auto& t : tables) slots.insert(key_slot(Keys{"walstream:", "s1", true}.stream(t)));
  EXPECT_GT(slots.size(), 190u);
}

TEST(Keys, ATaggedPrefixPutsEverythingInOneSlotAndKeepsNamesApart) {
  Keys k{"{app}:", "s1", true};
  std::vector<std::string> tables = {"public.a", "public.b", "public.c"};
  expect_layout(k, tables);
  EXPECT_EQ(k.registry("public.a"), "{app}:schema:{app}{app}:public.a");
  EXPECT_EQ(key_slot(k.stream("public.a")), key_slot(k.checkpoint()));
}

TEST(Keys, AStreamThatCannotBeTaggedIsOneLine) {
  // "{}x}": its first '{' has an empty tag, so the whole key is hashed, and it holds a '}'.
  Keys k{"walstream:", "s1", true};
  EXPECT_THROW(k.registry("{}x}"), std::invalid_argument);
  EXPECT_THROW(k.staging("public.\"a}b\""), std::invalid_argument);  // '}' and no tag at all
  Keys single{"walstream:", "s1"};
  EXPECT_EQ(single.registry("{}x}"), "walstream:schema:{}x}");
}

TEST(Keys, StagingKeysNameTheirStreams) {
  Keys single{"walstream:", "s1"};
  EXPECT_EQ(single.stream_of_staging("walstream:staging:public.a"), "walstream:public.a");
  EXPECT_EQ(single.stream_of_staging("walstream:public.a"), std::nullopt);
  Keys k{"walstream:", "s1", true};
  EXPECT_EQ(k.stream_of_staging("walstream:staging:{walstream:public.a}"), "walstream:public.a");
  EXPECT_EQ(k.stream_of_staging("walstream:staging:{x}walstream:{x}"), "walstream:{x}");
  EXPECT_EQ(k.stream_of_staging("walstream:staging:public.a"), std::nullopt);
  EXPECT_EQ(k.stream_of_staging("walstream:staging:{public.a"), std::nullopt);
}
