// Exactly once against the holes an operator can open: a stream whose last ID no LSN can reach, another
// writer on a stream, Redis losing data (FLUSHALL while stopped or running, an older copy restored), the
// slot dropped. Each is fatal — exit 1, one ERROR line, nothing confirmed to PostgreSQL that Redis does
// not hold — and `--resnapshot` is the way out. Replays after a SIGKILL are skipped and logged. The first
// run (no slot, no checkpoint) still creates the slot and snapshots.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <rapidjson/document.h>
#include <signal.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

using namespace harness;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- LSNs and stream IDs

const std::regex kLsnText(R"([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})");

std::string lsn_text(std::uint64_t lsn) { return fmt::format("{:X}/{:X}", lsn >> 32, lsn & 0xFFFFFFFFu); }

using Id = EntryId;

// The slot's confirmed_flush_lsn; nullopt when the slot does not exist.
std::optional<std::uint64_t> confirmed(const Scope& s) {
  auto v =
      s.query_one(fmt::format("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'", s.slot));
  if (v.empty()) return std::nullopt;
  return parse_lsn(v);
}

bool slot_exists(const Scope& s) {
  return s.query_one(fmt::format("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'", s.slot)) == "1";
}

std::string checkpoint_key(const Scope& s) { return s.prefix + "checkpoint:" + s.slot; }

// A test_decoding slot beside walstream's: PostgreSQL's own account of where each transaction commits.
class RefSlot {
 public:
  explicit RefSlot(const Scope& s) : s_(s), name_(s.slot + "_ref") {
    s_.sql(fmt::format("SELECT pg_create_logical_replication_slot('{}', 'test_decoding')", name_));
  }
  ~RefSlot() {
    try {
      s_.sql(fmt::format("SELECT pg_drop_replication_slot('{}')", name_));
    } catch (...) {
    }
  }
  RefSlot(const RefSlot&) = delete;
  RefSlot& operator=(const RefSlot&) = delete;

  // End of the commit record of the transaction that inserted kv's row `id` (what walstream confirms
  // once that transaction is stored; a slot confirmed below it resends the transaction).
  std::uint64_t commit_end_of_row(int id) const {
    auto xid = s_.query_one(fmt::format("SELECT xmin FROM kv WHERE id = {}", id));
    if (xid.empty()) throw std::runtime_error(fmt::format("no row {} in kv", id));
    auto lsn = s_.query_one(fmt::format("SELECT lsn FROM pg_logical_slot_peek_changes('{}', NULL, NULL, "
                                        "'include-xids', '1') WHERE data = 'COMMIT {}'",
                                        name_, xid));
    if (lsn.empty()) throw std::runtime_error("the reference slot has no commit of xid " + xid);
    return parse_lsn(lsn);
  }

 private:
  const Scope& s_;
  std::string name_;
};

// ---------------------------------------------------------------- Redis on one connection

// One hiredis connection to the test Redis: for polling in a tight loop and for commands that must go
// together (MULTI … EXEC).
class RedisLink {
 public:
  RedisLink() : ctx_(redisConnect("127.0.0.1", redis().port()), redisFree) {
    if (!ctx_ || ctx_->err) throw std::runtime_error("cannot connect to the test Redis");
  }
  // Sends every command, then reads every reply; an error reply throws.
  std::vector<std::string> pipeline(const std::vector<std::vector<std::string>>& commands) {
    for (const auto& argv : commands) {
      std::vector<const char*> args;
      std::vector<size_t> lens;
      for (const auto& a : argv) {
        args.push_back(a.data());
        lens.push_back(a.size());
      }
      redisAppendCommandArgv(ctx_.get(), static_cast<int>(args.size()), args.data(), lens.data());
    }
    std::vector<std::string> out;
    for (std::size_t i = 0; i < commands.size(); ++i) {
      void* raw = nullptr;
      if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || !raw) throw std::runtime_error("Redis connection failed");
      std::unique_ptr<redisReply, void (*)(void*)> r(static_cast<redisReply*>(raw), freeReplyObject);
      if (r->type == REDIS_REPLY_ERROR) throw std::runtime_error(std::string("Redis error: ") + r->str);
      if (r->type == REDIS_REPLY_INTEGER) {
        out.push_back(std::to_string(r->integer));
      } else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        out.emplace_back(r->str, r->len);
      } else {
        out.emplace_back();
      }
    }
    return out;
  }
  long long xlen(const std::string& key) { return std::stoll(pipeline({{"XLEN", key}}).at(0)); }

 private:
  std::unique_ptr<redisContext, void (*)(redisContext*)> ctx_;
};

// ---------------------------------------------------------------- walstream's log

// walstream's log line: "<UTC time> <LEVEL> <message>".
const std::regex kLogLine(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARN|ERROR) \S.*$)");

std::vector<std::string> lines_at(const std::string& log, const std::string& level) {
  std::vector<std::string> out;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, kLogLine) && m[1] == level) out.push_back(line);
  }
  return out;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool contains_ci(const std::string& text, const std::string& piece) {
  return lower(text).find(lower(piece)) != std::string::npos;
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A fatal stop: exit code 1 within 15 s of `since` (the moment the fatal condition was set up), with
// exactly one ERROR line, holding every piece (case-insensitive). A walstream still running after 20 s
// is stopped by the test, so that the caller can go on to check what it confirmed. Returns the line.
std::string expect_fatal(Walstream& w, Clock::time_point since, const std::vector<std::string>& pieces) {
  int code = w.wait(20s);
  double took = seconds_since(since);
  if (code == -1) {
    w.signal(SIGTERM);
    if (w.wait(20s) == -1) {
      w.signal(SIGKILL);
      w.wait(5s);
    }
  }
  const auto log = w.log();
  EXPECT_EQ(code, 1) << (code == -1 ? "still running after 20 s (the test stopped it)\n" : "") << log;
  if (code == 1) {
    EXPECT_LT(took, 15.0) << log;
  }
  auto errors = lines_at(log, "ERROR");
  EXPECT_EQ(errors.size(), 1u) << "expected one ERROR line\n" << log;
  if (errors.empty()) {
    ADD_FAILURE() << "no ERROR line to hold: " << fmt::format("'{}'", fmt::join(pieces, "', '"));
    return {};
  }
  const auto& line = errors.front();
  for (const auto& p : pieces) EXPECT_TRUE(contains_ci(line, p)) << "'" << p << "' not in the ERROR line: " << line;
  return line;
}

// Waits until w streams from its slot, or exits; true when it streams.
bool streams_or_exits(const Scope& s, Walstream& w) {
  return wait_until([&] { return !w.running() || s.streaming(); }) && w.running();
}

void stop(Walstream& w) {
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

// ---------------------------------------------------------------- the table kv

void create_kv(const Scope& s) { s.sql("CREATE TABLE kv (id int PRIMARY KEY, v text)"); }

void insert_row(const Scope& s, int id) { s.sql(fmt::format("INSERT INTO kv VALUES ({0}, 'v{0}')", id)); }

std::string key_of(int id) { return fmt::format(R"({{"id":{}}})", id); }

// Rows first..last, one transaction each, stored in the stream and confirmed to PostgreSQL.
void store_rows(const Scope& s, Walstream& w, int first, int last) {
  ASSERT_TRUE(streams_or_exits(s, w)) << w.log();
  auto before = xlen(s.stream("public.kv"));
  for (int id = first; id <= last; ++id) insert_row(s, id);
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.kv")) == before + (last - first + 1); })) << w.log();
  ASSERT_TRUE(wait_until([&] { return s.caught_up(); })) << w.log();
}

// A walstream run that stores rows first..last of kv, then stops (SIGTERM, exit 0).
void run_storing_rows(const Scope& s, int first, int last) {
  Walstream w(s.args());
  ASSERT_NO_FATAL_FAILURE(store_rows(s, w, first, last));
  stop(w);
}

// kv as PostgreSQL has it: key JSON -> row JSON.
std::map<std::string, std::string> current_rows(const Scope& s) {
  std::map<std::string, std::string> out;
  for (const auto& row : query(s.conninfo, "SELECT id, row_to_json(kv)::text FROM kv")) {
    out[key_of(std::stoi(*row[0]))] = *row[1];
  }
  return out;
}

bool same_json(const std::string& a, const std::string& b) {
  rapidjson::Document da, db;
  da.Parse(a.c_str());
  db.Parse(b.c_str());
  return !da.HasParseError() && !db.HasParseError() && da == db;
}

std::string field(const Entry& e, const std::string& name) {
  auto it = e.fields.find(name);
  return it == e.fields.end() ? std::string("<absent>") : it->second;
}

// The checkpoint hash names an LSN, and PostgreSQL was never told more than it.
void expect_checkpoint_covers_confirmed(const Scope& s) {
  auto slot_lsn = confirmed(s);  // read first: the checkpoint is written before PostgreSQL is told
  ASSERT_TRUE(slot_lsn.has_value());
  auto cp = redis_command({"HGET", checkpoint_key(s), "lsn"});
  ASSERT_EQ(cp.size(), 1u);
  ASSERT_NE(cp[0], "(nil)") << "no checkpoint " << checkpoint_key(s);
  ASSERT_TRUE(std::regex_match(cp[0], kLsnText)) << cp[0];
  EXPECT_GE(parse_lsn(cp[0]), *slot_lsn) << "checkpoint " << cp[0] << ", slot confirmed " << lsn_text(*slot_lsn);
}

// `run --resnapshot` on kv, whose stream holds `before`: the stream keeps those entries, gains one `r`
// entry per current row above them, then later changes once each, after them; every entry's schema
// version is in the registry; the checkpoint covers what the slot confirmed; a later plain run goes on
// from there without a fatal and without a second snapshot.
void expect_resnapshot_recovers(const Scope& s, const std::vector<Entry>& before) {
  const auto key = s.stream("public.kv");
  const auto rows = current_rows(s);
  ASSERT_GE(rows.size(), 3u);
  ASSERT_TRUE(rows.count(key_of(2)) && rows.count(key_of(3)));
  const std::size_t snapshot_end = before.size() + rows.size();
  {
    Walstream w(with(s.args(), {"--resnapshot"}));
    auto copied = [&] { return s.streaming() && xlen(key) >= static_cast<long long>(snapshot_end); };
    ASSERT_TRUE(wait_until([&] { return !w.running() || copied(); }, 60s)) << w.log();
    ASSERT_TRUE(w.running()) << "exit code " << w.wait(0ms) << "\n" << w.log();
    insert_row(s, 100);
    s.sql("UPDATE kv SET v = 'changed' WHERE id = 2");
    s.sql("DELETE FROM kv WHERE id = 3");
    ASSERT_TRUE(wait_until([&] { return xlen(key) >= static_cast<long long>(snapshot_end + 3) && s.caught_up(); }))
        << "XLEN " << xlen(key) << "\n" << w.log();
    auto entries = xrange(key);
    ASSERT_EQ(entries.size(), snapshot_end + 3) << w.log();
    for (std::size_t i = 0; i < before.size(); ++i) {
      EXPECT_EQ(entries[i].id, before[i].id) << "entry " << i << " changed";
      EXPECT_EQ(entries[i].fields, before[i].fields) << "entry " << i << " changed";
    }
    std::set<std::string> snapshot_keys;
    for (std::size_t i = before.size(); i < snapshot_end; ++i) {
      const auto& e = entries[i];
      ASSERT_EQ(field(e, "op"), "r") << e.id << "\n" << w.log();
      auto k = field(e, "key");
      EXPECT_TRUE(snapshot_keys.insert(k).second) << "two `r` entries for " << k;
      ASSERT_TRUE(rows.count(k)) << "an `r` entry for a row that does not exist: " << k;
      EXPECT_TRUE(same_json(field(e, "after"), rows.at(k))) << field(e, "after") << " vs " << rows.at(k);
    }
    EXPECT_EQ(snapshot_keys.size(), rows.size());
    const std::vector<std::pair<std::string, int>> changes = {{"c", 100}, {"u", 2}, {"d", 3}};
    for (std::size_t i = 0; i < changes.size(); ++i) {
      const auto& e = entries[snapshot_end + i];
      EXPECT_EQ(field(e, "op"), changes[i].first) << e.id;
      EXPECT_EQ(field(e, "key"), key_of(changes[i].second)) << e.id;
    }
    for (std::size_t i = 1; i < entries.size(); ++i) EXPECT_LT(parse_entry_id(entries[i - 1].id), parse_entry_id(entries[i].id));
    for (const auto& e : entries) {
      EXPECT_EQ(redis_command({"HEXISTS", s.prefix + "schema:public.kv", field(e, "schema")}),
                std::vector<std::string>{"1"})
          << "entry " << e.id << " refers to schema version " << field(e, "schema") << ", not in the registry";
    }
    ASSERT_NO_FATAL_FAILURE(expect_checkpoint_covers_confirmed(s));
    stop(w);
  }
  // The plain run after the recovery: one more change, once, and no new snapshot.
  insert_row(s, 101);
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return !w.running() || xlen(key) >= static_cast<long long>(snapshot_end + 4); }))
      << w.log();
  ASSERT_TRUE(w.running()) << w.log();
  auto entries = xrange(key);
  ASSERT_EQ(entries.size(), snapshot_end + 4) << w.log();
  EXPECT_EQ(field(entries.back(), "op"), "c");
  EXPECT_EQ(field(entries.back(), "key"), key_of(101));
  stop(w);
}

// After a fatal run refused row 2: its transaction was not confirmed, and once the operator deletes the
// stream, the next run writes that row, once, as an insert.
void expect_refused_row_recovers(const Scope& s, RefSlot& ref, const std::optional<std::uint64_t>& after_fatal,
                                 const std::string& key) {
  ASSERT_TRUE(after_fatal.has_value());
  const auto commit_end = ref.commit_end_of_row(2);
  EXPECT_LT(*after_fatal, commit_end) << "the refused row's transaction (commit ends at " << lsn_text(commit_end)
                                      << ") was confirmed: slot at " << lsn_text(*after_fatal);

  // The operator's fix: nothing that was refused is lost.
  redis_command({"DEL", key});
  Walstream w(s.args());
  // Not Scope::caught_up(): a replayed transaction's confirmation may wait for the next WAL record.
  wait_until([&] { return !w.running() || xlen(key) >= 1; }, 15s);
  auto entries = xrange(key);
  ASSERT_EQ(entries.size(), 1u) << "the row refused by the fatal run is lost\n" << w.log();
  EXPECT_EQ(field(entries[0], "key"), key_of(2));
  EXPECT_EQ(field(entries[0], "op"), "c");
  EXPECT_TRUE(w.running()) << w.log();
  stop(w);
}

}  // namespace

// No slot and no checkpoint: walstream creates the slot, copies the existing rows as `r`, then streams.
TEST(ExactlyOnce, FirstRunCreatesSlotSnapshotsAndStreams) {
  Scope s;
  create_kv(s);
  insert_row(s, 1);
  insert_row(s, 2);
  ASSERT_FALSE(slot_exists(s));
  ASSERT_EQ(redis_command({"EXISTS", checkpoint_key(s)}), std::vector<std::string>{"0"});
  Walstream w(s.args());
  ASSERT_TRUE(streams_or_exits(s, w)) << w.log();
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.kv")) >= 2; })) << w.log();
  insert_row(s, 3);
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.kv")) >= 3 && s.caught_up(); })) << w.log();
  auto entries = xrange(s.stream("public.kv"));
  ASSERT_EQ(entries.size(), 3u) << w.log();
  std::set<std::string> snapshot_keys = {field(entries[0], "key"), field(entries[1], "key")};
  EXPECT_EQ(snapshot_keys, (std::set<std::string>{key_of(1), key_of(2)}));
  EXPECT_EQ(field(entries[0], "op"), "r");
  EXPECT_EQ(field(entries[1], "op"), "r");
  EXPECT_EQ(field(entries[2], "op"), "c");
  EXPECT_EQ(field(entries[2], "key"), key_of(3));
  EXPECT_TRUE(slot_exists(s));
  EXPECT_TRUE(lines_at(w.log(), "ERROR").empty()) << w.log();
  stop(w);
}

// 1. A stream whose last ID (here an automatic, millisecond-time one) is above any LSN PostgreSQL has
// written: fatal at walstream's first write to it, the refused change not confirmed; once the operator
// deletes the stream, the next run writes that change.
TEST(ExactlyOnce, ImpossibleHighWaterMarkIsFatal) {
  Scope s;
  create_kv(s);
  const auto key = s.stream("public.kv");
  ASSERT_NO_FATAL_FAILURE(run_storing_rows(s, 1, 1));
  RefSlot ref(s);
  auto last_id = redis_command({"XADD", key, "*", "x", "1"}).at(0);
  auto info = redis_command({"XINFO", "STREAM", key});
  auto at = std::find(info.begin(), info.end(), "last-generated-id");
  ASSERT_TRUE(at != info.end() && at + 1 != info.end());
  ASSERT_EQ(*(at + 1), last_id);
  ASSERT_GT(parse_entry_id(last_id).lsn, parse_lsn(s.query_one("SELECT pg_current_wal_insert_lsn()")));
  std::optional<std::uint64_t> after_fatal;
  {
    Walstream w(s.args());
    auto since = Clock::now();
    insert_row(s, 2);
    auto line = expect_fatal(w, since, {key, last_id});
    EXPECT_TRUE(std::regex_search(line, std::regex(R"(\bWAL\b)", std::regex::icase))) << "no 'WAL' in: " << line;
    after_fatal = confirmed(s);
  }
  expect_refused_row_recovers(s, ref, after_fatal, key);
}

// 2. Someone XADDs an ID above walstream's next one while it runs: its next XADD is refused, which is
// fatal (not a reconnect and a skip), and the change is not confirmed.
TEST(ExactlyOnce, AnotherWriterMidSessionIsFatal) {
  Scope s;
  create_kv(s);
  const auto key = s.stream("public.kv");
  RefSlot ref(s);
  std::optional<std::uint64_t> after_fatal;
  {
    Walstream w(s.args());
    ASSERT_NO_FATAL_FAILURE(store_rows(s, w, 1, 1));
    redis_command({"XADD", key, "999999999999999-1", "x", "1"});
    auto since = Clock::now();
    insert_row(s, 2);
    expect_fatal(w, since, {key, "another writer"});
    after_fatal = confirmed(s);
  }
  expect_refused_row_recovers(s, ref, after_fatal, key);
}

// 3. SIGKILL while a 30,000-row transaction is being stored in 4096-entry chunks: the next run skips
// what Redis already holds, says so in one INFO line with an LSN range, and the stream ends up with the
// transaction exactly once.
TEST(ExactlyOnce, ReplayAfterSigkillIsSkippedAndLogged) {
  constexpr long long kRows = 30000;
  Scope s;
  create_kv(s);
  const auto key = s.stream("public.kv");
  long long partial = 0;
  {
    Walstream w(s.args());
    ASSERT_TRUE(streams_or_exits(s, w)) << w.log();
    std::string insert_error;
    std::thread insert([&] {
      try {
        s.sql("INSERT INTO kv SELECT g, 'v' || g FROM generate_series(1, 30000) g");
      } catch (const std::exception& e) {
        insert_error = e.what();
      }
    });
    RedisLink link;
    auto deadline = Clock::now() + 30s;
    long long seen = 0;
    while (Clock::now() < deadline && (seen = link.xlen(key)) == 0) std::this_thread::sleep_for(500us);
    w.signal(SIGKILL);
    insert.join();
    ASSERT_EQ(insert_error, "");
    ASSERT_EQ(w.wait(), 128 + SIGKILL) << w.log();
    ASSERT_GT(seen, 0) << "nothing stored within 30 s\n" << w.log();
    partial = xlen(key);
  }
  ASSERT_GT(partial, 0);
  ASSERT_LT(partial, kRows) << "the whole transaction was stored before the SIGKILL: the test proves nothing";

  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return !w.running() || (xlen(key) >= kRows && s.caught_up()); }, 60s))
      << "XLEN " << xlen(key) << "\n" << w.log();
  ASSERT_TRUE(w.running()) << w.log();
  auto entries = xrange(key);
  ASSERT_EQ(entries.size(), static_cast<std::size_t>(kRows)) << "first run stored " << partial;
  const auto commit = parse_entry_id(entries[0].id).lsn;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    auto id = parse_entry_id(entries[i].id);
    if (i > 0) {
      ASSERT_LT(parse_entry_id(entries[i - 1].id), id);
    }
    ASSERT_EQ(id.lsn, commit) << entries[i].id << " is not in the transaction's commit " << commit;
    ASSERT_EQ(id.seq, i + 1) << entries[i].id;
    ASSERT_EQ(field(entries[i], "key"), key_of(static_cast<int>(i + 1))) << entries[i].id;
  }

  const std::regex skipped(R"(skipped (\d+) entr.*already in Redis)", std::regex::icase);
  std::vector<long long> counts;
  std::string lines;
  for (const auto& line : lines_at(w.log(), "INFO")) {
    std::smatch m;
    if (!std::regex_search(line, m, skipped)) continue;
    lines += line + "\n";
    counts.push_back(std::stoll(m[1]));
    auto lsns = std::distance(std::sregex_iterator(line.begin(), line.end(), kLsnText), std::sregex_iterator());
    EXPECT_GE(lsns, 2) << "no LSN range in: " << line;
  }
  ASSERT_FALSE(counts.empty()) << "no INFO line 'skipped N entries … already in Redis' (Redis held " << partial
                               << " entries of the transaction)\n" << w.log();
  long long sum = 0;
  for (auto c : counts) sum += c;
  bool one_is_all = std::find(counts.begin(), counts.end(), partial) != counts.end();
  EXPECT_TRUE(sum == partial || one_is_all) << "Redis held " << partial << " entries of the transaction; logged:\n"
                                            << lines;
  stop(w);
}

// 4a. Redis emptied while walstream was stopped (FLUSHALL: checkpoint gone too): fatal at start, and
// nothing written or confirmed.
TEST(ExactlyOnce, RedisFlushedWhileStoppedIsFatal) {
  Scope s;
  create_kv(s);
  ASSERT_NO_FATAL_FAILURE(run_storing_rows(s, 1, 3));
  redis_command({"FLUSHALL"});
  insert_row(s, 4);
  const auto slot_before = confirmed(s);
  ASSERT_TRUE(slot_before.has_value());
  Walstream w(s.args());
  expect_fatal(w, Clock::now(), {"behind", "no checkpoint", "--resnapshot"});
  EXPECT_EQ(confirmed(s), slot_before) << "the slot moved while Redis holds nothing";
  EXPECT_EQ(xlen(s.stream("public.kv")), 0) << "written to a Redis that lost the rows before it";
}

// 4b. The way out after 4a: --resnapshot re-copies the table as `r` entries, then streams on.
TEST(ExactlyOnce, ResnapshotAfterRedisFlushed) {
  Scope s;
  create_kv(s);
  ASSERT_NO_FATAL_FAILURE(run_storing_rows(s, 1, 3));
  redis_command({"FLUSHALL"});
  insert_row(s, 4);
  s.sql("UPDATE kv SET v = 'updated' WHERE id = 1");
  expect_resnapshot_recovers(s, {});
}

// 4c. Redis loses its data while walstream runs (a restart without persistence, as walstream sees it:
// the data gone and its connections cut): fatal at the reconnect, instead of streaming on.
TEST(ExactlyOnce, RedisLostDataWhileRunningIsFatalAtReconnect) {
  Scope s;
  create_kv(s);
  RefSlot ref(s);
  Walstream w(s.args());
  ASSERT_NO_FATAL_FAILURE(store_rows(s, w, 1, 3));
  // In one MULTI/EXEC, so that nothing walstream writes can land between the two.
  RedisLink link;
  link.pipeline({{"MULTI"}, {"FLUSHALL"}, {"CLIENT", "KILL", "TYPE", "normal"}, {"EXEC"}});
  auto since = Clock::now();
  insert_row(s, 4);
  expect_fatal(w, since, {"behind", "no checkpoint", "--resnapshot"});
  auto slot_lsn = confirmed(s);
  ASSERT_TRUE(slot_lsn.has_value());
  const auto commit_end = ref.commit_end_of_row(4);
  EXPECT_LT(*slot_lsn, commit_end) << "row 4 (commit ends at " << lsn_text(commit_end)
                                   << ") was confirmed, Redis lost: slot at " << lsn_text(*slot_lsn);
  EXPECT_EQ(xlen(s.stream("public.kv")), 0) << "streamed on into the emptied Redis";
}

// 4d. An older copy of Redis restored (a checkpoint below what the slot confirmed): fatal at start with
// the missing LSN range.
TEST(ExactlyOnce, OlderRedisRestoredIsFatal) {
  Scope s;
  create_kv(s);
  const auto key = s.stream("public.kv");
  std::vector<Entry> old_entries;
  std::string old_checkpoint;
  {
    Walstream w(s.args());
    ASSERT_NO_FATAL_FAILURE(store_rows(s, w, 1, 3));
    old_entries = xrange(key);
    auto cp = redis_command({"HGET", checkpoint_key(s), "lsn"});
    ASSERT_EQ(cp.size(), 1u);
    ASSERT_NE(cp[0], "(nil)") << "no checkpoint " << checkpoint_key(s) << " after rows were stored";
    old_checkpoint = cp[0];
    ASSERT_NO_FATAL_FAILURE(store_rows(s, w, 4, 5));
    stop(w);
  }
  const auto slot_before = confirmed(s);
  ASSERT_TRUE(slot_before.has_value());
  ASSERT_LT(parse_lsn(old_checkpoint), *slot_before);
  // Redis as it was after row 3: the stream's entries and the checkpoint of then.
  redis_command({"DEL", key});
  for (const auto& e : old_entries) {
    std::vector<std::string> argv = {"XADD", key, e.id};
    for (const auto& [f, v] : e.fields) {
      argv.push_back(f);
      argv.push_back(v);
    }
    redis_command(argv);
  }
  redis_command({"HSET", checkpoint_key(s), "lsn", old_checkpoint});

  Walstream w(s.args());
  expect_fatal(w, Clock::now(), {"behind", "--resnapshot", old_checkpoint, lsn_text(*slot_before)});
  EXPECT_EQ(confirmed(s), slot_before);
  EXPECT_EQ(xlen(key), static_cast<long long>(old_entries.size()));
}

// 5. The slot dropped while Redis holds a checkpoint for it: fatal, no new slot; --resnapshot recovers.
TEST(ExactlyOnce, SlotDroppedIsFatalThenResnapshotRecovers) {
  Scope s;
  create_kv(s);
  const auto key = s.stream("public.kv");
  ASSERT_NO_FATAL_FAILURE(run_storing_rows(s, 1, 3));
  const auto before = xrange(key);
  ASSERT_EQ(before.size(), 3u);
  s.sql(fmt::format("SELECT pg_drop_replication_slot('{}')", s.slot));
  // Changes in the hole, which no slot will ever send.
  insert_row(s, 4);
  s.sql("UPDATE kv SET v = 'updated' WHERE id = 1");
  {
    Walstream w(s.args());
    expect_fatal(w, Clock::now(), {s.slot, "does not exist", "--resnapshot"});
  }
  EXPECT_FALSE(slot_exists(s)) << "a new slot was created over the hole";
  auto after = xrange(key);
  ASSERT_EQ(after.size(), before.size()) << "written to the streams over the hole";
  if (slot_exists(s)) s.sql(fmt::format("SELECT pg_drop_replication_slot('{}')", s.slot));
  expect_resnapshot_recovers(s, before);
}
