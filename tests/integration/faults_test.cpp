// Fault tolerance: walstream is killed, Redis and PostgreSQL restart or crash, the walsender dies,
// Redis stalls — and every committed change still arrives exactly once, in commit order.
// FAULTS_VERBOSE=1 prints walstream's logs of passing tests too.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <functional>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

using namespace harness;
using namespace std::chrono_literals;

namespace {

using Id = EntryId;

std::string slurp_from(const std::string& path, std::streamoff offset) {
  std::ifstream in(path);
  in.seekg(offset);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string pg_log_path() { return pg().dir() + "/log/postgres.log"; }

std::streamoff file_size(const std::string& path) {
  std::ifstream in(path, std::ios::ate);
  return in ? static_cast<std::streamoff>(in.tellg()) : 0;
}

bool walsender_active(const Scope& s) { return s.streaming(); }

// Inserts rows 1..n into `table` (id int primary key), one transaction each, from its own thread.
// Survives server restarts: on any error it reconnects and retries the same row with ON CONFLICT DO
// NOTHING, so a commit whose acknowledgement was lost is not repeated (and writes no second change).
class Inserter {
 public:
  Inserter(std::string conninfo, std::string table, int n, std::chrono::microseconds pause)
      : conninfo_(std::move(conninfo)), table_(std::move(table)), n_(n), pause_(pause) {
    thread_ = std::thread([this] { run(); });
  }
  ~Inserter() {
    stop_ = true;
    join();
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  int committed() const { return committed_; }
  int errors() const { return errors_; }
  bool failed() const { return failed_; }
  std::string last_error() const { return last_error_; }

 private:
  void run() {
    std::unique_ptr<pqxx::connection> conn;
    for (int i = 1; i <= n_ && !stop_; ++i) {
      auto deadline = std::chrono::steady_clock::now() + 60s;
      for (;;) {
        try {
          if (!conn) conn = std::make_unique<pqxx::connection>(conninfo_);
          pqxx::nontransaction tx(*conn);
          tx.exec(fmt::format("INSERT INTO {} VALUES ({}, 'row {}') ON CONFLICT DO NOTHING", table_, i, i));
          break;
        } catch (const std::exception& e) {
          ++errors_;
          last_error_ = e.what();
          conn.reset();
          if (stop_ || std::chrono::steady_clock::now() > deadline) {
            failed_ = true;
            return;
          }
          std::this_thread::sleep_for(50ms);
        }
      }
      committed_ = i;
      if (pause_.count() > 0) std::this_thread::sleep_for(pause_);
    }
  }

  std::string conninfo_;
  std::string table_;
  int n_;
  std::chrono::microseconds pause_;
  std::atomic<int> committed_{0};
  std::atomic<int> errors_{0};
  std::atomic<bool> failed_{false};
  std::atomic<bool> stop_{false};
  std::string last_error_;
  std::thread thread_;
};

// Waits for the inserter, for walstream to confirm everything, and checks that the stream holds
// rows 1..n exactly once each, in order, one transaction per row.
void expect_rows_exactly_once(const Scope& s, Inserter& ins, int n, Walstream& w) {
  ins.join();
  ASSERT_FALSE(ins.failed()) << "the inserter gave up: " << ins.last_error();
  ASSERT_EQ(ins.committed(), n);
  ASSERT_EQ(s.query_one("SELECT count(*) FROM t"), std::to_string(n));
  auto key = s.stream("public.t");
  // Once the slot confirmed the end of WAL, Redis holds everything walstream will ever write.
  bool done = wait_until([&] { return s.caught_up(); }, 90s);
  ASSERT_TRUE(done) << "not caught up: XLEN " << xlen(key) << " of " << n << "\n" << w.log();
  wait_until([&] { return xlen(key) >= n; }, 2s);
  auto entries = xrange(key);
  if (entries.size() != static_cast<std::size_t>(n)) {
    std::map<std::string, int> seen;
    for (const auto& e : entries) seen[e.fields.count("key") ? e.fields.at("key") : "<no key>"]++;
    std::string diag;
    int missing = 0, doubled = 0;
    for (int i = 1; i <= n; ++i) {
      auto k = fmt::format(R"({{"id":{}}})", i);
      if (!seen.count(k) && ++missing <= 10) diag += " missing " + k;
      if (seen.count(k) && seen[k] > 1 && ++doubled <= 10) diag += " doubled " + k;
    }
    FAIL() << "XLEN " << entries.size() << ", expected " << n << ": " << missing << " rows missing, " << doubled
           << " doubled;" << diag << "\n"
           << w.log();
  }
  std::set<std::uint64_t> commits;
  for (int i = 0; i < n; ++i) {
    const auto& e = entries[i];
    auto expected_key = fmt::format(R"({{"id":{}}})", i + 1);
    if (e.fields.count("key") == 0 || e.fields.at("key") != expected_key || e.fields.at("op") != "c") {
      FAIL() << "entry " << i << " (" << e.id << ") is " << (e.fields.count("key") ? e.fields.at("key") : "<no key>")
             << " op " << (e.fields.count("op") ? e.fields.at("op") : "?") << ", expected " << expected_key
             << " op c\n"
             << w.log();
    }
    auto id = parse_entry_id(e.id);
    EXPECT_EQ(id.seq, 1u) << e.id;
    commits.insert(id.lsn);
  }
  EXPECT_EQ(commits.size(), static_cast<std::size_t>(n)) << "one commit LSN per row";
  if (std::getenv("FAULTS_VERBOSE")) fprintf(stderr, "inserter errors %d\n%s\n", ins.errors(), w.log().c_str());
}

pid_t redis_server_pid() {
  auto info = redis_command({"INFO", "server"}).at(0);
  std::smatch m;
  if (!std::regex_search(info, m, std::regex(R"(process_id:(\d+))"))) throw std::runtime_error("no process_id in INFO");
  return static_cast<pid_t>(std::stol(m[1]));
}

// Redis frozen with SIGSTOP for the object's lifetime; SIGCONT however the test ends.
class FrozenRedis {
 public:
  explicit FrozenRedis(pid_t pid) : pid_(pid), stopped_(kill(pid, SIGSTOP) == 0) {}
  ~FrozenRedis() { kill(pid_, SIGCONT); }
  FrozenRedis(const FrozenRedis&) = delete;
  FrozenRedis& operator=(const FrozenRedis&) = delete;
  bool stopped() const { return stopped_; }

 private:
  pid_t pid_;
  bool stopped_;
};

// ------------------------------------------------------------------------------------------------
// 1. SIGKILL under pgbench load, compared change by change with an independent test_decoding slot.

struct RefChange {
  std::string lsn;
  std::string xid;
  std::string table;
  std::string op;   // c, u, d
  std::string key;  // expected `key` field, empty when the table has none
};

TEST(Faults, SigkillUnderPgbenchLoadMatchesTestDecoding) {
  Scope s;
  const std::string pgbench = "/usr/lib/postgresql/15/bin/pgbench";
  const std::string target = fmt::format("-h 127.0.0.1 -p {} -U postgres {}", pg().port(), s.db);
  shell(fmt::format("{} -i -s 1 -q {}", pgbench, target));
  s.sql("CREATE PUBLICATION walstream FOR ALL TABLES");
  s.sql(fmt::format("SELECT pg_create_logical_replication_slot('{}', 'pgoutput')", s.slot));
  const std::string ref_slot = s.slot + "_ref";
  TempSlot ref_guard(s, ref_slot, "test_decoding");

  std::random_device rd;
  auto seed = rd();
  std::mt19937 rng(seed);
  SCOPED_TRACE(fmt::format("random seed {}", seed));

  // Bounded background load: 4 clients, 20 s, rate-limited so the comparison stays a few 10k changes.
  std::string bench_output;
  std::atomic<bool> bench_failed{false};
  std::thread bench([&] {
    try {
      bench_output = shell(fmt::format("{} -n -c 4 -j 2 -T 20 -R 1000 {}", pgbench, target));
    } catch (const std::exception& e) {
      bench_output = e.what();
      bench_failed = true;
    }
  });
  struct Join {
    std::thread& t;
    ~Join() {
      if (t.joinable()) t.join();
    }
  } join_bench{bench};

  std::string logs;
  // Pauses let a backlog build up. Even rounds kill walstream while it works through that backlog
  // (just after its first new entries reach Redis), when received, stored and confirmed positions
  // are furthest apart; odd rounds kill it at a random moment of steady streaming.
  std::uniform_int_distribution<int> run_ms(150, 2500), pause_ms(300, 2000), backlog_ms(0, 150);
  const auto accounts = s.stream("public.pgbench_accounts");
  for (int round = 0; round < 5; ++round) {
    auto before = xlen(accounts);
    auto args = s.args();
    args.push_back("--adopt-slot");  // made beside the reference slot, outside walstream
    Walstream w(args);
    if (round % 2 == 0) {
      wait_until([&] { return xlen(accounts) > before; }, 10s);
      std::this_thread::sleep_for(std::chrono::milliseconds(backlog_ms(rng)));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(run_ms(rng)));
    }
    bool alive = w.running();
    w.signal(SIGKILL);
    int code = w.wait(10s);
    logs += fmt::format("---- run {} (SIGKILLed, exit {})\n{}", round + 1, code, w.log());
    ASSERT_TRUE(alive) << "walstream exited before the SIGKILL\n" << logs;
    std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms(rng)));
  }
  auto final_args = s.args();
  final_args.push_back("--adopt-slot");
  Walstream w(final_args);
  bench.join();
  ASSERT_FALSE(bench_failed) << bench_output;
  ASSERT_TRUE(w.running()) << logs << w.log();
  bool done = wait_until([&] { return s.caught_up(); }, 90s);
  ASSERT_TRUE(done) << logs << "---- final run\n" << w.log();
  w.signal(SIGTERM);
  ASSERT_EQ(w.wait(), 0) << w.log();
  logs += "---- final run\n" + w.log();

  // The reference: every change of the load, in commit order.
  auto rows = query(s.conninfo, fmt::format("SELECT lsn, xid, data FROM pg_logical_slot_get_changes('{}', NULL, "
                                            "NULL, 'include-xids', '1')",
                                            ref_slot));
  std::regex change_re(R"(^table public\.(pgbench_\w+): (INSERT|UPDATE|DELETE): (.*)$)");
  std::vector<RefChange> ref;
  for (const auto& r : rows) {
    const std::string& data = *r[2];
    std::smatch m;
    if (!std::regex_match(data, m, change_re)) continue;
    RefChange c;
    c.lsn = *r[0];
    c.xid = *r[1];
    c.table = "public." + m[1].str();
    c.op = m[2] == "INSERT" ? "c" : m[2] == "UPDATE" ? "u" : "d";
    std::string rest = m[3];
    std::smatch k;
    for (const char* col : {"aid", "tid", "bid"}) {
      if (c.table == fmt::format("public.pgbench_{}", col[0] == 'a' ? "accounts" : col[0] == 't' ? "tellers" : "branches") &&
          std::regex_search(rest, k, std::regex(fmt::format(R"({}\[integer\]:(\d+))", col)))) {
        c.key = fmt::format(R"({{"{}":{}}})", col, k[1].str());
      }
    }
    ref.push_back(std::move(c));
  }
  ASSERT_GT(ref.size(), 1000u) << "the load produced too few changes: " << bench_output;
  if (std::getenv("FAULTS_VERBOSE")) fprintf(stderr, "%zu changes\n%s\n%s\n", ref.size(), bench_output.c_str(), logs.c_str());

  // walstream's side: the four pgbench streams merged in ID order.
  struct Got {
    Id id;
    std::string raw_id;
    std::map<std::string, std::string> fields;
  };
  std::vector<Got> got;
  std::set<std::string> unique_ids;
  std::size_t stored = 0;
  for (const char* table : {"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"}) {
    auto entries = xrange(s.stream(fmt::format("public.{}", table)));
    stored += entries.size();
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i > 0) {
        EXPECT_LT(parse_entry_id(entries[i - 1].id), parse_entry_id(entries[i].id)) << table;
      }
      unique_ids.insert(entries[i].id);
      got.push_back({parse_entry_id(entries[i].id), entries[i].id, std::move(entries[i].fields)});
    }
  }
  std::sort(got.begin(), got.end(), [](const Got& a, const Got& b) { return a.id < b.id; });
  EXPECT_EQ(unique_ids.size(), stored) << "an ID appears twice across streams";

  // Diagnostics by LSN before the positional comparison: what is missing, what is doubled.
  std::map<std::string, int> got_lsns;
  for (const auto& g : got) got_lsns[g.fields.count("lsn") ? g.fields.at("lsn") : "?"]++;
  std::set<std::string> ref_lsns;
  for (const auto& c : ref) ref_lsns.insert(c.lsn);
  std::size_t missing = 0, doubled = 0, extra = 0;
  std::string examples;
  for (const auto& c : ref) {
    if (!got_lsns.count(c.lsn)) {
      if (++missing <= 5) examples += fmt::format("missing {} {} {} xid {}\n", c.lsn, c.table, c.op, c.xid);
    }
  }
  for (const auto& [lsn, n] : got_lsns) {
    if (n > 1 && ++doubled <= 5) examples += fmt::format("doubled lsn {} ({} times)\n", lsn, n);
    if (!ref_lsns.count(lsn) && ++extra <= 5) examples += fmt::format("unexpected lsn {}\n", lsn);
  }
  EXPECT_EQ(missing, 0u) << examples;
  EXPECT_EQ(doubled, 0u) << examples;
  EXPECT_EQ(extra, 0u) << examples;
  ASSERT_EQ(got.size(), ref.size()) << examples << "\n" << logs;

  std::map<std::string, std::uint64_t> commit_of_xid;
  std::map<std::uint64_t, std::uint64_t> last_seq;
  for (size_t i = 0; i < ref.size(); ++i) {
    const auto& c = ref[i];
    const auto& g = got[i];
    auto field = [&](const char* f) { return g.fields.count(f) ? g.fields.at(f) : std::string("<absent>"); };
    bool same = field("lsn") == c.lsn && field("table") == c.table && field("op") == c.op && field("xid") == c.xid &&
                (c.key.empty() ? g.fields.count("key") == 0 : field("key") == c.key);
    ASSERT_TRUE(same) << "change " << i << " of " << ref.size() << ": expected lsn " << c.lsn << " " << c.table << " "
                      << c.op << " xid " << c.xid << " key " << (c.key.empty() ? "<absent>" : c.key) << ", walstream has "
                      << g.raw_id << " lsn " << field("lsn") << " " << field("table") << " " << field("op") << " xid "
                      << field("xid") << " key " << field("key");
    // One commit LSN per transaction, positions 1, 2, 3, … without gaps.
    auto [it, fresh] = commit_of_xid.emplace(c.xid, g.id.lsn);
    ASSERT_EQ(it->second, g.id.lsn) << "xid " << c.xid << " has two commit LSNs";
    ASSERT_EQ(g.id.seq, (fresh ? 0 : last_seq[g.id.lsn]) + 1) << g.raw_id;
    last_seq[g.id.lsn] = g.id.seq;
  }
}

// ------------------------------------------------------------------------------------------------
// 2.-4. Server restarts and a killed walsender in the middle of a stream of single-row transactions.

constexpr int kRows = 3000;
constexpr auto kPause = 1500us;

void start_stream(const Scope& s, Walstream& w) {
  ASSERT_TRUE(wait_until([&] { return walsender_active(s); })) << w.log();
}

// Waits until walstream has logged a retry after byte `from` of its log: it noticed the outage.
bool wait_for_retry(Walstream& w, std::size_t from) {
  return wait_until([&] { return w.log().find("retrying", from) != std::string::npos; });
}

// A server outage in the middle of a steady load: walstream must retry, keep running, and end with
// every committed row exactly once.
void survives_outage(const std::function<void(Walstream&)>& outage) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  Walstream w(s.args());
  start_stream(s, w);
  Inserter ins(s.conninfo, "t", kRows, kPause);
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) >= 800; }, 60s)) << w.log();
  auto before = xlen(s.stream("public.t"));
  outage(w);
  EXPECT_LT(ins.committed(), kRows) << "the outage came after the load";
  expect_rows_exactly_once(s, ins, kRows, w);
  EXPECT_TRUE(w.running()) << w.log();
  EXPECT_NE(w.log().find("retrying"), std::string::npos) << "no retry after the outage (XLEN was " << before << ")\n"
                                                          << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

TEST(Faults, RedisRestartMidStream) {
  survives_outage([](Walstream&) { redis().restart(); });
}

// Redis killed outright: with appendfsync always, every EXEC it acknowledged is in its AOF.
TEST(Faults, RedisCrashMidStream) {
  survives_outage([](Walstream& w) {
    auto log_at = w.log().size();
    ASSERT_EQ(kill(redis_server_pid(), SIGKILL), 0);
    // Down until walstream has met the dead server.
    bool noticed = wait_for_retry(w, log_at);
    redis().restart();  // reaps the killed server and starts it again on the same port and AOF
    ASSERT_TRUE(noticed) << "no retry while Redis was down\n" << w.log();
  });
}

TEST(Faults, PostgresRestartMidStream) {
  survives_outage([](Walstream&) { pg().restart(); });
}

TEST(Faults, PostgresCrashMidStream) {
  survives_outage([](Walstream& w) {
    auto log_at = w.log().size();
    pg().stop(true);  // -m immediate: no checkpoint, the slot's saved state is older than what walstream confirmed
    // Down until walstream has lost its connection and tried again.
    bool noticed = wait_for_retry(w, log_at);
    pg().start();
    ASSERT_TRUE(noticed) << "no retry while PostgreSQL was down\n" << w.log();
  });
}

TEST(Faults, KilledWalsenderResumes) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  Walstream w(s.args());
  start_stream(s, w);
  Inserter ins(s.conninfo, "t", kRows, kPause);
  for (long at : {600L, 1200L, 1800L}) {
    ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) >= at; }, 60s)) << w.log();
    auto old_pid = s.query_one(fmt::format("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{}'", s.slot));
    pg().kill_walsenders();
    // Resumed on a new walsender.
    ASSERT_TRUE(wait_until([&] {
      auto pid = s.query_one(fmt::format("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{}'", s.slot));
      return !pid.empty() && pid != old_pid;
    })) << w.log();
  }
  EXPECT_LT(ins.committed(), kRows) << "the kills came after the load";
  expect_rows_exactly_once(s, ins, kRows, w);
  EXPECT_TRUE(w.running()) << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

// ------------------------------------------------------------------------------------------------
// 5. A stalled Redis must not stop the status updates that keep the walsender alive.

TEST(Faults, StalledRedisKeepsWalsenderAlive) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE t2 (id int PRIMARY KEY, v text)");
  // The harness starts PostgreSQL with -c wal_sender_timeout=60s, which ALTER SYSTEM cannot override;
  // a per-database setting can, and it applies to walstream's walsender (replication=database).
  s.sql(fmt::format("ALTER DATABASE {} SET wal_sender_timeout = '3s'", s.db));
  const std::string timeout_line = "terminating walsender process due to replication timeout";
  const std::string slot_pid_sql =
      fmt::format("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{}'", s.slot);

  Walstream w(s.args());
  start_stream(s, w);

  // Control: a stalled walstream does time out, so the 3 s timeout is in force for this walsender.
  {
    auto log_at = file_size(pg_log_path());
    auto pid = s.query_one(slot_pid_sql);
    w.signal(SIGSTOP);
    bool timed_out = wait_until([&] { return s.query_one(slot_pid_sql) != pid; }, 15s);
    w.signal(SIGCONT);
    ASSERT_TRUE(timed_out) << "a stopped walstream kept its walsender for 15 s: wal_sender_timeout is not 3 s";
    ASSERT_TRUE(wait_until([&] { return slurp_from(pg_log_path(), log_at).find(timeout_line) != std::string::npos; }))
        << slurp_from(pg_log_path(), log_at);
    ASSERT_TRUE(wait_until([&] { return walsender_active(s); })) << w.log();
  }

  const auto log_at = file_size(pg_log_path());
  const auto retries_before = w.log().size();
  const auto walsender = s.query_one(slot_pid_sql);
  const pid_t redis_pid = redis_server_pid();
  constexpr int n = 2000;
  Inserter ins(s.conninfo, "t", n, 5ms);
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) >= 200; }, 60s)) << w.log();
  {
    FrozenRedis frozen(redis_pid);
    ASSERT_TRUE(frozen.stopped());
    std::this_thread::sleep_for(1s);
    // A transaction bigger than a chunk: walstream waits for Redis without reading PostgreSQL.
    s.sql("INSERT INTO t2 SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    std::this_thread::sleep_for(7s);
    // Still the same walsender after more than twice wal_sender_timeout of a silent Redis.
    EXPECT_EQ(s.query_one(slot_pid_sql), walsender) << slurp_from(pg_log_path(), log_at) << w.log();
  }
  expect_rows_exactly_once(s, ins, n, w);
  auto bulk = xrange(s.stream("public.t2"));
  ASSERT_EQ(bulk.size(), 20000u) << w.log();
  for (std::size_t i = 0; i < bulk.size(); ++i) {
    ASSERT_EQ(parse_entry_id(bulk[i].id).lsn, parse_entry_id(bulk[0].id).lsn) << bulk[i].id;
    ASSERT_EQ(parse_entry_id(bulk[i].id).seq, i + 1) << bulk[i].id;
  }
  auto pg_log = slurp_from(pg_log_path(), log_at);
  EXPECT_EQ(pg_log.find(timeout_line), std::string::npos) << pg_log;
  EXPECT_EQ(s.query_one(slot_pid_sql), walsender);
  EXPECT_EQ(w.log().find("retrying", retries_before), std::string::npos) << w.log();
  EXPECT_TRUE(w.running()) << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

// Redis stalls with a chunk in flight, walstream keeps receiving (and sending status updates), then
// dies: nothing it received but never stored may have been confirmed to PostgreSQL.
TEST(Faults, SigkillWhileRedisStalledLosesNothing) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  const pid_t redis_pid = redis_server_pid();
  constexpr int n = 3000;
  std::string first_log;
  std::unique_ptr<Inserter> inserter;
  {
    Walstream w(s.args());
    start_stream(s, w);
    inserter = std::make_unique<Inserter>(s.conninfo, "t", n, 2ms);
    ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) >= 200; }, 60s)) << w.log();
    FrozenRedis frozen(redis_pid);
    ASSERT_TRUE(frozen.stopped());
    std::this_thread::sleep_for(3s);  // three status intervals of rows that cannot be stored
    w.signal(SIGKILL);
    w.wait();
    first_log = w.log();
  }
  // Redis now runs whatever the dead connection left in its socket (a whole MULTI/EXEC or nothing),
  // then drops it: wait until the only client left is the one asking.
  ASSERT_TRUE(wait_until([] {
    auto info = redis_command({"INFO", "clients"}).at(0);
    std::smatch m;
    return std::regex_search(info, m, std::regex(R"(connected_clients:(\d+))")) && m[1] == "1";
  })) << first_log;
  auto& ins = *inserter;
  EXPECT_LT(ins.committed(), n) << "the stall came after the load";
  Walstream w(s.args());
  expect_rows_exactly_once(s, ins, n, w);
  if (HasFailure()) ADD_FAILURE() << "first run:\n" << first_log;
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

}  // namespace
