// --retention acked against real servers: what consumer groups still need is never trimmed (entries
// compared byte for byte), the oldest group rules, --retain-for keeps young entries, --maxlen losses and
// --retain-max trims are logged with their counts, a SIGKILLed and restarted walstream trims nothing a
// group needs nor anything younger than its start, and a Redis refusing the script is warned about once
// while streaming goes on. Redis runs with stream-node-max-entries 10 so that a few dozen entries fill
// several macro nodes (XTRIM MINID ~ removes whole nodes only).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fmt/format.h>
#include <regex>
#include <string>
#include <vector>

#include "harness.h"

using namespace harness;

namespace {

using Clock = std::chrono::steady_clock;

void small_nodes() { redis_command(redis().port(), {"CONFIG", "SET", "stream-node-max-entries", "10"}); }

std::vector<std::string> retention_args(const Scope& s, std::initializer_list<std::string> more) {
  auto args = with(s.args(), {"--retention", "acked", "--retention-interval", "0.2", "--log-level", "debug"});
  args.insert(args.end(), more);
  return args;
}

// Rows from..to of `table`, one transaction each (so one commit LSN and one commit time each).
void commits(const Scope& s, const std::string& table, int from, int to) {
  s.sql("DO $$ BEGIN FOR i IN " + std::to_string(from) + ".." + std::to_string(to) + " LOOP INSERT INTO " + table +
        " VALUES (i, 'row ' || i); COMMIT; END LOOP; END $$");
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::size_t passes(const Walstream& w) { return count(w.log(), "retention: pass "); }

// `n` more retention passes than now, each started after this call.
bool more_passes(const Walstream& w, std::size_t n) {
  auto seen = passes(w);
  return wait_until([&] { return passes(w) >= seen + n + 1; });
}

void ack(const std::string& stream, const std::string& group, const std::vector<Entry>& entries, std::size_t from,
         std::size_t to) {
  std::vector<std::string> argv{"XACK", stream, group};
  for (auto i = from; i < to; ++i) argv.push_back(entries[i].id);
  redis_command(argv);
}

void read_group(const std::string& stream, const std::string& group, int n) {
  redis_command({"XREADGROUP", "GROUP", group, "c", "COUNT", std::to_string(n), "STREAMS", stream, ">"});
}

// `now` is `all` from entry `from` on, byte for byte (IDs and every field).
void expect_suffix(const std::vector<Entry>& now, const std::vector<Entry>& all, std::size_t from) {
  ASSERT_EQ(now.size(), all.size() - from);
  for (std::size_t i = 0; i < now.size(); ++i) {
    EXPECT_EQ(now[i].id, all[from + i].id) << i;
    EXPECT_EQ(now[i].fields, all[from + i].fields) << now[i].id;
  }
}

long long entries_added(const std::string& stream) {
  auto info = redis_command({"XINFO", "STREAM", stream});
  for (std::size_t i = 0; i + 1 < info.size(); ++i) {
    if (info[i] == "entries-added") return std::stoll(info[i + 1]);
  }
  return -1;
}

// rejected_calls of a command in INFO commandstats (ACL refusals among them).
long long rejected_calls(const std::string& command) {
  auto info = redis_command({"INFO", "commandstats"});
  std::string all;
  for (const auto& part : info) all += part;
  std::smatch m;
  if (!std::regex_search(all, m, std::regex("cmdstat_" + command + ":[^\r\n]*rejected_calls=([0-9]+)"))) return 0;
  return std::stoll(m[1].str());
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The time of the first log line holding `what` ("2026-12-02T00:19:38.198Z INFO …"), or the epoch.
std::chrono::system_clock::time_point logged_at(const std::string& log, const std::string& what) {
  auto at = log.find(what);
  if (at == std::string::npos) return {};
  auto begin = log.rfind('\n', at);
  auto line = log.substr(begin == std::string::npos ? 0 : begin + 1, 24);
  std::tm tm{};
  int ms = 0;
  if (sscanf(line.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
             &tm.tm_min, &tm.tm_sec, &ms) != 7) {
    return {};
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return std::chrono::system_clock::from_time_t(timegm(&tm)) + std::chrono::milliseconds(ms);
}

}  // namespace

TEST(Retention, EntriesFromAGroupsOldestPendingOnAreNeverTrimmedOlderOnesAre) {
  small_nodes();
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, name text)");
  const auto t = s.stream("public.t");
  Walstream w(retention_args(s, {"--retain-for", "1s"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << w.log();
  commits(s, "t", 1, 50);
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 50; })) << w.log();
  auto all = xrange(t);
  // Read 30, acknowledged the first 20: entry 21 (index 20) is the oldest pending.
  redis_command({"XGROUP", "CREATE", t, "g", "0"});
  read_group(t, "g", 30);
  ack(t, "g", all, 0, 20);

  ASSERT_TRUE(wait_until([&] { return xlen(t) < 50; })) << w.log();
  ASSERT_TRUE(more_passes(w, 3)) << w.log();
  // The nodes of entries 1-10 and 11-20 are gone; from the oldest pending entry on, all is there.
  expect_suffix(xrange(t), all, 20);
  EXPECT_EQ(count(w.log(), "WARN"), 0u) << w.log();

  // Acknowledged up to 30 and read to the end: the group needs what comes after 50 only, and once
  // --retain-for has passed, the whole stream goes.
  ack(t, "g", all, 20, 30);
  read_group(t, "g", 100);
  ack(t, "g", all, 30, 50);
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 0; })) << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

TEST(Retention, TheLaggingGroupsPositionRules) {
  small_nodes();
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, name text)");
  const auto t = s.stream("public.t");
  Walstream w(retention_args(s, {"--retain-for", "1s"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << w.log();
  commits(s, "t", 1, 50);
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 50; })) << w.log();
  auto all = xrange(t);
  redis_command({"XGROUP", "CREATE", t, "fast", "0"});
  read_group(t, "fast", 40);
  ack(t, "fast", all, 0, 40);  // needs entry 41 on
  redis_command({"XGROUP", "CREATE", t, "slow", "0"});
  read_group(t, "slow", 10);
  ack(t, "slow", all, 0, 10);  // needs entry 11 on

  ASSERT_TRUE(wait_until([&] { return xlen(t) < 50; })) << w.log();
  ASSERT_TRUE(more_passes(w, 3)) << w.log();
  expect_suffix(xrange(t), all, 10);

  // The laggard catches up to 40: now both need entry 41 on.
  read_group(t, "slow", 30);
  ack(t, "slow", all, 10, 40);
  ASSERT_TRUE(wait_until([&] { return xlen(t) < 40; })) << w.log();
  ASSERT_TRUE(more_passes(w, 3)) << w.log();
  expect_suffix(xrange(t), all, 40);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

TEST(Retention, WithoutAGroupRetainForRules) {
  small_nodes();
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, name text)");
  const auto t = s.stream("public.t");
  Walstream w(retention_args(s, {"--retain-for", "5s"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << w.log();
  auto before_a = Clock::now();  // before the commits: trimming them earlier than 5 s after this is wrong
  commits(s, "t", 1, 30);
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 30; })) << w.log();
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 0; })) << w.log();
  EXPECT_GE(seconds_since(before_a), 5.0);

  // Younger than --retain-for: kept, pass after pass.
  auto before_b = Clock::now();
  commits(s, "t", 31, 60);
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 30; })) << w.log();
  auto b = xrange(t);
  ASSERT_TRUE(more_passes(w, 1)) << w.log();
  auto kept = xrange(t);
  ASSERT_LT(seconds_since(before_b), 5.0) << "the passes took too long for this check";
  expect_suffix(kept, b, 0);
  // …until they are old enough.
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 0; })) << w.log();
  EXPECT_GE(seconds_since(before_b), 5.0);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

TEST(Retention, MaxlenTrimmingWhatAGroupHasNotReadIsWarnedWithTheCount) {
  small_nodes();
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, name text)");
  const auto t = s.stream("public.t");
  const int port = free_port();
  Walstream w(retention_args(s, {"--maxlen", "10", "--metrics-listen", fmt::format("127.0.0.1:{}", port)}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << w.log();
  redis_command({"XGROUP", "CREATE", t, "g", "0", "MKSTREAM"});
  // One transaction: one MULTI/EXEC, so a pass sees none or all of it.
  s.sql("INSERT INTO t SELECT i, 'row ' || i FROM generate_series(1, 100) i");
  ASSERT_TRUE(wait_until([&] { return entries_added(t) == 100; })) << w.log();
  // A group that starts at the end lost nothing.
  redis_command({"XGROUP", "CREATE", t, "late", "$"});
  const std::regex warn("WARN retention: --maxlen trimmed ([0-9]+) entries group 'g' of stream " + t +
                        " had not read");
  std::smatch m;
  ASSERT_TRUE(wait_until([&] {
    auto log = w.log();
    return std::regex_search(log, m, warn);
  })) << w.log();
  auto length = xlen(t);
  EXPECT_LT(length, 100);
  EXPECT_EQ(std::stoll(m[1].str()), 100 - length) << w.log();
  ASSERT_TRUE(more_passes(w, 3)) << w.log();
  auto log = w.log();
  EXPECT_EQ(count(log, "--maxlen trimmed"), 1u) << log;  // once per stream and group; none for 'late'
  EXPECT_EQ(count(log, "'late'"), 0u) << log;
  // The same count in the metric an alert would watch.
  EXPECT_EQ(scrape_value(port, "walstream_retention_unread_trimmed_entries_total"), 100 - length);
  EXPECT_EQ(scrape_value(port, "walstream_retention_retain_max_trimmed_entries_total"), 0);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

TEST(Retention, RetainMaxTrimsPastAnAbandonedGroupAndSaysSo) {
  small_nodes();
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, name text)");
  const auto t = s.stream("public.t");
  const int port = free_port();
  Walstream w(retention_args(s, {"--retain-for", "1s", "--retain-max", "3s", "--metrics-listen",
                                 fmt::format("127.0.0.1:{}", port)}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << w.log();
  redis_command({"XGROUP", "CREATE", t, "gone", "0", "MKSTREAM"});  // never reads
  auto before = Clock::now();
  commits(s, "t", 1, 40);
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 40; })) << w.log();
  const std::regex warn("WARN retention: --retain-max 3s trimmed ([0-9]+) entries group 'gone' of stream " + t +
                        " had not read");
  std::smatch m;
  ASSERT_TRUE(wait_until([&] {
    auto log = w.log();
    return std::regex_search(log, m, warn);
  })) << w.log();
  EXPECT_GE(seconds_since(before), 3.0);
  ASSERT_TRUE(more_passes(w, 2)) << w.log();
  auto length = xlen(t);
  EXPECT_LT(length, 40);
  // The count is the first such trim's: nothing trimmed the stream before it.
  EXPECT_EQ(std::stoll(m[1].str()), 40 - length) << w.log();
  EXPECT_EQ(count(w.log(), "--retain-max 3s trimmed"), 1u) << w.log();
  EXPECT_EQ(count(w.log(), "--maxlen"), 0u) << w.log();
  EXPECT_EQ(scrape_value(port, "walstream_retention_retain_max_trimmed_entries_total"), 40 - length);
  EXPECT_GE(scrape_value(port, "walstream_retention_trimmed_entries_total").value_or(0), 40 - length);
  EXPECT_EQ(scrape_value(port, "walstream_retention_unread_trimmed_entries_total"), 0);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

TEST(Retention, ASigkilledAndRestartedWalstreamTrimsNothingAGroupNeedsNorYoungerThanItsStart) {
  small_nodes();
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, name text); CREATE TABLE u (id int PRIMARY KEY, name text)");
  const auto t = s.stream("public.t");
  const auto u = s.stream("public.u");
  auto args = retention_args(s, {"--retain-for", "2s"});
  auto first = std::make_unique<Walstream>(args);
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << first->log();
  commits(s, "t", 1, 40);
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 40; })) << first->log();
  auto all = xrange(t);
  redis_command({"XGROUP", "CREATE", t, "g", "0"});
  read_group(t, "g", 20);
  ack(t, "g", all, 0, 10);  // entry 11 (index 10) is the oldest pending
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 30; })) << first->log();
  commits(s, "t", 41, 50);
  commits(s, "u", 1, 20);
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 40 && xlen(u) == 20; })) << first->log();
  all = xrange(t);
  first->signal(SIGKILL);
  EXPECT_EQ(first->wait(), 128 + SIGKILL);

  Walstream second(args);
  // Logged just before the session's first sample: "everything Redis holds was committed before now".
  std::chrono::system_clock::time_point started{};
  ASSERT_TRUE(wait_until([&] {
    started = logged_at(second.log(), "INFO streaming from slot");
    return started != std::chrono::system_clock::time_point{};
  })) << second.log();
  // u's rows are older than 2 s soon, but the new process cannot know: not before 2 s after its start.
  ASSERT_TRUE(wait_until([&] { return xlen(u) == 0; })) << second.log();
  EXPECT_GE(std::chrono::duration<double>(std::chrono::system_clock::now() - started).count(), 2.0) << second.log();
  ASSERT_TRUE(more_passes(second, 2)) << second.log();
  expect_suffix(xrange(t), all, 0);  // everything from the oldest pending entry on
  second.signal(SIGTERM);
  EXPECT_EQ(second.wait(), 0) << second.log();
}

TEST(Retention, ARedisRefusingTheScriptIsWarnedOnceWhileStreamingGoesOn) {
  small_nodes();
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, name text)");
  const auto t = s.stream("public.t");
  // A Redis user that may do everything but run scripts.
  const std::string user = "ret_" + s.slot.substr(0, 8);
  redis_command({"ACL", "SETUSER", user, "on", ">secret", "~*", "+@all", "-eval", "-evalsha", "-script"});
  auto args = retention_args(s, {"--retain-for", "1s"});
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--redis") args[i + 1] = "redis://" + user + ":secret@127.0.0.1:" + std::to_string(redis().port());
  }
  Walstream w(args);
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << w.log();
  commits(s, "t", 1, 30);
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 30; })) << w.log();
  ASSERT_TRUE(wait_until([&] { return count(w.log(), "WARN retention:") == 1; })) << w.log();
  EXPECT_NE(w.log().find("NOPERM"), std::string::npos) << w.log();
  // Passes fail quietly from now on (Redis counts the refusals); streaming goes on.
  auto refused = rejected_calls("eval");
  commits(s, "t", 31, 40);
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 40; })) << w.log();
  ASSERT_TRUE(wait_until([&] { return rejected_calls("eval") >= refused + 2; })) << w.log();
  EXPECT_EQ(count(w.log(), "WARN retention:"), 1u) << w.log();
  EXPECT_EQ(count(w.log(), "ERROR"), 0u) << w.log();
  // Allowed again: said once, and the stream is trimmed.
  redis_command({"ACL", "SETUSER", user, "+eval", "+evalsha", "+script"});
  ASSERT_TRUE(wait_until([&] { return xlen(t) == 0; })) << w.log();
  // The line is logged once the pass's slice ends, just after its XTRIM: wait for it, then a pass more.
  ASSERT_TRUE(wait_until([&] { return count(w.log(), "retention: Redis answers again") >= 1; })) << w.log();
  ASSERT_TRUE(more_passes(w, 2)) << w.log();
  EXPECT_EQ(count(w.log(), "retention: Redis answers again"), 1u) << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

TEST(Retention, BadRetentionOptionsAreOneLine) {
  Scope s;
  auto r = run_walstream(with(s.args(), {"--retention", "acked", "--retain-for", "5x"}));
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.output.rfind("walstream: --retain-for: '5x' is not a duration (30s, 15m, 1h, 7d)", 0), 0u) << r.output;
  EXPECT_EQ(count(r.output, "\n"), 1u) << r.output;
  r = run_walstream(with(s.args(), {"--retention", "acked", "--retain-for", "1h", "--retain-max", "30m"}));
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.output.rfind("walstream: --retain-max (30m) must not be shorter than --retain-for (1h)", 0), 0u)
      << r.output;
  r = run_walstream(with(s.args(), {"--retain-for", "1h"}));
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.output.rfind("walstream: --retain-for needs --retention acked", 0), 0u) << r.output;
  r = run_walstream(s.args(), {{"WALSTREAM_RETENTION", "all"}});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.output.rfind("walstream: --retention must be acked or none, not 'all'", 0), 0u) << r.output;
}
