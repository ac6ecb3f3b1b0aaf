// ClusterClient (publisher/cluster_client.h) against a real Redis Cluster (3 masters + 3 replicas,
// cluster_harness.h): every command reaches the master serving its key, through a slot migration
// (MOVED after it, ASK in its middle) and a failover, and what it writes is what the servers hold.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <set>
#include <string>
#include <vector>

#include "cluster_client.h"
#include "cluster_harness.h"
#include "redis_url.h"

using namespace harness;
using namespace std::chrono_literals;
using walstream::ClusterClient;
using walstream::key_slot;

namespace {

RedisCluster& cluster() {
  static RedisCluster c;
  return c;
}

std::string text_of(const walstream::RedisReply& r) { return std::string(r.str()); }

// Keys in a given slot: "k<n>{tag}" with a tag found by search.
std::vector<std::string> keys_in_slot(std::uint16_t slot, int n) {
  std::string tag;
  for (int i = 0; tag.empty(); ++i) {
    auto t = fmt::format("t{}", i);
    if (key_slot(t) == slot) tag = t;
  }
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(fmt::format("k{}{{{}}}", i, tag));
  return out;
}

}  // namespace

TEST(ClusterClient, RoutesEveryKeyToItsMaster) {
  auto& c = cluster();
  ClusterClient client(walstream::parse_redis_url(c.seed_url()));
  EXPECT_EQ(client.masters().size(), 3u);
  std::set<int> used;
  for (int i = 0; i < 300; ++i) {
    const auto key = fmt::format("walstream:public.t{}", i);
    auto r = client.command(key, {"SET", key, std::to_string(i)});
    ASSERT_FALSE(r.is_error()) << key << ": " << text_of(r);
    // The node the server's own view names holds it.
    const int port = c.master_of_key(key);
    used.insert(port);
    EXPECT_EQ(redis_command(port, {"GET", key}).at(0), std::to_string(i)) << key;
  }
  EXPECT_EQ(used.size(), 3u);
  EXPECT_EQ(client.moved(), 0);
  EXPECT_EQ(client.asked(), 0);
}

TEST(ClusterClient, FollowsMovedAfterAMigrationAndAskInTheMiddleOfOne) {
  auto& c = cluster();
  ClusterClient client(walstream::parse_redis_url(c.seed_url()));
  const std::uint16_t slot = 4242;
  const int from = c.master_of_slot(slot);
  int to = 0;
  for (int p : c.master_ports()) {
    if (p != from) to = p;
  }
  auto keys = keys_in_slot(slot, 20);
  for (const auto& k : keys) ASSERT_FALSE(client.command(k, {"SET", k, "v-" + k}).is_error());

  // In the middle: half the keys moved. A moved key is answered ASK by the source: read on the target.
  c.begin_migration(slot, from, to);
  ASSERT_EQ(c.migrate_keys(slot, from, to, 10), 10u);
  int asked_before = static_cast<int>(client.asked());
  for (const auto& k : keys) {
    auto r = client.command(k, {"GET", k});
    ASSERT_FALSE(r.is_error()) << k << ": " << text_of(r);
    EXPECT_EQ(text_of(r), "v-" + k) << k;
  }
  EXPECT_GE(client.asked() - asked_before, 10);
  // A new key in the migrating slot: the source asks for it to go to the target.
  const std::string fresh = keys_in_slot(slot, 21).back();
  ASSERT_FALSE(client.command(fresh, {"SET", fresh, "fresh"}).is_error());

  // After it: the slot is the target's; the client's map is stale and MOVED sets it right.
  c.migrate_keys(slot, from, to);
  c.finish_migration(slot, from, to);
  c.wait_ready();
  const auto moved_before = client.moved();
  for (const auto& k : keys) {
    auto r = client.command(k, {"GET", k});
    ASSERT_FALSE(r.is_error()) << k << ": " << text_of(r);
    EXPECT_EQ(text_of(r), "v-" + k);
  }
  EXPECT_EQ(client.moved() - moved_before, 1);  // once: the map was read again
  EXPECT_EQ(client.slots().master_of(slot)->port, to);
  auto r = client.command(fresh, {"GET", fresh});
  EXPECT_EQ(text_of(r), "fresh");
}

// A transaction (SlotStore's checkpoint + snapshot state) goes whole to one node: before, during (ASK:
// ASKING before MULTI, so every queued command is taken by the importing node) and after a migration
// (MOVED: sent again whole to the new master), and a refusal while queueing applies nothing.
TEST(ClusterClient, TransactionsGoWholeToTheSlotsNodeThroughAMigration) {
  auto& c = cluster();
  ClusterClient client(walstream::parse_redis_url(c.seed_url()));
  const std::uint16_t slot = 9001;
  const int from = c.master_of_slot(slot);
  int to = 0;
  for (int p : c.master_ports()) {
    if (p != from) to = p;
  }
  auto keys = keys_in_slot(slot, 3);
  auto write = [&](const std::string& value) {
    client.transaction(keys[0], {{"HSET", keys[0], "lsn", value}, {"HDEL", keys[0], "creating"},
                                 {"HSET", keys[1], "status", value}});
  };
  ASSERT_NO_THROW(write("1"));
  EXPECT_EQ(redis_command(from, {"HGET", keys[0], "lsn"}).at(0), "1");
  EXPECT_EQ(redis_command(from, {"HGET", keys[1], "status"}).at(0), "1");

  // In the middle, both keys moved: the source answers ASK for them, the transaction runs on the target.
  c.begin_migration(slot, from, to);
  ASSERT_EQ(c.migrate_keys(slot, from, to), 2u);
  const auto asked = client.asked();
  ASSERT_NO_THROW(write("2"));
  EXPECT_EQ(client.asked() - asked, 1);

  // (The importing node answers a plain command for the slot with MOVED until the slot is its own.)
  c.finish_migration(slot, from, to);
  c.wait_ready();
  EXPECT_EQ(redis_command(to, {"HGET", keys[0], "lsn"}).at(0), "2");
  EXPECT_EQ(redis_command(to, {"HGET", keys[1], "status"}).at(0), "2");
  const auto moved = client.moved();
  ASSERT_NO_THROW(write("3"));
  EXPECT_EQ(client.moved() - moved, 1);
  EXPECT_EQ(redis_command(to, {"HGET", keys[0], "lsn"}).at(0), "3");
  EXPECT_EQ(redis_command(to, {"HGET", keys[1], "status"}).at(0), "3");

  // A command refused while queueing (wrong number of arguments): EXEC never runs, nothing of it is applied.
  ASSERT_FALSE(client.command(keys[2], {"SET", keys[2], "a string"}).is_error());
  EXPECT_THROW(client.transaction(keys[0], {{"HSET", keys[0], "lsn", "4"}, {"HSET", keys[2]}}), walstream::RedisError);
  EXPECT_EQ(redis_command(to, {"HGET", keys[0], "lsn"}).at(0), "3");
  // A key of another slot (MOVED while queueing, or CROSSSLOT at EXEC): a refusal, not a redirection.
  EXPECT_THROW(client.transaction(keys[0], {{"HSET", keys[0], "lsn", "5"}, {"HSET", "elsewhere", "f", "v"}}),
               walstream::RedisError);
  EXPECT_EQ(redis_command(to, {"HGET", keys[0], "lsn"}).at(0), "3");
}

TEST(ClusterClient, WritesReachTheNewMasterAfterAFailover) {
  auto& c = cluster();
  ClusterClient client(walstream::parse_redis_url(c.seed_url()));
  const std::string key = "walstream:public.orders";
  ASSERT_FALSE(client.command(key, {"SET", key, "before"}).is_error());
  const int old_master = c.master_of_key(key);
  int replica = 0;
  for (const auto& n : c.nodes()) {
    if (n.role == "replica" && n.master_port == old_master) replica = n.port;
  }
  ASSERT_NE(replica, 0);
  c.failover(replica);
  // The old master is a replica now: it answers MOVED (or the connection is dropped); either way the
  // write lands on the new master.
  walstream::RedisReply r = [&] {
    for (int attempt = 0;; ++attempt) {
      try {
        return client.command(key, {"SET", key, "after"});
      } catch (const walstream::RedisError& e) {
        if (attempt >= 2) throw;
        client.refresh();
      }
    }
  }();
  ASSERT_FALSE(r.is_error()) << text_of(r);
  EXPECT_EQ(redis_command(replica, {"GET", key}).at(0), "after");
  EXPECT_EQ(client.slots().master_of_key(key)->port, replica);
}

TEST(ClusterClient, ANodeThatIsNotInAClusterIsOneLine) {
  Redis plain;
  plain.start(false);
  try {
    ClusterClient client(walstream::parse_redis_url(plain.url()));
    FAIL() << "a plain Redis was taken for a cluster";
  } catch (const walstream::RedisError& e) {
    EXPECT_EQ(e.kind(), walstream::RedisError::Kind::Fatal);
    EXPECT_NE(std::string(e.what()).find("is not a cluster node"), std::string::npos) << e.what();
  }
}
