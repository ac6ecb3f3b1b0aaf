// `walstream status`: what it reports (JSON fields against PostgreSQL's and Redis's own answers, the
// table) and its verdict on a healthy, a lagging and a broken setup, each reason on stderr.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rapidjson/document.h>

#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <memory>
#include <vector>

#include "harness.h"

using namespace harness;

namespace {

struct Result {
  int code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// walstream with stdout and stderr apart (the harness's runner merges them): the report and the reasons.
Result run(std::vector<std::string> args) {
  char out_path[] = "/tmp/status-out-XXXXXX";
  char err_path[] = "/tmp/status-err-XXXXXX";
  int out_fd = mkstemp(out_path);
  int err_fd = mkstemp(err_path);
  if (out_fd < 0 || err_fd < 0) throw std::runtime_error("mkstemp failed");
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    std::vector<char*> argv;
    std::string bin = WALSTREAM_BIN;
    argv.push_back(bin.data());
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  close(out_fd);
  close(err_fd);
  Result r;
  int status = 0;
  bool done = wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, std::chrono::seconds(60));
  if (!done) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  } else {
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  unlink(out_path);
  unlink(err_path);
  return r;
}

std::vector<std::string> status_args(const Scope& s, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"status", "--pg",          s.conninfo,    "--redis",  redis().url(),
                                "--slot", s.slot,          "--publication", s.publication, "--prefix", s.prefix};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::string dump(const Result& r) {
  return "exit " + std::to_string(r.code) + "\n--- stdout\n" + r.out + "--- stderr\n" + r.err;
}

rapidjson::Document parse(const Result& r) {
  rapidjson::Document d;
  d.Parse(r.out.c_str());
  if (d.HasParseError() || !d.IsObject()) throw std::runtime_error("not one JSON document:\n" + dump(r));
  return d;
}

const rapidjson::Value* find_stream(const rapidjson::Document& d, const std::string& key) {
  for (const auto& s : d["streams"].GetArray()) {
    if (key == s["key"].GetString()) return &s;
  }
  return nullptr;
}

std::size_t lines(const std::string& text) {
  std::size_t n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

bool slot_active(const Scope& s) {
  return s.query_one("SELECT active FROM pg_replication_slots WHERE slot_name = '" + s.slot + "'") == "t";
}

// walstream streaming `t`, `rows` rows of it in Redis, the slot caught up; then stopped and its
// walsender gone (the slot not active), unless `keep_running`.
std::unique_ptr<Walstream> streamed(const Scope& s, int rows, bool keep_running) {
  s.sql("CREATE TABLE t (id int PRIMARY KEY, name text)");
  auto w = std::make_unique<Walstream>(s.args());
  EXPECT_TRUE(wait_until([&] { return s.streaming(); })) << w->log();
  s.sql("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, " + std::to_string(rows) + ") g");
  EXPECT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) == rows; })) << w->log();
  EXPECT_TRUE(wait_until([&] { return s.caught_up(); })) << w->log();
  if (keep_running) return w;
  w->signal(SIGTERM);
  EXPECT_EQ(w->wait(), 0) << w->log();
  EXPECT_TRUE(wait_until([&] { return !slot_active(s); }));
  return nullptr;
}

}  // namespace

TEST(Status, HealthyShowsSlotStreamsAndGroupsAsPostgresAndRedisSeeThem) {
  Scope s;
  s.sql("CREATE TABLE u (id int PRIMARY KEY)");
  auto w = streamed(s, 5, true);
  s.sql("INSERT INTO u VALUES (1), (2)");
  const auto t = s.stream("public.t");
  const auto u = s.stream("public.u");
  ASSERT_TRUE(wait_until([&] { return xlen(u) == 2; })) << w->log();
  ASSERT_TRUE(wait_until([&] { return s.caught_up(); })) << w->log();
  // A group that read two entries without acknowledging them.
  redis_command({"XGROUP", "CREATE", t, "g", "0"});
  redis_command({"XREADGROUP", "GROUP", "g", "c1", "COUNT", "2", "STREAMS", t, ">"});
  // Not walstream's subscribers' streams: a staging stream, a stream outside the prefix.
  redis_command({"XADD", s.prefix + "staging:public.x", "1-1", "f", "v"});
  redis_command({"XADD", "elsewhere:" + s.prefix, "1-1", "f", "v"});

  auto r = run(status_args(s, {"--json"}));
  ASSERT_EQ(r.code, 0) << dump(r) << w->log();
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(lines(r.out), 1u) << r.out;
  auto d = parse(r);
  EXPECT_TRUE(d["healthy"].GetBool());
  EXPECT_EQ(d["reasons"].Size(), 0u);
  const auto& slot = d["slot"];
  EXPECT_EQ(std::string(slot["name"].GetString()), s.slot);
  EXPECT_TRUE(slot["exists"].GetBool());
  EXPECT_TRUE(slot["active"].GetBool());
  auto pid = s.query_one("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '" + s.slot + "'");
  EXPECT_EQ(std::to_string(slot["active_pid"].GetInt64()), pid);
  EXPECT_EQ(std::string(slot["walsender_state"].GetString()), "streaming");
  EXPECT_EQ(std::string(slot["plugin"].GetString()), "pgoutput");
  EXPECT_EQ(std::string(slot["wal_status"].GetString()), "reserved");
  // Caught up: only WAL written since (other databases of the shared server, checkpoints) can lag.
  EXPECT_GE(slot["lag_bytes"].GetInt64(), 0);
  EXPECT_LT(slot["lag_bytes"].GetInt64(), 1 << 20);
  auto confirmed = parse_lsn(slot["confirmed_flush_lsn"].GetString());
  const auto& cp = d["checkpoint"];
  EXPECT_EQ(std::string(cp["key"].GetString()), s.prefix + "checkpoint:" + s.slot);
  EXPECT_TRUE(cp["exists"].GetBool());
  EXPECT_GE(parse_lsn(cp["lsn"].GetString()), confirmed);
  EXPECT_FALSE(cp["behind_slot"].GetBool());
  EXPECT_EQ(std::string(d["snapshot"]["state"]["status"].GetString()), "done");
  const auto& pub = d["publication"];
  EXPECT_TRUE(pub["exists"].GetBool());
  ASSERT_EQ(pub["tables"].Size(), 2u);
  EXPECT_EQ(std::string(pub["tables"][0].GetString()), "public.t");
  EXPECT_EQ(std::string(pub["tables"][1].GetString()), "public.u");

  // Exactly the two table streams: no staging stream, nothing outside the prefix, no hash.
  ASSERT_EQ(d["streams"].Size(), 2u) << r.out;
  for (const auto& key : {t, u}) {
    const auto* st = find_stream(d, key);
    ASSERT_NE(st, nullptr) << key << "\n" << r.out;
    auto entries = xrange(key);
    ASSERT_FALSE(entries.empty());
    EXPECT_EQ((*st)["length"].GetInt64(), xlen(key));
    EXPECT_EQ(std::string((*st)["first_id"].GetString()), entries.front().id);
    EXPECT_EQ(std::string((*st)["last_id"].GetString()), entries.back().id);
    EXPECT_EQ(std::string((*st)["last_ts"].GetString()), entries.back().fields.at("ts"));
  }
  EXPECT_EQ((*find_stream(d, u))["groups"].Size(), 0u);
  const auto& groups = (*find_stream(d, t))["groups"];
  ASSERT_EQ(groups.Size(), 1u);
  EXPECT_EQ(std::string(groups[0]["name"].GetString()), "g");
  EXPECT_EQ(groups[0]["consumers"].GetInt64(), 1);
  EXPECT_EQ(groups[0]["pending"].GetInt64(), 2);
  EXPECT_EQ(groups[0]["lag"].GetInt64(), 3);
  EXPECT_EQ(std::string(groups[0]["last_delivered_id"].GetString()), xrange(t)[1].id);

  auto human = run(status_args(s));
  ASSERT_EQ(human.code, 0) << dump(human);
  std::cout << human.out;
  EXPECT_NE(human.out.find(s.slot + ": active, pid " + pid), std::string::npos) << human.out;
  EXPECT_NE(human.out.find(t), std::string::npos) << human.out;
  EXPECT_NE(human.out.find(u), std::string::npos) << human.out;
  EXPECT_NE(human.out.find(xrange(u).back().id), std::string::npos) << human.out;
  EXPECT_EQ(human.out.find("staging:"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("\nhealthy\n"), std::string::npos) << human.out;
}

TEST(Status, LaggingWithoutWalstreamAndBeyondLagWarn) {
  Scope s;
  streamed(s, 3, false);
  s.sql("INSERT INTO t SELECT g, 'later' FROM generate_series(100, 199) g");
  const std::string nobody = "no walstream holds slot '" + s.slot + "'";

  auto r = run(status_args(s, {"--json", "--lag-warn", "64MB"}));
  ASSERT_EQ(r.code, 1) << dump(r);
  EXPECT_NE(r.err.find(nobody), std::string::npos) << dump(r);
  EXPECT_EQ(r.err.find("--lag-warn"), std::string::npos) << dump(r);  // far below 64 MiB
  EXPECT_EQ(lines(r.err), 1u) << dump(r);
  auto d = parse(r);
  EXPECT_FALSE(d["healthy"].GetBool());
  EXPECT_FALSE(d["slot"]["active"].GetBool());
  EXPECT_TRUE(d["slot"]["active_pid"].IsNull());
  EXPECT_GT(d["slot"]["lag_bytes"].GetInt64(), 0);
  EXPECT_EQ(d["lag_warn_bytes"].GetUint64(), 64u << 20);
  EXPECT_FALSE(d["checkpoint"]["behind_slot"].GetBool());
  EXPECT_EQ((*find_stream(d, s.stream("public.t")))["length"].GetInt64(), 3);

  auto tight = run(status_args(s, {"--lag-warn", "1"}));
  ASSERT_EQ(tight.code, 1) << dump(tight);
  EXPECT_NE(tight.err.find(nobody), std::string::npos) << dump(tight);
  EXPECT_NE(tight.err.find("lags"), std::string::npos) << dump(tight);
  EXPECT_NE(tight.err.find("more than --lag-warn 1 B"), std::string::npos) << dump(tight);
  EXPECT_EQ(lines(tight.err), 2u) << dump(tight);
  EXPECT_NE(tight.out.find("not active"), std::string::npos) << tight.out;

  // walstream back: it streams the waiting rows and status is healthy again.
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.t")) == 103; })) << w.log();
  ASSERT_TRUE(wait_until([&] { return s.caught_up() && slot_active(s); })) << w.log();
  auto again = run(status_args(s));
  EXPECT_EQ(again.code, 0) << dump(again);

  auto bad = run(status_args(s, {"--lag-warn", "12parsecs"}));
  EXPECT_EQ(bad.code, 2) << dump(bad);
  EXPECT_NE(bad.err.find("--lag-warn"), std::string::npos) << dump(bad);
}

TEST(Status, BrokenSlotDropped) {
  Scope s;
  streamed(s, 2, false);
  s.sql("SELECT pg_drop_replication_slot('" + s.slot + "')");
  auto r = run(status_args(s, {"--json"}));
  ASSERT_EQ(r.code, 1) << dump(r);
  EXPECT_NE(r.err.find("replication slot '" + s.slot + "' does not exist"), std::string::npos) << dump(r);
  EXPECT_NE(r.err.find("--resnapshot"), std::string::npos) << dump(r);  // Redis still has its checkpoint
  auto d = parse(r);
  EXPECT_FALSE(d["slot"]["exists"].GetBool());
  EXPECT_TRUE(d["checkpoint"]["exists"].GetBool());
  auto human = run(status_args(s));
  EXPECT_EQ(human.code, 1);
  EXPECT_NE(human.out.find(s.slot + ": does not exist"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find(s.stream("public.t")), std::string::npos) << human.out;
}

TEST(Status, UnreachableServersAreOneLineEach) {
  Scope s;
  streamed(s, 1, false);
  auto args = status_args(s, {"--json"});
  auto no_redis = args;
  no_redis[4] = "redis://127.0.0.1:" + std::to_string(free_port());
  auto r = run(no_redis);
  ASSERT_EQ(r.code, 1) << dump(r);
  EXPECT_NE(r.err.find("cannot connect to Redis"), std::string::npos) << dump(r);
  EXPECT_EQ(lines(r.err), 1u) << dump(r);
  auto d = parse(r);
  EXPECT_TRUE(d["postgres"]["reachable"].GetBool());  // what PostgreSQL says is still shown
  EXPECT_TRUE(d["slot"]["exists"].GetBool());
  EXPECT_FALSE(d["redis"]["reachable"].GetBool());

  auto no_pg = args;
  no_pg[2] = "host=127.0.0.1 port=" + std::to_string(free_port()) + " dbname=postgres";
  auto p = run(no_pg);
  ASSERT_EQ(p.code, 1) << dump(p);
  EXPECT_NE(p.err.find("cannot connect to PostgreSQL"), std::string::npos) << dump(p);
  EXPECT_EQ(lines(p.err), 1u) << dump(p);
  EXPECT_TRUE(parse(p)["checkpoint"]["exists"].GetBool());
}

// A server of its own: max_slot_wal_keep_size small enough for a slot nobody reads to lose its WAL.
TEST(Status, WalStatusUnreservedThenLost) {
  Postgres own;
  own.extra_options = "-c max_slot_wal_keep_size=1MB";
  own.start();
  const auto conn = own.conninfo();
  sql(conn, "CREATE TABLE w (id int); CREATE PUBLICATION walstream FOR ALL TABLES");
  sql(conn, "SELECT pg_create_logical_replication_slot('guard', 'pgoutput')");
  auto wal_status = [&] {
    return query_one(conn, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'guard'");
  };
  std::vector<std::string> args{"status", "--pg", conn, "--redis", redis().url(), "--slot", "guard", "--prefix",
                                "guard:"};
  auto ok = run(args);
  EXPECT_EQ(ok.err.find("wal_status"), std::string::npos) << dump(ok);  // reserved: not a problem

  // New WAL segments, no reader: the slot's oldest one passes the limit (unreserved), then a
  // checkpoint removes it (lost).
  ASSERT_TRUE(wait_until([&] {
    sql(conn, "INSERT INTO w VALUES (1); SELECT pg_switch_wal()");
    return wal_status() != "reserved" && wal_status() != "extended";
  }));
  if (wal_status() == "unreserved") {
    auto r = run(args);
    ASSERT_EQ(r.code, 1) << dump(r);
    EXPECT_NE(r.err.find("warning: slot 'guard' has wal_status unreserved"), std::string::npos) << dump(r);
  } else {
    std::cout << "the slot went from reserved to " << wal_status() << " at once: unreserved not seen\n";
  }
  ASSERT_TRUE(wait_until([&] {
    sql(conn, "INSERT INTO w VALUES (2); SELECT pg_switch_wal(); CHECKPOINT");
    return wal_status() == "lost";
  }));
  auto r = run(with(args, {"--json"}));
  ASSERT_EQ(r.code, 1) << dump(r);
  EXPECT_NE(r.err.find("slot 'guard' is invalidated (wal_status lost)"), std::string::npos) << dump(r);
  EXPECT_EQ(std::string(parse(r)["slot"]["wal_status"].GetString()), "lost");
}

// Last: FLUSHALL empties the Redis every test of this binary shares.
TEST(Status, BrokenCheckpointBehindThenMissing) {
  Scope s;
  streamed(s, 2, false);
  redis_command({"HSET", s.prefix + "checkpoint:" + s.slot, "lsn", "0/1"});
  auto behind = run(status_args(s, {"--json"}));
  ASSERT_EQ(behind.code, 1) << dump(behind);
  EXPECT_NE(behind.err.find("Redis is behind slot '" + s.slot + "': its checkpoint is at 0/1"), std::string::npos)
      << dump(behind);
  EXPECT_TRUE(parse(behind)["checkpoint"]["behind_slot"].GetBool());

  redis_command({"FLUSHALL"});
  auto r = run(status_args(s, {"--json"}));
  ASSERT_EQ(r.code, 1) << dump(r);
  EXPECT_NE(r.err.find("Redis holds no checkpoint for slot '" + s.slot + "'"), std::string::npos) << dump(r);
  EXPECT_EQ(lines(r.err), 1u) << dump(r);
  auto d = parse(r);
  EXPECT_FALSE(d["checkpoint"]["exists"].GetBool());
  EXPECT_EQ(d["streams"].Size(), 0u);
}
