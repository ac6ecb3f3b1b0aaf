// The command line as an operator meets it: each wrong option or unreachable/unsuitable server gives
// one clear line and a non-zero exit; --help lists every flag; WALSTREAM_* and PG* variables work and
// flags win; a Redis that refuses writes (OOM, NOAUTH) is retried until it accepts, losing nothing.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "harness.h"

using namespace harness;

namespace {

bool streaming(const Scope& s) { return s.streaming(); }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) out.push_back(line);
  }
  return out;
}

// walstream's log line: "<UTC time> <LEVEL> <message>".
const std::regex kLogLine(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARN|ERROR) \S.*$)");

bool is_log_at(const std::string& line, const std::string& level) {
  std::smatch m;
  return std::regex_match(line, m, kLogLine) && m[1] == level;
}

// A start-up failure: non-zero exit (not a crash, not a hang) and exactly one error line — an ERROR
// log line or a "walstream: …" usage line — holding every expected piece. Any other line must be an
// ordinary INFO/WARN log line: no stack of library noise.
void expect_one_clear_error(const Outcome& o, const std::vector<std::string>& pieces) {
  EXPECT_NE(o.code, 0) << o.output;
  EXPECT_NE(o.code, -1) << "did not exit in time:\n" << o.output;
  EXPECT_LT(o.code, 128) << "killed by a signal:\n" << o.output;
  std::vector<std::string> errors;
  for (const auto& line : lines_of(o.output)) {
    if (is_log_at(line, "INFO") || is_log_at(line, "WARN") || is_log_at(line, "DEBUG")) continue;
    if (!is_log_at(line, "ERROR")) {
      EXPECT_EQ(line.rfind("walstream: ", 0), 0u) << "a line that is neither a log line nor walstream's: " << line;
    }
    errors.push_back(line);
  }
  ASSERT_EQ(errors.size(), 1u) << o.output;
  for (const auto& p : pieces) EXPECT_NE(errors[0].find(p), std::string::npos) << "'" << p << "' not in: " << errors[0];
}

// redis-cli against the test Redis, with a password when one is set.
std::string redis_cli(const std::string& args, const std::string& password = "") {
  auto out = shell(fmt::format("redis-cli -h 127.0.0.1 -p {} {} {}", redis().port(),
                               password.empty() ? "" : "--no-auth-warning -a " + password, args));
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// Puts the shared test Redis back the way the other tests expect it, whatever happened.
struct RestoreRedis {
  std::string password;
  ~RestoreRedis() {
    try {
      if (!password.empty()) redis_cli("CONFIG SET requirepass ''", password);
    } catch (...) {
    }
    try {
      redis_command({"CONFIG", "SET", "maxmemory", "0"});
    } catch (...) {
    }
  }
};

long long xlen_as(const std::string& key, const std::string& password) {
  return std::stoll(redis_cli("XLEN " + key, password));
}

// The `after` field of the stream's newest entry ("" when the stream is empty).
std::string last_after(const std::string& key) {
  auto r = redis_command({"XREVRANGE", key, "+", "-", "COUNT", "1"});
  for (std::size_t i = 1; i + 1 < r.size(); ++i) {
    if (r[i] == "after") return r[i + 1];
  }
  return {};
}

// Log lines holding both pieces: one per refused attempt for ("OOM", "retrying").
int lines_with(const std::string& log, const std::string& a, const std::string& b) {
  int n = 0;
  for (const auto& line : lines_of(log)) n += line.find(a) != std::string::npos && line.find(b) != std::string::npos;
  return n;
}

}  // namespace

TEST(Cli, UnknownFlagOrCommandOrBadValue) {
  auto o = run_walstream({"run", "--bogus-flag"});
  EXPECT_EQ(o.code, 2);
  expect_one_clear_error(o, {"bogus-flag"});

  o = run_walstream({"frobnicate"});
  expect_one_clear_error(o, {"frobnicate"});

  o = run_walstream({"run", "--maxlen", "ten"});
  expect_one_clear_error(o, {"--maxlen", "ten"});

  o = run_walstream({"run", "--status-interval", "0"});
  expect_one_clear_error(o, {"--status-interval"});

  o = run_walstream({"run", "--slot", "Bad-Slot"});
  expect_one_clear_error(o, {"Bad-Slot"});
}

TEST(Cli, MalformedRedisUrl) {
  auto o = run_walstream({"run", "--pg", pg().conninfo(), "--redis", "http://x"});
  expect_one_clear_error(o, {"redis://"});
  o = run_walstream({"run", "--pg", pg().conninfo(), "--redis", "redis://127.0.0.1:notaport"});
  expect_one_clear_error(o, {"notaport"});
}

TEST(Cli, UnreachablePostgres) {
  int port = free_port();
  auto started = std::chrono::steady_clock::now();
  auto o = run_walstream({"run", "--pg", fmt::format("postgresql://postgres@127.0.0.1:{}/postgres", port), "--redis",
                          redis().url()});
  expect_one_clear_error(o, {"PostgreSQL", std::to_string(port)});
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(15));
}

// A host that takes the TCP connection and never answers (hung server, a port behind a dead proxy):
// every PostgreSQL connection, libpqxx's included, gives up after connect_timeout (10 s by default).
TEST(Cli, SilentPostgres) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  // Never accepted: the kernel completes the handshake into the backlog and nothing ever answers.
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(listener, 16), 0);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  auto started = std::chrono::steady_clock::now();
  auto o = run_walstream({"run", "--pg", fmt::format("postgresql://postgres@127.0.0.1:{}/postgres", port), "--redis",
                          redis().url()},
                         {}, std::chrono::seconds(40));
  close(listener);
  expect_one_clear_error(o, {"PostgreSQL", "timeout"});
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(25));
}

TEST(Cli, UnreachableRedis) {
  Scope s;
  int port = free_port();
  auto o = run_walstream({"run", "--pg", s.conninfo, "--redis", fmt::format("redis://127.0.0.1:{}", port), "--slot",
                          s.slot, "--prefix", s.prefix});
  expect_one_clear_error(o, {"Redis", std::to_string(port)});
}

// A Redis that may evict keys would drop streams or the checkpoint without a word.
TEST(Cli, RedisThatMayEvictKeysIsRefused) {
  Scope s;
  s.sql("CREATE TABLE kv (k int PRIMARY KEY)");
  redis_command({"CONFIG", "SET", "maxmemory-policy", "allkeys-lru"});
  auto o = run_walstream(s.args());
  redis_command({"CONFIG", "SET", "maxmemory-policy", "noeviction"});
  expect_one_clear_error(o, {"maxmemory-policy allkeys-lru", "noeviction"});
}

TEST(Cli, BadWaitFlags) {
  auto o = run_walstream({"run", "--redis-wait", "-1"});
  EXPECT_EQ(o.code, 2) << o.output;
  EXPECT_NE(o.output.find("--redis-wait"), std::string::npos) << o.output;
  o = run_walstream({"run", "--redis-wait-timeout", "0"});
  EXPECT_EQ(o.code, 2) << o.output;
  o = run_walstream({"run"}, {{"WALSTREAM_RESNAPSHOT", "maybe"}});
  EXPECT_EQ(o.code, 2) << o.output;
  EXPECT_NE(o.output.find("WALSTREAM_RESNAPSHOT"), std::string::npos) << o.output;
}

TEST(Cli, RoleWithoutReplication) {
  Scope s;
  s.sql("CREATE ROLE nrep LOGIN");
  auto o = run_walstream({"run", "--pg", pg().conninfo(s.db, "nrep"), "--redis", redis().url(), "--slot", s.slot,
                          "--prefix", s.prefix});
  expect_one_clear_error(o, {"REPLICATION", "nrep"});
  EXPECT_EQ(s.query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" + s.slot + "'"), "0");
}

// CREATE PUBLICATION … FOR ALL TABLES needs a superuser, FOR TABLE needs the tables' owner.
TEST(Cli, PublicationMissingAndRoleCannotCreateIt) {
  Scope s;
  s.sql("CREATE TABLE a (id int PRIMARY KEY); CREATE ROLE rrep LOGIN REPLICATION; "
        "GRANT CREATE ON DATABASE " + s.db + " TO rrep");
  auto o = run_walstream({"run", "--pg", pg().conninfo(s.db, "rrep"), "--redis", redis().url(), "--slot", s.slot,
                          "--prefix", s.prefix});
  expect_one_clear_error(o, {"walstream", "publication", "superuser"});

  o = run_walstream({"run", "--pg", pg().conninfo(s.db, "rrep"), "--redis", redis().url(), "--slot", s.slot,
                     "--prefix", s.prefix, "--tables", "public.a"});
  expect_one_clear_error(o, {"publication", "owner"});
  EXPECT_EQ(s.query_one("SELECT count(*) FROM pg_publication"), "0");
  EXPECT_EQ(s.query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" + s.slot + "'"), "0");
}

TEST(Cli, WalLevelNotLogical) {
  Postgres replica;
  replica.extra_options = "-c wal_level=replica";
  replica.start();
  struct Stop {
    Postgres& p;
    ~Stop() {
      try {
        p.stop(true);
      } catch (...) {
      }
    }
  } stop{replica};
  ASSERT_EQ(query_one(replica.conninfo(), "SHOW wal_level"), "replica");
  auto o = run_walstream({"run", "--pg", replica.conninfo(), "--redis", redis().url(), "--slot", "wl_slot"});
  expect_one_clear_error(o, {"wal_level", "logical"});
}

TEST(Cli, HelpListsEveryFlag) {
  auto top = run_walstream({"--help"});
  EXPECT_EQ(top.code, 0) << top.output;
  EXPECT_NE(top.output.find("run"), std::string::npos) << top.output;
  EXPECT_NE(top.output.find("run --help"), std::string::npos) << "--help should say where the options are:\n"
                                                              << top.output;

  auto run = run_walstream({"run", "--help"});
  EXPECT_EQ(run.code, 0) << run.output;
  for (const char* flag : {"pg", "redis", "slot", "publication", "tables", "prefix", "maxlen", "status-interval",
                           "shutdown-timeout", "max-backoff", "log-level", "redis-wait", "redis-wait-timeout",
                           "resnapshot", "adopt-slot", "outbox", "outbox-id-column", "outbox-aggregate-type-column",
                           "outbox-aggregate-id-column", "outbox-type-column", "outbox-payload-column", "messages",
                           "transactions"}) {
    std::string env = "WALSTREAM_";
    for (const char* c = flag; *c; ++c) env += *c == '-' ? '_' : static_cast<char>(std::toupper(*c));
    EXPECT_NE(run.output.find(std::string("--") + flag), std::string::npos) << flag << "\n" << run.output;
    EXPECT_NE(run.output.find(env), std::string::npos) << env << "\n" << run.output;
  }
  EXPECT_NE(run.output.find("--help"), std::string::npos) << run.output;
}

// WALSTREAM_* variables are used when flags are absent; a flag wins over its variable.
TEST(Cli, EnvironmentVariablesAndFlagPrecedence) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  {
    Walstream w({"run"}, {{"WALSTREAM_PG", s.conninfo},
                          {"WALSTREAM_REDIS", redis().url()},
                          {"WALSTREAM_SLOT", s.slot},
                          {"WALSTREAM_PREFIX", s.prefix},
                          {"WALSTREAM_PUBLICATION", "pub_env"},
                          {"WALSTREAM_STATUS_INTERVAL", "1"}});
    ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
    EXPECT_EQ(s.query_one("SELECT count(*) FROM pg_publication WHERE pubname = 'pub_env'"), "1");
    s.sql("INSERT INTO t VALUES (1)");
    ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) == 1; })) << w.log();
    w.signal(SIGTERM);
    EXPECT_EQ(w.wait(), 0) << w.log();
  }
  {
    // Every variable points somewhere wrong; the flags (s.args()) must be what is used.
    Walstream w(s.args(), {{"WALSTREAM_PG", "postgresql://postgres@127.0.0.1:1/nowhere"},
                           {"WALSTREAM_REDIS", "redis://127.0.0.1:1"},
                           {"WALSTREAM_SLOT", s.slot + "_env"},
                           {"WALSTREAM_PREFIX", "envprefix:"},
                           {"WALSTREAM_PUBLICATION", "pub_env2"}});
    ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
    s.sql("INSERT INTO t VALUES (2)");
    ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) == 2; })) << w.log();
    EXPECT_EQ(redis_command({"EXISTS", "envprefix:public.t"}), std::vector<std::string>{"0"});
    EXPECT_EQ(s.query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" + s.slot + "_env'"), "0");
    EXPECT_EQ(s.query_one("SELECT count(*) FROM pg_publication WHERE pubname = 'pub_env2'"), "0");
    EXPECT_EQ(s.query_one("SELECT count(*) FROM pg_publication WHERE pubname = 'walstream'"), "1");
    w.signal(SIGTERM);
    EXPECT_EQ(w.wait(), 0) << w.log();
  }
  s.sql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '" + s.slot +
        "_env' AND NOT active");
}

// Waits until w streams, inserts row 1 of t and waits until Redis holds it.
void store_first_row(const Scope& s, Walstream& w) {
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("INSERT INTO t VALUES (1)");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) == 1; })) << w.log();
}

// With no --pg and no WALSTREAM_PG, libpq's PG* variables choose the server and database.
TEST(Cli, LibpqEnvironmentVariables) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  Walstream w({"run", "--redis", redis().url(), "--slot", s.slot, "--prefix", s.prefix},
              {{"PGHOST", "127.0.0.1"},
               {"PGPORT", std::to_string(pg().port())},
               {"PGUSER", "postgres"},
               {"PGDATABASE", s.db}});
  ASSERT_NO_FATAL_FAILURE(store_first_row(s, w));
}

// Passwords in the PostgreSQL conninfo or the Redis URL never reach the log, even in errors.
TEST(Cli, SecretsNeverLogged) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  RestoreRedis restore{"rs3cret"};
  redis_command({"CONFIG", "SET", "requirepass", "rs3cret"});
  // The test PostgreSQL trusts every connection, so the password is accepted and ignored.
  auto conninfo = fmt::format("postgresql://postgres:pgs3cret@127.0.0.1:{}/{}", pg().port(), s.db);

  auto wrong = run_walstream({"run", "--pg", conninfo, "--redis",
                              fmt::format("redis://:wr0ngpw@127.0.0.1:{}", redis().port()), "--slot", s.slot,
                              "--prefix", s.prefix});
  expect_one_clear_error(wrong, {"Redis"});
  EXPECT_EQ(wrong.output.find("wr0ngpw"), std::string::npos) << wrong.output;
  EXPECT_EQ(wrong.output.find("pgs3cret"), std::string::npos) << wrong.output;

  Walstream w({"run", "--pg", conninfo, "--redis", fmt::format("redis://default:rs3cret@127.0.0.1:{}", redis().port()),
               "--slot", s.slot, "--prefix", s.prefix, "--log-level", "debug"});
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("INSERT INTO t VALUES (1)");
  ASSERT_TRUE(wait_until([&] { return xlen_as(s.stream("public.t"), "rs3cret") == 1; })) << w.log();
  EXPECT_EQ(w.log().find("rs3cret"), std::string::npos) << w.log();
  EXPECT_EQ(w.log().find("pgs3cret"), std::string::npos) << w.log();
}

// Rows 2..50 as Redis starts refusing: five single-row transactions, then one of 44 rows.
void insert_rows_2_to_50(const Scope& s) {
  for (int i = 2; i <= 6; ++i) s.sql(fmt::format("INSERT INTO t VALUES ({})", i));
  s.sql("INSERT INTO t SELECT generate_series(7, 50)");
}

// Once Redis takes writes again: rows 1..50, each exactly once, in order. Row 51, committed after
// them, is the sentinel: once it is stored, any duplicate or extra entry of rows 1..50 is too.
void expect_rows_1_to_50_once(const Scope& s, Walstream& w) {
  s.sql("INSERT INTO t VALUES (51)");
  ASSERT_TRUE(wait_until([&] { return last_after(s.stream("public.t")) == R"({"id":51})"; })) << w.log();
  auto e = xrange(s.stream("public.t"));
  ASSERT_EQ(e.size(), 51u) << w.log();
  for (std::size_t i = 0; i < e.size(); ++i) {
    EXPECT_EQ(e[i].fields.at("after"), fmt::format("{{\"id\":{}}}", i + 1));
  }
}

// A Redis out of memory refuses the writes: walstream keeps retrying and, once Redis accepts again,
// stores every row exactly once and in order.
TEST(Cli, RedisOutOfMemoryIsRetriedNotDropped) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  Walstream w(with(s.args(), {"--max-backoff", "1"}));
  ASSERT_NO_FATAL_FAILURE(store_first_row(s, w));

  RestoreRedis restore;
  redis_command({"CONFIG", "SET", "maxmemory-policy", "noeviction"});
  redis_command({"CONFIG", "SET", "maxmemory", "1"});
  insert_rows_2_to_50(s);
  // Two refused attempts: the rows were received again after the first and still not written.
  ASSERT_TRUE(wait_until([&] { return lines_with(w.log(), "OOM", "retrying") >= 2; }, std::chrono::seconds(15)))
      << w.log();
  EXPECT_EQ(xlen(s.stream("public.t")), 1) << "written while Redis refused writes?";
  EXPECT_TRUE(w.running()) << w.log();

  redis_command({"CONFIG", "SET", "maxmemory", "0"});
  expect_rows_1_to_50_once(s, w);
}

// Redis starts asking for a password: walstream retries (NOAUTH) until it no longer does, then
// stores every row exactly once and in order.
TEST(Cli, RedisRequiringAuthIsRetriedNotDropped) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  Walstream w(with(s.args(), {"--max-backoff", "1"}));
  ASSERT_NO_FATAL_FAILURE(store_first_row(s, w));

  RestoreRedis restore{"x"};
  redis_command({"CONFIG", "SET", "requirepass", "x"});
  // Connections already authenticated stay so: drop them, as a Redis restart with a password would.
  redis_cli("CLIENT KILL TYPE normal", "x");
  insert_rows_2_to_50(s);
  ASSERT_TRUE(wait_until([&] { return lines_with(w.log(), "NOAUTH", "retrying") >= 2; }, std::chrono::seconds(15)))
      << w.log();
  EXPECT_EQ(xlen_as(s.stream("public.t"), "x"), 1) << "written while Redis refused writes?";
  EXPECT_TRUE(w.running()) << w.log();

  redis_cli("CONFIG SET requirepass ''", "x");
  restore.password.clear();
  expect_rows_1_to_50_once(s, w);
}

// A Redis still loading its dataset (just restarted, or started beside walstream) answers LOADING: not a
// setup problem. walstream waits for it, says so once, then streams.
TEST(Cli, WaitsForARedisLoadingItsDataset) {
  Redis seed;
  seed.start(false);
  // 20,000 keys saved, loaded back at 50 µs a key (key-load-delay) with events served every KiB read, so
  // that PING answers LOADING meanwhile: a few seconds of it.
  redis_command(seed, {"EVAL", "for i = 1, 20000 do redis.call('SET', 'k' .. i, 'v') end return 1", "0"});
  redis_command(seed, {"SAVE"});
  const int port = seed.port();
  const std::string dir = seed.dir();
  seed.stop();

  pid_t redis = fork();
  if (redis == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execlp("redis-server", "redis-server", "--port", std::to_string(port).c_str(), "--bind", "127.0.0.1", "--dir",
           dir.c_str(), "--save", "", "--appendonly", "no", "--key-load-delay", "50", "--loading-process-events-interval-bytes", "1024",
           static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(redis, 0);
  struct Reap {
    pid_t pid;
    ~Reap() {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  } reap{redis};
  ASSERT_TRUE(wait_until([&] {
    try {
      return shell(fmt::format("redis-cli -p {} PING", port)).find("LOADING") != std::string::npos;
    } catch (const std::exception&) {
      return false;
    }
  }, std::chrono::seconds(5)));

  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  auto args = s.args();
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--redis") args[i + 1] = fmt::format("redis://127.0.0.1:{}", port);
  }
  Walstream ws(args);
  ASSERT_TRUE(wait_until([&] { return s.streaming(); }, std::chrono::seconds(60))) << ws.log();
  s.sql("INSERT INTO t VALUES (1)");
  ASSERT_TRUE(wait_until([&] { return xlen(port, s.stream("public.t")) == 1; })) << ws.log();
  EXPECT_NE(ws.log().find("is loading its dataset; waiting"), std::string::npos) << ws.log();
  EXPECT_EQ(redis_command(port, {"EXISTS", "k20000"}), std::vector<std::string>{"1"});  // the dataset it waited for
  ws.signal(SIGTERM);
  EXPECT_EQ(ws.wait(), 0) << ws.log();
}
