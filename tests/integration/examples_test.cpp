// The examples in examples/ consume the record and event contracts with a plain Redis client and no
// walstream code: a C++ cache of `users` (hiredis + rapidjson), a Python consumer group on `orders`, and
// a Python stock service reacting to the store's OrderPlaced events (redis-py); the orders consumer over TLS too.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
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

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// psql as postgres on the scope's database, one of the store's files of sql/, quiet and unaligned.
std::string psql_file(const Scope& s, const std::string& file, const std::vector<std::string>& vars = {}) {
  std::string args;
  for (const auto& v : vars) args += "-v " + shell_quote(v) + " ";
  auto out = shell("psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p " + std::to_string(pg().port()) +
                   " -U postgres -d " + s.db + " " + args + "-f " +
                   shell_quote(std::string(EXAMPLES_DIR) + "/../sql/" + file));
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// A command's stderr lines (stdout dropped) followed by its exit code as the last line.
std::vector<std::string> stderr_and_code(const std::string& command) {
  return lines_of(shell("(" + command + ") 2>&1 >/dev/null; echo $?"));
}

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

// The whole store of sql/, its outbox published by `walstream run --outbox public.outbox`, orders placed
// by sql/queries/reserve_stock.sql: the stock service handles each OrderPlaced once, across restarts, a
// crash before it acknowledged, and a replay of the whole stream.
TEST(Examples, PythonStockServiceHandlesEachOrderPlacedOnce) {
  Scope s;
  for (const char* f : {"01_schema.sql", "02_roles.sql", "03_publication.sql", "04_sample_data.sql"}) psql_file(s, f);
  auto args = s.args();
  args.push_back("--outbox");
  args.push_back("public.outbox");
  Walstream w(args);
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  const auto events = s.stream("events:order");
  const auto picks = "example-picks:" + s.db;
  auto user = [&](const std::string& email) {
    return s.query_one("SELECT id FROM users WHERE email = '" + email + "'");
  };
  auto place = [&](const std::string& user_id, const std::string& items) {
    auto id = psql_file(s, "queries/reserve_stock.sql", {"user_id=" + user_id, "items=" + items});
    if (id.empty()) throw std::runtime_error("reserve_stock.sql printed no order id");
    return id;
  };
  const std::string service = "timeout 30 /usr/bin/python3 " + std::string(EXAMPLES_DIR) +
                              "/python_stock/stock_service.py --redis " + redis().url() + " --stream " +
                              quoted(events) + " --picks " + quoted(picks) + " --consumer s1 --block-ms 200";
  auto pending = [&] { return redis_command({"XPENDING", events, "stock-service"}).at(0); };

  const auto grace = user("grace@example.com"), linus = user("linus@example.com"), ada = user("ada@example.com");
  auto first = place(grace, R"([{"sku": "MN-27", "qty": 1}, {"sku": "KB-01", "qty": 2}])");
  ASSERT_TRUE(wait_until([&] { return xlen(events) == 1; })) << w.log();
  auto out = shell(service + " --max 1");
  EXPECT_EQ(lines_of(out), std::vector<std::string>{"pick order " + first + " for user " + grace +
                                                    ": 2 x KB-01, 1 x MN-27"})
      << out;
  EXPECT_EQ(pending(), "0");

  // A restart: only what came after.
  auto second = place(linus, R"([{"sku": "MS-02", "qty": 1}])");
  ASSERT_TRUE(wait_until([&] { return xlen(events) == 2; })) << w.log();
  out = shell(service + " --exit-when-idle");
  EXPECT_EQ(lines_of(out), std::vector<std::string>{"pick order " + second + " for user " + linus + ": 1 x MS-02"})
      << out;
  EXPECT_EQ(pending(), "0");

  // A crash after the read, before the acknowledgement: the entry is this consumer's, pending; the
  // next start handles it first, and once.
  auto third = place(ada, R"([{"sku": "CB-USB", "qty": 3}])");
  ASSERT_TRUE(wait_until([&] { return xlen(events) == 3; })) << w.log();
  redis_command({"XREADGROUP", "GROUP", "stock-service", "s1", "COUNT", "1", "STREAMS", events, ">"});
  EXPECT_EQ(pending(), "1");
  out = shell(service + " --exit-when-idle");
  EXPECT_EQ(lines_of(out), std::vector<std::string>{"pick order " + third + " for user " + ada + ": 3 x CB-USB"})
      << out;
  EXPECT_EQ(pending(), "0");

  // Each event once on the pick list, keyed by its event id (the outbox row's uuid).
  auto entries = xrange(events);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(redis_command({"HLEN", picks}).at(0), "3");
  for (const auto& e : entries) {
    EXPECT_EQ(e.fields.at("type"), "OrderPlaced");
    EXPECT_EQ(redis_command({"HEXISTS", picks, e.fields.at("id")}).at(0), "1") << e.fields.at("id");
  }

  // A replay of the whole stream re-handles nothing: every event is acknowledged as handled already.
  redis_command({"XGROUP", "SETID", events, "stock-service", "0"});
  out = shell(service + " --exit-when-idle");
  std::vector<std::string> again;
  for (const auto& e : entries) {
    auto order = e.fields.at("aggregate_id");
    again.push_back("stock_service: event " + e.fields.at("id") + " (order " + order +
                    ") is on the pick list already: acknowledged");
  }
  EXPECT_EQ(lines_of(out), again) << out;
  EXPECT_EQ(pending(), "0");
  EXPECT_EQ(redis_command({"HLEN", picks}).at(0), "3");
  redis_command({"DEL", picks});

  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

// The orders consumer over TLS: walstream writes to a Redis's TLS port (rediss:// with --redis-tls-ca),
// the consumer reads the same port with the same flag and prints each new order once. A CA that did not
// sign the server's certificate, or a host name the certificate is not for, is one line on stderr and a
// non-zero exit, with nothing done on the server.
TEST(Examples, PythonConsumerOverTls) {
  TestCertificates certs;
  Redis r;
  const int tls_port = free_port();
  r.extra_args = certs.redis_args(tls_port);
  r.start(false);
  auto url = [&](const std::string& host) { return "rediss://" + host + ":" + std::to_string(tls_port); };

  Scope s;
  s.sql(kSchema);
  auto args = s.args(r);
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--redis") args[i + 1] = url("127.0.0.1");
  }
  args.insert(args.end(), {"--redis-tls-ca", certs.path("ca.crt")});
  Walstream w(args);
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("INSERT INTO users (email, name) VALUES ('g@example.com', 'Gus')");
  const auto gus = s.query_one("SELECT id FROM users");
  s.sql("INSERT INTO orders (user_id, total) VALUES (" + gus + ", 4.2), (" + gus + ", 10)");
  s.sql("UPDATE orders SET status = 'paid'");
  const auto orders = s.stream("public.orders");
  ASSERT_TRUE(wait_until([&] { return xlen(r, orders) == 4; })) << w.log();  // 2 inserts, 2 updates
  auto ids = query(s.conninfo, "SELECT id FROM orders ORDER BY id");
  ASSERT_EQ(ids.size(), 2u);

  const std::string consumer = "timeout 30 /usr/bin/python3 " + std::string(EXAMPLES_DIR) +
                               "/python_orders/orders_consumer.py --stream " + quoted(orders) + " --consumer t1";
  const std::string over_tls = consumer + " --redis " + url("127.0.0.1") + " --redis-tls-ca " + certs.path("ca.crt");
  auto out = shell(over_tls + " --max 2");
  EXPECT_EQ(lines_of(out), (std::vector<std::string>{
                               "new order " + *ids[0][0] + " for user " + gus + " total 4.20",
                               "new order " + *ids[1][0] + " for user " + gus + " total 10.00",
                           }))
      << out;
  EXPECT_EQ(redis_command(r, {"XPENDING", orders, "order-notifier"}).at(0), "0");

  // A restart resumes where the group is: only the order placed since.
  s.sql("INSERT INTO orders (user_id, total) VALUES (" + gus + ", 1.5)");
  const auto third = s.query_one("SELECT max(id) FROM orders");
  out = shell(over_tls + " --max 1");
  EXPECT_EQ(lines_of(out), std::vector<std::string>{"new order " + third + " for user " + gus + " total 1.50"}) << out;
  EXPECT_EQ(redis_command(r, {"XPENDING", orders, "order-notifier"}).at(0), "0");

  // Certificates that must not be trusted: one line naming the certificate, a non-zero exit, and no
  // consumer group created (a consumer that did not verify would create it and wait for orders).
  struct Case {
    std::string name, flags;
  };
  const std::vector<Case> cases = {
      {"another CA", "--redis " + url("127.0.0.1") + " --redis-tls-ca " + certs.path("other-ca.crt")},
      {"another host name", "--redis " + url("localhost") + " --redis-tls-ca " + certs.path("ca.crt")},
  };
  for (const auto& c : cases) {
    auto refused = stderr_and_code(consumer + " --group untrusted --max 1 " + c.flags);
    ASSERT_EQ(refused.size(), 2u) << c.name << ": not one line on stderr, then the exit code: "
                                  << ::testing::PrintToString(refused);
    EXPECT_NE(refused[1], "0") << c.name;
    EXPECT_NE(refused[0].find("certificate"), std::string::npos) << c.name << ": " << refused[0];
    EXPECT_NE(refused[0].find("fails verification"), std::string::npos) << c.name << ": " << refused[0];
    auto groups = redis_command(r, {"XINFO", "GROUPS", orders});
    EXPECT_EQ(std::find(groups.begin(), groups.end(), "untrusted"), groups.end()) << c.name;
  }

  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}
