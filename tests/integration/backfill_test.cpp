// `walstream backfill` while changes flow: the request goes through the WAL, chunks are read between
// low/high watermarks, and replaying the stream in ID order (r, c, u as upserts, d as delete, t as
// clear) gives exactly the table's rows — under a concurrent load, and across a SIGKILL mid-backfill.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <fmt/format.h>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "cluster_harness.h"
#include "harness.h"
#include "keys.h"

using namespace harness;
using namespace std::chrono_literals;

namespace {

// Random single-row transactions on acc (updates, deletes, inserts of new ids) until stopped.
class Load {
 public:
  Load(std::string conninfo, int rows) : conninfo_(std::move(conninfo)), rows_(rows), thread_([this] { run(); }) {}
  ~Load() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int done() const { return done_; }

 private:
  void run() {
    pqxx::connection c(conninfo_);
    std::mt19937 rng(42);
    int next_id = rows_ + 1;
    while (!stop_) {
      int id = static_cast<int>(rng() % static_cast<unsigned>(rows_)) + 1;
      int op = static_cast<int>(rng() % 10);
      pqxx::nontransaction tx(c);
      if (op < 6) {
        tx.exec(fmt::format("UPDATE acc SET balance = balance + 1, note = 'u{}' WHERE id = {}", done_.load(), id));
      } else if (op < 8) {
        tx.exec(fmt::format("DELETE FROM acc WHERE id = {}", id));
      } else if (op < 9) {
        tx.exec(fmt::format("INSERT INTO acc VALUES ({}, 0, 'new') ON CONFLICT DO NOTHING", next_id++));
      } else {
        // A key change: the row moves to a new id (the old one must not come back).
        tx.exec(fmt::format("UPDATE acc SET id = {} WHERE id = {}", next_id++, id));
      }
      ++done_;
    }
  }
  std::string conninfo_;
  int rows_;
  std::atomic<bool> stop_{false};
  std::atomic<int> done_{0};
  std::thread thread_;
};

// The table as a subscriber rebuilds it from the stream: key -> after.
std::map<std::string, std::string> replay(const std::vector<Entry>& entries) {
  std::map<std::string, std::string> rows;
  for (const auto& e : entries) {
    const auto& op = e.fields.at("op");
    if (op == "t") {
      rows.clear();
    } else if (op == "d") {
      rows.erase(e.fields.at("key"));
    } else {
      // An update that changed the key carries the old key as `before` (replica identity DEFAULT).
      if (op == "u" && e.fields.count("before")) rows.erase(e.fields.at("before"));
      rows[e.fields.at("key")] = e.fields.at("after");
    }
  }
  return rows;
}

std::map<std::string, std::string> table_rows(const Scope& s) {
  std::map<std::string, std::string> rows;
  for (const auto& r : query(s.conninfo, "SELECT id, balance, note FROM acc")) {
    rows[fmt::format(R"({{"id":{}}})", *r[0])] = fmt::format(R"({{"id":{},"balance":{},"note":"{}"}})", *r[0], *r[1],
                                                              *r[2]);
  }
  return rows;
}

std::string backfill_state(const Scope& s, const std::string& field) {
  auto v = redis_command({"HGET", s.prefix + "backfill:" + s.slot, field});
  return v.empty() ? "" : v[0];
}

// Replaying `entries` (the stream, by default on the shared Redis) gives exactly acc's rows.
void expect_replay_is_the_table(const Scope& s, const std::vector<Entry>& entries) {
  auto rebuilt = replay(entries);
  auto rows = table_rows(s);
  EXPECT_EQ(rebuilt.size(), rows.size());
  int wrong = 0;
  for (const auto& [key, after] : rows) {
    auto it = rebuilt.find(key);
    if (it == rebuilt.end() || it->second != after) {
      if (++wrong <= 5) ADD_FAILURE() << key << ": table " << after << ", stream " << (it == rebuilt.end() ? "-" : it->second);
    }
  }
  for (const auto& [key, after] : rebuilt) {
    if (!rows.count(key) && ++wrong <= 10) ADD_FAILURE() << key << ": in the stream (" << after << "), not in the table";
  }
  EXPECT_EQ(wrong, 0);
  for (std::size_t i = 1; i < entries.size(); ++i) ASSERT_LT(parse_entry_id(entries[i - 1].id), parse_entry_id(entries[i].id));
}

void expect_replay_is_the_table(const Scope& s) { expect_replay_is_the_table(s, xrange(s.stream("public.acc"))); }

// `UPDATE acc SET balance = 7 WHERE id = 50` committed locally and waiting for a synchronous standby that
// never answers: in the WAL (so streamed), not visible, until release() cancels the wait (the commit
// stays: it is in the WAL already). Released at scope exit too.
class StuckCommit {
 public:
  explicit StuckCommit(std::string conninfo)
      : conninfo_(std::move(conninfo)), thread_([this] {
          try {
            sql(conninfo_, "SET synchronous_commit = remote_write; UPDATE acc SET balance = 7 WHERE id = 50");
          } catch (const std::exception&) {
          }
        }) {}
  ~StuckCommit() {
    try {
      release();
    } catch (...) {
    }
  }
  void release() {
    if (!thread_.joinable()) return;
    sql(conninfo_, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%UPDATE acc SET%' "
                   "AND pid <> pg_backend_pid()");
    thread_.join();
  }

 private:
  std::string conninfo_;
  std::thread thread_;
};

void create_acc(const Scope& s, int rows) {
  s.sql(fmt::format("CREATE TABLE acc (id int PRIMARY KEY, balance int NOT NULL, note text NOT NULL);"
                    "INSERT INTO acc SELECT g, 0, 'n' || g FROM generate_series(1, {}) g",
                    rows));
}

}  // namespace

TEST(Backfill, UnderLoadTheStreamReplaysToTheTable) {
  Scope s;
  const int rows = 30'000;
  create_acc(s, rows);
  // No initial snapshot: the rows already there reach the stream only through the backfill.
  Walstream ws(with(s.args(), {"--snapshot", "never"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << ws.log();
  Load load(s.conninfo, rows);
  ASSERT_TRUE(wait_until([&] { return load.done() > 200; })) << ws.log();
  auto req = run_walstream({"backfill", "public.acc", "--pg", s.conninfo, "--slot", s.slot, "--chunk-rows", "500"});
  ASSERT_EQ(req.code, 0) << req.output;
  EXPECT_NE(req.output.find("backfill of public.acc requested at "), std::string::npos) << req.output;
  ASSERT_TRUE(wait_until([&] { return backfill_state(s, "status") == "done"; }, 120s)) << ws.log();
  const int during = load.done();
  load.stop();
  ASSERT_TRUE(wait_until([&] { return s.caught_up(); })) << ws.log();
  ASSERT_TRUE(wait_until([&] { return replay(xrange(s.stream("public.acc"))).size() == table_rows(s).size(); }, 10s));
  expect_replay_is_the_table(s);
  EXPECT_GT(during, 300) << "the load did not run alongside the backfill";
  EXPECT_NE(ws.log().find("public.acc done ("), std::string::npos) << ws.log();
  // The watermarks and the request are walstream's own: never published as messages.
  EXPECT_EQ(redis_command({"EXISTS", s.prefix + "messages:walstream.watermark"}), std::vector<std::string>{"0"});
  EXPECT_EQ(redis_command({"EXISTS", s.prefix + "messages:walstream.backfill"}), std::vector<std::string>{"0"});
  ws.signal(SIGTERM);
  EXPECT_EQ(ws.wait(), 0) << ws.log();
}

TEST(Backfill, SigkillMidwayResumesFromTheLastChunkStored) {
  Scope s;
  // Enough chunks (200 of 1000) that the backfill is still running when the kill comes: 60 chunks were
  // sometimes all stored between the poll that saw 5 and the kill.
  const int rows = 200'000;
  create_acc(s, rows);
  auto args = with(s.args(), {"--snapshot", "never"});
  auto ws = std::make_unique<Walstream>(args);
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << ws->log();
  Load load(s.conninfo, rows);
  auto req = run_walstream({"backfill", "public.acc", "--pg", s.conninfo, "--slot", s.slot, "--chunk-rows", "1000"});
  ASSERT_EQ(req.code, 0) << req.output;
  ASSERT_TRUE(wait_until([&] {
    auto chunks = backfill_state(s, "chunks");
    return backfill_state(s, "status") == "running" && !chunks.empty() && std::stoi(chunks) >= 5;
  }, 60s)) << ws->log();
  ws->signal(SIGKILL);
  ws->wait();
  ASSERT_EQ(backfill_state(s, "status"), "running") << "the backfill ended before the kill: nothing left to resume";
  const auto stored = std::stoi(backfill_state(s, "chunks"));
  ASSERT_LT(stored, 200) << "the backfill ended before the kill: nothing left to resume";
  // `walstream status` shows the backfill waiting to go on.
  auto st = run_walstream({"status", "--pg", s.conninfo, "--redis", redis().url(), "--slot", s.slot, "--prefix",
                           s.prefix});
  EXPECT_NE(st.output.find(fmt::format("backfill     {}backfill:{}: status running", s.prefix, s.slot)),
            std::string::npos)
      << st.output;
  EXPECT_NE(st.output.find(fmt::format("chunks {}", stored)), std::string::npos) << st.output;
  ws = std::make_unique<Walstream>(args);
  ASSERT_TRUE(wait_until([&] { return backfill_state(s, "status") == "done"; }, 120s)) << ws->log();
  load.stop();
  ASSERT_TRUE(wait_until([&] { return s.caught_up(); })) << ws->log();
  expect_replay_is_the_table(s);
  // It went on from where Redis said it was, not from the start.
  EXPECT_NE(ws->log().find("resuming at table 1 of 1 (public.acc)"), std::string::npos) << ws->log();
  ws->signal(SIGTERM);
  EXPECT_EQ(ws->wait(), 0) << ws->log();
}

// On a Redis Cluster the backfill's state lives in the replication slot's hash slot and the rows in the
// table's, on another master: the state's `after` (these rows are stored) must be stored only once the
// rows are. A SIGKILL in the middle of a backfill under load, and a restart: it resumes from the state,
// and the stream still replays to the table (a state stored ahead of its rows would skip them).
TEST(Backfill, OnAClusterSigkillMidwayResumesAndReplaysToTheTable) {
  RedisCluster c;
  Scope s;
  // Enough chunks that the backfill is still running when the pause and the kill come (40 chunks were
  // done before them on a quiet machine).
  const int rows = 200'000;
  create_acc(s, rows);
  const walstream::Keys k{s.prefix, s.slot, true};
  const auto stream = s.stream("public.acc");
  const int state_master = c.master_of_key(k.backfill());
  if (c.master_of_key(stream) == state_master) {
    for (int p : c.master_ports()) {
      if (p != state_master) {
        c.migrate_slot(c.slot_of(stream), state_master, p);
        break;
      }
    }
  }
  ASSERT_NE(c.master_of_key(stream), state_master);
  auto state = [&](const std::string& field) {
    auto v = redis_command(state_master, {"HGET", k.backfill(), field});
    return v.empty() ? std::string() : v[0];
  };
  auto args = with(s.args(c.seed_url()), {"--snapshot", "never"});
  auto ws = std::make_unique<Walstream>(args);
  ASSERT_TRUE(wait_until([&] { return s.streaming(); }, 60s)) << ws->log();
  Load load(s.conninfo, rows);
  auto req = run_walstream({"backfill", "public.acc", "--pg", s.conninfo, "--slot", s.slot, "--chunk-rows", "1000"});
  ASSERT_EQ(req.code, 0) << req.output;
  ASSERT_TRUE(wait_until([&] {
    auto chunks = state("chunks");
    return state("status") == "running" && !chunks.empty() && std::stoi(chunks) >= 5;
  }, 60s)) << ws->log();
  // The rows' master stops taking writes while the state's goes on: a state that ran ahead of its rows
  // would be stored meanwhile, and the kill would leave it ahead.
  const auto paused_at = state("chunks");
  redis_command(c.master_of_key(stream), {"CLIENT", "PAUSE", "2500", "WRITE"});
  std::this_thread::sleep_for(1500ms);
  const auto during_pause = state("chunks");
  ws->signal(SIGKILL);
  ws->wait();
  ASSERT_EQ(state("status"), "running") << "the backfill ended before the kill: nothing left to resume";
  EXPECT_LE(std::stoi(during_pause), std::stoi(paused_at) + 1) << "the state ran ahead of the rows";
  std::this_thread::sleep_for(1500ms);  // the pause over
  ASSERT_LT(std::stoi(state("chunks")), 200) << "the backfill ended before the kill: nothing left to resume";
  ws = std::make_unique<Walstream>(args);
  ASSERT_TRUE(wait_until([&] { return state("status") == "done"; }, 120s)) << ws->log();
  load.stop();
  ASSERT_TRUE(wait_until([&] { return s.caught_up(); }, 60s)) << ws->log();
  expect_replay_is_the_table(s, xrange(c.master_of_key(stream), stream));
  EXPECT_NE(ws->log().find("resuming at table 1 of 1 (public.acc)"), std::string::npos) << ws->log();
  ws->signal(SIGTERM);
  EXPECT_EQ(ws->wait(), 0) << ws->log();
}

TEST(Backfill, WhereLimitsTheRowsAndBadRequestsAreOneLine) {
  Scope s;
  create_acc(s, 1000);
  s.sql("CREATE TABLE nokey (v int); INSERT INTO nokey VALUES (1)");
  Walstream ws(with(s.args(), {"--snapshot", "never"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << ws.log();
  auto base = std::vector<std::string>{"backfill", "--pg", s.conninfo, "--slot", s.slot};

  auto nokey = run_walstream(with(base, {"public.nokey"}));
  EXPECT_EQ(nokey.code, 1) << nokey.output;
  EXPECT_NE(nokey.output.find("public.nokey has no primary key"), std::string::npos) << nokey.output;
  auto missing = run_walstream(with(base, {"public.nothere"}));
  EXPECT_EQ(missing.code, 1) << missing.output;
  EXPECT_NE(missing.output.find("public.nothere is not in publication 'walstream'"), std::string::npos)
      << missing.output;
  auto none = run_walstream(base);
  EXPECT_EQ(none.code, 2) << none.output;
  auto badwhere = run_walstream(with(base, {"public.acc", "--where", "nosuchcolumn > 1"}));
  EXPECT_EQ(badwhere.code, 1) << badwhere.output;
  EXPECT_NE(badwhere.output.find("nosuchcolumn"), std::string::npos) << badwhere.output;

  auto ok = run_walstream(with(base, {"public.acc", "--where", "id <= 100", "--chunk-rows", "30"}));
  ASSERT_EQ(ok.code, 0) << ok.output;
  ASSERT_TRUE(wait_until([&] { return backfill_state(s, "status") == "done"; })) << ws.log();
  auto entries = xrange(s.stream("public.acc"));
  ASSERT_EQ(entries.size(), 100u) << ws.log();
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(entries[i].fields.at("op"), "r");
    EXPECT_EQ(entries[i].fields.at("after"), fmt::format(R"({{"id":{},"balance":0,"note":"n{}"}})", i + 1, i + 1));
  }
  EXPECT_NE(ws.log().find("public.acc done (100 rows in 4 chunk(s))"), std::string::npos) << ws.log();

  // A condition that parses but fails while running (division by zero at id 150): that table is skipped
  // with one line, the rows read before stay, and streaming goes on.
  auto failing = run_walstream(with(base, {"public.acc", "--where", "100 / (id - 150) <> 0", "--chunk-rows", "30"}));
  ASSERT_EQ(failing.code, 0) << failing.output;
  ASSERT_TRUE(wait_until([&] { return ws.log().find("reading public.acc failed") != std::string::npos; })) << ws.log();
  ASSERT_TRUE(wait_until([&] { return backfill_state(s, "status") == "done"; })) << ws.log();
  EXPECT_NE(ws.log().find("division by zero"), std::string::npos) << ws.log();
  // Some chunks below id 150 may have been stored before the failing one (as the plan reads rows).
  const auto stored = xlen(s.stream("public.acc"));
  EXPECT_GE(stored, 100) << ws.log();
  EXPECT_LT(stored, 100 + 149) << ws.log();
  s.sql("INSERT INTO acc VALUES (5000, 1, 'still streaming')");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.acc")) == stored + 1; })) << ws.log();
}

// A table added to the publication while walstream streams: its rows from before are published as `r`
// records by themselves (--backfill-new-tables, on by default); off, only its changes from then on are.
TEST(Backfill, ATableAddedToThePublicationIsBackfilled) {
  for (bool on : {true, false}) {
    Scope s;
    s.sql("CREATE TABLE t (id int PRIMARY KEY)");
    // An explicit table list: walstream creates a publication of t alone (not FOR ALL TABLES).
    auto args = with(s.args(), {"--tables", "public.t"});
    if (!on) args = with(args, {"--backfill-new-tables", "off"});
    Walstream ws(args);
    ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << ws.log();
    s.sql("CREATE TABLE acc (id int PRIMARY KEY, balance int NOT NULL, note text NOT NULL);"
          "INSERT INTO acc SELECT g, 0, 'n' || g FROM generate_series(1, 500) g");
    s.sql("ALTER PUBLICATION walstream ADD TABLE acc");
    s.sql("UPDATE acc SET balance = 7 WHERE id = 3; INSERT INTO acc VALUES (501, 1, 'after')");
    s.sql("INSERT INTO t VALUES (1)");
    ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) == 1 && s.caught_up(); })) << ws.log();
    if (on) {
      ASSERT_TRUE(wait_until([&] { return backfill_state(s, "status") == "done"; })) << ws.log();
      ASSERT_TRUE(wait_until([&] { return s.caught_up(); })) << ws.log();
      expect_replay_is_the_table(s);
      EXPECT_NE(ws.log().find("public.acc was added to publication 'walstream': publishing its rows"),
                std::string::npos)
          << ws.log();
    } else {
      auto entries = xrange(s.stream("public.acc"));
      ASSERT_EQ(entries.size(), 2u) << ws.log();  // the update and the insert, nothing of the 500 before
      EXPECT_EQ(entries[0].fields.at("op"), "u");
      EXPECT_EQ(entries[1].fields.at("op"), "c");
      EXPECT_EQ(ws.log().find("was added to publication"), std::string::npos) << ws.log();
    }
    ws.signal(SIGTERM);
    EXPECT_EQ(ws.wait(), 0) << ws.log();
  }
}

// pgbench's own load (tpcb-like: every transaction updates one account) while pgbench_accounts is
// backfilled: the accounts stream replayed in ID order ends at the table's balances, row for row.
TEST(Backfill, PgbenchAccountsUnderPgbench) {
  Scope s;
  const std::string pgbench = "/usr/lib/postgresql/15/bin/pgbench";
  const auto target = fmt::format("'{}'", s.conninfo);
  shell(fmt::format("{} -i -s 2 -q {} 2>&1", pgbench, target));
  s.sql("ALTER TABLE pgbench_history REPLICA IDENTITY FULL");
  Walstream ws(with(s.args(), {"--snapshot", "never"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << ws.log();
  std::string bench_output;
  std::thread load([&] { bench_output = shell(fmt::format("{} -n -c 4 -j 2 -T 8 {} 2>&1", pgbench, target)); });
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.pgbench_accounts")) > 100; })) << ws.log();
  auto req = run_walstream({"backfill", "public.pgbench_accounts", "--pg", s.conninfo, "--slot", s.slot,
                            "--chunk-rows", "5000"});
  ASSERT_EQ(req.code, 0) << req.output;
  bool done = wait_until([&] { return backfill_state(s, "status") == "done"; }, 120s);
  load.join();
  ASSERT_TRUE(done) << ws.log();
  ASSERT_TRUE(wait_until([&] { return s.caught_up(); })) << ws.log();

  auto rebuilt = replay(xrange(s.stream("public.pgbench_accounts")));
  auto rows = query(s.conninfo, "SELECT aid, abalance FROM pgbench_accounts");
  ASSERT_EQ(rebuilt.size(), rows.size()) << bench_output;
  int wrong = 0;
  for (const auto& r : rows) {
    auto it = rebuilt.find(fmt::format(R"({{"aid":{}}})", *r[0]));
    const auto want = fmt::format(R"("abalance":{},)", *r[1]);
    if (it == rebuilt.end() || it->second.find(want) == std::string::npos) {
      if (++wrong <= 5) ADD_FAILURE() << "aid " << *r[0] << ": balance " << *r[1] << ", stream "
                                      << (it == rebuilt.end() ? "-" : it->second);
    }
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_NE(bench_output.find("number of transactions actually processed"), std::string::npos) << bench_output;
  ws.signal(SIGTERM);
  EXPECT_EQ(ws.wait(), 0) << ws.log();
}

// A transaction whose commit is in the WAL before a chunk's low watermark, but not yet visible to
// new snapshots: with synchronous replication it stays invisible until the standby acknowledges (here
// a standby that never does, until the wait is cancelled). Its change streams before the low mark;
// a chunk read meanwhile would hold the old row and publish it as a stale `r` after the change. The
// read waits until that transaction is visible, says so, and the stream replays to the table.
TEST(Backfill, ACommitNotYetVisibleIsNotReadStale) {
  Postgres pg2;
  pg2.extra_options = "-c synchronous_standby_names=absent_standby -c synchronous_commit=local";
  pg2.start();
  const auto conninfo = pg2.conninfo();
  sql(conninfo, "CREATE TABLE acc (id int PRIMARY KEY, balance int NOT NULL, note text); "
                "INSERT INTO acc SELECT g, 0, 'n' || g FROM generate_series(1, 100) g");
  const std::string slot = "invisible_slot", prefix = "invisible:";
  Walstream ws({"run", "--pg", conninfo, "--redis", redis().url(), "--slot", slot, "--prefix", prefix,
                "--snapshot", "never", "--status-interval", "1"});
  const auto key = prefix + "public.acc";
  ASSERT_TRUE(wait_until([&] {
    return query_one(conninfo, fmt::format("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND "
                                           "active", slot)) == "1";
  })) << ws.log();
  // The update commits locally and waits for the standby: in the WAL (so streamed), not visible.
  StuckCommit waiting(conninfo);
  ASSERT_TRUE(wait_until([&] { return xlen(key) == 1; }, 30s)) << ws.log();
  EXPECT_EQ(query_one(conninfo, "SELECT balance FROM acc WHERE id = 50"), "0");  // not visible yet

  auto req = run_walstream({"backfill", "public.acc", "--pg", conninfo, "--slot", slot, "--chunk-rows", "30"});
  ASSERT_EQ(req.code, 0) << req.output;
  // The first chunk waits while the update is invisible.
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(xlen(key), 1) << ws.log();
  EXPECT_EQ(ws.log().find(": done"), std::string::npos) << ws.log();
  waiting.release();
  ASSERT_EQ(query_one(conninfo, "SELECT balance FROM acc WHERE id = 50"), "7");
  ASSERT_TRUE(wait_until([&] { return ws.log().find(": done") != std::string::npos; }, 30s)) << ws.log();
  auto rebuilt = replay(xrange(key));
  ASSERT_EQ(rebuilt.size(), 100u) << ws.log();
  EXPECT_EQ(rebuilt.at(R"({"id":50})"), R"({"id":50,"balance":7,"note":"n50"})") << ws.log();
  ws.signal(SIGTERM);
  EXPECT_EQ(ws.wait(), 0) << ws.log();
}

// A chunk's read fails in the middle (cancelled, or its backend terminated, again and again, while
// changes flow): the session ends, walstream reconnects, and the chunk is read again from the state
// Redis holds — never skipped, never published twice.
TEST(Backfill, ReadsKilledMidwayAreReadAgain) {
  Scope s;
  const int rows = 4'000;
  create_acc(s, rows);
  Walstream ws(with(s.args(), {"--snapshot", "never"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << ws.log();
  Load load(s.conninfo, rows);
  // A chunk read slow enough to be caught: every row costs a little.
  s.sql("CREATE FUNCTION slow_note(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS "
        "$$ BEGIN PERFORM pg_sleep(0.0002); RETURN t; END $$");
  auto req = run_walstream({"backfill", "public.acc", "--pg", s.conninfo, "--slot", s.slot, "--chunk-rows", "500",
                            "--where", "slow_note(note) IS NOT NULL"});
  ASSERT_EQ(req.code, 0) << req.output;
  int killed = 0;
  const auto deadline = std::chrono::steady_clock::now() + 90s;
  while (backfill_state(s, "status") != "done" && std::chrono::steady_clock::now() < deadline) {
    if (killed < 4) {
      // Alternately a cancel (the connection stays; the read fails with 57014) and a terminated backend.
      auto n = s.query_one(fmt::format("SELECT count({}(pid)) FROM pg_stat_activity WHERE query LIKE "
                                       "'SELECT %slow_note(note)%' AND state = 'active' AND pid <> pg_backend_pid()",
                                       killed % 2 ? "pg_terminate_backend" : "pg_cancel_backend"));
      killed += std::stoi(n);
    } else {
      load.stop();  // its inserts of new ids would keep the backfill chasing the table's end
    }
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(backfill_state(s, "status"), "done") << ws.log();
  load.stop();
  EXPECT_GE(killed, 2) << "the reads were not caught in the middle";
  ASSERT_TRUE(wait_until([&] { return s.caught_up(); })) << ws.log();
  expect_replay_is_the_table(s);
  // Every row once as `r` at most (a chunk read again publishes its rows once).
  std::map<std::string, int> r_rows;
  for (const auto& e : xrange(s.stream("public.acc"))) {
    if (e.fields.at("op") == "r") ++r_rows[e.fields.at("key")];
  }
  for (const auto& [key, n] : r_rows) ASSERT_EQ(n, 1) << key;
  EXPECT_GT(r_rows.size(), static_cast<std::size_t>(rows / 2));
  EXPECT_NE(ws.log().find("backfill"), std::string::npos);
  // A terminated backend says so, or the connection is just found closed (libpq's wording).
  EXPECT_TRUE(ws.log().find("terminating connection") != std::string::npos ||
              ws.log().find("server closed the connection") != std::string::npos)
      << ws.log();
  EXPECT_NE(ws.log().find("canceling statement"), std::string::npos) << ws.log();
  ws.signal(SIGTERM);
  EXPECT_EQ(ws.wait(), 0) << ws.log();
}

// The same across a restart: the update streamed (and was confirmed) in the previous session, so the new
// session never sees its Begin; it is still invisible when the backfill reads, and must be waited for.
TEST(Backfill, ACommitStillInvisibleAfterARestartIsNotReadStale) {
  Postgres pg2;
  pg2.extra_options = "-c synchronous_standby_names=absent_standby -c synchronous_commit=local";
  pg2.start();
  const auto conninfo = pg2.conninfo();
  sql(conninfo, "CREATE TABLE acc (id int PRIMARY KEY, balance int NOT NULL, note text); "
                "INSERT INTO acc SELECT g, 0, 'n' || g FROM generate_series(1, 100) g");
  const std::string slot = "invisible_restart", prefix = "invisible2:";
  const std::vector<std::string> args{"run", "--pg", conninfo, "--redis", redis().url(), "--slot", slot,
                                      "--prefix", prefix, "--snapshot", "never", "--status-interval", "1"};
  auto ws = std::make_unique<Walstream>(args);
  const auto key = prefix + "public.acc";
  auto active = [&] {
    return query_one(conninfo, fmt::format("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND "
                                           "active", slot)) == "1";
  };
  ASSERT_TRUE(wait_until(active)) << ws->log();
  StuckCommit waiting(conninfo);
  ASSERT_TRUE(wait_until([&] { return xlen(key) == 1; }, 30s)) << ws->log();
  ws->signal(SIGTERM);
  ASSERT_EQ(ws->wait(), 0) << ws->log();
  // Confirmed past the update: the next session starts after it.
  const auto confirmed = query_one(conninfo, fmt::format("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                                         "WHERE slot_name = '{}'", slot));
  ws = std::make_unique<Walstream>(args);
  ASSERT_TRUE(wait_until(active)) << ws->log();
  EXPECT_EQ(query_one(conninfo, "SELECT balance FROM acc WHERE id = 50"), "0");  // still not visible
  auto req = run_walstream({"backfill", "public.acc", "--pg", conninfo, "--slot", slot, "--chunk-rows", "30"});
  ASSERT_EQ(req.code, 0) << req.output;
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(xlen(key), 1) << "a chunk was published while the update was invisible (slot confirmed at " << confirmed
                          << ")\n" << ws->log();
  waiting.release();
  ASSERT_EQ(query_one(conninfo, "SELECT balance FROM acc WHERE id = 50"), "7");
  ASSERT_TRUE(wait_until([&] { return ws->log().find(": done") != std::string::npos; }, 30s)) << ws->log();
  auto rebuilt = replay(xrange(key));
  ASSERT_EQ(rebuilt.size(), 100u) << ws->log();
  EXPECT_EQ(rebuilt.at(R"({"id":50})"), R"({"id":50,"balance":7,"note":"n50"})") << ws->log();
  ws->signal(SIGTERM);
  EXPECT_EQ(ws->wait(), 0) << ws->log();
}

// Rows of ~40 kB that TOAST cannot compress, 3,000 of them (120 MB): the default --chunk-rows (10,000)
// would hold the whole table in one result; chunks are cut by size instead, and memory stays bounded.
TEST(Backfill, WideRowsAreReadInChunksOfBoundedSize) {
  Scope s;
  s.sql("CREATE TABLE blobs (id int PRIMARY KEY, body text NOT NULL); "
        "INSERT INTO blobs SELECT g, (SELECT string_agg(md5(g::text || '/' || i::text), '') "
        "FROM generate_series(1, 1250) i) FROM generate_series(1, 3000) g");
  Walstream ws(with(s.args(), {"--snapshot", "never"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << ws.log();
  auto req = run_walstream({"backfill", "public.blobs", "--pg", s.conninfo, "--slot", s.slot});
  ASSERT_EQ(req.code, 0) << req.output;
  ASSERT_TRUE(wait_until([&] { return backfill_state(s, "status") == "done"; }, 120s)) << ws.log();
  const long rss_kb = peak_rss_kb(ws.pid());
  RecordProperty("peak_rss_kb", std::to_string(rss_kb));
  auto entries = xrange(s.stream("public.blobs"));
  ASSERT_EQ(entries.size(), 3000u) << ws.log();
  std::set<std::string> keys;
  for (const auto& e : entries) {
    ASSERT_EQ(e.fields.at("op"), "r");
    keys.insert(e.fields.at("key"));
    ASSERT_GT(e.fields.at("after").size(), 40'000u);
  }
  EXPECT_EQ(keys.size(), 3000u);
  EXPECT_EQ(entries[1234].fields.at("after"),
            fmt::format(R"({{"id":1235,"body":"{}"}})",
                        s.query_one("SELECT body FROM blobs WHERE id = 1235")));
  // A chunk of ~8 MB being written and the next one read: far below the table's 120 MB.
  EXPECT_LT(rss_kb, 64 * 1024) << ws.log();
  // More than a handful of chunks: cut by size, not by --chunk-rows.
  const auto chunks = ws.log().find("public.blobs done (3000 rows in ");
  ASSERT_NE(chunks, std::string::npos) << ws.log();
  EXPECT_GE(std::stoi(ws.log().substr(chunks + std::string("public.blobs done (3000 rows in ").size())), 10)
      << ws.log();
  ws.signal(SIGTERM);
  EXPECT_EQ(ws.wait(), 0) << ws.log();
}
