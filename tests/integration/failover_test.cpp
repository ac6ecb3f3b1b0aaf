// Redis replication and failover (--redis-wait), transactions stored whole (one MULTI/EXEC each, also
// across a SIGTERM), and the conditions that must stop walstream with one clear line instead of a
// reconnect loop: publication dropped, slot invalidated, a stream key of another type.
// FAILOVER_VERBOSE=1 prints walstream's log of the fatal tests that pass too.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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
#include "reference.h"

using namespace harness;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

using Id = EntryId;

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool contains_ci(const std::string& haystack, const std::string& needle) {
  return lower(haystack).find(lower(needle)) != std::string::npos;
}

// walstream's log lines at one level: "<time>Z <LEVEL> <message>" (cdc/log.cpp).
std::vector<std::string> log_lines(const std::string& log, const std::string& level) {
  std::vector<std::string> out;
  std::istringstream in(log);
  std::string line;
  const std::regex re("^\\S+Z " + level + " ");
  while (std::getline(in, line)) {
    if (std::regex_search(line, re)) out.push_back(line);
  }
  return out;
}

std::vector<std::string> with_flags(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

bool slot_streaming(const std::string& conninfo, const std::string& slot) {
  return query_one(conninfo, fmt::format("SELECT count(*) FROM pg_replication_slots r JOIN pg_stat_replication w "
                                         "ON w.pid = r.active_pid WHERE r.slot_name = '{}' AND w.state IN "
                                         "('catchup', 'streaming')",
                                         slot)) == "1";
}

// Waits until walstream streams from its slot; fails at once when walstream exited instead.
::testing::AssertionResult streams(const std::string& conninfo, const std::string& slot, Walstream& w) {
  bool ok = wait_until([&] { return !w.running() || slot_streaming(conninfo, slot); }, 30s);
  if (!w.running()) return ::testing::AssertionFailure() << "walstream exited (" << w.wait() << "):\n" << w.log();
  if (!ok) return ::testing::AssertionFailure() << "walstream does not stream after 30 s:\n" << w.log();
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult streams(const Scope& s, Walstream& w) { return streams(s.conninfo, s.slot, w); }

// The slot's confirmed_flush_lsn is above `lsn` (an LSN as a number, e.g. a stream ID's first part).
bool confirmed_past(const std::string& conninfo, const std::string& slot, std::uint64_t lsn) {
  return query_one(conninfo, fmt::format("SELECT confirmed_flush_lsn > '0/0'::pg_lsn + {} FROM pg_replication_slots "
                                         "WHERE slot_name = '{}'",
                                         lsn, slot)) == "t";
}

std::string confirmed_flush(const Scope& s) {
  return s.query_one(
      fmt::format("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'", s.slot));
}

bool confirmed_below(const Scope& s, const std::string& lsn) {
  return s.query_one(fmt::format("SELECT confirmed_flush_lsn < '{}' FROM pg_replication_slots WHERE slot_name = '{}'",
                                 lsn, s.slot)) == "t";
}

// Runs one transaction and returns the WAL insert position right after its commit (the end of its
// commit record when nothing else wrote WAL meanwhile): a slot that confirmed less has not confirmed it.
std::string commit_and_position(const std::string& conninfo, const std::string& statements) {
  pqxx::connection c(conninfo);
  pqxx::nontransaction tx(c);
  tx.exec("BEGIN; " + statements + "; COMMIT");
  return tx.exec("SELECT pg_current_wal_insert_lsn()")[0][0].c_str();
}

// Exit 1 within `limit` of `since`, one ERROR line, holding every piece (case-insensitive).
void expect_fatal(Walstream& w, Clock::time_point since, const std::vector<std::string>& pieces,
                  std::chrono::seconds limit = 15s) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(since + limit - Clock::now());
  int code = w.wait(std::max(left, std::chrono::milliseconds(0)));
  ASSERT_NE(code, -1) << "still running " << limit.count() << " s after the fatal condition:\n" << w.log();
  EXPECT_EQ(code, 1) << w.log();
  if (std::getenv("FAILOVER_VERBOSE")) fprintf(stderr, "%s\n", w.log().c_str());
  auto errors = log_lines(w.log(), "ERROR");
  ASSERT_EQ(errors.size(), 1u) << "expected one ERROR line:\n" << w.log();
  for (const auto& p : pieces) EXPECT_TRUE(contains_ci(errors[0], p)) << "'" << p << "' not in: " << errors[0];
}

// Runs walstream once so that it creates its slot (and publication), and stops it: what it streams
// later is a backlog it finds at start.
void create_slot(const Scope& s, const Redis& r) {
  Walstream w(s.args(r));
  ASSERT_TRUE(streams(s, w));
  w.signal(SIGTERM);
  ASSERT_EQ(w.wait(), 0) << w.log();
}

// Groups of entries by commit LSN, in ID order: every group must be seq 1..n without a hole.
// Returns the sizes; fails the test on a group that does not start at 1 or skips a position.
std::vector<std::uint64_t> transaction_sizes(const std::vector<Got>& got) {
  std::vector<std::uint64_t> sizes;
  for (std::size_t i = 0; i < got.size(); ++i) {
    bool first = i == 0 || got[i - 1].id.lsn != got[i].id.lsn;
    std::uint64_t expected = first ? 1 : got[i - 1].id.seq + 1;
    EXPECT_EQ(got[i].id.seq, expected) << "at " << got[i].raw_id << (first ? " (first of its commit)" : "");
    if (got[i].id.seq != expected) return sizes;
    if (first) sizes.push_back(0);
    ++sizes.back();
  }
  return sizes;
}

// ------------------------------------------------------------------------------------------------
// --redis-wait: no replica, no confirmation.

TEST(RedisWait, ConfirmsOnlyOnceAReplicaHasTheChange) {
  Redis master;
  master.start();
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  create_slot(s, master);  // without --redis-wait: the test is about streaming, not about the setup
  if (HasFatalFailure()) return;
  const auto started = Clock::now();
  const auto args = with_flags(s.args(master), {"--redis-wait", "1", "--redis-wait-timeout", "300"});
  auto first = std::make_unique<Walstream>(args);  // SIGKILLed and replaced half-way
  auto& w0 = *first;
  ASSERT_TRUE(streams(s, w0));
  s.sql("INSERT INTO t VALUES (1, 'one')");
  const auto key = s.stream("public.t");
  // WAIT comes after EXEC: the entry is stored on the master at once.
  ASSERT_TRUE(wait_until([&] { return xlen(master, key) == 1; }, 10s)) << w0.log();
  const auto commit = parse_entry_id(xrange(master, key).at(0).id).lsn;
  EXPECT_FALSE(wait_until([&] { return confirmed_past(s.conninfo, s.slot, commit); }, 3s))
      << "confirmed " << confirmed_flush(s) << " past commit " << commit << " with no replica\n"
      << w0.log();
  ASSERT_TRUE(w0.running()) << w0.log();
  std::vector<std::string> warnings;
  for (const auto& line : log_lines(w0.log(), "WARN")) {
    if (contains_ci(line, "WAIT") && contains_ci(line, "replica")) warnings.push_back(line);
  }
  EXPECT_FALSE(warnings.empty()) << "no warning naming WAIT and replica:\n" << w0.log();
  // "At most every few seconds": one at the start, then one per 2 s at most.
  auto elapsed = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started).count();
  EXPECT_LE(warnings.size(), static_cast<std::size_t>(1 + elapsed / 2)) << "in " << elapsed << " s:\n" << w0.log();

  // A restart must not take the master's checkpoint on its word: the replica still lacks the entry.
  w0.signal(SIGKILL);
  w0.wait();
  first.reset();
  Walstream w(args);
  ASSERT_TRUE(streams(s, w));
  EXPECT_FALSE(wait_until([&] { return confirmed_past(s.conninfo, s.slot, commit); }, 3s))
      << "a restart confirmed " << confirmed_flush(s) << " past commit " << commit << " with no replica\n"
      << w.log();

  Redis replica;
  replica.start_replica_of(master);
  ASSERT_TRUE(replica.wait_in_sync()) << replica.log();
  EXPECT_TRUE(wait_until([&] { return confirmed_past(s.conninfo, s.slot, commit); }, 15s))
      << "confirmed " << confirmed_flush(s) << ", not past commit " << commit << " with a replica in sync\n"
      << w.log();
  EXPECT_EQ(xlen(replica, key), 1);
  s.sql("INSERT INTO t VALUES (2, 'two')");
  EXPECT_TRUE(wait_until([&] { return s.caught_up(); }, 15s)) << w.log();
  EXPECT_EQ(xlen(replica, key), 2);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

// ------------------------------------------------------------------------------------------------
// Failover: the master crashes under load, its replica is promoted, walstream resumes on it.

// Small INSERT/UPDATE/DELETE transactions (1-4 changes) on tables a and b from a thread, until
// stopped (120 s at most). The only writer of both tables, so it knows which rows exist.
class Load {
 public:
  Load(std::string conninfo, unsigned seed) : conninfo_(std::move(conninfo)), seed_(seed) {
    thread_ = std::thread([this] { run(); });
  }
  ~Load() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  long changes() const { return changes_; }
  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }

 private:
  void run() {
    try {
      pqxx::connection c(conninfo_);
      std::mt19937 rng(seed_);
      std::vector<int> live[2];
      int next_id[2] = {1, 1};
      auto deadline = Clock::now() + 120s;
      while (!stop_ && Clock::now() < deadline) {
        pqxx::work tx(c);
        int ops = 1 + static_cast<int>(rng() % 4);
        for (int i = 0; i < ops; ++i) {
          int t = static_cast<int>(rng() % 2);
          const char* table = t == 0 ? "a" : "b";
          auto& ids = live[t];
          int kind = ids.size() < 20 ? 0 : static_cast<int>(rng() % 3);
          if (kind == 0) {
            int id = next_id[t]++;
            tx.exec(fmt::format("INSERT INTO {} VALUES ({}, md5(random()::text))", table, id));
            ids.push_back(id);
          } else if (kind == 1) {
            tx.exec(fmt::format("UPDATE {} SET v = md5(random()::text) WHERE id = {}", table, ids[rng() % ids.size()]));
          } else {
            auto at = rng() % ids.size();
            tx.exec(fmt::format("DELETE FROM {} WHERE id = {}", table, ids[at]));
            ids[at] = ids.back();
            ids.pop_back();
          }
        }
        tx.commit();
        changes_ += ops;
        std::this_thread::sleep_for(1ms);
      }
    } catch (const std::exception& e) {
      error_ = e.what();
      failed_ = true;
    }
  }

  std::string conninfo_;
  unsigned seed_;
  std::atomic<bool> stop_{false};
  std::atomic<long> changes_{0};
  std::atomic<bool> failed_{false};
  std::string error_;
  std::thread thread_;
};

// walstream --redis-wait 1 on the master under load; thousands of changes confirmed; the master is
// killed -9 and its replica promoted; walstream started on the promoted replica ends with every
// change of the load exactly once, in order, as an independent test_decoding slot saw them.
// cut_off_first: the replica loses its master before the crash and 1,500 more changes commit
// meanwhile, so the promoted replica lacks what the master took after the cut — without WAIT,
// walstream would have confirmed it to PostgreSQL and it would be lost.
void failover(bool cut_off_first) {
  Redis master;
  master.start();
  Redis replica;
  replica.start_replica_of(master);
  ASSERT_TRUE(replica.wait_in_sync()) << replica.log();

  Scope s;
  s.sql("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text)");
  // The reference slot exists before walstream's, and nothing is written before walstream streams.
  const std::string ref_slot = s.slot + "_ref";
  TempSlot ref_guard(s, ref_slot, "test_decoding");
  const std::vector<std::string> keys = {s.stream("public.a"), s.stream("public.b")};
  auto on = [&](const Redis& r) { return xlen(r, keys[0]) + xlen(r, keys[1]); };

  std::string logs;
  std::random_device rd;
  const unsigned seed = rd();
  SCOPED_TRACE(fmt::format("load seed {}", seed));
  {
    Walstream w(with_flags(s.args(master), {"--redis-wait", "1", "--shutdown-timeout", "2"}));
    ASSERT_TRUE(streams(s, w));
    Load load(s.conninfo, seed);
    ASSERT_TRUE(wait_until([&] { return on(replica) >= 3000 || !w.running() || load.failed(); }, 60s))
        << "master " << on(master) << " replica " << on(replica) << "\n"
        << w.log();
    ASSERT_TRUE(w.running()) << w.log();
    ASSERT_FALSE(load.failed()) << load.error();
    // Thousands of changes confirmed to PostgreSQL (so on the replica), and more in flight.
    std::uint64_t replicated = 0;
    for (const auto& key : keys) {
      auto last = redis_command(replica, {"XREVRANGE", key, "+", "-", "COUNT", "1"});
      if (!last.empty()) replicated = std::max(replicated, parse_entry_id(last[0]).lsn);
    }
    ASSERT_TRUE(wait_until([&] { return confirmed_past(s.conninfo, s.slot, replicated); }, 20s))
        << "confirmed " << confirmed_flush(s) << ", replica at " << replicated << "\n"
        << w.log();
    if (cut_off_first) {
      // A partition: the replica keeps its data and looks for a master where there is none.
      redis_command(replica, {"REPLICAOF", "127.0.0.1", std::to_string(free_port())});
      ASSERT_TRUE(wait_until([&] { return master.connected_replicas() == 0; }, 10s));
      const long at_cut = load.changes();
      ASSERT_TRUE(wait_until([&] { return load.changes() >= at_cut + 1500 || load.failed(); }, 30s));
      ASSERT_TRUE(w.running()) << w.log();
    }
    master.crash();
    replica.promote();
    // Commits after the crash, for the next walstream to stream to the promoted replica.
    const long at_crash = load.changes();
    wait_until([&] { return load.changes() >= at_crash + 500 || load.failed(); }, 20s);
    load.stop();
    ASSERT_FALSE(load.failed()) << load.error();
    w.signal(SIGTERM);
    if (w.wait(20s) == -1) {
      w.signal(SIGKILL);
      w.wait(5s);
    }
    logs += "---- on the master until it crashed\n" + w.log();
  }
  EXPECT_EQ(replica.info("replication", "role"), "master");
  Walstream w(s.args(replica));
  ASSERT_TRUE(streams(s, w)) << logs;
  EXPECT_TRUE(wait_until([&] { return s.caught_up() || !w.running(); }, 90s));
  ASSERT_TRUE(s.caught_up()) << logs << "---- on the promoted replica\n" << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
  logs += "---- on the promoted replica\n" + w.log();

  auto ref = reference_changes(s.conninfo, ref_slot);
  ASSERT_GT(ref.size(), 3500u);
  expect_same_changes(ref, merged(replica, keys), logs);
}

TEST(Failover, MasterCrashUnderLoad) { failover(false); }

TEST(Failover, ReplicaCutOffBeforeTheMasterCrash) { failover(true); }

// ------------------------------------------------------------------------------------------------
// Transactions whole: one MULTI/EXEC each, seen with MONITOR.

// A MONITOR connection read from a thread. Keeps, of MULTI, EXEC, DISCARD and XADD, the client and
// the first arguments (XADD <key> [MAXLEN ~ <n>] <id>). Redis 7.0 prints MULTI when it arrives, the
// queued commands when EXEC runs them, then EXEC; other clients' commands may come between MULTI and
// the block, so blocks are told apart by client.
class Monitor {
 public:
  struct Line {
    std::string client;
    std::vector<std::string> args;
  };

  explicit Monitor(int port) : port_(port) {
    ctx_.reset(redisConnect("127.0.0.1", port));
    if (!ctx_ || ctx_->err) throw std::runtime_error("cannot connect the MONITOR client");
    timeval tv{60, 0};  // bounds every read: a silent minute ends the thread
    redisSetTimeout(ctx_.get(), tv);
    std::unique_ptr<redisReply, void (*)(void*)> r(static_cast<redisReply*>(redisCommand(ctx_.get(), "MONITOR")),
                                                   freeReplyObject);
    if (!r || r->type != REDIS_REPLY_STATUS) throw std::runtime_error("MONITOR refused");
    thread_ = std::thread([this] { run(); });
  }
  ~Monitor() {
    try {
      finish();
    } catch (...) {
    }
  }

  // Returns once the monitor read everything Redis executed before this call (a marker sent after it).
  void finish() {
    if (!thread_.joinable()) return;
    redis_command(port_, {"ECHO", kMarker});
    thread_.join();
  }
  const std::vector<Line>& lines() const { return lines_; }
  const std::string& error() const { return error_; }

 private:
  static constexpr const char* kMarker = "failover-test-monitor-end";

  void run() {
    for (;;) {
      void* raw = nullptr;
      if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || !raw) {
        error_ = ctx_->errstr;
        return;
      }
      std::unique_ptr<redisReply, void (*)(void*)> r(static_cast<redisReply*>(raw), freeReplyObject);
      if (r->type != REDIS_REPLY_STATUS) continue;
      auto line = parse(std::string_view(r->str, r->len));
      if (line.args.empty()) continue;
      auto cmd = lower(line.args[0]);
      if (cmd == "echo" && line.args.size() > 1 && line.args[1] == kMarker) return;
      if (cmd == "multi" || cmd == "exec" || cmd == "discard" || cmd == "xadd") lines_.push_back(std::move(line));
    }
  }

  // 1796160716.709814 [0 127.0.0.1:41468] "XADD" "k" "5-1" "a" "x\"y"
  static Line parse(std::string_view text) {
    Line line;
    auto open = text.find('[');
    auto close = text.find("] ", open);
    if (open == std::string_view::npos || close == std::string_view::npos) return line;
    auto inside = text.substr(open + 1, close - open - 1);
    line.client = std::string(inside.substr(inside.find(' ') + 1));
    std::size_t i = close + 2;
    while (i < text.size() && line.args.size() < 6) {
      if (text[i] != '"') break;
      std::string arg;
      for (++i; i < text.size() && text[i] != '"'; ++i) {
        if (text[i] != '\\' || i + 1 >= text.size()) {
          arg += text[i];
          continue;
        }
        char e = text[++i];
        if (e == 'x' && i + 2 < text.size()) {
          arg += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
          i += 2;
        } else {
          arg += e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e == 'a' ? '\a' : e == 'b' ? '\b' : e;
        }
      }
      line.args.push_back(std::move(arg));
      i += 2;  // the closing quote and the space
    }
    return line;
  }

  int port_;
  std::unique_ptr<redisContext, void (*)(redisContext*)> ctx_{nullptr, redisFree};
  std::vector<Line> lines_;
  std::string error_;
  std::thread thread_;
};

TEST(Atomic, EveryTransactionOfABacklogInOneMultiExec) {
  Redis r;
  r.start();
  Scope s;
  s.sql(
      "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text); "
      "CREATE TABLE c (id int PRIMARY KEY, v text)");
  create_slot(s, r);
  if (HasFatalFailure()) return;

  // The backlog: 120 transactions of 1,000 changes (one table or three, inserts, updates, deletes),
  // each followed by one of 10, and two of 3,000 short rows in the middle (nearly a chunk: ~0.8 MB of
  // commands, under the 4096-command and 1 MiB limits, so they too must appear whole).
  std::vector<std::uint64_t> sizes;
  {
    pqxx::connection c(s.conninfo);
    pqxx::nontransaction tx(c);
    auto txn = [&](const std::string& statements, std::uint64_t changes) {
      tx.exec("BEGIN; " + statements + "; COMMIT");
      sizes.push_back(changes);
    };
    int a = 0, small = 0, big = 0;
    for (int k = 0; k < 120; ++k) {
      switch (k % 4) {
        case 0:
          txn(fmt::format("INSERT INTO a SELECT g, md5(g::text) FROM generate_series({}, {}) g", a + 1, a + 1000),
              1000);
          a += 1000;
          break;
        case 1:
          txn(fmt::format("INSERT INTO b SELECT g, md5(g::text) FROM generate_series({0} + 1, {0} + 600) g; "
                          "INSERT INTO c SELECT g, md5(g::text) FROM generate_series({0} + 1, {0} + 300) g; "
                          "UPDATE a SET v = 'x' || v WHERE id BETWEEN {1} AND {1} + 99",
                          big, a - 999),
              1000);
          big += 600;
          break;
        case 2:
          txn(fmt::format("UPDATE a SET v = md5(v) WHERE id BETWEEN {} AND {}", a - 999, a), 1000);
          break;
        default:
          txn(fmt::format("DELETE FROM a WHERE id BETWEEN {} AND {}", a - 999, a), 1000);
      }
      txn(fmt::format("INSERT INTO c SELECT g, 's' FROM generate_series({}, {}) g", 1'000'000 + small + 1,
                      1'000'000 + small + 10),
          10);
      small += 10;
      if (k == 40 || k == 81) {
        txn(fmt::format("INSERT INTO b SELECT g, 's' FROM generate_series({}, {}) g", 2'000'000 + k * 10'000,
                        2'000'000 + k * 10'000 + 2999),
            3000);
      }
    }
  }
  std::uint64_t total = 0;
  for (auto n : sizes) total += n;

  Monitor monitor(r.port());
  Walstream w(s.args(r));
  ASSERT_TRUE(streams(s, w));
  EXPECT_TRUE(wait_until([&] { return s.caught_up() || !w.running(); }, 120s));
  ASSERT_TRUE(s.caught_up()) << w.log();
  monitor.finish();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
  ASSERT_TRUE(monitor.error().empty()) << monitor.error();

  const std::vector<std::string> keys = {s.stream("public.a"), s.stream("public.b"), s.stream("public.c")};
  auto got = merged(r, keys);
  ASSERT_EQ(got.size(), total) << w.log();
  auto stored = transaction_sizes(got);
  EXPECT_EQ(stored, sizes) << "transactions in Redis differ from those committed";

  // Per client: the MULTI that is open; each XADD belongs to it.
  static const std::regex id_re(R"(\d+-\d+)");
  std::map<std::string, int> open;
  int blocks = 0;
  std::map<std::uint64_t, std::set<int>> blocks_of;
  std::size_t xadds = 0, outside = 0;
  std::string examples;
  for (const auto& line : monitor.lines()) {
    auto cmd = lower(line.args[0]);
    if (cmd == "multi") {
      open[line.client] = ++blocks;
    } else if (cmd == "exec" || cmd == "discard") {
      open.erase(line.client);
    } else {
      ++xadds;
      auto id = std::find_if(line.args.begin() + 1, line.args.end(),
                             [](const std::string& a) { return std::regex_match(a, id_re); });
      ASSERT_NE(id, line.args.end()) << "no ID in XADD " << line.args.at(1);
      auto it = open.find(line.client);
      if (it == open.end()) {
        if (++outside <= 5) examples += fmt::format("XADD {} {} outside MULTI/EXEC\n", line.args[1], *id);
        continue;
      }
      blocks_of[parse_entry_id(*id).lsn].insert(it->second);
    }
  }
  EXPECT_EQ(xadds, total) << "XADDs seen by MONITOR";
  EXPECT_EQ(outside, 0u) << examples;
  std::size_t split = 0;
  for (const auto& [lsn, in] : blocks_of) {
    if (in.size() > 1 && ++split <= 5) examples += fmt::format("commit {} in {} MULTI/EXEC blocks\n", lsn, in.size());
  }
  EXPECT_EQ(split, 0u) << "transactions split over MULTI/EXEC blocks (" << blocks << " blocks in all):\n" << examples;
  EXPECT_EQ(blocks_of.size(), sizes.size());
}

// SIGTERM while a backlog of 500-row transactions drains: exit 0, and Redis holds whole transactions.
TEST(Atomic, SigtermWhileBacklogDrainsLeavesNoPartialTransaction) {
  Redis r;
  r.start();
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  create_slot(s, r);
  if (HasFatalFailure()) return;
  constexpr int kRows = 500, kTxns = 60;
  const auto key = s.stream("public.t");
  int next = 1, committed = 0;
  auto add_backlog = [&] {
    pqxx::connection c(s.conninfo);
    pqxx::nontransaction tx(c);
    for (int i = 0; i < kTxns; ++i, next += kRows, ++committed) {
      tx.exec(
          fmt::format("INSERT INTO t SELECT g, md5(g::text) FROM generate_series({}, {}) g", next, next + kRows - 1));
    }
  };
  auto expect_whole = [&](const std::string& when) {
    auto sizes = transaction_sizes(merged(r, {key}));
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      ASSERT_EQ(sizes[i], static_cast<std::uint64_t>(kRows)) << when << ": transaction " << i << " of " << sizes.size();
    }
  };
  std::string logs;
  // Stopped as soon as entries appear, a little later, and deep into the backlog.
  for (long after : {1L, 3000L, 12000L}) {
    add_backlog();
    auto before = xlen(r, key);
    Walstream w(s.args(r));
    bool reached = wait_until([&] { return xlen(r, key) >= before + after || !w.running(); }, 60s);
    w.signal(SIGTERM);
    auto at = xlen(r, key);
    int code = w.wait(30s);
    auto when = fmt::format("SIGTERM after {} new entries (wanted {})", at - before, after);
    logs += "---- " + when + "\n" + w.log();
    ASSERT_TRUE(reached) << when << "\n" << logs;
    EXPECT_EQ(code, 0) << when << "\n" << w.log();
    expect_whole(when);
    if (HasFatalFailure()) {
      ADD_FAILURE() << logs;
      return;
    }
  }
  Walstream w(s.args(r));
  EXPECT_TRUE(wait_until([&] { return s.caught_up() || !w.running(); }, 60s));
  ASSERT_TRUE(s.caught_up()) << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
  auto got = merged(r, {key});
  EXPECT_EQ(got.size(), static_cast<std::size_t>(committed) * kRows);
  auto sizes = transaction_sizes(got);
  EXPECT_EQ(sizes.size(), static_cast<std::size_t>(committed));
  expect_whole("at the end");
}

// ------------------------------------------------------------------------------------------------
// Fatal: exit 1 with one clear line, instead of reconnecting for ever.

TEST(Fatal, PublicationDropped) {
  Scope s;
  s.publication = "pub_dropped_here";
  s.sql("CREATE TABLE kv (k int PRIMARY KEY, v text)");
  Walstream w(s.args());
  ASSERT_TRUE(streams(s, w));
  s.sql("INSERT INTO kv VALUES (1, 'stored')");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.kv")) == 1; }, 10s)) << w.log();
  s.sql("DROP PUBLICATION pub_dropped_here");
  auto at = Clock::now();
  auto position = commit_and_position(s.conninfo, "INSERT INTO kv VALUES (2, 'after the drop')");
  expect_fatal(w, at, {"pub_dropped_here"});
  EXPECT_TRUE(confirmed_below(s, position))
      << "confirmed " << confirmed_flush(s) << ", the insert ends at " << position;
  EXPECT_EQ(xlen(s.stream("public.kv")), 1);
}

// max_slot_wal_keep_size exceeded while walstream was stopped: PostgreSQL invalidated the slot.
TEST(Fatal, SlotInvalidated) {
  Postgres pg2;
  pg2.extra_options = "-c max_slot_wal_keep_size=1MB";
  pg2.start();
  const auto conninfo = pg2.conninfo();
  const std::string slot = "keep_size_slot";  // no "lost" in it: the line must say so itself
  sql(conninfo, "CREATE TABLE kv (k int PRIMARY KEY, v text)");
  const std::vector<std::string> args = {
      "run", "--pg", conninfo, "--redis", redis().url(), "--slot", slot, "--prefix", "wal:", "--status-interval", "1"};
  {
    Walstream w(args);
    ASSERT_TRUE(streams(conninfo, slot, w));
    sql(conninfo, "INSERT INTO kv VALUES (1, 'stored')");
    ASSERT_TRUE(wait_until([&] { return xlen("wal:public.kv") == 1; }, 10s)) << w.log();
    w.signal(SIGTERM);
    ASSERT_EQ(w.wait(), 0) << w.log();
  }
  // WAL well past 1 MB beyond the slot: one segment switch after another, then a checkpoint.
  const auto status_sql = fmt::format("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{}'", slot);
  std::string status;
  for (int round = 0; round < 10 && status != "lost"; ++round) {
    for (int i = 0; i < 5; ++i) {
      sql(conninfo, "SELECT pg_logical_emit_message(false, 'filler', repeat('x', 1048576))");
      sql(conninfo, "SELECT pg_switch_wal()");
    }
    sql(conninfo, "CHECKPOINT");
    status = query_one(conninfo, status_sql);
  }
  ASSERT_EQ(status, "lost");
  sql(conninfo, "INSERT INTO kv VALUES (2, 'after the loss')");
  auto at = Clock::now();
  Walstream w(args);
  expect_fatal(w, at, {slot});
  auto errors = log_lines(w.log(), "ERROR");
  if (!errors.empty()) {
    EXPECT_TRUE(contains_ci(errors[0], "lost") || contains_ci(errors[0], "invalidated")) << errors[0];
  }
}

// A published table's stream key holds a string: Redis answers WRONGTYPE to the stream commands.
TEST(Fatal, StreamKeyOfAnotherType) {
  Scope s;
  s.sql("CREATE TABLE kv (k int PRIMARY KEY, v text)");
  const auto key = s.stream("public.kv");
  Walstream w(s.args());
  ASSERT_TRUE(streams(s, w));
  redis_command({"SET", key, "x"});
  auto at = Clock::now();
  auto position = commit_and_position(s.conninfo, "INSERT INTO kv VALUES (1, 'one')");
  expect_fatal(w, at, {"WRONGTYPE", key});
  EXPECT_TRUE(confirmed_below(s, position))
      << "confirmed " << confirmed_flush(s) << ", the insert ends at " << position;
  EXPECT_EQ(redis_command({"GET", key}), std::vector<std::string>{"x"});
}

// The same when the stream existed and walstream already wrote to it: the refusal comes from EXEC.
TEST(Fatal, StreamReplacedByAnotherTypeMidSession) {
  Scope s;
  s.sql("CREATE TABLE kv (k int PRIMARY KEY, v text)");
  const auto key = s.stream("public.kv");
  Walstream w(s.args());
  ASSERT_TRUE(streams(s, w));
  s.sql("INSERT INTO kv VALUES (1, 'one')");
  ASSERT_TRUE(wait_until([&] { return xlen(key) == 1; }, 10s)) << w.log();
  redis_command({"DEL", key});
  redis_command({"SET", key, "x"});
  auto at = Clock::now();
  auto position = commit_and_position(s.conninfo, "INSERT INTO kv VALUES (2, 'two')");
  expect_fatal(w, at, {"WRONGTYPE", key});
  EXPECT_TRUE(confirmed_below(s, position))
      << "confirmed " << confirmed_flush(s) << ", the insert ends at " << position;
}

}  // namespace
