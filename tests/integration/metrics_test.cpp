// --metrics-listen: what a Prometheus scrape of a live walstream shows (checked by promtool), /healthz
// and /readyz on an active and a standby instance, and the WAL guard (--lag-warn, unreserved, lost)
// against real servers.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fmt/format.h>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "harness.h"

using namespace harness;
using namespace std::chrono_literals;

namespace {

// promtool's lint of a scrape: throws with promtool's complaints when it finds any.
void promtool_check(const std::string& exposition, const std::string& name) {
  auto path = fmt::format("/tmp/walstream-metrics-{}-{}.txt", getpid(), name);
  std::ofstream(path) << exposition;
  shell(fmt::format("promtool check metrics < {} 2>&1", path));
  std::remove(path.c_str());
}

std::vector<std::string> with_metrics(std::vector<std::string> args, int port) {
  args.push_back("--metrics-listen");
  args.push_back(fmt::format("127.0.0.1:{}", port));
  return args;
}

}  // namespace

TEST(Metrics, ScrapeCountsWhatRedisHoldsAndPassesPromtool) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY);"
        "INSERT INTO t SELECT g, 'snap' FROM generate_series(1, 50) g");
  const int port = free_port();
  Walstream ws(with_metrics(s.args(), port));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << ws.log();
  // Ten transactions of ten rows into t, one of seven rows into u.
  for (int i = 0; i < 10; ++i) {
    s.sql(fmt::format("INSERT INTO t SELECT g, 'x' FROM generate_series({}, {}) g", 100 + i * 10, 109 + i * 10));
  }
  s.sql("INSERT INTO u SELECT generate_series(1, 7)");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) == 150 && xlen(s.stream("public.u")) == 7; }))
      << ws.log();
  // The counters follow what Redis stored (they are published as each chunk is answered).
  ASSERT_TRUE(wait_until([&] { return scrape_value(port, "walstream_entries_written_total") == 157; }, 10s))
      << http_get(port, "/metrics").body;

  auto scrape = http_get(port, "/metrics");
  ASSERT_EQ(scrape.status, 200);
  const auto& m = scrape.body;
  EXPECT_EQ(series_value(m, R"(walstream_changes_total{table="public.t"})"), 100) << m;
  EXPECT_EQ(series_value(m, R"(walstream_changes_total{table="public.u"})"), 7) << m;
  EXPECT_EQ(series_value(m, R"(walstream_snapshot_rows_total{table="public.t"})"), 50) << m;
  EXPECT_EQ(series_value(m, R"(walstream_snapshot_rows_total{table="public.u"})"), 0) << m;
  EXPECT_EQ(series_value(m, "walstream_transactions_total"), 11) << m;
  EXPECT_EQ(series_value(m, "walstream_replays_skipped_total"), 0) << m;
  EXPECT_EQ(series_value(m, "walstream_active"), 1) << m;
  EXPECT_EQ(series_value(m, R"(walstream_reconnects_total{server="postgresql"})"), 0) << m;
  EXPECT_EQ(series_value(m, R"(walstream_reconnects_total{server="redis"})"), 0) << m;
  EXPECT_EQ(series_value(m, R"(walstream_build_info{version="0.1.0"})"), 1) << m;
  EXPECT_EQ(series_value(m, R"(walstream_slot_wal_status{wal_status="reserved"})"), 1) << m;
  // Every chunk that was stored was timed; a few chunks at least (snapshot, then the transactions).
  auto chunks = series_value(m, "walstream_redis_chunk_seconds_count");
  ASSERT_TRUE(chunks);
  EXPECT_GE(*chunks, 2) << m;
  EXPECT_EQ(series_value(m, R"(walstream_redis_chunk_seconds_bucket{le="+Inf"})"), chunks) << m;
  EXPECT_GT(series_value(m, "walstream_redis_chunk_seconds_sum").value_or(0), 0) << m;
  EXPECT_GT(series_value(m, "process_resident_memory_bytes").value_or(0), 1e6) << m;
  EXPECT_TRUE(series_value(m, "walstream_lag_bytes")) << m;
  EXPECT_TRUE(series_value(m, "walstream_lag_seconds")) << m;
  EXPECT_NO_THROW(promtool_check(m, "active"));

  EXPECT_EQ(http_get(port, "/healthz").status, 200);
  auto ready = http_get(port, "/readyz");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.body, "active\n");
  EXPECT_EQ(http_get(port, "/nothing").status, 404);

  // Stopping: not ready any more; the process exits 0 and the port is free again.
  ws.signal(SIGTERM);
  EXPECT_EQ(ws.wait(), 0) << ws.log();
  EXPECT_EQ(http_get(port, "/healthz").status, 0);
}

TEST(Metrics, StandbyIsAliveButNotReadyUntilItTakesOver) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  const int p1 = free_port(), p2 = free_port();
  auto active = std::make_unique<Walstream>(with_metrics(s.args(), p1));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << active->log();
  Walstream standby(with_metrics(s.args(), p2));
  ASSERT_TRUE(wait_until([&] { return standby.log().find("standby: slot") != std::string::npos; }, 15s))
      << standby.log();

  EXPECT_EQ(http_get(p2, "/healthz").status, 200);
  auto ready = http_get(p2, "/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_EQ(ready.body, "standby\n");
  // A standby still tells how far behind the slot is (it reads pg_replication_slots while waiting).
  ASSERT_TRUE(wait_until([&] { return scrape_value(p2, R"(walstream_slot_wal_status{wal_status="reserved"})") == 1; }, 5s))
      << http_get(p2, "/metrics").body;
  auto scrape = http_get(p2, "/metrics");
  EXPECT_EQ(series_value(scrape.body, "walstream_active"), 0) << scrape.body;
  EXPECT_TRUE(series_value(scrape.body, "walstream_lag_bytes")) << scrape.body;
  EXPECT_NO_THROW(promtool_check(scrape.body, "standby"));
  EXPECT_EQ(scrape_value(p1, "walstream_active"), 1);
  EXPECT_EQ(http_get(p1, "/readyz").status, 200);

  s.sql("INSERT INTO t SELECT generate_series(1, 20)");
  active->signal(SIGKILL);
  active->wait(10s);
  ASSERT_TRUE(wait_until([&] { return http_get(p2, "/readyz").status == 200; }, 5s)) << standby.log();
  EXPECT_EQ(scrape_value(p2, "walstream_active"), 1);
  s.sql("INSERT INTO t SELECT generate_series(21, 30)");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) == 30; })) << standby.log();
}

// Redis stalls (SIGSTOP): walstream cannot store, the slot falls behind; the guard warns by bytes and
// by time, the gauges say so; once Redis runs again the warnings clear and every row is there once.
TEST(Metrics, LagWarningsWhileRedisStallsThenClear) {
  Redis redis;
  redis.start(false);
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)");
  const int port = free_port();
  Walstream ws(with(with_metrics(s.args(redis), port), {"--lag-warn", "16kB,2s"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << ws.log();
  s.sql("INSERT INTO t VALUES (0, 'first')");
  ASSERT_TRUE(wait_until([&] { return xlen(redis, s.stream("public.t")) == 1; })) << ws.log();
  EXPECT_EQ(ws.log().find("WARN lag"), std::string::npos) << ws.log();

  ASSERT_EQ(kill(redis.pid(), SIGSTOP), 0);
  for (int i = 1; i <= 20; ++i) {
    s.sql(fmt::format("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series({}, {}) g", i * 100, i * 100 + 99));
  }
  bool warned = wait_until([&] {
    auto log = ws.log();
    return log.find("WARN lag: slot") != std::string::npos &&
           log.find("WARN lag: the oldest transaction not yet in Redis") != std::string::npos;
  }, 20s);
  auto during = http_get(port, "/metrics").body;
  ASSERT_EQ(kill(redis.pid(), SIGCONT), 0);
  ASSERT_TRUE(warned) << ws.log();
  EXPECT_EQ(series_value(during, R"(walstream_lag_warning{reason="bytes"})"), 1) << during;
  EXPECT_EQ(series_value(during, R"(walstream_lag_warning{reason="seconds"})"), 1) << during;
  EXPECT_GT(series_value(during, "walstream_lag_bytes").value_or(0), 16 * 1024) << during;
  EXPECT_GT(series_value(during, "walstream_lag_seconds").value_or(0), 2) << during;
  EXPECT_EQ(http_get(port, "/readyz").status, 200);  // behind, but active and streaming

  ASSERT_TRUE(wait_until([&] { return xlen(redis, s.stream("public.t")) == 2001; })) << ws.log();
  ASSERT_TRUE(wait_until([&] {
    auto log = ws.log();
    return log.find("INFO lag: slot") != std::string::npos && log.find("INFO lag: transactions reach Redis") !=
                                                                  std::string::npos;
  }, 20s)) << ws.log();
  auto after = http_get(port, "/metrics").body;
  EXPECT_EQ(series_value(after, R"(walstream_lag_warning{reason="bytes"})"), 0) << after;
  EXPECT_EQ(series_value(after, R"(walstream_lag_warning{reason="seconds"})"), 0) << after;
  EXPECT_EQ(series_value(after, "walstream_lag_seconds"), 0) << after;
  EXPECT_EQ(series_value(after, R"(walstream_changes_total{table="public.t"})"), 2001) << after;
  // Each row once, in order.
  auto entries = xrange(redis, s.stream("public.t"));
  ASSERT_EQ(entries.size(), 2001u);
  for (std::size_t i = 1; i < entries.size(); ++i) ASSERT_LT(parse_entry_id(entries[i - 1].id), parse_entry_id(entries[i].id));
  ws.signal(SIGTERM);
  EXPECT_EQ(ws.wait(), 0) << ws.log();
}

// Redis restarted and the walsender killed: each outage is one reconnect of that server, and nothing
// is lost or doubled across them.
TEST(Metrics, ReconnectsAreCountedPerServer) {
  Redis redis;
  redis.start(true);
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  const int port = free_port();
  Walstream ws(with(with_metrics(s.args(redis), port), {"--max-backoff", "1"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); })) << ws.log();
  s.sql("INSERT INTO t SELECT generate_series(1, 10)");
  ASSERT_TRUE(wait_until([&] { return xlen(redis, s.stream("public.t")) == 10; })) << ws.log();

  redis.restart();
  s.sql("INSERT INTO t SELECT generate_series(11, 20)");
  ASSERT_TRUE(wait_until([&] { return xlen(redis, s.stream("public.t")) == 20; })) << ws.log();
  ASSERT_TRUE(wait_until([&] { return scrape_value(port, R"(walstream_reconnects_total{server="redis"})") >= 1; }, 10s))
      << ws.log();

  pg().kill_walsenders();
  s.sql("INSERT INTO t SELECT generate_series(21, 30)");
  ASSERT_TRUE(wait_until([&] { return xlen(redis, s.stream("public.t")) == 30; })) << ws.log();
  ASSERT_TRUE(wait_until([&] { return scrape_value(port, R"(walstream_reconnects_total{server="postgresql"})") >= 1; }, 10s))
      << ws.log();
  ASSERT_TRUE(wait_until([&] { return scrape_value(port, "walstream_active") == 1; }, 10s)) << ws.log();
  auto m = http_get(port, "/metrics").body;
  EXPECT_EQ(series_value(m, R"(walstream_changes_total{table="public.t"})"), 30) << m;
  auto entries = xrange(redis, s.stream("public.t"));
  ASSERT_EQ(entries.size(), 30u);
  for (int i = 0; i < 30; ++i) EXPECT_EQ(entries[i].fields.at("after"), fmt::format(R"({{"id":{}}})", i + 1));
}

// max_slot_wal_keep_size: while walstream cannot store (Redis stalled), the slot falls past it. The
// guard warns at `unreserved`; once a checkpoint removes the WAL (`lost`), walstream stops with one
// line pointing at --resnapshot, and does not recreate the slot over the hole.
TEST(Metrics, UnreservedWarnsAndLostStops) {
  Postgres pg;
  pg.extra_options = "-c max_slot_wal_keep_size=16MB -c max_wal_size=1GB -c checkpoint_timeout=1h";
  pg.start();
  Redis redis;
  redis.start(false);
  sql(pg.conninfo(), "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE filler (pad text)");
  const int port = free_port();
  Walstream ws(with_metrics({"run", "--pg", pg.conninfo(), "--redis", redis.url(), "--status-interval", "1",
                             "--max-backoff", "1"},
                            port));
  ASSERT_TRUE(wait_until([&] {
    return query_one(pg.conninfo(), "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1";
  })) << ws.log();
  sql(pg.conninfo(), "INSERT INTO t VALUES (1)");
  ASSERT_TRUE(wait_until([&] { return xlen(redis, "walstream:public.t") == 1; })) << ws.log();

  ASSERT_EQ(kill(redis.pid(), SIGSTOP), 0);
  // ~48 MB of WAL walstream cannot confirm: the slot is then 3 segments past max_slot_wal_keep_size.
  for (int i = 0; i < 4; ++i) {
    sql(pg.conninfo(), "INSERT INTO filler SELECT repeat(md5(g::text), 40) FROM generate_series(1, 10000) g");
  }
  bool unreserved = wait_until([&] {
    return query_one(pg.conninfo(), "SELECT wal_status FROM pg_replication_slots") == "unreserved" &&
           ws.log().find("has wal_status = unreserved") != std::string::npos;
  }, 20s);
  auto during = http_get(port, "/metrics").body;
  if (!unreserved) kill(redis.pid(), SIGCONT);
  ASSERT_TRUE(unreserved) << query_one(pg.conninfo(), "SELECT wal_status FROM pg_replication_slots") << "\n"
                          << ws.log();
  EXPECT_EQ(series_value(during, R"(walstream_slot_wal_status{wal_status="unreserved"})"), 1) << during;
  EXPECT_EQ(series_value(during, R"(walstream_lag_warning{reason="unreserved"})"), 1) << during;
  EXPECT_GT(series_value(during, "walstream_lag_bytes").value_or(0), 16 << 20) << during;

  // The checkpoint removes the WAL the slot needs: PostgreSQL invalidates it. It terminates the
  // walsender first and waits for it, and a walsender blocked writing to a walstream that does not read
  // (Redis stalled) ends only once walstream reads again: the checkpoint completes after SIGCONT.
  std::thread checkpoint([&] { sql(pg.conninfo(), "CHECKPOINT"); });
  EXPECT_TRUE(wait_until([&] {
    return query_one(pg.conninfo(), "SELECT count(*) FROM pg_stat_activity WHERE query = 'CHECKPOINT'") == "1";
  }, 10s));
  kill(redis.pid(), SIGCONT);
  int code = ws.wait(30s);
  checkpoint.join();
  EXPECT_EQ(code, 1) << ws.log();
  EXPECT_NE(ws.log().find("wal_status = lost"), std::string::npos) << ws.log();
  EXPECT_NE(ws.log().find("--resnapshot"), std::string::npos) << ws.log();
  EXPECT_EQ(query_one(pg.conninfo(), "SELECT wal_status FROM pg_replication_slots"), "lost");
}

TEST(Metrics, BadListenAddressesAreOneLine) {
  Scope s;
  auto bad = run_walstream(with(s.args(), {"--metrics-listen", "localhost"}));
  EXPECT_EQ(bad.code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--metrics-listen: 'localhost' is not HOST:PORT"), std::string::npos) << bad.output;
  auto port = run_walstream(with(s.args(), {"--metrics-listen", "127.0.0.1:99999"}));
  EXPECT_EQ(port.code, 2) << port.output;
  auto lag = run_walstream(with(s.args(), {"--lag-warn", "5x"}));
  EXPECT_EQ(lag.code, 2) << lag.output;
  EXPECT_NE(lag.output.find("--lag-warn: '5x' is neither a size"), std::string::npos) << lag.output;

  // A port another process holds: exit 1 before anything is set up.
  httplib::Server other;
  const int taken = free_port();
  ASSERT_TRUE(other.bind_to_port("127.0.0.1", taken));
  auto busy = run_walstream(with(s.args(), {"--metrics-listen", fmt::format("127.0.0.1:{}", taken)}));
  EXPECT_EQ(busy.code, 1) << busy.output;
  EXPECT_NE(busy.output.find(fmt::format("--metrics-listen 127.0.0.1:{}: cannot listen", taken)), std::string::npos)
      << busy.output;
  EXPECT_EQ(query_one(s.conninfo, fmt::format("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
                                              s.slot)),
            "0");
}
