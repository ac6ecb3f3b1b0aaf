// redis:// URLs as users write them, and the one-line errors for the ones we cannot use.
#include <gtest/gtest.h>

#include "redis_url.h"

using walstream::parse_redis_url;

TEST(RedisUrl, ReadsHostPortAndDatabase) {
  auto u = parse_redis_url("redis://cache.internal:6380/2");
  EXPECT_EQ(u.host, "cache.internal");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.db, 2);
  EXPECT_TRUE(u.user.empty());
  EXPECT_TRUE(u.password.empty());
}

TEST(RedisUrl, DefaultsPortAndDatabase) {
  auto u = parse_redis_url("redis://localhost");
  EXPECT_EQ(u.host, "localhost");
  EXPECT_EQ(u.port, 6379);
  EXPECT_EQ(u.db, 0);
}

TEST(RedisUrl, ReadsUserAndPercentEncodedPassword) {
  auto u = parse_redis_url("redis://app:p%40ss%3Aword@10.0.0.1:6379/0");
  EXPECT_EQ(u.user, "app");
  EXPECT_EQ(u.password, "p@ss:word");
  EXPECT_EQ(u.host, "10.0.0.1");
}

TEST(RedisUrl, APasswordAloneUsesTheDefaultUser) {
  auto u = parse_redis_url("redis://:secret@h:1");
  EXPECT_EQ(u.user, "");
  EXPECT_EQ(u.password, "secret");
  auto v = parse_redis_url("redis://secret@h:1");
  EXPECT_EQ(v.password, "secret");
}

TEST(RedisUrl, ReadsBracketedIpv6) {
  auto u = parse_redis_url("redis://[::1]:7000");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 7000);
  EXPECT_EQ(u.display(), "[::1]:7000/0");
}

TEST(RedisUrl, DisplayNeverShowsTheCredentials) {
  auto u = parse_redis_url("redis://app:hunter2@h:6379/3");
  EXPECT_EQ(u.display(), "h:6379/3");
}

TEST(RedisUrl, RejectsWhatItCannotUse) {
  for (const char* bad : {"http://h:1", "redis://", "redis://h:0", "redis://h:70000", "redis://h:x",
                          "redis://h:1/db", "redis://u:p%4@h", "redis://[::1"}) {
    EXPECT_THROW(parse_redis_url(bad), std::invalid_argument) << bad;
  }
}

TEST(RedisUrl, RedissIsTls) {
  auto u = parse_redis_url("rediss://app:pw@cache.example.com:6380/2");
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.host, "cache.example.com");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.db, 2);
  EXPECT_FALSE(u.via_sentinel());
  EXPECT_FALSE(parse_redis_url("redis://h:1").tls);
}

TEST(RedisUrl, SentinelListsItsSentinelsAndNamesTheMaster) {
  auto u = parse_redis_url("redis-sentinel://app:s%40cret@10.0.0.1:5000,10.0.0.2,[::1]:5002/3#my%20master");
  ASSERT_TRUE(u.via_sentinel());
  EXPECT_FALSE(u.tls);
  EXPECT_EQ(u.master_name, "my master");
  EXPECT_EQ(u.user, "app");
  EXPECT_EQ(u.password, "s@cret");
  EXPECT_EQ(u.db, 3);
  ASSERT_EQ(u.sentinels.size(), 3u);
  EXPECT_EQ(u.sentinels[0], (walstream::RedisEndpoint{"10.0.0.1", 5000}));
  EXPECT_EQ(u.sentinels[1], (walstream::RedisEndpoint{"10.0.0.2", 26379}));  // Sentinel's default port
  EXPECT_EQ(u.sentinels[2], (walstream::RedisEndpoint{"::1", 5002}));
  // A sentinel is asked without the master's credentials or db; the master keeps them.
  auto sentinel = u.at(u.sentinels[1], false);
  EXPECT_FALSE(sentinel.via_sentinel());
  EXPECT_EQ(sentinel.host, "10.0.0.2");
  EXPECT_EQ(sentinel.port, 26379);
  EXPECT_TRUE(sentinel.password.empty());
  EXPECT_EQ(sentinel.db, 0);
  auto master = u.at({"10.0.0.9", 6379});
  EXPECT_EQ(master.password, "s@cret");
  EXPECT_EQ(master.db, 3);
  EXPECT_EQ(master.display(), "10.0.0.9:6379/3");
  EXPECT_EQ(u.display(), "my master via sentinel 10.0.0.1:5000,10.0.0.2:26379,[::1]:5002/3");
  EXPECT_TRUE(parse_redis_url("rediss-sentinel://h:1#m").tls);
}

TEST(RedisUrl, RejectsBadSentinelUrls) {
  for (const char* bad : {"redis-sentinel://h:1", "redis-sentinel://h:1#", "redis-sentinel://#m",
                          "redis-sentinel://h:1,,h:2#m", "redis-sentinel://h:1,#m", "redis-sentinel://h:0#m",
                          "redis://h:1#m"}) {
    EXPECT_THROW(parse_redis_url(bad), std::invalid_argument) << bad;
  }
}

TEST(RedisUrl, SeveralNodesAreClusterSeeds) {
  auto u = parse_redis_url("redis://app:pw@10.0.0.1:7000,10.0.0.2,[::1]:7002");
  ASSERT_EQ(u.seeds.size(), 3u);
  EXPECT_EQ(u.seeds[0], (walstream::RedisEndpoint{"10.0.0.1", 7000}));
  EXPECT_EQ(u.seeds[1], (walstream::RedisEndpoint{"10.0.0.2", 6379}));  // Redis's default port
  EXPECT_EQ(u.seeds[2], (walstream::RedisEndpoint{"::1", 7002}));
  EXPECT_EQ(u.host, "10.0.0.1");
  EXPECT_EQ(u.port, 7000);
  EXPECT_EQ(u.password, "pw");
  EXPECT_FALSE(u.via_sentinel());
  EXPECT_EQ(u.display(), "10.0.0.1:7000,10.0.0.2:6379,[::1]:7002/0");
  EXPECT_EQ(u.seed_nodes(), u.seeds);
  // One node: no seeds; the node itself is the only one to try.
  auto one = parse_redis_url("redis://h:1");
  EXPECT_TRUE(one.seeds.empty());
  EXPECT_EQ(one.seed_nodes(), (std::vector<walstream::RedisEndpoint>{{"h", 1}}));
  // A node of the list keeps the credentials and TLS, and lists nothing more.
  auto node = parse_redis_url("rediss://pw@a:1,b:2").at({"b", 2});
  EXPECT_TRUE(node.seeds.empty());
  EXPECT_TRUE(node.tls);
  EXPECT_EQ(node.password, "pw");
  EXPECT_EQ(node.display(), "b:2/0");
}

TEST(RedisUrl, RejectsBadSeedLists) {
  for (const char* bad : {"redis://a:1,,b:2", "redis://a:1,", "redis://,a:1", "redis://a:1,b:2/3", "redis://a:1,b:0"}) {
    EXPECT_THROW(parse_redis_url(bad), std::invalid_argument) << bad;
  }
}
