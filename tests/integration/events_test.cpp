// Logical messages (pg_logical_emit_message) on <prefix>messages:<message prefix> and transaction markers
// on <prefix>transactions (--transactions): fields, IDs and their order against the row streams, binary
// content, --messages selection, exactly once across SIGKILLs, and a marker that is never visible
// before the last entry of its transaction. EVENTS_VERBOSE=1 prints walstream's logs of the SIGKILL test
// and the big transaction's trail of (markers, rows) lengths.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <rapidjson/document.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <ostream>
#include <memory>
#include <pqxx/pqxx>
#include <random>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "harness.h"

using namespace harness;
using namespace std::chrono_literals;

namespace harness {
// gtest prints stream IDs as <lsn>-<seq>.
void PrintTo(const EntryId& id, std::ostream* os) { *os << id.lsn << "-" << id.seq; }
}  // namespace harness

namespace {

using Clock = std::chrono::steady_clock;
using Id = EntryId;

std::string field(const Entry& e, const std::string& name) {
  auto it = e.fields.find(name);
  return it == e.fields.end() ? std::string("<absent>") : it->second;
}

std::set<std::string> names(const Entry& e) {
  std::set<std::string> out;
  for (const auto& [k, v] : e.fields) out.insert(k);
  return out;
}

Id id_of(const Entry& e) { return parse_entry_id(e.id); }

// Waits until walstream streams from its slot; fails at once when walstream exited instead (today's
// binary refuses --messages and --transactions as unknown options).
::testing::AssertionResult streams(const Scope& s, Walstream& w) {
  bool ok = wait_until([&] { return !w.running() || s.streaming(); }, 30s);
  if (!w.running()) return ::testing::AssertionFailure() << "walstream exited (" << w.wait() << "):\n" << w.log();
  if (!ok) return ::testing::AssertionFailure() << "walstream does not stream after 30 s:\n" << w.log();
  return ::testing::AssertionSuccess();
}

// Waits until the stream holds at least n entries, or walstream exited.
::testing::AssertionResult holds(Walstream& w, const std::string& key, long long n,
                                 std::chrono::milliseconds timeout = 30s) {
  bool ok = wait_until([&] { return !w.running() || xlen(key) >= n; }, timeout);
  if (!w.running()) return ::testing::AssertionFailure() << "walstream exited (" << w.wait() << "):\n" << w.log();
  if (!ok) {
    return ::testing::AssertionFailure() << key << " holds " << xlen(key) << " entries, not " << n << ":\n"
                                         << w.log();
  }
  return ::testing::AssertionSuccess();
}

std::set<std::string> keys_like(const std::string& pattern) {
  auto keys = redis_command({"KEYS", pattern});
  return {keys.begin(), keys.end()};
}

std::string message_key(const Scope& s, const std::string& prefix) { return s.prefix + "messages:" + prefix; }
std::string markers_key(const Scope& s) { return s.prefix + "transactions"; }

// The LSN PostgreSQL itself gives each message (a test_decoding slot's lsn column), by content.
std::map<std::string, std::uint64_t> reference_message_lsns(const Scope& s, const TempSlot& ref) {
  static const std::regex message_re(R"(^message: transactional: [01] prefix: \w+, sz: \d+ content:(.*)$)");
  std::map<std::string, std::uint64_t> out;
  for (const auto& row : query(s.conninfo, fmt::format("SELECT lsn, data FROM pg_logical_slot_peek_changes('{}', "
                                                       "NULL, NULL)",
                                                       ref.name()))) {
    std::smatch m;
    if (std::regex_match(*row[1], m, message_re)) out[m[1]] = parse_lsn(*row[0]);
  }
  return out;
}

std::map<std::string, long long> parse_streams(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (d.HasParseError() || !d.IsObject()) throw std::runtime_error("streams is not a JSON object: " + json);
  std::map<std::string, long long> out;
  for (auto it = d.MemberBegin(); it != d.MemberEnd(); ++it) {
    if (!it->value.IsInt64()) throw std::runtime_error("streams has a value that is not an integer: " + json);
    out[it->name.GetString()] = it->value.GetInt64();
  }
  return out;
}

// Joins a thread however the test leaves its scope.
struct Joined {
  std::thread& t;
  ~Joined() {
    if (t.joinable()) t.join();
  }
};

const std::set<std::string> kTransactionalFields = {"prefix", "content", "transactional", "lsn", "xid", "ts"};
const std::set<std::string> kLooseFields = {"prefix", "content", "transactional", "lsn"};
const std::set<std::string> kMarkerFields = {"xid", "lsn", "ts", "changes", "streams"};

}  // namespace

// 1. A transactional message is an entry of its transaction (between its rows, published only on
// COMMIT); a non-transactional one is published at once with <lsn - 1>-1, also from a rolled-back
// transaction, and sorts between the transactions around it. Without --transactions: no markers.
TEST(Messages, TransactionalAndNonTransactional) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  const auto rows_key = s.stream("public.t");
  const auto audit = message_key(s, "audit");
  TempSlot ref(s, s.slot + "_ref", "test_decoding");
  Walstream w(s.args());
  ASSERT_TRUE(streams(s, w));
  s.sql("BEGIN; INSERT INTO t VALUES (1, 'one'); SELECT pg_logical_emit_message(true, 'audit', 'a1'); "
        "INSERT INTO t VALUES (2, 'two'); COMMIT");
  s.sql("SELECT pg_logical_emit_message(false, 'audit', 'n1')");
  s.sql("BEGIN; SELECT pg_logical_emit_message(true, 'audit', 'rolled'); "
        "SELECT pg_logical_emit_message(false, 'audit', 'survives'); ROLLBACK");
  s.sql("INSERT INTO t VALUES (3, 'sentinel')");
  ASSERT_TRUE(holds(w, rows_key, 3));

  const auto rows = xrange(rows_key);
  ASSERT_EQ(rows.size(), 3u) << w.log();
  const auto commit = id_of(rows[0]).lsn;
  ASSERT_EQ(rows[0].id, fmt::format("{}-1", commit));
  ASSERT_EQ(rows[1].id, fmt::format("{}-3", commit)) << "the message between the rows is not seq 2";
  ASSERT_GT(id_of(rows[2]).lsn, commit);

  const auto msgs = xrange(audit);
  std::vector<std::string> contents;
  for (const auto& m : msgs) contents.push_back(field(m, "content"));
  ASSERT_EQ(contents, (std::vector<std::string>{"a1", "n1", "survives"})) << w.log();
  const auto lsns = reference_message_lsns(s, ref);
  ASSERT_EQ(lsns.size(), 3u) << "test_decoding saw other messages than a1, n1, survives";

  const auto& a1 = msgs[0];
  EXPECT_EQ(a1.id, fmt::format("{}-2", commit));
  EXPECT_EQ(names(a1), kTransactionalFields);
  EXPECT_EQ(field(a1, "prefix"), "audit");
  EXPECT_EQ(field(a1, "transactional"), "1");
  EXPECT_EQ(field(a1, "xid"), field(rows[0], "xid"));
  EXPECT_EQ(field(a1, "ts"), field(rows[0], "ts"));
  EXPECT_EQ(parse_lsn(field(a1, "lsn")), lsns.at("a1")) << field(a1, "lsn");

  for (std::size_t i = 1; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    const auto content = field(m, "content");
    EXPECT_EQ(names(m), kLooseFields) << content;
    EXPECT_EQ(field(m, "prefix"), "audit");
    EXPECT_EQ(field(m, "transactional"), "0") << content;
    EXPECT_EQ(parse_lsn(field(m, "lsn")), lsns.at(content)) << content << " " << field(m, "lsn");
    EXPECT_EQ(m.id, fmt::format("{}-1", parse_lsn(field(m, "lsn")) - 1)) << content;
    // After the transaction committed before it (and the message before it), before the one after.
    EXPECT_LT(id_of(rows[1]), id_of(m)) << content;
    EXPECT_LT(id_of(msgs[i - 1]), id_of(m)) << content;
    EXPECT_LT(id_of(m), id_of(rows[2])) << content;
  }
  EXPECT_EQ(redis_command({"EXISTS", markers_key(s)}), std::vector<std::string>{"0"})
      << "markers written without --transactions";
}

// 2. content is the bytes as sent: NUL, 0xff and a newline, transactional or not; also empty.
TEST(Messages, BinaryContentIsExact) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  Walstream w(s.args());
  ASSERT_TRUE(streams(s, w));
  s.sql(R"(SELECT pg_logical_emit_message(true, 'bin', '\x00ff0a'::bytea))");
  s.sql(R"(SELECT pg_logical_emit_message(false, 'bin', '\x0d0a00ff'::bytea))");
  s.sql("SELECT pg_logical_emit_message(true, 'bin', '')");
  s.sql("INSERT INTO t VALUES (1)");
  ASSERT_TRUE(holds(w, s.stream("public.t"), 1));
  const auto msgs = xrange(message_key(s, "bin"));
  ASSERT_EQ(msgs.size(), 3u) << w.log();
  EXPECT_EQ(field(msgs[0], "content"), std::string("\x00\xff\x0a", 3));
  EXPECT_EQ(field(msgs[0], "transactional"), "1");
  EXPECT_EQ(field(msgs[1], "content"), std::string("\x0d\x0a\x00\xff", 4));
  EXPECT_EQ(field(msgs[1], "transactional"), "0");
  EXPECT_EQ(field(msgs[2], "content"), "");
  EXPECT_EQ(field(msgs[2], "transactional"), "1");
}

// 1b. A non-transactional message whose WAL record is the last one before another transaction's commit
// record (its LSN as pgoutput sends it, the end of its record, is that transaction's commit LSN): it still
// sorts before that transaction, and the transaction's own message on the same stream is not lost. The
// WAL is read back with pg_walinspect to make sure the records were adjacent.
TEST(Messages, LooseMessageRightBeforeACommit) {
  constexpr int kPairs = 5;
  Scope s;
  s.sql("CREATE EXTENSION pg_walinspect; CREATE TABLE t (id int PRIMARY KEY)");
  Walstream w(s.args());
  ASSERT_TRUE(streams(s, w));
  const auto from = s.query_one("SELECT pg_current_wal_insert_lsn()");
  std::vector<std::string> xids;
  {
    pqxx::connection a(s.conninfo), b(s.conninfo);
    pqxx::nontransaction ta(a), tb(b);
    for (int i = 1; i <= kPairs; ++i) {
      ta.exec("BEGIN");
      ta.exec(fmt::format("SELECT pg_logical_emit_message(true, 'audit', 'x{}')", i));
      xids.push_back(ta.exec("SELECT pg_current_xact_id()::xid::text")[0][0].c_str());
      tb.exec(fmt::format("SELECT pg_logical_emit_message(false, 'audit', 'y{}')", i));
      ta.exec("COMMIT");
    }
  }
  s.sql("INSERT INTO t VALUES (1)");
  ASSERT_TRUE(holds(w, s.stream("public.t"), 1));
  const auto to = s.query_one("SELECT pg_current_wal_insert_lsn()");
  const auto records = query(s.conninfo, fmt::format("SELECT start_lsn, resource_manager, record_type, xid, "
                                                     "description FROM pg_get_wal_records_info('{}', '{}')",
                                                     from, to));
  // Per pair: the commit LSN of x's transaction, when y's record is right before its commit record.
  std::map<int, std::uint64_t> adjacent;
  for (std::size_t r = 1; r < records.size(); ++r) {
    const auto& rec = records[r];
    if (*rec[1] != "Transaction" || *rec[2] != "COMMIT") continue;
    auto at = std::find(xids.begin(), xids.end(), *rec[3]);
    const auto& before = records[r - 1];
    if (at != xids.end() && *before[1] == "LogicalMessage" && before[4]->find("non-transactional") == 0) {
      adjacent[static_cast<int>(at - xids.begin()) + 1] = parse_lsn(*rec[0]);
    }
  }
  ASSERT_FALSE(adjacent.empty()) << "no pair where the loose message's record came right before the commit "
                                    "record: the test proves nothing";

  const auto msgs = xrange(message_key(s, "audit"));
  std::vector<std::string> contents, expected;
  for (const auto& m : msgs) contents.push_back(field(m, "content"));
  for (int i = 1; i <= kPairs; ++i) {
    expected.push_back(fmt::format("y{}", i));
    expected.push_back(fmt::format("x{}", i));
  }
  std::string ids;
  for (const auto& m : msgs) ids += fmt::format("{} {} (lsn {})\n", m.id, field(m, "content"), field(m, "lsn"));
  EXPECT_EQ(contents, expected) << ids << w.log();
  for (std::size_t i = 1; i < msgs.size(); ++i) EXPECT_LT(id_of(msgs[i - 1]), id_of(msgs[i])) << ids;
  for (const auto& [i, commit] : adjacent) {
    for (const auto& m : msgs) {
      if (field(m, "content") == fmt::format("x{}", i)) {
        EXPECT_EQ(m.id, fmt::format("{}-1", commit)) << "x" << i << "'s transaction commits at " << commit;
      }
      if (field(m, "content") == fmt::format("y{}", i)) {
        EXPECT_LT(id_of(m), (Id{commit, 1})) << "y" << i << " does not sort before the transaction committed "
                                             << "after it, at " << commit;
      }
    }
  }
  EXPECT_TRUE(w.running()) << w.log();
  if (std::getenv("EVENTS_VERBOSE")) fprintf(stderr, "%s\n", w.log().c_str());
}

namespace {

// Messages of the prefixes audit, billing and other, transactional and not, then a sentinel row.
void emit_three_prefixes(const Scope& s) {
  s.sql("BEGIN; INSERT INTO t VALUES (1); SELECT pg_logical_emit_message(true, 'other', 'o1'); "
        "SELECT pg_logical_emit_message(true, 'billing', 'b1'); COMMIT");
  s.sql("SELECT pg_logical_emit_message(false, 'other', 'o2')");
  s.sql("SELECT pg_logical_emit_message(false, 'audit', 'a1')");
  s.sql("INSERT INTO t VALUES (2)");
}

std::vector<std::string> contents_of(const std::string& key) {
  std::vector<std::string> out;
  for (const auto& e : xrange(key)) out.push_back(field(e, "content"));
  return out;
}

}  // namespace

// 3a. --messages audit,billing: other prefixes publish nothing.
TEST(Messages, SelectedPrefixesOnly) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  Walstream w(with(s.args(), {"--messages", "audit,billing"}));
  ASSERT_TRUE(streams(s, w));
  emit_three_prefixes(s);
  ASSERT_TRUE(holds(w, s.stream("public.t"), 2));
  EXPECT_EQ(keys_like(s.prefix + "messages:*"), (std::set<std::string>{message_key(s, "audit"),
                                                                       message_key(s, "billing")}))
      << w.log();
  EXPECT_EQ(contents_of(message_key(s, "billing")), std::vector<std::string>{"b1"});
  EXPECT_EQ(contents_of(message_key(s, "audit")), std::vector<std::string>{"a1"});
  EXPECT_EQ(xlen(s.stream("public.t")), 2);
}

// 3a'. Entry IDs do not depend on --messages: a transactional message that is not published still
// takes its seq, so the same transaction gets the same IDs whatever the flag (a restart with another
// --messages after a crash then neither doubles nor skips a resent row).
TEST(Messages, UnpublishedMessagesKeepTheirSeq) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  Walstream w(with(s.args(), {"--messages", "none"}));
  ASSERT_TRUE(streams(s, w));
  s.sql("BEGIN; INSERT INTO t VALUES (1); SELECT pg_logical_emit_message(true, 'audit', 'x'); "
        "INSERT INTO t VALUES (2); COMMIT");
  ASSERT_TRUE(holds(w, s.stream("public.t"), 2));
  auto rows = xrange(s.stream("public.t"));
  EXPECT_EQ(id_of(rows[0]).seq, 1u) << rows[0].id;
  EXPECT_EQ(id_of(rows[1]).seq, 3u) << "the unpublished message did not keep seq 2: " << rows[1].id;
  EXPECT_TRUE(keys_like(s.prefix + "messages:*").empty());
}

// 3b. --messages none: no message stream at all; row changes flow.
TEST(Messages, NoneTurnsThemOff) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  Walstream w(with(s.args(), {"--messages", "none"}));
  ASSERT_TRUE(streams(s, w));
  emit_three_prefixes(s);
  ASSERT_TRUE(holds(w, s.stream("public.t"), 2));
  EXPECT_EQ(keys_like(s.prefix + "messages:*"), std::set<std::string>{}) << w.log();
  auto rows = xrange(s.stream("public.t"));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(field(rows[0], "key"), R"({"id":1})");
  EXPECT_EQ(field(rows[1], "key"), R"({"id":2})");
}

// 3c. The same selection by WALSTREAM_MESSAGES.
TEST(Messages, SelectionByEnvironment) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  Walstream w(s.args(), {{"WALSTREAM_MESSAGES", "billing"}});
  ASSERT_TRUE(streams(s, w));
  emit_three_prefixes(s);
  ASSERT_TRUE(holds(w, s.stream("public.t"), 2));
  EXPECT_EQ(keys_like(s.prefix + "messages:*"), std::set<std::string>{message_key(s, "billing")}) << w.log();
  EXPECT_EQ(contents_of(message_key(s, "billing")), std::vector<std::string>{"b1"});
}

// 4. 2,000 transactions of one row and one transactional message (content = the row id), every 10th
// with a non-transactional message too, while walstream is SIGKILLed 3 times: every message once, in
// order, each transactional one at <its row's commit>-2.
TEST(Messages, ExactlyOnceAcrossSigkills) {
  constexpr int kTxns = 2000;
  Scope s;
  s.sql("CREATE TABLE kv (id int PRIMARY KEY, v text)");
  const auto rows_key = s.stream("public.kv");
  const auto msg_key = message_key(s, "ev");
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  std::mt19937 rng(seed);

  std::vector<std::string> expected;
  for (int i = 1; i <= kTxns; ++i) {
    if (i % 10 == 0) expected.push_back(fmt::format("n{}", i));
    expected.push_back(std::to_string(i));
  }

  std::string logs;
  auto w = std::make_unique<Walstream>(s.args());
  ASSERT_TRUE(streams(s, *w));
  std::atomic<bool> stop{false};
  std::string writer_error;
  std::thread writer([&] {
    try {
      pqxx::connection c(s.conninfo);
      pqxx::nontransaction tx(c);
      for (int i = 1; i <= kTxns && !stop; ++i) {
        auto loose = i % 10 == 0 ? fmt::format("SELECT pg_logical_emit_message(false, 'ev', 'n{}'); ", i) : "";
        tx.exec(fmt::format("BEGIN; INSERT INTO kv VALUES ({0}, 'v{0}'); {1}"
                            "SELECT pg_logical_emit_message(true, 'ev', '{0}'); COMMIT",
                            i, loose));
        std::this_thread::sleep_for(1ms);  // spreads the load over the kills
      }
    } catch (const std::exception& e) {
      writer_error = e.what();
    }
  });
  Joined joined{writer};
  struct StopWriter {
    std::atomic<bool>& stop;
    ~StopWriter() { stop = true; }
  } stop_writer{stop};  // destroyed before `joined`: a failed assertion stops the writer, then joins it

  std::vector<long long> at_kill;
  for (int k = 0; k < 3; ++k) {
    const long long threshold = 300 + k * 550 + static_cast<long long>(rng() % 250);
    wait_until([&] { return !w->running() || xlen(rows_key) >= threshold; }, 30s);
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
    w->signal(SIGKILL);
    const int code = w->wait();
    logs += fmt::format("---- run {} (SIGKILLed at row stream length >= {}) ----\n{}", k + 1, threshold, w->log());
    ASSERT_EQ(code, 128 + SIGKILL) << "walstream exited on its own\n" << logs;
    at_kill.push_back(xlen(rows_key));
    w = std::make_unique<Walstream>(s.args());
    ASSERT_TRUE(streams(s, *w)) << logs;
  }
  writer.join();
  ASSERT_EQ(writer_error, "");
  s.sql("INSERT INTO kv VALUES (100000, 'sentinel')");
  ASSERT_TRUE(holds(*w, rows_key, kTxns + 1, 60s)) << logs;
  logs += "---- last run ----\n" + w->log();
  for (auto n : at_kill) EXPECT_LT(n, kTxns) << "a kill came after every row was stored";
  if (std::getenv("EVENTS_VERBOSE")) fprintf(stderr, "%s\n", logs.c_str());

  const auto rows = xrange(rows_key);
  ASSERT_EQ(rows.size(), static_cast<std::size_t>(kTxns + 1)) << logs;
  for (int i = 0; i < kTxns; ++i) {
    ASSERT_EQ(field(rows[i], "key"), fmt::format(R"({{"id":{}}})", i + 1)) << rows[i].id;
    ASSERT_EQ(id_of(rows[i]).seq, 1u) << rows[i].id;
  }

  const auto msgs = xrange(msg_key);
  std::vector<std::string> contents;
  std::map<std::string, int> times;
  for (const auto& m : msgs) {
    contents.push_back(field(m, "content"));
    ++times[contents.back()];
  }
  if (contents != expected) {
    std::string diff;
    int missing = 0, doubled = 0;
    for (const auto& e : expected) {
      if (!times.count(e) && ++missing <= 5) diff += "missing " + e + "\n";
      if (times.count(e) && times[e] > 1 && ++doubled <= 5) diff += fmt::format("{} stored {} times\n", e, times[e]);
    }
    for (std::size_t i = 0; i < std::min(contents.size(), expected.size()); ++i) {
      if (contents[i] != expected[i]) {
        diff += fmt::format("first difference at entry {} ({}): '{}' instead of '{}'\n", i, msgs[i].id, contents[i],
                            expected[i]);
        break;
      }
    }
    FAIL() << msgs.size() << " messages, " << expected.size() << " expected; " << missing << " missing, " << doubled
           << " doubled\n" << diff << "kills at row stream lengths " << at_kill[0] << ", " << at_kill[1] << ", "
           << at_kill[2] << "\n" << logs;
  }
  // Per row i: its transactional message at <commit>-2; the non-transactional one before it, at
  // <lsn - 1>-1 between the previous transaction and this one.
  std::size_t at = 0;
  for (int i = 1; i <= kTxns; ++i) {
    const auto& row = rows[static_cast<std::size_t>(i - 1)];
    if (i % 10 == 0) {
      const auto& m = msgs[at++];
      ASSERT_EQ(field(m, "transactional"), "0") << m.id;
      ASSERT_EQ(m.id, fmt::format("{}-1", parse_lsn(field(m, "lsn")) - 1));
      ASSERT_LT(id_of(rows[static_cast<std::size_t>(i - 2)]), id_of(m)) << m.id;
      ASSERT_LT(id_of(m), id_of(row)) << m.id;
    }
    const auto& m = msgs[at++];
    ASSERT_EQ(field(m, "transactional"), "1") << m.id;
    ASSERT_EQ(id_of(m), (Id{id_of(row).lsn, 2})) << "message " << field(m, "content") << " vs row " << row.id;
    ASSERT_EQ(field(m, "xid"), field(row, "xid")) << m.id;
  }
  for (std::size_t i = 1; i < msgs.size(); ++i) ASSERT_LT(id_of(msgs[i - 1]), id_of(msgs[i])) << msgs[i].id;
}

// 5. One marker per committed transaction that published something: <commit_lsn>-0 with xid, lsn, ts,
// changes and the entries per stream; none for a transaction on an unpublished table, a rolled-back
// one or a lone non-transactional message.
TEST(Markers, OnePerPublishingTransaction) {
  Scope s;
  s.sql("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text); "
        "CREATE TABLE c (id int PRIMARY KEY, v text)");
  Walstream w(with(s.args(), {"--transactions", "--tables", "public.a,public.b"}));
  ASSERT_TRUE(streams(s, w));
  s.sql("BEGIN; INSERT INTO a VALUES (1, 'x'), (2, 'y'); INSERT INTO b VALUES (1, 'z'); "
        "SELECT pg_logical_emit_message(true, 'm', 'hello'); COMMIT");
  s.sql("INSERT INTO c VALUES (1, 'unpublished')");
  s.sql("BEGIN; INSERT INTO a VALUES (9, 'rolled back'); ROLLBACK");
  s.sql("SELECT pg_logical_emit_message(false, 'm', 'loose')");
  s.sql("SELECT pg_logical_emit_message(true, 'm', 'alone')");
  s.sql("INSERT INTO a VALUES (3, 'sentinel')");
  ASSERT_TRUE(holds(w, s.stream("public.a"), 3));

  const auto a = xrange(s.stream("public.a"));
  const auto b = xrange(s.stream("public.b"));
  const auto m = xrange(message_key(s, "m"));
  ASSERT_EQ(a.size(), 3u) << w.log();
  ASSERT_EQ(b.size(), 1u) << w.log();
  ASSERT_EQ(m.size(), 3u) << w.log();
  EXPECT_EQ(xlen(s.stream("public.c")), 0);
  const auto commit = id_of(a[0]).lsn;
  ASSERT_EQ(id_of(a[1]).lsn, commit);
  ASSERT_EQ(id_of(b[0]).lsn, commit);
  ASSERT_EQ(m[0].id, fmt::format("{}-4", commit));
  ASSERT_EQ(field(m[2], "content"), "alone");
  const auto alone_commit = id_of(m[2]).lsn;

  const auto markers = xrange(markers_key(s));
  ASSERT_EQ(markers.size(), 3u) << "expected markers of the 3 publishing transactions only\n" << w.log();
  struct Expected {
    std::uint64_t commit;
    const Entry& record;  // an entry of the transaction, for xid and ts
    std::map<std::string, long long> streams;
  };
  const std::vector<Expected> expected = {
      {commit, a[0], {{s.stream("public.a"), 2}, {s.stream("public.b"), 1}, {message_key(s, "m"), 1}}},
      {alone_commit, m[2], {{message_key(s, "m"), 1}}},
      {id_of(a[2]).lsn, a[2], {{s.stream("public.a"), 1}}},
  };
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const auto& marker = markers[i];
    const auto& e = expected[i];
    SCOPED_TRACE(fmt::format("marker {} {}", i, marker.id));
    EXPECT_EQ(marker.id, fmt::format("{}-0", e.commit));
    EXPECT_EQ(names(marker), kMarkerFields);
    EXPECT_EQ(field(marker, "xid"), field(e.record, "xid"));
    EXPECT_EQ(parse_lsn(field(marker, "lsn")), e.commit) << field(marker, "lsn");
    EXPECT_EQ(field(marker, "ts"), field(e.record, "ts"));
    long long total = 0;
    for (const auto& [key, n] : e.streams) total += n;
    EXPECT_EQ(field(marker, "changes"), std::to_string(total));
    EXPECT_EQ(parse_streams(field(marker, "streams")), e.streams) << field(marker, "streams");
  }
}

namespace {

// MULTI XLEN XLEN EXEC on one connection: both lengths at one instant.
class LengthsProbe {
 public:
  LengthsProbe() : ctx_(redisConnect("127.0.0.1", redis().port()), redisFree) {
    if (!ctx_ || ctx_->err) throw std::runtime_error("cannot connect to the test Redis");
  }
  std::pair<long long, long long> lengths(const std::string& first, const std::string& second) {
    const std::vector<std::vector<std::string>> commands = {{"MULTI"}, {"XLEN", first}, {"XLEN", second}, {"EXEC"}};
    for (const auto& argv : commands) {
      std::vector<const char*> args;
      std::vector<size_t> lens;
      for (const auto& a : argv) {
        args.push_back(a.data());
        lens.push_back(a.size());
      }
      redisAppendCommandArgv(ctx_.get(), static_cast<int>(args.size()), args.data(), lens.data());
    }
    std::unique_ptr<redisReply, void (*)(void*)> last(nullptr, freeReplyObject);
    for (std::size_t i = 0; i < commands.size(); ++i) {
      void* raw = nullptr;
      if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || !raw) throw std::runtime_error("Redis connection failed");
      last.reset(static_cast<redisReply*>(raw));
      if (last->type == REDIS_REPLY_ERROR) throw std::runtime_error(std::string("Redis error: ") + last->str);
    }
    if (last->type != REDIS_REPLY_ARRAY || last->elements != 2) throw std::runtime_error("unexpected EXEC reply");
    return {last->element[0]->integer, last->element[1]->integer};
  }

 private:
  std::unique_ptr<redisContext, void (*)(redisContext*)> ctx_;
};

}  // namespace

// 6. A transaction of 10,000 rows (three chunks): its marker is never visible before all 10,000
// entries are.
TEST(Markers, BigTransactionMarkerAfterItsLastEntry) {
  constexpr long long kRows = 10000;
  Scope s;
  s.sql("CREATE TABLE a (id int PRIMARY KEY, v text)");
  const auto rows_key = s.stream("public.a");
  Walstream w(with(s.args(), {"--transactions"}));
  ASSERT_TRUE(streams(s, w));
  std::vector<std::pair<long long, long long>> seen;  // (markers, rows), each change of either once
  std::string probe_error;
  std::atomic<bool> stop{false};
  std::atomic<bool> done{false};
  // Polls until it sees the marker (or 60 s pass, or it is stopped because walstream exited).
  std::thread probe([&] {
    try {
      LengthsProbe p;
      const auto deadline = Clock::now() + 60s;
      while (!stop && Clock::now() < deadline) {
        auto now = p.lengths(markers_key(s), rows_key);
        if (seen.empty() || seen.back() != now) seen.push_back(now);
        if (now.first > 0) break;
        std::this_thread::sleep_for(100us);
      }
    } catch (const std::exception& e) {
      probe_error = e.what();
    }
    done = true;
  });
  {
    Joined joined{probe};
    struct StopProbe {
      std::atomic<bool>& stop;
      ~StopProbe() { stop = true; }
    } stop_probe{stop};  // destroyed before `joined`
    s.sql(fmt::format("INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, {}) g", kRows));
    wait_until([&] { return done || !w.running(); }, 70s);
  }
  ASSERT_EQ(probe_error, "");
  ASSERT_TRUE(holds(w, rows_key, kRows));
  ASSERT_FALSE(seen.empty());
  std::string trail;
  for (const auto& [markers, rows] : seen) trail += fmt::format("({} markers, {} rows) ", markers, rows);
  if (std::getenv("EVENTS_VERBOSE")) fprintf(stderr, "%s\n", trail.c_str());
  ASSERT_GT(seen.back().first, 0) << "no marker within 60 s: " << trail << "\n" << w.log();
  EXPECT_EQ(seen.back(), (std::pair<long long, long long>{1, kRows})) << "first sight of the marker: " << trail;
  const bool partial = std::any_of(seen.begin(), seen.end(), [](const auto& p) {
    return p.second > 0 && p.second < kRows;
  });
  EXPECT_TRUE(partial) << "never saw the transaction half stored: the check proves nothing. " << trail;

  const auto markers = xrange(markers_key(s));
  ASSERT_EQ(markers.size(), 1u);
  const auto first = xrange(rows_key).front();
  EXPECT_EQ(markers[0].id, fmt::format("{}-0", id_of(first).lsn));
  EXPECT_EQ(field(markers[0], "changes"), std::to_string(kRows));
  EXPECT_EQ(parse_streams(field(markers[0], "streams")), (std::map<std::string, long long>{{rows_key, kRows}}));
}
