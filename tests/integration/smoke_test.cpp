// The smallest end-to-end check: one insert, update and delete arrive as three typed entries.
#include <gtest/gtest.h>

#include "harness.h"

using namespace harness;

TEST(Smoke, InsertUpdateDeleteArriveInOrder) {
  Scope s;
  s.sql("CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL)");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return s.streaming(); }))
      << w.log();
  s.sql("INSERT INTO users VALUES (1, 'a@example.com'); UPDATE users SET email = 'b@example.com' WHERE id = 1; "
        "DELETE FROM users WHERE id = 1");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.users")) == 3; })) << w.log();
  auto entries = xrange(s.stream("public.users"));
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].fields.at("op"), "c");
  EXPECT_EQ(entries[0].fields.at("key"), R"({"id":1})");
  EXPECT_EQ(entries[0].fields.at("after"), R"({"id":1,"email":"a@example.com"})");
  EXPECT_EQ(entries[1].fields.at("op"), "u");
  EXPECT_EQ(entries[1].fields.at("after"), R"({"id":1,"email":"b@example.com"})");
  EXPECT_EQ(entries[2].fields.at("op"), "d");
  EXPECT_EQ(entries[2].fields.at("before"), R"({"id":1})");
  // One transaction: one commit LSN, positions 1, 2, 3.
  auto lsn = entries[0].id.substr(0, entries[0].id.find('-'));
  EXPECT_EQ(entries[0].id, lsn + "-1");
  EXPECT_EQ(entries[1].id, lsn + "-2");
  EXPECT_EQ(entries[2].id, lsn + "-3");
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
  EXPECT_TRUE(s.caught_up()) << w.log();
}
