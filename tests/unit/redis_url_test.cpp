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
  for (const char* bad : {"http://h:1", "rediss://h:1", "redis://", "redis://h:0", "redis://h:70000", "redis://h:x",
                          "redis://h:1/db", "redis://u:p%4@h", "redis://[::1"}) {
    EXPECT_THROW(parse_redis_url(bad), std::invalid_argument) << bad;
  }
}
