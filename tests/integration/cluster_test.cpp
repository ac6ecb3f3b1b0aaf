// Redis Cluster (issue 12 §2) against a real 3 + 3 cluster (cluster_harness.h): the jobs that read
// and write Redis outside the streaming writer — `walstream tail`, `walstream status`, the slot's
// checkpoint and snapshot state (SlotStore), retention — find the cluster from any seed, route every
// key to the master serving its slot, and scan every master. The writer: cluster_stream_test.
#include <gtest/gtest.h>

#include <rapidjson/document.h>

#include <fmt/format.h>

#include <chrono>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cluster_harness.h"
#include "harness.h"
#include "keys.h"
#include "redis_url.h"
#include "retention.h"
#include "slot_store.h"
#include "stream_writer.h"

using namespace harness;
using namespace std::chrono_literals;

namespace {

RedisCluster& cluster() {
  static RedisCluster c;
  return c;
}

// Names for which `key(name)` lands on every master at least `per_master` times, in order.
std::vector<std::string> spread_names(const std::function<std::string(const std::string&)>& key, int per_master,
                                      const std::string& stem = "t") {
  auto& c = cluster();
  std::map<int, int> count;
  for (int p : c.master_ports()) count[p] = 0;
  std::vector<std::string> out;
  for (int i = 0; out.size() < static_cast<std::size_t>(per_master) * count.size(); ++i) {
    if (i > 1000) throw std::runtime_error("no spread of names over the masters");
    auto name = stem + std::to_string(i);
    int& n = count[c.master_of_key(key(name))];
    if (n >= per_master) continue;
    ++n;
    out.push_back(name);
  }
  return out;
}

std::string json_line(const std::string& output) {
  std::size_t start = 0;
  for (auto nl = output.find('\n'); nl != std::string::npos; nl = output.find('\n', start)) {
    if (output[start] == '{') return output.substr(start, nl - start);
    start = nl + 1;
  }
  throw std::runtime_error("no JSON line in:\n" + output);
}

std::vector<std::string> json_lines(const std::string& output) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (auto nl = output.find('\n'); nl != std::string::npos; nl = output.find('\n', start)) {
    if (output[start] == '{') out.push_back(output.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

TEST(Cluster, SeedsFindTheClusterPastADeadOneAndAPlainRedisIsNoCluster) {
  auto& c = cluster();
  const auto dead = free_port();
  auto url = walstream::parse_redis_url(fmt::format("redis://127.0.0.1:{},127.0.0.1:{}", dead, c.master_ports()[0]));
  auto client = walstream::connect_redis(url, 2s);
  EXPECT_TRUE(client->is_cluster());
  EXPECT_EQ(client->masters().size(), 3u);
  EXPECT_EQ(client->describe(), fmt::format("Redis Cluster via 127.0.0.1:{},127.0.0.1:{}/0", dead, c.master_ports()[0]));

  // One node of a cluster, named alone, is enough too.
  EXPECT_TRUE(walstream::connect_redis(walstream::parse_redis_url(c.seed_url()))->is_cluster());
  // A plain Redis named alone is one Redis; in a list of seeds it is a mistake, said in one line.
  EXPECT_FALSE(walstream::connect_redis(walstream::parse_redis_url(harness::redis().url()))->is_cluster());
  try {
    walstream::connect_redis(
        walstream::parse_redis_url(fmt::format("redis://127.0.0.1:{},127.0.0.1:{}", harness::redis().port(), dead)));
    FAIL() << "a plain Redis among seeds was taken";
  } catch (const walstream::RedisError& e) {
    EXPECT_EQ(e.kind(), walstream::RedisError::Kind::Fatal);
    EXPECT_NE(std::string(e.what()).find("is not a cluster node (cluster_enabled:0)"), std::string::npos) << e.what();
  }
  // A cluster has database 0 only.
  try {
    walstream::connect_redis(walstream::parse_redis_url(c.seed_url() + "/2"));
    FAIL() << "a cluster with /2 was taken";
  } catch (const walstream::RedisError& e) {
    EXPECT_EQ(e.kind(), walstream::RedisError::Kind::Fatal);
    EXPECT_NE(std::string(e.what()).find("a cluster has database 0 only"), std::string::npos) << e.what();
  }
}

// Streams on all three masters: a plain read prints every entry once in ID (commit) order, a group read
// prints each once and acknowledges it on the stream's own master; the URL's first seed is dead.
TEST(Cluster, TailReadsStreamsOnEveryMasterInIdOrder) {
  auto& c = cluster();
  const std::string prefix = "tail1:";
  walstream::Keys keys{prefix, "s", true};
  auto names = spread_names([&](const std::string& n) { return keys.messages(n); }, 2, "m");
  const int per_stream = 5;
  std::vector<std::string> expected;
  for (int j = 0; j < per_stream; ++j) {
    for (std::size_t i = 0; i < names.size(); ++i) {
      const auto key = keys.messages(names[i]);
      const auto id = fmt::format("{}-1", j * names.size() + i + 1);
      const auto n = fmt::format("{}.{}", i, j);
      redis_command(c.master_of_key(key), {"XADD", key, id, "n", n});
      expected.push_back(fmt::format(R"({{"stream_id":"{}","id":"{}","n":"{}"}})", key, id, n));
    }
  }
  const auto url = fmt::format("redis://127.0.0.1:{},{}", free_port(), c.seed_url().substr(8));
  std::vector<std::string> args{"tail", "--redis", url, "--prefix", prefix, "--block-ms", "200"};
  for (const auto& n : names) args.insert(args.end(), {"--messages", n});

  auto plain = run_walstream(with(args, {"--from-start", "--count", std::to_string(expected.size())}), {}, 30s);
  ASSERT_EQ(plain.code, 0) << plain.output;
  EXPECT_EQ(json_lines(plain.output), expected) << plain.output;

  // A group, started before the entries it prints arrive (the read waits across three masters).
  auto grouped = with(args, {"--group", "g", "--consumer", "c1", "--count", std::to_string(names.size() * 2)});
  Walstream reader(grouped);
  ASSERT_TRUE(wait_until([&] {
    for (const auto& n : names) {
      auto key = keys.messages(n);
      auto groups = redis_command(c.master_of_key(key), {"XINFO", "GROUPS", key});
      if (groups.empty()) return false;
    }
    return true;
  })) << reader.log();
  std::vector<std::string> live;
  for (int j = 0; j < 2; ++j) {
    for (std::size_t i = 0; i < names.size(); ++i) {
      const auto key = keys.messages(names[i]);
      const auto id = fmt::format("{}-1", 1000 + j * names.size() + i);
      redis_command(c.master_of_key(key), {"XADD", key, id, "n", "live"});
      live.push_back(fmt::format(R"({{"stream_id":"{}","id":"{}","n":"live"}})", key, id));
    }
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(reader.wait(30s), 0) << reader.log();
  auto printed = json_lines(reader.log());
  std::multiset<std::string> got(printed.begin(), printed.end()), want(live.begin(), live.end());
  EXPECT_EQ(got, want) << reader.log();  // each once; ID order holds within one round of reads only
  for (const auto& n : names) {
    auto key = keys.messages(n);
    EXPECT_EQ(redis_command(c.master_of_key(key), {"XPENDING", key, "g"}).at(0), "0") << key;
  }
}

TEST(Cluster, StatusScansEveryMasterAndReadsTheSlotsKeysInItsSlot) {
  auto& c = cluster();
  Scope s;
  s.sql(fmt::format("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION {} FOR ALL TABLES", s.publication));
  query_one(s.conninfo, fmt::format("SELECT pg_create_logical_replication_slot('{}', 'pgoutput')", s.slot));
  const auto confirmed =
      query_one(s.conninfo, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '" + s.slot + "'");
  walstream::Keys keys{s.prefix, s.slot, true};
  redis_command(c.master_of_key(keys.checkpoint()), {"HSET", keys.checkpoint(), "lsn", confirmed});
  redis_command(c.master_of_key(keys.snapshot_state()), {"HSET", keys.snapshot_state(), "status", "done"});
  auto tables = spread_names([&](const std::string& n) { return keys.stream("public." + n); }, 2);
  std::set<int> masters;
  for (std::size_t i = 0; i < tables.size(); ++i) {
    const auto key = keys.stream("public." + tables[i]);
    masters.insert(c.master_of_key(key));
    for (std::size_t j = 1; j <= i + 1; ++j) {
      redis_command(c.master_of_key(key), {"XADD", key, fmt::format("{}-1", j), "ts", fmt::format("ts{}", j)});
    }
  }
  ASSERT_EQ(masters.size(), 3u);
  // Not a subscriber's stream: a staging stream (in its table's slot).
  const auto staging = keys.staging("public." + tables[0]);
  redis_command(c.master_of_key(staging), {"XADD", staging, "1-1", "f", "v"});

  auto r = run_walstream({"status", "--pg", s.conninfo, "--redis", c.seed_url(), "--slot", s.slot, "--publication",
                          s.publication, "--prefix", s.prefix, "--json"},
                         {}, 60s);
  rapidjson::Document d;
  const auto line = json_line(r.output);
  d.Parse(line.c_str());
  ASSERT_FALSE(d.HasParseError()) << r.output;
  EXPECT_TRUE(d["redis"]["reachable"].GetBool()) << r.output;
  EXPECT_TRUE(d["redis"]["cluster"].GetBool()) << r.output;
  EXPECT_EQ(d["redis"]["masters"].GetUint64(), 3u);
  EXPECT_EQ(std::string(d["checkpoint"]["key"].GetString()), keys.checkpoint());
  EXPECT_TRUE(d["checkpoint"]["exists"].GetBool()) << r.output;
  EXPECT_EQ(std::string(d["checkpoint"]["lsn"].GetString()), confirmed);
  EXPECT_FALSE(d["checkpoint"]["behind_slot"].GetBool());
  EXPECT_EQ(std::string(d["snapshot"]["key"].GetString()), keys.snapshot_state());
  EXPECT_EQ(std::string(d["snapshot"]["state"]["status"].GetString()), "done");
  ASSERT_EQ(d["streams"].Size(), tables.size()) << r.output;
  std::map<std::string, const rapidjson::Value*> listed;
  for (const auto& st : d["streams"].GetArray()) listed[st["key"].GetString()] = &st;
  for (std::size_t i = 0; i < tables.size(); ++i) {
    const auto key = keys.stream("public." + tables[i]);
    ASSERT_TRUE(listed.count(key)) << key << "\n" << r.output;
    EXPECT_EQ((*listed[key])["length"].GetInt64(), static_cast<std::int64_t>(i + 1));
    EXPECT_EQ(std::string((*listed[key])["first_id"].GetString()), "1-1");
    EXPECT_EQ(std::string((*listed[key])["last_id"].GetString()), fmt::format("{}-1", i + 1));
  }
}

// SlotStore's keys on a cluster: the slot-wide ones in the slot's hash slot (finish_snapshot's
// MULTI/EXEC holds two of them), staging streams in their table's, so RENAME publishes them.
TEST(Cluster, SlotStoreKeepsStateInTheSlotsHashSlotAndRenamesStagingOntoStreams) {
  auto& c = cluster();
  const std::string prefix = "store1:";
  walstream::SlotStore store(walstream::parse_redis_url(c.seed_url()), walstream::Keys{prefix, "s1"});
  ASSERT_TRUE(store.cluster());
  const auto& keys = store.keys();
  EXPECT_EQ(keys.checkpoint(), "store1:checkpoint:{store1:s1}");

  EXPECT_EQ(store.checkpoint(), std::nullopt);
  store.mark_creating();
  store.set_snapshot_status("copying", "0/10");
  auto tables = spread_names([&](const std::string& n) { return keys.stream("public." + n); }, 2);
  std::map<std::string, std::string> staged;  // staging key -> stream key
  for (const auto& t : tables) {
    auto staging = store.open_staging("public." + t);
    EXPECT_EQ(staging, keys.staging("public." + t));
    const auto target = keys.stream("public." + t);
    ASSERT_EQ(c.master_of_key(staging), c.master_of_key(target)) << staging;
    for (int j = 1; j <= 3; ++j) {
      redis_command(c.master_of_key(staging), {"XADD", staging, fmt::format("15-{}", j), "t", t});
    }
    staged[staging] = target;
  }
  const int state_master = c.master_of_key(keys.checkpoint());
  EXPECT_EQ(redis_command(state_master, {"SCARD", keys.staging_set()}).at(0), std::to_string(tables.size()));

  // RENAME only: a writer that must not be used (it points at a plain Redis of its own).
  walstream::StreamWriter::Options wo;
  wo.url = walstream::parse_redis_url(redis().url());
  walstream::StreamWriter unused(wo);
  EXPECT_EQ(store.publish_staging(unused, [](const std::function<bool()>&) { throw std::logic_error("waited"); }),
            tables.size());
  store.finish_snapshot(16);
  for (const auto& [staging, target] : staged) {
    const int master = c.master_of_key(target);
    EXPECT_EQ(redis_command(master, {"EXISTS", staging}).at(0), "0") << staging;
    auto entries = xrange(master, target);
    ASSERT_EQ(entries.size(), 3u) << target;
    EXPECT_EQ(entries.front().id, "15-1");
  }
  EXPECT_EQ(redis_command(state_master, {"EXISTS", keys.staging_set()}).at(0), "0");
  EXPECT_EQ(redis_command(state_master, {"HGET", keys.snapshot_state(), "status"}).at(0), "done");
  EXPECT_EQ(redis_command(state_master, {"HGET", keys.checkpoint(), "lsn"}).at(0), "0/10");
  auto cp = store.checkpoint();
  ASSERT_TRUE(cp);
  EXPECT_EQ(cp->lsn, 16u);
  EXPECT_FALSE(cp->creating);
  EXPECT_EQ(store.snapshot_status(), "done");
  EXPECT_EQ(redis_command(unused.node().port, {"DBSIZE"}).at(0), "0");

  store.forget_snapshot();
  store.forget_checkpoint();
  EXPECT_EQ(store.checkpoint(), std::nullopt);
  EXPECT_EQ(store.snapshot_status(), "");
}

TEST(Cluster, RetentionTrimsStreamsOnEveryMaster) {
  auto& c = cluster();
  for (int p : c.master_ports()) redis_command(p, {"CONFIG", "SET", "stream-node-max-entries", "1"});  // exact ~
  const std::string prefix = "ret1:";
  walstream::Keys keys{prefix, "s", true};
  auto tables = spread_names([&](const std::string& n) { return keys.stream("public." + n); }, 2);
  for (const auto& t : tables) {
    const auto key = keys.stream("public." + t);
    for (int j = 1; j <= 10; ++j) redis_command(c.master_of_key(key), {"XADD", key, fmt::format("{}-1", j), "f", "v"});
  }
  walstream::RetentionOptions o;
  o.interval = 10ms;
  o.retain_for = 1s;
  walstream::Retention retention(walstream::parse_redis_url(c.seed_url()), prefix, o);
  // Everything below LSN 6 was committed two seconds ago: older than --retain-for.
  const auto now = now_us();
  retention.session_started(6, now - 2'000'000);
  for (int i = 0; i < 1000 && retention.passes() == 0; ++i) {
    for (const auto& n : retention.tick(now)) {
      EXPECT_NE(n.level, walstream::RetentionNotice::Level::Error) << n.text;
      EXPECT_NE(n.level, walstream::RetentionNotice::Level::Warn) << n.text;
    }
  }
  ASSERT_EQ(retention.passes(), 1u);
  EXPECT_EQ(retention.trimmed(), 5 * tables.size());
  for (const auto& t : tables) {
    const auto key = keys.stream("public." + t);
    auto entries = xrange(c.master_of_key(key), key);
    ASSERT_EQ(entries.size(), 5u) << key;
    EXPECT_EQ(entries.front().id, "6-1") << key;
  }
  for (int p : c.master_ports()) redis_command(p, {"CONFIG", "SET", "stream-node-max-entries", "100"});
}
