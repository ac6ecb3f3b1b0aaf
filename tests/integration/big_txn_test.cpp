// One transaction of 1,000,000 rows: every row arrives once with IDs <commit>-1 … <commit>-1000000,
// walstream's memory stays bounded by its chunk, and a SIGKILL half-way through resumes exactly.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>

#include "harness.h"

using namespace harness;
using namespace std::chrono_literals;

namespace {

constexpr long long kRows = 1'000'000;
constexpr long kMaxRssKb = 64 * 1024;

struct Id {
  std::uint64_t lsn = 0;
  std::uint64_t seq = 0;
};

Id parse_id(const std::string& id) {
  auto dash = id.find('-');
  if (dash == std::string::npos) throw std::runtime_error("bad stream ID " + id);
  return {std::stoull(id.substr(0, dash)), std::stoull(id.substr(dash + 1))};
}

// XRANGE/XREVRANGE … COUNT 1, flattened: id, field, value, field, value, …
std::vector<std::string> edge(const std::string& key, bool last) {
  return last ? redis_command({"XREVRANGE", key, "+", "-", "COUNT", "1"})
              : redis_command({"XRANGE", key, "-", "+", "COUNT", "1"});
}

std::string field_of(const std::vector<std::string>& flat, const std::string& name) {
  for (std::size_t i = 1; i + 1 < flat.size(); i += 2) {
    if (flat[i] == name) return flat[i + 1];
  }
  return "<absent>";
}

bool walsender_active(const Scope& s) { return s.streaming(); }

const char* kInsert = "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000000) g";

// The stream holds exactly the transaction's 1,000,000 changes: XLEN is 1,000,000, the first ID is
// <commit>-1 and the last <commit>-1000000. IDs strictly grow, so there is no gap and no duplicate.
void expect_whole_transaction(const std::string& key) {
  EXPECT_EQ(xlen(key), kRows);
  auto first = edge(key, false);
  auto last = edge(key, true);
  ASSERT_FALSE(first.empty());
  ASSERT_FALSE(last.empty());
  auto a = parse_id(first[0]);
  auto b = parse_id(last[0]);
  EXPECT_EQ(a.lsn, b.lsn) << first[0] << " and " << last[0] << " are not one transaction";
  EXPECT_EQ(a.seq, 1u) << first[0];
  EXPECT_EQ(b.seq, static_cast<std::uint64_t>(kRows)) << last[0];
  EXPECT_EQ(field_of(first, "key"), R"({"id":1})");
  EXPECT_EQ(field_of(first, "after"), fmt::format(R"({{"id":1,"v":"{}"}})", "c4ca4238a0b923820dcc509a6f75849b"));
  EXPECT_EQ(field_of(last, "key"), R"({"id":1000000})");
  EXPECT_EQ(field_of(first, "op"), "c");
  EXPECT_EQ(field_of(last, "op"), "c");
  EXPECT_EQ(field_of(first, "xid"), field_of(last, "xid"));
}

TEST(BigTxn, MillionRowTransactionArrivesWholeInBoundedMemory) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return walsender_active(s); })) << w.log();
  auto key = s.stream("public.t");
  auto t0 = std::chrono::steady_clock::now();
  s.sql(kInsert);
  bool done = wait_until([&] { return xlen(key) >= kRows && s.caught_up(); }, 180s);
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  long rss = peak_rss_kb(w.pid());  // before stopping: the process must still exist
  ASSERT_TRUE(done) << "XLEN " << xlen(key) << " after " << secs << " s\n" << w.log();
  RecordProperty("seconds", std::to_string(secs));
  RecordProperty("peak_rss_kb", std::to_string(rss));
  EXPECT_GT(rss, 0);
  EXPECT_LE(rss, kMaxRssKb) << "walstream's peak RSS for a 1,000,000-row transaction";
  if (std::getenv("FAULTS_VERBOSE")) fprintf(stderr, "1M rows in %.1f s, peak RSS %ld kB\n", secs, rss);
  expect_whole_transaction(key);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
  redis_command({"DEL", key});  // frees Redis's memory for the next test
}

TEST(BigTxn, SigkillInTheMiddleOfAMillionRowTransaction) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  auto key = s.stream("public.t");
  std::string logs;
  long long at_kill = 0;
  {
    Walstream w(s.args());
    ASSERT_TRUE(wait_until([&] { return walsender_active(s); })) << w.log();
    s.sql(kInsert);
    // Somewhere between 100,000 and 700,000 stored entries (the stream grows by whole chunks).
    std::random_device rd;
    long long kill_at = 100'000 + static_cast<long long>(rd() % 600'000);
    RecordProperty("kill_at", std::to_string(kill_at));
    ASSERT_TRUE(wait_until([&] { return xlen(key) >= kill_at; }, 90s)) << w.log();
    w.signal(SIGKILL);
    w.wait();
    at_kill = xlen(key);
    logs = w.log();
  }
  ASSERT_GE(at_kill, 100'000);
  ASSERT_LE(at_kill, 900'000) << "the kill came too late to be in the middle of the transaction";
  // Nothing of the transaction may be confirmed to PostgreSQL: it is not complete in Redis.
  auto commit = parse_id(edge(key, false).at(0)).lsn;
  auto commit_text = fmt::format("{:X}/{:X}", commit >> 32, commit & 0xffffffffu);
  EXPECT_EQ(s.query_one(fmt::format("SELECT confirmed_flush_lsn <= '{}'::pg_lsn FROM pg_replication_slots WHERE "
                                    "slot_name = '{}'",
                                    commit_text, s.slot)),
            "t")
      << "the slot confirmed past the commit " << commit_text << " of a half-stored transaction";
  Walstream w(s.args());
  bool done = wait_until([&] { return xlen(key) >= kRows && s.caught_up(); }, 180s);
  long rss = peak_rss_kb(w.pid());
  ASSERT_TRUE(done) << "XLEN " << xlen(key) << " (was " << at_kill << " at the kill)\n" << logs << "---- restart\n"
                    << w.log();
  EXPECT_LE(rss, kMaxRssKb) << "walstream's peak RSS while skipping and resuming the transaction";
  if (std::getenv("FAULTS_VERBOSE")) fprintf(stderr, "killed at XLEN %lld, restart peak RSS %ld kB\n", at_kill, rss);
  expect_whole_transaction(key);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
  redis_command({"DEL", key});
}

}  // namespace
