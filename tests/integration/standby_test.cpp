// Active/standby on one slot: two walstreams, one holds the slot; the other says so once, waits
// quietly, and takes over within seconds of the active one's death, with nothing lost or doubled.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fmt/format.h>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

using namespace harness;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

long count_of(const std::string& text, const std::string& what) {
  long n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// A steady load: one row per transaction into t (ids 1, 2, …) from its own thread until stopped.
class Load {
 public:
  explicit Load(std::string conninfo) : conninfo_(std::move(conninfo)), thread_([this] { run(); }) {}
  ~Load() { stop(); }
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int committed() const { return committed_; }

 private:
  void run() {
    while (!stop_) {
      try {
        sql(conninfo_, fmt::format("INSERT INTO t VALUES ({})", committed_ + 1));
        ++committed_;
      } catch (const std::exception&) {
        std::this_thread::sleep_for(20ms);
      }
      std::this_thread::sleep_for(2ms);
    }
  }
  std::string conninfo_;
  std::atomic<bool> stop_{false};
  std::atomic<int> committed_{0};
  std::thread thread_;  // last: started once the rest is ready
};

}  // namespace

TEST(Standby, SaysSoOnceTakesOverAfterSigkillAndLosesNothing) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  std::vector<std::unique_ptr<Walstream>> ws(2);
  ws[0] = std::make_unique<Walstream>(s.args());
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << ws[0]->log();
  ws[1] = std::make_unique<Walstream>(s.args());
  ASSERT_TRUE(wait_until([&] { return ws[1]->log().find("standby: slot") != std::string::npos; }, 15s))
      << ws[1]->log();

  // A steady load, one row per transaction, for the whole test.
  Load load(s.conninfo);

  const auto key = s.stream("public.t");
  // The standby waits quietly: over a few seconds of load it logs nothing after its one line.
  const int first = load.committed() + 300;
  ASSERT_TRUE(wait_until([&] { return load.committed() >= first && xlen(key) >= first; }, 60s)) << ws[0]->log();
  EXPECT_EQ(count_of(ws[1]->log(), "standby: slot"), 1) << ws[1]->log();
  EXPECT_EQ(count_of(ws[1]->log(), " WARN "), 0) << ws[1]->log();
  EXPECT_EQ(count_of(ws[1]->log(), " ERROR "), 0) << ws[1]->log();

  // Five takeovers: SIGKILL the active one; the standby streams within 5 s; the killed one comes back
  // as the new standby.
  std::vector<double> takeover_s;
  int active = 0;
  for (int round = 0; round < 5; ++round) {
    const int standby = 1 - active;
    const auto before = count_of(ws[standby]->log(), "streaming from slot");
    ws[active]->signal(SIGKILL);
    ws[active]->wait(10s);
    const auto killed = Clock::now();
    ASSERT_TRUE(wait_until([&] { return count_of(ws[standby]->log(), "streaming from slot") > before; }, 10s))
        << "round " << round << ": no takeover\n" << ws[standby]->log();
    takeover_s.push_back(std::chrono::duration<double>(Clock::now() - killed).count());
    EXPECT_LT(takeover_s.back(), 5.0) << "round " << round << "\n" << ws[standby]->log();
    const int target = load.committed() + 200;
    ASSERT_TRUE(wait_until([&] { return xlen(key) >= target; }, 60s)) << ws[standby]->log();
    ws[active] = std::make_unique<Walstream>(s.args());
    ASSERT_TRUE(wait_until([&] { return ws[active]->log().find("standby: slot") != std::string::npos; }, 15s))
        << ws[active]->log();
    active = standby;
  }
  load.stop();
  const int total = load.committed();
  ASSERT_TRUE(wait_until([&] { return s.caught_up() && xlen(key) >= total; }, 60s)) << ws[active]->log();

  // Exactly the committed rows, each once, in commit order.
  auto entries = xrange(key);
  ASSERT_EQ(static_cast<int>(entries.size()), total);
  for (int i = 0; i < total; ++i) {
    ASSERT_EQ(entries[i].fields.at("after"), fmt::format(R"({{"id":{}}})", i + 1)) << "entry " << i;
    if (i > 0) {
      ASSERT_LT(parse_entry_id(entries[i - 1].id), parse_entry_id(entries[i].id));
    }
  }
  std::sort(takeover_s.begin(), takeover_s.end());
  std::printf("takeover after SIGKILL: median %.2f s, worst %.2f s over %zu kills\n",
              takeover_s[takeover_s.size() / 2], takeover_s.back(), takeover_s.size());
  for (auto& w : ws) {
    if (w) w->signal(SIGTERM);
  }
}

// A paused (SIGSTOP) active instance loses the slot once wal_sender_timeout passes; the standby takes
// over; when the paused one resumes it must write nothing (its chunks are fenced by the epoch the
// successor took) and become the standby itself. Every row once, in order.
TEST(Standby, PausedActiveIsFencedAndBecomesTheStandby) {
  Postgres pg2;
  pg2.extra_options = "-c wal_sender_timeout=2s";
  pg2.start();
  const auto conninfo = pg2.conninfo();
  sql(conninfo, "CREATE TABLE t (id int PRIMARY KEY)");
  const std::string slot = "paused_slot", prefix = "paused:";
  const std::vector<std::string> args = {"run",      "--pg",    conninfo, "--redis",           redis().url(),
                                         "--slot",   slot,      "--prefix", prefix,            "--status-interval",
                                         "1"};
  const auto key = prefix + "public.t";
  auto a = std::make_unique<Walstream>(args);
  ASSERT_TRUE(wait_until([&] {
    return query_one(conninfo, fmt::format("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND "
                                           "active",
                                           slot)) == "1";
  }, 30s)) << a->log();
  auto b = std::make_unique<Walstream>(args);
  ASSERT_TRUE(wait_until([&] { return b->log().find("standby: slot") != std::string::npos; }, 15s)) << b->log();

  Load load(conninfo);
  ASSERT_TRUE(wait_until([&] { return xlen(key) >= 200; }, 30s)) << a->log();

  // Pause the active one past wal_sender_timeout: its walsender gives up, the standby takes the slot.
  a->signal(SIGSTOP);
  struct Resume {
    Walstream& w;
    bool done = false;
    ~Resume() {
      if (!done) w.signal(SIGCONT);
    }
  } resume{*a};
  ASSERT_TRUE(wait_until([&] { return b->log().find("streaming from slot") != std::string::npos; }, 30s))
      << b->log();
  const int during = load.committed() + 200;
  ASSERT_TRUE(wait_until([&] { return xlen(key) >= during; }, 30s)) << b->log();
  a->signal(SIGCONT);
  resume.done = true;
  // The resumed one finds out (fenced, or its PostgreSQL connection gone) and waits as a standby.
  ASSERT_TRUE(wait_until([&] {
    auto log = a->log();
    auto standby = log.rfind("standby: slot");
    auto streaming = log.rfind("streaming from slot");
    return standby != std::string::npos && streaming != std::string::npos && standby > streaming;
  }, 30s)) << a->log();
  const int after = load.committed() + 200;
  ASSERT_TRUE(wait_until([&] { return xlen(key) >= after; }, 30s)) << b->log();
  load.stop();
  const int total = load.committed();
  ASSERT_TRUE(wait_until([&] { return xlen(key) >= total; }, 60s)) << b->log();
  auto entries = xrange(key);
  ASSERT_EQ(static_cast<int>(entries.size()), total) << a->log() << "\n----\n" << b->log();
  for (int i = 0; i < total; ++i) {
    ASSERT_EQ(entries[i].fields.at("after"), fmt::format(R"({{"id":{}}})", i + 1)) << "entry " << i;
  }
  EXPECT_EQ(count_of(a->log(), " ERROR "), 0) << a->log();
  std::printf("paused instance after resuming: %s\n",
              a->log().find("fenced") != std::string::npos ? "fenced by the epoch" : "lost its PostgreSQL session");
  a->signal(SIGTERM);
  b->signal(SIGTERM);
  EXPECT_EQ(a->wait(), 0) << a->log();
  EXPECT_EQ(b->wait(), 0) << b->log();
}

// The fence itself: a successor's epoch (INCR, as a taking-over instance does) makes the active
// instance's next chunk refused before it is applied; it says so, writes nothing under the old epoch,
// and (the slot being free again once its session ends) takes the slot back under a new epoch.
TEST(Standby, ChunkAfterASuccessorsEpochIsFenced) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << w.log();
  s.sql("INSERT INTO t VALUES (1)");
  const auto key = s.stream("public.t");
  ASSERT_TRUE(wait_until([&] { return xlen(key) == 1; })) << w.log();
  const auto epoch_key = s.prefix + "epoch:" + s.slot;
  const auto before = redis_command({"GET", epoch_key});
  ASSERT_EQ(before.size(), 1u);
  redis_command({"INCR", epoch_key});  // what a successor does when it takes the slot
  s.sql("INSERT INTO t VALUES (2)");
  ASSERT_TRUE(wait_until([&] { return w.log().find("fenced:") != std::string::npos; }, 15s)) << w.log();
  // Taken back under a newer epoch, row 2 is there exactly once.
  ASSERT_TRUE(wait_until([&] { return xlen(key) == 2 && s.caught_up(); }, 30s)) << w.log();
  auto entries = xrange(key);
  EXPECT_EQ(entries[1].fields.at("after"), R"({"id":2})");
  EXPECT_GT(std::stoll(redis_command({"GET", epoch_key}).at(0)), std::stoll(before[0]) + 1) << w.log();
  EXPECT_EQ(count_of(w.log(), " ERROR "), 0) << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

namespace {

// Every entry of `key` is a row of t (id 1..rows), each exactly once.
void expect_each_row_once(const std::string& key, int rows, const std::string& op) {
  auto entries = xrange(key);
  ASSERT_EQ(static_cast<int>(entries.size()), rows);
  std::vector<char> seen(static_cast<std::size_t>(rows) + 1, 0);
  for (const auto& e : entries) {
    ASSERT_EQ(e.fields.at("op"), op) << e.id;
    const auto& after = e.fields.at("after");  // {"id":N}
    const int id = std::stoi(after.substr(6));
    ASSERT_TRUE(id >= 1 && id <= rows) << after;
    ASSERT_EQ(seen[static_cast<std::size_t>(id)], 0) << "row " << id << " twice";
    seen[static_cast<std::size_t>(id)] = 1;
  }
}

constexpr int kSnapshotRows = 300000;

}  // namespace

// Two instances started at once on a fresh setup (the compose stack does this): while the slot is
// created and its snapshot copied no walsender holds it, so only the setup lock keeps the second
// from taking the copy for an interrupted one. One snapshots, the other waits as a standby; every
// row once; the standby then takes over from the snapshotter.
TEST(Standby, TwoStartedTogetherSnapshotOnce) {
  Scope s;
  s.sql(fmt::format("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, {})",
                    kSnapshotRows));
  std::vector<std::unique_ptr<Walstream>> ws(2);
  ws[0] = std::make_unique<Walstream>(s.args());
  ws[1] = std::make_unique<Walstream>(s.args());
  const auto key = s.stream("public.t");
  ASSERT_TRUE(wait_until([&] { return s.streaming() && xlen(key) >= kSnapshotRows; }, 120s))
      << ws[0]->log() << "\n----\n" << ws[1]->log();
  const int creators = static_cast<int>(count_of(ws[0]->log(), "created replication slot") +
                                        count_of(ws[1]->log(), "created replication slot"));
  EXPECT_EQ(creators, 1) << ws[0]->log() << "\n----\n" << ws[1]->log();
  const int active = ws[0]->log().find("streaming from slot") != std::string::npos ? 0 : 1;
  const int standby = 1 - active;
  ASSERT_TRUE(wait_until([&] { return ws[standby]->log().find("standby: slot") != std::string::npos; }, 15s))
      << ws[standby]->log();
  EXPECT_EQ(count_of(ws[standby]->log(), "standby: slot"), 1) << ws[standby]->log();
  for (auto& w : ws) {
    EXPECT_EQ(w->log().find("interrupted"), std::string::npos) << w->log();
    EXPECT_EQ(count_of(w->log(), " ERROR "), 0) << w->log();
  }
  expect_each_row_once(key, kSnapshotRows, "r");

  // The standby takes over from the snapshotter and streams what follows.
  s.sql(fmt::format("INSERT INTO t VALUES ({})", kSnapshotRows + 1));
  ASSERT_TRUE(wait_until([&] { return xlen(key) == kSnapshotRows + 1; }, 30s)) << ws[active]->log();
  ws[active]->signal(SIGKILL);
  ws[active]->wait(10s);
  ASSERT_TRUE(wait_until([&] { return ws[standby]->log().find("streaming from slot") != std::string::npos; }, 10s))
      << ws[standby]->log();
  s.sql(fmt::format("INSERT INTO t VALUES ({})", kSnapshotRows + 2));
  ASSERT_TRUE(wait_until([&] { return xlen(key) == kSnapshotRows + 2 && s.caught_up(); }, 30s))
      << ws[standby]->log();
  auto tail = xrange(key);
  EXPECT_EQ(tail[kSnapshotRows].fields.at("after"), fmt::format(R"({{"id":{}}})", kSnapshotRows + 1));
  EXPECT_EQ(tail[kSnapshotRows + 1].fields.at("after"), fmt::format(R"({{"id":{}}})", kSnapshotRows + 2));
  ws[standby]->signal(SIGTERM);
  EXPECT_EQ(ws[standby]->wait(), 0) << ws[standby]->log();
}

// The snapshotter killed in the middle of its copy: its setup lock goes with its connection, and the
// instance that waited finds the interrupted snapshot, discards the partial copy and redoes it under
// a new slot. Subscribers see every row once.
TEST(Standby, SnapshotterKilledMidCopyIsRedoneByTheStandby) {
  Scope s;
  s.sql(fmt::format("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, {})",
                    kSnapshotRows));
  auto a = std::make_unique<Walstream>(s.args());
  const auto staging = s.prefix + "staging:public.t";
  ASSERT_TRUE(wait_until([&] { return xlen(staging) > 0; }, 30s)) << a->log();
  auto b = std::make_unique<Walstream>(s.args());
  ASSERT_TRUE(wait_until([&] { return b->log().find("standby: slot") != std::string::npos; }, 15s)) << b->log();
  EXPECT_NE(b->log().find("setting slot"), std::string::npos) << b->log();
  ASSERT_EQ(a->log().find("initial snapshot published"), std::string::npos) << "the copy ended too soon\n" << a->log();
  a->signal(SIGKILL);
  a->wait(10s);
  const auto key = s.stream("public.t");
  ASSERT_TRUE(wait_until([&] { return b->log().find("streaming from slot") != std::string::npos; }, 120s))
      << b->log();
  EXPECT_NE(b->log().find("the initial snapshot was interrupted"), std::string::npos) << b->log();
  expect_each_row_once(key, kSnapshotRows, "r");
  EXPECT_EQ(xlen(staging), 0);
  b->signal(SIGTERM);
  EXPECT_EQ(b->wait(), 0) << b->log();
}
