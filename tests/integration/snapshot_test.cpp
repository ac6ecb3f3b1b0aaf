// The initial snapshot: existing rows copied under the slot's exported snapshot as `r` records, then
// streaming from the consistent point — replaying a stream reproduces its table, even with writers
// busy during the copy and after a SIGKILL in the middle of it.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <signal.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "harness.h"

using namespace harness;

namespace {

const std::string kPgBin = "/usr/lib/postgresql/15/bin";

std::string pgbench(const Scope& s, const std::string& args) {
  return shell(fmt::format("{}/pgbench -h 127.0.0.1 -p {} -U postgres {} {}", kPgBin, pg().port(), args, s.db));
}

rapidjson::Document parse(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  EXPECT_FALSE(d.HasParseError()) << json;
  return d;
}

// Applies a stream's records in ID order: key (aid) -> abalance.
std::map<long, long> replay_accounts(const std::vector<Entry>& entries, std::map<long, int>* snapshot_rows = nullptr) {
  std::map<long, long> table;
  for (const auto& e : entries) {
    const auto& op = e.fields.at("op");
    if (op == "t") {
      table.clear();
      continue;
    }
    auto key = parse(e.fields.at("key"));
    long aid = key["aid"].GetInt64();
    if (op == "d") {
      table.erase(aid);
      continue;
    }
    auto after = parse(e.fields.at("after"));
    table[aid] = after["abalance"].GetInt64();
    if (op == "r" && snapshot_rows) ++(*snapshot_rows)[aid];
  }
  return table;
}

std::map<long, long> accounts_in_db(const Scope& s) {
  std::map<long, long> table;
  for (const auto& row : query(s.conninfo, "SELECT aid, abalance FROM pgbench_accounts")) {
    table[std::stol(*row[0])] = std::stol(*row[1]);
  }
  return table;
}

std::uint64_t id_ms(const std::string& id) { return std::stoull(id.substr(0, id.find('-'))); }

// The consistent point PostgreSQL returned for CREATE_REPLICATION_SLOT, as walstream logs it verbatim:
// "created replication slot '<slot>' (pgoutput) at X/Y". Empty when the line is missing or not unique.
std::string consistent_point_in_log(const std::string& log) {
  static const std::regex re(R"(created replication slot '[^']*' \(pgoutput\) at ([0-9A-F]+/[0-9A-F]+))");
  std::vector<std::string> found;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator(); ++it) {
    found.push_back((*it)[1]);
  }
  return found.size() == 1 ? found[0] : std::string();
}

// The snapshot-row contract on one table's stream, in ID order: first the snapshot rows, with IDs
// `<cp - 1>-1`, `<cp - 1>-2`, …, `lsn` = cp and `xid` 0; then only changes, every one with an ID above
// them (commit LSN >= cp). Collects the rows' `ts` into *ts and their count into *rows.
void expect_snapshot_rows(const std::vector<Entry>& entries, const std::string& cp_text, std::set<std::string>* ts,
                          std::size_t* rows) {
  const std::uint64_t cp = parse_lsn(cp_text);
  std::size_t n = 0;
  for (; n < entries.size() && entries[n].fields.at("op") == "r"; ++n) {
    const auto& e = entries[n];
    ASSERT_EQ(e.id, fmt::format("{}-{}", cp - 1, n + 1)) << "snapshot row " << n + 1 << ", consistent point "
                                                         << cp_text;
    ASSERT_EQ(e.fields.at("lsn"), cp_text) << e.id;
    ASSERT_EQ(e.fields.at("xid"), "0") << e.id;
    ts->insert(e.fields.at("ts"));
  }
  *rows = n;
  for (std::size_t i = n; i < entries.size(); ++i) {
    ASSERT_NE(entries[i].fields.at("op"), "r") << "a snapshot row after a change: " << entries[i].id;
    ASSERT_GE(id_ms(entries[i].id), cp) << "a change not above the snapshot rows (consistent point " << cp_text
                                        << "): " << entries[i].id;
  }
}

// Both pgbench streams hold the snapshot contract for the consistent point in walstream's log; all
// snapshot rows share one `ts` (when the copy started). Returns the accounts stream's snapshot rows.
std::size_t expect_snapshot_contract(const Scope& s, const Walstream& w) {
  const std::string cp = consistent_point_in_log(w.log());
  EXPECT_FALSE(cp.empty()) << "no single 'created replication slot' line\n" << w.log();
  if (cp.empty()) return 0;
  EXPECT_EQ(redis_command({"HGET", s.prefix + "snapshot:" + s.slot, "consistent_point"}), std::vector<std::string>{cp});
  std::set<std::string> ts;
  std::size_t accounts = 0, history = 0;
  auto entries = xrange(s.stream("public.pgbench_accounts"));
  EXPECT_NO_FATAL_FAILURE(expect_snapshot_rows(entries, cp, &ts, &accounts));
  EXPECT_LT(accounts, entries.size()) << "no change streamed after the snapshot";
  EXPECT_NO_FATAL_FAILURE(expect_snapshot_rows(xrange(s.stream("public.pgbench_history")), cp, &ts, &history));
  EXPECT_EQ(ts.size(), 1u);
  return accounts;
}

void expect_history_matches(const Scope& s) {
  // pgbench_history has no key: compare the multiset of (tid, bid, aid, delta).
  std::multiset<std::string> streamed;
  for (const auto& e : xrange(s.stream("public.pgbench_history"))) {
    ASSERT_TRUE(e.fields.at("op") == "r" || e.fields.at("op") == "c") << e.fields.at("op");
    auto a = parse(e.fields.at("after"));
    streamed.insert(fmt::format("{}/{}/{}/{}", a["tid"].GetInt(), a["bid"].GetInt(), a["aid"].GetInt(), a["delta"].GetInt()));
  }
  std::multiset<std::string> stored;
  for (const auto& row : query(s.conninfo, "SELECT tid, bid, aid, delta FROM pgbench_history")) {
    stored.insert(fmt::format("{}/{}/{}/{}", *row[0], *row[1], *row[2], *row[3]));
  }
  EXPECT_EQ(streamed.size(), stored.size());
  EXPECT_TRUE(streamed == stored);
}

}  // namespace

TEST(Snapshot, CopiesExistingRowsThenStreamsWithoutGapUnderLoad) {
  Scope s;
  pgbench(s, "-i -q -s 1");  // 100,000 accounts
  s.sql("UPDATE pgbench_accounts SET abalance = aid % 97 WHERE aid % 10 = 0");
  s.sql("CREATE PUBLICATION walstream FOR ALL TABLES");

  // Writers busy before, during and after the copy.
  std::thread load([&] { pgbench(s, "-n -c 2 -T 8"); });
  bool busy = wait_until([&] { return s.query_one("SELECT count(*) > 0 FROM pgbench_history") == "t"; });
  Walstream w(s.args());
  load.join();
  ASSERT_TRUE(busy) << "pgbench committed nothing before walstream started";
  ASSERT_TRUE(wait_until([&] { return s.caught_up(); }, std::chrono::seconds(90))) << w.log();

  auto entries = xrange(s.stream("public.pgbench_accounts"));
  std::map<long, int> snapshot_rows;
  auto replayed = replay_accounts(entries, &snapshot_rows);
  EXPECT_EQ(snapshot_rows.size(), 100000u);
  for (const auto& [aid, n] : snapshot_rows) ASSERT_EQ(n, 1) << "aid " << aid << " has " << n << " snapshot rows";
  EXPECT_TRUE(replayed == accounts_in_db(s)) << "replayed stream differs from the table";
  expect_history_matches(s);

  // Snapshot IDs sit just below the consistent point, and every change above them.
  EXPECT_EQ(expect_snapshot_contract(s, w), 100000u);
  // Nothing left behind by the copy.
  EXPECT_TRUE(redis_command({"KEYS", s.prefix + "staging:*"}).empty());
  EXPECT_EQ(redis_command({"HGET", s.prefix + "snapshot:" + s.slot, "status"}), std::vector<std::string>{"done"});
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

TEST(Snapshot, SigkillDuringCopyIsRedoneUnderANewSlotWithoutDuplicates) {
  Scope s;
  pgbench(s, "-i -q -s 3");  // 300,000 accounts: long enough to be killed mid-copy
  s.sql("CREATE PUBLICATION walstream FOR ALL TABLES");
  std::string staging = s.prefix + "staging:public.pgbench_accounts";
  {
    Walstream w(s.args());
    ASSERT_TRUE(wait_until([&] { return xlen(staging) >= 20000; }, std::chrono::seconds(60))) << w.log();
    w.signal(SIGKILL);
    w.wait();
  }
  long long partial = xlen(staging);
  ASSERT_GT(partial, 0);
  ASSERT_LT(partial, 300000) << "the copy finished before the kill; the test proves nothing";
  // Subscribers saw nothing of the partial copy.
  EXPECT_EQ(xlen(s.stream("public.pgbench_accounts")), 0);
  auto old_cp = s.query_one(fmt::format("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'", s.slot));

  std::thread load([&] { pgbench(s, "-n -c 2 -T 6"); });
  Walstream w(s.args());
  load.join();
  ASSERT_TRUE(wait_until([&] { return s.caught_up() && redis_command({"HGET", s.prefix + "snapshot:" + s.slot, "status"}) ==
                                                          std::vector<std::string>{"done"}; },
                         std::chrono::seconds(120)))
      << w.log();
  EXPECT_NE(w.log().find("interrupted"), std::string::npos) << w.log();
  auto new_cp = s.query_one(fmt::format("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'", s.slot));
  EXPECT_NE(old_cp, new_cp) << "the slot was not recreated";

  std::map<long, int> snapshot_rows;
  auto replayed = replay_accounts(xrange(s.stream("public.pgbench_accounts")), &snapshot_rows);
  EXPECT_EQ(snapshot_rows.size(), 300000u);
  for (const auto& [aid, n] : snapshot_rows) ASSERT_EQ(n, 1) << "aid " << aid << " has " << n << " snapshot rows";
  EXPECT_TRUE(replayed == accounts_in_db(s)) << "replayed stream differs from the table";
  expect_history_matches(s);
  // The new slot's consistent point, not the interrupted one's.
  EXPECT_EQ(expect_snapshot_contract(s, w), 300000u);
  EXPECT_TRUE(redis_command({"KEYS", s.prefix + "staging:*"}).empty());
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

TEST(Snapshot, NeverStreamsChangesOnly) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)");
  auto args = s.args();
  args.insert(args.end(), {"--snapshot", "never"});
  Walstream w(args);
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << w.log();
  s.sql("INSERT INTO t VALUES (11)");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) == 1; })) << w.log();
  auto entries = xrange(s.stream("public.t"));
  EXPECT_EQ(entries[0].fields.at("op"), "c");
  EXPECT_EQ(entries[0].fields.at("key"), R"({"id":11})");
}

// A plain table is copied with `COPY t (cols)`, a row-filtered or partitioned one through a query:
// each stream holds exactly the rows the publication publishes, and only the published columns.
TEST(Snapshot, RowFiltersPartitionsAndColumnListsAreCopiedAsPublished) {
  Scope s;
  s.sql("CREATE TABLE plain (id int PRIMARY KEY, v text, secret text); "
        "INSERT INTO plain SELECT g, 'p' || g, 'hidden' FROM generate_series(1, 50) g; "
        "CREATE TABLE filtered (id int PRIMARY KEY, v text); "
        "INSERT INTO filtered SELECT g, 'f' || g FROM generate_series(1, 50) g; "
        "CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id); "
        "CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (1) TO (26); "
        "CREATE TABLE parted_high PARTITION OF parted FOR VALUES FROM (26) TO (51); "
        "INSERT INTO parted SELECT g, 'q' || g FROM generate_series(1, 50) g; "
        "CREATE PUBLICATION " + s.publication + " FOR TABLE plain (id, v), filtered WHERE (id % 5 = 0), parted "
        "WITH (publish_via_partition_root = true)");
  Walstream w(with(s.args(), {"--snapshot", "initial"}));
  ASSERT_TRUE(wait_until([&] { return w.log().find("initial snapshot published") != std::string::npos; },
                         std::chrono::seconds(60)))
      << w.log();
  auto rows = [&](const std::string& table) {
    std::map<int, std::string> out;
    for (const auto& e : xrange(s.stream(table))) {
      EXPECT_EQ(e.fields.at("op"), "r") << table << " " << e.id;
      auto after = parse(e.fields.at("after"));
      EXPECT_FALSE(after.HasMember("secret")) << table << ": a column outside the publication's list";
      out[after["id"].GetInt()] = after["v"].GetString();
    }
    return out;
  };
  auto plain = rows("public.plain");
  ASSERT_EQ(plain.size(), 50u) << w.log();
  EXPECT_EQ(plain.at(7), "p7");
  auto filtered = rows("public.filtered");
  ASSERT_EQ(filtered.size(), 10u) << w.log();
  for (const auto& [id, v] : filtered) EXPECT_EQ(id % 5, 0) << v;
  auto parted = rows("public.parted");
  ASSERT_EQ(parted.size(), 50u) << w.log();
  EXPECT_EQ(parted.at(1), "q1");
  EXPECT_EQ(parted.at(50), "q50");
  EXPECT_EQ(xlen(s.stream("public.parted_low")), 0);
  EXPECT_EQ(xlen(s.stream("public.parted_high")), 0);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}
