// The examples in examples/ consume the record contract with a plain Redis client and no walstream
// code: a C++ cache of `users` (hiredis + rapidjson) and a Python consumer group on `orders` (redis-py).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

using namespace harness;

namespace {

const char* kSchema = R"(
  CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text NOT NULL,
    password_hash text
  );
  CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    status text NOT NULL DEFAULT 'pending',
    total numeric(12, 2) NOT NULL
  );
  ALTER TABLE orders REPLICA IDENTITY FULL;
)";

bool streaming(const Scope& s) { return s.streaming(); }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

#ifdef USER_CACHE_BIN
std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
#endif

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// One store with walstream streaming it, shared by the tests below (in order).
struct Store {
  Scope scope;
  std::unique_ptr<Walstream> walstream;
  Store() {
    scope.sql(kSchema);
    walstream = std::make_unique<Walstream>(scope.args());
    if (!wait_until([&] { return streaming(scope); })) {
      throw std::runtime_error("walstream did not start:\n" + walstream->log());
    }
  }
};

Store& store() {
  static Store s;
  return s;
}

}  // namespace

TEST(Examples, UserCacheAppliesEveryOpAndAnswersLookups) {
#ifndef USER_CACHE_BIN
  GTEST_SKIP() << "user_cache_example is not built: add_subdirectory(examples) in the top CMakeLists.txt";
#else
  auto& s = store().scope;
  s.sql("INSERT INTO users (email, name, password_hash) VALUES ('a@example.com', 'Ann', '$argon2id$secret'), "
        "('b@example.com', 'Bob', NULL), ('c@example.com', 'Cid', NULL)");
  s.sql("UPDATE users SET email = 'bob@example.com' WHERE id = 2");
  s.sql("DELETE FROM users WHERE id = 3");
  const auto users = s.stream("public.users");
  ASSERT_TRUE(wait_until([&] { return xlen(users) == 5; })) << store().walstream->log();

  // Caught up once: answers from what the stream held, then exits at the end of stdin.
  auto out = shell("printf 'get 1\\nget 2\\nget 3\\nemail bob@example.com\\nemail b@example.com\\nsize\\nfly\\n' | "
                   "timeout 30 " + std::string(USER_CACHE_BIN) + " --redis " + redis().url() + " --stream " +
                   quoted(users) + " --once-caught-up");
  EXPECT_EQ(lines_of(out), (std::vector<std::string>{
                               R"({"caught_up":true,"size":2})",
                               R"({"id":1,"email":"a@example.com","name":"Ann"})",  // no password_hash
                               R"({"id":2,"email":"bob@example.com","name":"Bob"})",
                               "null",
                               R"({"id":2,"email":"bob@example.com","name":"Bob"})",
                               "null",
                               R"({"size":2})",
                               R"({"error":"unknown command; use get <id>, email <address> or size"})",
                           }))
      << out;

  // Following: changes made while it runs show up in its answers.
  signal(SIGPIPE, SIG_IGN);  // a cache that died must fail the test, not kill it
  char path[] = "/tmp/walstream-cache-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::string cmd = std::string(USER_CACHE_BIN) + " --redis " + redis().url() + " --stream " + quoted(users) + " > " +
                    path + " 2>&1";
  FILE* in = popen(cmd.c_str(), "w");
  ASSERT_NE(in, nullptr);
  auto ask_until = [&](const std::string& command, const std::string& expected) {
    return wait_until(
        [&] {
          std::fputs((command + "\n").c_str(), in);
          std::fflush(in);
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          auto lines = lines_of(read_file(path));
          return !lines.empty() && lines.back() == expected;
        },
        std::chrono::seconds(20));
  };
  ASSERT_TRUE(wait_until([&] { return read_file(path).find(R"({"caught_up":true,"size":2})") != std::string::npos; }))
      << read_file(path);
  s.sql("INSERT INTO users (email, name) VALUES ('d@example.com', 'Dee')");
  EXPECT_TRUE(ask_until("email d@example.com", R"({"id":4,"email":"d@example.com","name":"Dee"})")) << read_file(path);
  s.sql("UPDATE users SET name = 'Ann B.' WHERE id = 1");
  EXPECT_TRUE(ask_until("get 1", R"({"id":1,"email":"a@example.com","name":"Ann B."})")) << read_file(path);
  s.sql("TRUNCATE users, orders");
  EXPECT_TRUE(ask_until("size", R"({"size":0})")) << read_file(path);
  EXPECT_EQ(pclose(in), 0) << read_file(path);
  unlink(path);
#endif
}

TEST(Examples, PythonConsumerGroupPrintsEachNewOrderOnce) {
  auto& s = store().scope;
  s.sql("INSERT INTO users (email, name) VALUES ('e@example.com', 'Eve'), ('f@example.com', 'Fay')");
  auto ids = query(s.conninfo, "SELECT id FROM users WHERE email IN ('e@example.com', 'f@example.com') ORDER BY id");
  ASSERT_EQ(ids.size(), 2u);
  const std::string eve = *ids[0][0], fay = *ids[1][0];
  s.sql("INSERT INTO orders (user_id, total) VALUES (" + eve + ", 12.5), (" + fay + ", 7)");
  s.sql("UPDATE orders SET status = 'paid' WHERE user_id = " + eve);
  const auto orders = s.stream("public.orders");
  ASSERT_TRUE(wait_until([&] {
    try {
      return xlen(orders) >= 3;
    } catch (const std::exception&) {
      return false;
    }
  })) << store().walstream->log();
  auto first_ids = query(s.conninfo, "SELECT id FROM orders ORDER BY id");
  ASSERT_EQ(first_ids.size(), 2u);

  const std::string consumer = "timeout 30 /usr/bin/python3 " + std::string(EXAMPLES_DIR) +
                               "/python_orders/orders_consumer.py --redis " + redis().url() + " --stream " +
                               quoted(orders) + " --consumer t1";
  auto out = shell(consumer + " --max 2");
  EXPECT_EQ(lines_of(out), (std::vector<std::string>{
                               "new order " + *first_ids[0][0] + " for user " + eve + " total 12.50",
                               "new order " + *first_ids[1][0] + " for user " + fay + " total 7.00",
                           }))
      << out;
  EXPECT_EQ(redis_command({"XPENDING", orders, "order-notifier"}).at(0), "0");

  // The group remembers: a restart sees only what came after (the update is no new order).
  s.sql("INSERT INTO orders (user_id, total) VALUES (" + fay + ", 3.1)");
  auto third = s.query_one("SELECT max(id) FROM orders");
  out = shell(consumer + " --max 1");
  EXPECT_EQ(lines_of(out), std::vector<std::string>{"new order " + third + " for user " + fay + " total 3.10"}) << out;
  EXPECT_EQ(redis_command({"XPENDING", orders, "order-notifier"}).at(0), "0");
}
