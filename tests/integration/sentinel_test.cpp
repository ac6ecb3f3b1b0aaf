// Redis Sentinel (redis-sentinel:// URLs): real redis-sentinel processes on loopback. A forced failover
// (SENTINEL FAILOVER) in the middle of a load with --redis-wait 1 loses and doubles nothing, and
// walstream follows the new master; a stale answer (the named node is a replica) is refused before
// anything is written; no sentinel naming the master is retried with every sentinel's answer logged;
// `walstream tail` and `walstream status` take the same URL. SENTINEL_VERBOSE=1 prints the logs.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <random>
#include <rapidjson/document.h>
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

const std::string kName = "walstream";  // the master's name at the sentinels

long count_of(const std::string& text, const std::string& what) {
  long n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// walstream's log lines of one level holding `what`.
std::vector<std::string> lines_with(const std::string& log, const std::string& level, const std::string& what) {
  std::vector<std::string> out;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" " + level + " ") != std::string::npos && line.find(what) != std::string::npos) out.push_back(line);
  }
  return out;
}

// `walstream run` of the scope against a Redis URL of any form.
std::vector<std::string> run_args(const Scope& s, const std::string& url, std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"run",           "--pg",    s.conninfo, "--redis",
                                   url,             "--slot",  s.slot,     "--publication",
                                   s.publication,   "--prefix", s.prefix,  "--status-interval",
                                   "1"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// Waits until walstream streams from its slot; fails at once when it exited instead.
::testing::AssertionResult streams(const Scope& s, Walstream& w) {
  bool ok = wait_until([&] { return !w.running() || s.streaming(); }, 30s);
  if (!w.running()) return ::testing::AssertionFailure() << "walstream exited (" << w.wait() << "):\n" << w.log();
  if (!ok) return ::testing::AssertionFailure() << "walstream does not stream after 30 s:\n" << w.log();
  return ::testing::AssertionSuccess();
}

// errorstat_READONLY of INFO errorstats: how many writes this node refused as a replica.
long readonly_refusals(const Redis& r) {
  auto v = r.info("errorstats", "errorstat_READONLY");  // "count=3"
  return v.empty() ? 0 : std::stol(v.substr(v.find('=') + 1));
}

std::string role(const Redis& r) {
  try {
    return r.info("replication", "role");
  } catch (const std::exception&) {
    return "?";
  }
}

// Runs one transaction and returns the WAL insert position right after its commit.
std::string commit_and_position(const std::string& conninfo, const std::string& statements) {
  pqxx::connection c(conninfo);
  pqxx::nontransaction tx(c);
  tx.exec("BEGIN; " + statements + "; COMMIT");
  return tx.exec("SELECT pg_current_wal_insert_lsn()")[0][0].c_str();
}

bool confirmed_below(const Scope& s, const std::string& lsn) {
  return s.query_one(fmt::format("SELECT confirmed_flush_lsn < '{}' FROM pg_replication_slots WHERE slot_name = '{}'",
                                 lsn, s.slot)) == "t";
}

// Small transactions (1-3 inserts, updates or deletes) on tables a and b from a thread until stopped
// (120 s at most); the only writer of both, so it knows which rows exist.
class Load {
 public:
  Load(std::string conninfo, unsigned seed) : conninfo_(std::move(conninfo)), seed_(seed) {
    thread_ = std::thread([this] { run(); });
  }
  ~Load() { stop(); }
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;
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
      const auto deadline = Clock::now() + 120s;
      while (!stop_ && Clock::now() < deadline) {
        pqxx::work tx(c);
        const int ops = 1 + static_cast<int>(rng() % 3);
        for (int i = 0; i < ops; ++i) {
          const int t = static_cast<int>(rng() % 2);
          const char* table = t == 0 ? "a" : "b";
          auto& ids = live[t];
          const int kind = ids.size() < 20 ? 0 : static_cast<int>(rng() % 3);
          if (kind == 0) {
            ids.push_back(next_id[t]++);
            tx.exec(fmt::format("INSERT INTO {} VALUES ({}, md5(random()::text))", table, ids.back()));
          } else if (kind == 1) {
            tx.exec(fmt::format("UPDATE {} SET v = md5(v) WHERE id = {}", table, ids[rng() % ids.size()]));
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

// The IDs of the JSON lines `walstream tail` printed ({"stream_id":…,"id":"<id>",…}), in order.
std::vector<std::string> tail_ids(const std::string& output) {
  static const std::regex id_re(R"re(^\{"stream_id":"[^"]*","id":"([0-9]+-[0-9]+)")re");
  std::vector<std::string> ids;
  std::istringstream in(output);
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, id_re)) ids.push_back(m[1]);
  }
  return ids;
}

void verbose(const std::string& logs) {
  if (std::getenv("SENTINEL_VERBOSE")) fprintf(stderr, "%s\n", logs.c_str());
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// A master, two replicas and three sentinels; walstream --redis-wait <redis_wait> through the
// sentinels under a steady load on two tables; SENTINEL FAILOVER half-way; the load goes on.
//
// Sentinel promotes one replica and only then moves the other; meanwhile the old master, still a
// master, takes walstream's writes and the other replica acknowledges them (--redis-wait 1 is met),
// and its resynchronisation from the new master later drops them. walstream confirms a position only
// once every sentinel, asked after Redis acknowledged it, names its master with no failover in
// progress (run_loop.cpp, sentinel_vouched): nothing the old master took during the failover is
// confirmed. At the end the new master holds every committed change exactly once, in commit order,
// as an independent test_decoding slot saw them; walstream logged the move to the new master once; no
// node ever refused a write as a replica (what a write to the demoted master would have met); and a
// `walstream tail` through the same URL, running all along, printed exactly the final stream.
// (Without that gate this lost confirmed changes in 3 runs of 3: walstream then stopped at the
// reconnection with "Redis is behind slot …".)
void failover_under_load(int redis_wait) {
  Redis master, r1, r2;
  master.start();
  r1.start_replica_of(master);
  r2.start_replica_of(master);
  ASSERT_TRUE(r1.wait_in_sync() && r2.wait_in_sync()) << r1.log() << r2.log();
  Sentinel sentinels;
  sentinels.start(master, kName, 3);
  ASSERT_TRUE(sentinels.wait_ready(2)) << sentinels.logs();
  const auto url = sentinels.url(kName);

  Scope s;
  s.sql("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text)");
  // The reference slot exists before walstream's, and nothing is written before walstream streams.
  const std::string ref_slot = s.slot + "_ref";
  TempSlot ref_guard(s, ref_slot, "test_decoding");
  const std::vector<std::string> keys = {s.stream("public.a"), s.stream("public.b")};
  auto on = [&](const Redis& r) {
    try {
      return xlen(r, keys[0]) + xlen(r, keys[1]);
    } catch (const std::exception&) {
      return -1LL;  // loading after a resynchronisation
    }
  };
  std::random_device rd;
  const unsigned seed = rd();
  SCOPED_TRACE(fmt::format("load seed {}, --redis-wait {}", seed, redis_wait));

  Walstream w(run_args(s, url, {"--redis-wait", std::to_string(redis_wait), "--shutdown-timeout", "2"}));
  ASSERT_TRUE(streams(s, w));
  Walstream tail({"tail", "public.a", "--redis", url, "--prefix", s.prefix, "--from-start", "--block-ms", "200"});
  Load load(s.conninfo, seed);
  ASSERT_TRUE(wait_until([&] { return on(master) >= 2000 || !w.running() || load.failed(); }, 60s)) << w.log();
  ASSERT_TRUE(w.running()) << w.log();
  ASSERT_FALSE(load.failed()) << load.error();

  const auto failover_at = Clock::now();
  sentinels.failover();
  int new_port = 0;
  ASSERT_TRUE(wait_until(
      [&] {
        new_port = sentinels.master_port(0);
        return new_port != 0 && new_port != master.port();
      },
      30s))
      << sentinels.logs();
  ASSERT_TRUE(new_port == r1.port() || new_port == r2.port()) << new_port;
  Redis& promoted = new_port == r1.port() ? r1 : r2;
  ASSERT_TRUE(sentinels.wait_master(new_port)) << sentinels.logs();
  // The sentinels demote the old master once they see it still claims to be one.
  ASSERT_TRUE(wait_until([&] { return role(master) == "slave"; }, 40s)) << sentinels.logs();
  const auto demoted_in = std::chrono::duration<double>(Clock::now() - failover_at).count();
  const auto moved = fmt::format("is at 127.0.0.1:{} now (was 127.0.0.1:{})", new_port, master.port());
  ASSERT_TRUE(wait_until([&] { return count_of(w.log(), moved) > 0 || !w.running(); }, 30s))
      << w.log() << sentinels.logs();
  // Then it either streams again, to the new master, or stops.
  ASSERT_TRUE(wait_until([&] { return count_of(w.log(), "streaming from slot") >= 2 || !w.running(); }, 30s))
      << w.log();
  std::printf("failover: the old master was demoted %.1f s after SENTINEL FAILOVER\n", demoted_in);

  auto finish = [&] {
    load.stop();
    tail.signal(SIGTERM);
    tail.wait();
    return "---- walstream\n" + w.log() + "---- tail\n" + tail.log() + sentinels.logs();
  };
  ASSERT_TRUE(w.running()) << "walstream stopped at the failover\n" << finish();

  // The load goes on, onto the new master.
  const long at_move = load.changes();
  const auto on_new = on(promoted);
  ASSERT_TRUE(wait_until([&] { return (load.changes() >= at_move + 1500 && on(promoted) >= on_new + 1500) ||
                                      load.failed() || !w.running(); },
                         60s))
      << "new master " << on(promoted) << "\n"
      << w.log();
  load.stop();
  ASSERT_FALSE(load.failed()) << load.error();
  ASSERT_TRUE(wait_until([&] { return s.caught_up() || !w.running(); }, 60s));
  ASSERT_TRUE(s.caught_up()) << w.log();
  const auto final_a = xrange(promoted, keys[0]);
  EXPECT_TRUE(wait_until([&] { return tail_ids(tail.log()).size() >= final_a.size() || !tail.running(); }, 30s))
      << tail.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
  const auto logs = finish();
  EXPECT_EQ(tail.wait(), 0) << tail.log();
  verbose(logs);
  std::printf("--redis-wait %d: %ld changes, every one on the new master once\n", redis_wait, load.changes());

  auto ref = reference_changes(s.conninfo, ref_slot);
  ASSERT_GT(ref.size(), 3500u);
  expect_same_changes(ref, merged(promoted, keys), logs);

  // One move, to the new master; nothing fatal.
  EXPECT_EQ(count_of(w.log(), "Redis Sentinel: master '" + kName + "' is at"), 1) << w.log();
  EXPECT_TRUE(lines_with(w.log(), "ERROR", "").empty()) << w.log();
  // A replica refuses every write with READONLY and counts it: none of the three nodes (the demoted
  // master above all) ever refused one, so walstream never wrote to a replica.
  for (const Redis* r : {&master, &r1, &r2}) {
    EXPECT_EQ(readonly_refusals(*r), 0) << "port " << r->port() << "\n" << w.log();
  }
  // tail followed the failover: exactly the final stream, each entry once, in order.
  std::vector<std::string> want;
  for (const auto& e : final_a) want.push_back(e.id);
  EXPECT_EQ(tail_ids(tail.log()), want) << tail.log();
}

TEST(Sentinel, FailoverInTheMiddleOfALoad) { failover_under_load(1); }

// ------------------------------------------------------------------------------------------------
// A stale answer: the sentinels name a node that is a replica now (made one behind their back, with
// its data: a replica of a port where nothing listens). walstream, streaming to it, gets its first
// write refused, then refuses to write there itself (ROLE) and says so, again and again, while the
// node's count of refused writes stands still; nothing is confirmed meanwhile. Once the node is a
// master again walstream goes on, with everything exactly once.
TEST(Sentinel, NeverWritesToAReplica) {
  Redis master, replica;
  master.start();
  replica.start_replica_of(master);
  ASSERT_TRUE(replica.wait_in_sync()) << replica.log();
  Sentinel sentinels;
  sentinels.start(master, kName, 3);
  ASSERT_TRUE(sentinels.wait_ready(1)) << sentinels.logs();

  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  const std::string ref_slot = s.slot + "_ref";
  TempSlot ref_guard(s, ref_slot, "test_decoding");
  const auto key = s.stream("public.t");
  Walstream w(run_args(s, sentinels.url(kName), {"--max-backoff", "1"}));
  ASSERT_TRUE(streams(s, w));
  s.sql("INSERT INTO t VALUES (1, 'on the master')");
  ASSERT_TRUE(wait_until([&] { return xlen(master, key) == 1 && s.caught_up(); }, 15s)) << w.log();

  redis_command(master, {"REPLICAOF", "127.0.0.1", std::to_string(free_port())});
  ASSERT_EQ(role(master), "slave");
  const auto position = commit_and_position(s.conninfo, "INSERT INTO t VALUES (2, 'while it is a replica')");
  const auto refused = fmt::format("the sentinels named 127.0.0.1:{} as master '{}', but it is a slave",
                                   master.port(), kName);
  ASSERT_TRUE(wait_until([&] { return count_of(w.log(), refused) >= 1 || !w.running(); }, 15s)) << w.log();
  ASSERT_TRUE(w.running()) << w.log();
  EXPECT_EQ(sentinels.master_port(0), master.port()) << "the sentinels' answer was not stale";
  // The refusals go on (retried), but no write reaches the node any more.
  const long at_refusal = readonly_refusals(master);
  const long lines = count_of(w.log(), refused);
  EXPECT_TRUE(wait_until([&] { return count_of(w.log(), refused) >= lines + 2; }, 10s)) << w.log();
  EXPECT_EQ(readonly_refusals(master), at_refusal) << w.log();
  EXPECT_EQ(xlen(master, key), 1);
  EXPECT_TRUE(confirmed_below(s, position)) << "confirmed past the insert made while the node was a replica";
  EXPECT_TRUE(w.running()) << w.log();

  master.promote();
  s.sql("INSERT INTO t VALUES (3, 'on the master again')");
  EXPECT_TRUE(wait_until([&] { return xlen(master, key) == 3 && s.caught_up(); }, 20s)) << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
  verbose(w.log() + sentinels.logs());
  expect_same_changes(reference_changes(s.conninfo, ref_slot), merged(master, {key}), w.log());
  EXPECT_TRUE(lines_with(w.log(), "ERROR", "").empty()) << w.log();
}

// ------------------------------------------------------------------------------------------------
// No sentinel names the master: one sentinel down, the other monitoring other names. At start (a
// setup problem) `walstream run`, `status` and `tail` stop with one line naming the master and both
// sentinels' answers, exit 1. Once running (an outage) walstream retries, each time with such a
// line, and streams again as soon as a sentinel names the master; nothing is lost meanwhile.
TEST(Sentinel, NoSentinelNamesTheMaster) {
  Redis master;
  master.start();
  Sentinel sentinels;
  sentinels.start(master, kName, 1);
  const int down = free_port();
  const auto url_of = [&](const std::string& name) {
    return fmt::format("redis-sentinel://127.0.0.1:{},127.0.0.1:{}#{}", down, sentinels.port(0), name);
  };
  const auto down_answer = fmt::format("127.0.0.1:{}/0: cannot connect", down);
  const auto live_answer = fmt::format("127.0.0.1:{}/0: does not know it", sentinels.port(0));
  auto expect_reasons = [&](const std::string& line) {
    EXPECT_NE(line.find(down_answer), std::string::npos) << line;
    EXPECT_NE(line.find(live_answer), std::string::npos) << line;
  };

  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  const auto key = s.stream("public.t");
  const std::string unknown = "no sentinel named the master 'elsewhere'";
  auto run = run_walstream(run_args(s, url_of("elsewhere")));
  EXPECT_EQ(run.code, 1) << run.output;
  auto errors = lines_with(run.output, "ERROR", "");
  ASSERT_EQ(errors.size(), 1u) << run.output;
  EXPECT_NE(errors[0].find(unknown), std::string::npos) << errors[0];
  expect_reasons(errors[0]);
  auto status = run_walstream(
      {"status", "--pg", s.conninfo, "--redis", url_of("elsewhere"), "--slot", s.slot, "--prefix", s.prefix});
  EXPECT_EQ(status.code, 1) << status.output;
  EXPECT_EQ(count_of(status.output, unknown), 1) << status.output;
  auto tail = run_walstream({"tail", "public.t", "--redis", url_of("elsewhere"), "--prefix", s.prefix, "--count", "1"});
  EXPECT_EQ(tail.code, 1) << tail.output;
  errors = lines_with(tail.output, "ERROR", "");
  ASSERT_EQ(errors.size(), 1u) << tail.output;
  EXPECT_NE(errors[0].find(unknown), std::string::npos) << errors[0];
  expect_reasons(errors[0]);

  // Running, then the sentinel forgets the master and every connection to it drops.
  Walstream w(run_args(s, url_of(kName), {"--max-backoff", "1"}));
  ASSERT_TRUE(streams(s, w));
  s.sql("INSERT INTO t VALUES (1)");
  ASSERT_TRUE(wait_until([&] { return xlen(master, key) == 1 && s.caught_up(); }, 15s)) << w.log();
  sentinels.command(0, {"SENTINEL", "REMOVE", kName});
  redis_command(master, {"CLIENT", "KILL", "TYPE", "normal"});
  const auto position = commit_and_position(s.conninfo, "INSERT INTO t VALUES (2)");
  const std::string forgotten = "no sentinel named the master '" + kName + "'";
  ASSERT_TRUE(wait_until([&] { return lines_with(w.log(), "WARN", forgotten).size() >= 3 || !w.running(); }, 20s))
      << w.log();
  ASSERT_TRUE(w.running()) << w.log();
  for (const auto& line : lines_with(w.log(), "WARN", forgotten)) {
    expect_reasons(line);
    EXPECT_NE(line.find("retrying"), std::string::npos) << line;
  }
  EXPECT_EQ(xlen(master, key), 1);
  EXPECT_TRUE(confirmed_below(s, position));
  // Monitored again: walstream finds the master and streams what was committed meanwhile.
  sentinels.command(0, {"SENTINEL", "MONITOR", kName, "127.0.0.1", std::to_string(master.port()), "1"});
  EXPECT_TRUE(wait_until([&] { return xlen(master, key) == 2 && s.caught_up(); }, 20s)) << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
  EXPECT_TRUE(lines_with(w.log(), "ERROR", "").empty()) << w.log();
  verbose(run.output + status.output + tail.output + w.log());
}

// ------------------------------------------------------------------------------------------------
// `walstream status` and `walstream tail` through the sentinels: the stream and the checkpoint as
// the master holds them; the entries in order.
TEST(Sentinel, TailAndStatusTakeTheUrl) {
  Redis master;
  master.start();
  Sentinel sentinels;
  sentinels.start(master, kName, 1);
  const auto url = sentinels.url(kName);
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  const auto key = s.stream("public.t");
  Walstream w(run_args(s, url));
  ASSERT_TRUE(streams(s, w));
  s.sql("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2), (3)");
  ASSERT_TRUE(wait_until([&] { return xlen(master, key) == 3 && s.caught_up(); }, 15s)) << w.log();
  const auto entries = xrange(master, key);
  const auto checkpoint = redis_command(master, {"HGET", s.prefix + "checkpoint:" + s.slot, "lsn"}).at(0);

  auto tail = run_walstream({"tail", "public.t", "--redis", url, "--prefix", s.prefix, "--from-start", "--count", "3"});
  ASSERT_EQ(tail.code, 0) << tail.output;
  std::vector<std::string> want;
  for (const auto& e : entries) want.push_back(e.id);
  EXPECT_EQ(tail_ids(tail.output), want) << tail.output;

  auto status = run_walstream({"status", "--pg", s.conninfo, "--redis", url, "--slot", s.slot, "--publication",
                               s.publication, "--prefix", s.prefix, "--json"});
  ASSERT_EQ(status.code, 0) << status.output;
  rapidjson::Document d;
  d.Parse(status.output.c_str());
  ASSERT_TRUE(!d.HasParseError() && d.IsObject()) << "not one JSON document:\n" << status.output;
  EXPECT_TRUE(d["healthy"].GetBool()) << status.output;
  ASSERT_EQ(d["streams"].Size(), 1u) << status.output;
  const auto& stream = d["streams"][0];
  EXPECT_EQ(std::string(stream["key"].GetString()), key);
  EXPECT_EQ(stream["length"].GetInt64(), 3);
  EXPECT_EQ(std::string(stream["first_id"].GetString()), entries.front().id);
  EXPECT_EQ(std::string(stream["last_id"].GetString()), entries.back().id);
  // The checkpoint as the master holds it (it only moves forward: read before and after).
  const auto& cp = d["checkpoint"];
  ASSERT_TRUE(cp["exists"].GetBool()) << status.output;
  const auto lsn = parse_lsn(cp["lsn"].GetString());
  EXPECT_GE(lsn, parse_lsn(checkpoint)) << status.output;
  EXPECT_LE(lsn, parse_lsn(redis_command(master, {"HGET", s.prefix + "checkpoint:" + s.slot, "lsn"}).at(0)));
  EXPECT_GE(lsn, parse_entry_id(entries.back().id).lsn) << status.output;
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

// Behind Sentinel a position is confirmed only once the sentinels vouch for the master
// (run_loop.cpp, sentinel_vouched). With every sentinel down, walstream keeps writing to the master
// it has, says once in a while that it confirms nothing, and confirms nothing; once a sentinel is
// back the slot catches up, with every row once.
TEST(Sentinel, SentinelsDownHoldConfirmationsNotWrites) {
  Redis master;
  master.start();
  Sentinel sentinels;
  sentinels.start(master, kName, 1);
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  const auto key = s.stream("public.t");
  Walstream w(run_args(s, sentinels.url(kName)));
  ASSERT_TRUE(streams(s, w));
  s.sql("INSERT INTO t VALUES (1)");
  ASSERT_TRUE(wait_until([&] { return xlen(master, key) == 1 && s.caught_up(); }, 15s)) << w.log();

  sentinels.stop();
  std::string last;
  for (int i = 2; i <= 11; ++i) last = commit_and_position(s.conninfo, fmt::format("INSERT INTO t VALUES ({})", i));
  ASSERT_TRUE(wait_until([&] { return xlen(master, key) == 11; }, 15s)) << w.log();
  ASSERT_TRUE(wait_until([&] {
    return !lines_with(w.log(), "WARN", "not confirming new positions to PostgreSQL until a sentinel answers").empty();
  }, 15s)) << w.log();
  // Two status intervals later, still nothing past row 1 confirmed.
  std::this_thread::sleep_for(2500ms);
  EXPECT_TRUE(confirmed_below(s, last)) << w.log();

  sentinels.restart(0, master);
  ASSERT_TRUE(wait_until([&] { return s.caught_up(); }, 20s)) << w.log();
  const auto entries = xrange(master, key);
  ASSERT_EQ(entries.size(), 11u);
  for (int i = 0; i < 11; ++i) EXPECT_EQ(entries[i].fields.at("after"), fmt::format(R"({{"id":{}}})", i + 1));
  EXPECT_TRUE(lines_with(w.log(), "ERROR", "").empty()) << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}
