// walstream writing to a real Redis Cluster (3 masters + 3 replicas, cluster_harness.h): changes on
// eight tables whose streams land on all three masters, compared entry by entry with an independent
// test_decoding slot (reference.h), with a fault in the middle of the load: none, CLUSTER FAILOVER,
// a killed master with --redis-wait 1, a busy stream's slot migrated, a SIGKILL of walstream (also
// with its standby taking over), and over mutual TLS. Nothing lost, nothing doubled. And the initial
// snapshot onto the cluster (staging streams RENAMEd).
#include <gtest/gtest.h>
#include <signal.h>

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cluster_harness.h"
#include "harness.h"
#include "keys.h"
#include "reference.h"

using namespace harness;
using namespace std::chrono_literals;

namespace {

// Eight tables whose stream keys (under the scope's prefix) are served by every master.
std::vector<std::string> spread_tables(RedisCluster& c, const Scope& s, std::size_t count = 8) {
  std::map<int, int> per;
  for (int p : c.master_ports()) per[p] = 0;
  std::vector<std::string> out;
  for (int i = 0; out.size() < count; ++i) {
    auto t = fmt::format("t{}", i);
    int& n = per[c.master_of_key(s.stream("public." + t))];
    if (n >= static_cast<int>((count + 2) / 3)) continue;
    ++n;
    out.push_back(t);
  }
  return out;
}

// A procedure that commits `txns` transactions over the tables: each inserts into two tables, and
// every third also updates and deletes a row, so 2-4 changes each.
void create_load(const Scope& s, const std::vector<std::string>& tables) {
  std::string sql;
  for (const auto& t : tables) sql += fmt::format("CREATE TABLE {} (id int PRIMARY KEY, v text);", t);
  std::string arr;
  for (const auto& t : tables) arr += (arr.empty() ? "'" : ",'") + t + "'";
  sql += fmt::format(R"(
CREATE PROCEDURE load(first int, txns int) LANGUAGE plpgsql AS $$
DECLARE
  t text[] := ARRAY[{}];
  n int := array_length(t, 1);
BEGIN
  FOR i IN first .. first + txns - 1 LOOP
    EXECUTE format('INSERT INTO %I VALUES ($1, md5($1::text))', t[1 + i % n]) USING i;
    EXECUTE format('INSERT INTO %I VALUES ($1, md5($1::text))', t[1 + (i * 7 + 3) % n]) USING i;
    IF i % 3 = 0 AND i > first + 16 THEN
      EXECUTE format('UPDATE %I SET v = md5(v) WHERE id = $1', t[1 + (i - 9) % n]) USING i - 9;
      EXECUTE format('DELETE FROM %I WHERE id = $1', t[1 + (i - 15) % n]) USING i - 15;
    END IF;
    COMMIT;
  END LOOP;
END $$;)",
                     arr);
  s.sql(sql);
}

void create_tables(const Scope& s, const std::vector<std::string>& tables) {
  std::string sql;
  for (const auto& t : tables) sql += fmt::format("CREATE TABLE {} (id int PRIMARY KEY);", t);
  s.sql(sql);
}

// A cluster over mutual TLS: clients, the bus and replication (--tls-cluster, --tls-replication yes),
// every node serving the harness's CA-signed "server" certificate on a TLS port of its own and asking
// each client for its certificate. The plain ports stay open for the harness's own checks.
struct TlsNodes {
  TestCertificates certs;
  std::vector<int> ports;  // node i's TLS port
  TlsNodes() {
    for (int i = 0; i < 6; ++i) ports.push_back(free_port());
  }
  RedisCluster::Options options() const {
    RedisCluster::Options o;
    o.extra_args = {"--tls-cert-file", certs.path("server.crt"), "--tls-key-file", certs.path("server.key"),
                    "--tls-ca-cert-file", certs.path("ca.crt"), "--tls-cluster", "yes", "--tls-replication", "yes",
                    "--tls-auth-clients", "yes"};
    o.node_args = [this](int node) {
      return std::vector<std::string>{"--tls-port", std::to_string(ports.at(static_cast<std::size_t>(node)))};
    };
    o.create_port = [this](int node, int) { return ports.at(static_cast<std::size_t>(node)); };
    o.cli_args = {"--tls", "--cacert", certs.path("ca.crt"), "--cert", certs.path("client.crt"),
                  "--key", certs.path("client.key")};
    return o;
  }
  int tls_port(const RedisCluster& c, int plain) const {
    auto nodes = c.nodes();
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      if (nodes[i].port == plain) return ports.at(i);
    }
    throw std::runtime_error(fmt::format("no node on port {}", plain));
  }
  // walstream's flags for a client certificate and our CA.
  std::vector<std::string> flags(const std::string& ca = "ca.crt") const {
    return {"--redis-tls-ca", certs.path(ca), "--redis-tls-cert", certs.path("client.crt"), "--redis-tls-key",
            certs.path("client.key")};
  }
};

// redis:// (rediss:// with `tls`) naming the nodes on these plain ports as seeds.
std::string seeds_url(const RedisCluster& c, const std::vector<int>& plain, const TlsNodes* tls) {
  std::string url = tls ? "rediss://" : "redis://";
  for (std::size_t i = 0; i < plain.size(); ++i) {
    url += fmt::format("{}127.0.0.1:{}", i ? "," : "", tls ? tls->tls_port(c, plain[i]) : plain[i]);
  }
  return url;
}

long stored(RedisCluster& c, const std::vector<std::string>& keys) {
  long n = 0;
  for (const auto& k : keys) {
    try {
      n += xlen(c.master_of_key(k), k);
    } catch (const std::exception&) {
      return -1;
    }
  }
  return n;
}

std::vector<std::string> run_args(const Scope& s, const std::string& url, std::vector<std::string> extra = {}) {
  auto args = s.args(url);
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

enum class Fault { None, Failover, KillMaster, KillTheOnlySeed, Migration, Sigkill, PausedShard, StandbyTakesOver };

// The load (`txns` transactions from a thread), with `fault` once a third of it is in Redis; then
// every change of the reference slot once in the streams, in order. With `tls`, on a cluster over
// mutual TLS, walstream connecting to the TLS ports only.
void load_with(Fault fault, int txns, const TlsNodes* tls = nullptr) {
  RedisCluster c(tls ? tls->options() : RedisCluster::Options{});
  Scope s;
  auto tables = spread_tables(c, s);
  create_load(s, tables);
  std::vector<std::string> keys;
  std::set<int> masters;
  for (const auto& t : tables) {
    keys.push_back(s.stream("public." + t));
    masters.insert(c.master_of_key(keys.back()));
  }
  ASSERT_EQ(masters.size(), 3u);
  const std::string ref_slot = s.slot + "_ref";
  TempSlot ref_guard(s, ref_slot, "test_decoding");
  // Seeds: every master, so a restart finds the cluster whichever one is down.
  std::string url = seeds_url(c, c.master_ports(), tls);
  // One seed, the master that is killed: the next sessions find the cluster through the nodes the
  // last slot map named.
  if (fault == Fault::KillTheOnlySeed) url = seeds_url(c, {c.master_of_key(keys[0])}, tls);
  std::vector<std::string> extra{"--max-backoff", "1", "--shutdown-timeout", "5"};
  if (tls) {
    auto flags = tls->flags();
    extra.insert(extra.end(), flags.begin(), flags.end());
  }
  if (fault == Fault::KillMaster) extra.insert(extra.end(), {"--redis-wait", "1"});
  auto w = std::make_unique<Walstream>(run_args(s, url, extra));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); }, 60s)) << w->log();
  // A second instance on the same slot waits as the standby.
  std::unique_ptr<Walstream> standby;
  if (fault == Fault::StandbyTakesOver) {
    standby = std::make_unique<Walstream>(run_args(s, url, extra));
    ASSERT_TRUE(wait_until([&] { return standby->log().find("standby: slot") != std::string::npos; }, 30s))
        << standby->log();
  }

  std::atomic<bool> load_failed{false};
  std::string load_error;
  std::thread load([&] {
    try {
      // In pieces, so that the fault lands in the middle of a steady load.
      for (int first = 1; first <= txns; first += 2000) {
        harness::sql(s.conninfo, fmt::format("CALL load({}, {})", first, std::min(2000, txns - first + 1)));
      }
    } catch (const std::exception& e) {
      load_error = e.what();
      load_failed = true;
    }
  });
  const long third = static_cast<long>(txns) * 2 / 3;  // entries: about a third of the changes
  EXPECT_TRUE(wait_until([&] { return stored(c, keys) >= third; }, 120s)) << w->log();
  const std::string busy = keys[0];
  switch (fault) {
    case Fault::None:
      break;
    case Fault::Failover: {
      int replica = 0;
      for (const auto& n : c.nodes()) {
        if (n.role == "replica" && n.master_port == c.master_of_key(busy)) replica = n.port;
      }
      ASSERT_NE(replica, 0);
      c.failover(replica);
      break;
    }
    case Fault::KillTheOnlySeed:
      // It stays down: only the replica promoted in its place (named by the last slot map) is left.
      c.kill_master(c.master_of_key(busy));
      break;
    case Fault::KillMaster: {
      const int killed = c.master_of_key(busy);
      c.kill_master(killed);
      // It comes back as the new master's replica: --redis-wait 1 needs one to confirm anything.
      std::this_thread::sleep_for(2s);
      c.restart_node(killed);
      break;
    }
    case Fault::Migration: {
      const auto slot = c.slot_of(busy);
      const int from = c.master_of_slot(slot);
      int to = 0;
      for (int p : c.master_ports()) {
        if (p != from) to = p;
      }
      c.begin_migration(slot, from, to);
      std::this_thread::sleep_for(500ms);  // writes to the migrating slot's source go on meanwhile
      c.migrate_keys(slot, from, to);
      std::this_thread::sleep_for(500ms);  // the stream moved: the source answers ASK
      c.finish_migration(slot, from, to);
      break;
    }
    case Fault::PausedShard: {
      // One master stops taking writes while the others go on: what its groups hold falls behind
      // theirs, and only the minimum may be confirmed. walstream dies meanwhile: what it had not sent
      // to that master yet is resent by PostgreSQL only if it was never confirmed.
      redis_command(c.master_of_key(busy), {"CLIENT", "PAUSE", "3000", "WRITE"});
      std::this_thread::sleep_for(2s);
      w->signal(SIGKILL);
      w->wait();
      std::this_thread::sleep_for(1500ms);
      w = std::make_unique<Walstream>(run_args(s, url, extra));
      break;
    }
    case Fault::Sigkill:
      w->signal(SIGKILL);
      w->wait();
      w = std::make_unique<Walstream>(run_args(s, url, extra));
      break;
    case Fault::StandbyTakesOver: {
      // The active one dies mid-load; the standby takes the slot (a new epoch for every group) and
      // goes on from what every group holds.
      w->signal(SIGKILL);
      w->wait();
      ASSERT_TRUE(wait_until([&] { return standby->log().find("streaming from slot") != std::string::npos; }, 30s))
          << standby->log();
      w = std::move(standby);
      break;
    }
  }
  load.join();
  ASSERT_FALSE(load_failed) << load_error;
  ASSERT_TRUE(wait_until([&] { return s.caught_up(); }, 180s)) << w->log();
  w->signal(SIGTERM);
  EXPECT_EQ(w->wait(60s), 0) << w->log();
  std::vector<std::pair<int, std::string>> at;
  for (const auto& k : keys) at.emplace_back(c.master_of_key(k), k);
  auto ref = reference_changes(s.conninfo, ref_slot);
  EXPECT_GE(ref.size(), static_cast<std::size_t>(txns) * 2);
  expect_same_changes(ref, merged(at), w->log());
  if (std::getenv("CLUSTER_VERBOSE")) fprintf(stderr, "%s\n", w->log().c_str());
  // A slot on the move (ASK, TRYAGAIN, MOVED) is retried within 200 ms, never after the outages' backoff.
  std::istringstream lines(w->log());
  for (std::string line; std::getline(lines, line);) {
    static const std::regex moving(R"(: (ASK|MOVED|TRYAGAIN) .*; retrying in (\d+) ms)");
    std::smatch m;
    if (std::regex_search(line, m, moving)) {
      EXPECT_LE(std::stoi(m[2]), 200) << line;
    }
  }
  // Each group's checkpoint, and the slot's, cover the slot's position.
  walstream::Keys k{s.prefix, s.slot, true};
  const auto confirmed = parse_lsn(
      query_one(s.conninfo, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '" + s.slot + "'"));
  for (const auto& key : keys) {
    auto cp = k.group_checkpoint(key);
    EXPECT_GE(parse_lsn(redis_command(c.master_of_key(cp), {"HGET", cp, "lsn"}).at(0)), confirmed) << cp;
  }
  EXPECT_GE(parse_lsn(redis_command(c.master_of_key(k.checkpoint()), {"HGET", k.checkpoint(), "lsn"}).at(0)),
            confirmed);
}

long occurrences(const std::string& text, const std::string& what) {
  long n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

int txns() {
  // 2-4 changes per transaction: 70,000 transactions are over 200,000 changes.
  const char* n = std::getenv("CLUSTER_TXNS");
  return n ? std::atoi(n) : 70000;
}

}  // namespace

TEST(ClusterStream, EightTablesOnThreeMastersExactlyOnce) { load_with(Fault::None, txns()); }
TEST(ClusterStream, ClusterFailoverMidLoad) { load_with(Fault::Failover, txns()); }
TEST(ClusterStream, KilledMasterWithRedisWait) { load_with(Fault::KillMaster, txns()); }
TEST(ClusterStream, KilledMasterThatWasTheOnlySeed) { load_with(Fault::KillTheOnlySeed, txns()); }
TEST(ClusterStream, BusyStreamsSlotMigratedMidLoad) { load_with(Fault::Migration, txns()); }
TEST(ClusterStream, SigkillAndRestartMidLoad) { load_with(Fault::Sigkill, txns()); }
TEST(ClusterStream, SigkillWhileOneShardIsPaused) { load_with(Fault::PausedShard, txns()); }
TEST(ClusterStream, StandbyTakesOverAfterASigkillMidLoad) { load_with(Fault::StandbyTakesOver, txns()); }
// The same load over mutual TLS, a replica taking over a busy master's slots in the middle: walstream
// reads the slot map over TLS, so it names the new master's TLS port.
TEST(ClusterStream, OverMutualTlsAcrossAClusterFailover) {
  TlsNodes tls;
  load_with(Fault::Failover, txns(), &tls);
}

// Over TLS from one seed: certificates walstream cannot trust, or no certificate of its own, are one
// line and write nothing; then it streams, and `status` and `tail` read the cluster over TLS too.
TEST(ClusterStream, StatusTailAndUntrustedCertificatesOverTls) {
  TlsNodes tls;
  RedisCluster c(tls.options());
  Scope s;
  auto tables = spread_tables(c, s, 3);
  create_tables(s, tables);
  for (const auto& t : tables) s.sql(fmt::format("INSERT INTO {} VALUES (1)", t));
  const auto url = seeds_url(c, {c.master_ports().front()}, &tls);
  struct Case {
    std::string name;
    std::vector<std::string> flags;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"another CA", tls.flags("other-ca.crt"), "fails verification"},
      // The refusal shows as the server's alert (`certificate required`) or as the connection reset
      // right after the handshake, as the timing falls: both lines name the two flags.
      {"no client certificate", {"--redis-tls-ca", tls.certs.path("ca.crt")}, "--redis-tls-cert and --redis-tls-key"},
  };
  for (const auto& k : cases) {
    auto out = run_walstream(run_args(s, url, k.flags), {}, 60s);
    EXPECT_EQ(out.code, 1) << k.name << "\n" << out.output;
    EXPECT_NE(out.output.find(k.says), std::string::npos) << k.name << "\n" << out.output;
    EXPECT_EQ(occurrences(out.output, " ERROR "), 1) << k.name << "\n" << out.output;
  }
  for (int p : c.master_ports()) EXPECT_EQ(redis_command(p, {"DBSIZE"}).at(0), "0") << p;

  Walstream w(run_args(s, url, tls.flags()));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); }, 60s)) << w.log();
  std::vector<std::string> keys;
  for (const auto& t : tables) keys.push_back(s.stream("public." + t));
  for (const auto& t : tables) s.sql(fmt::format("INSERT INTO {} VALUES (2)", t));
  ASSERT_TRUE(wait_until([&] { return stored(c, keys) == 2 * static_cast<long>(keys.size()) && s.caught_up(); }, 30s))
      << w.log();
  std::vector<std::string> status{"status", "--pg", s.conninfo, "--redis", url, "--slot", s.slot,
                                  "--publication", s.publication, "--prefix", s.prefix};
  auto flags = tls.flags();
  status.insert(status.end(), flags.begin(), flags.end());
  auto st = run_walstream(status, {}, 60s);
  EXPECT_EQ(st.code, 0) << st.output;
  EXPECT_NE(st.output.find("(Redis Cluster, 3 masters)"), std::string::npos) << st.output;
  EXPECT_NE(st.output.find("\nhealthy\n"), std::string::npos) << st.output;
  auto tail = [&](const std::vector<std::string>& tls_flags) {
    std::vector<std::string> args{"tail", "--redis", url, "--prefix", s.prefix, "--from-start", "--count", "6",
                                  "--block-ms", "200"};
    args.insert(args.end(), tls_flags.begin(), tls_flags.end());
    for (const auto& t : tables) args.push_back("public." + t);
    return run_walstream(args, {}, 30s);
  };
  auto out = tail(flags);
  ASSERT_EQ(out.code, 0) << out.output;
  EXPECT_EQ(occurrences(out.output, R"("op":"r")"), 3) << out.output;
  EXPECT_EQ(occurrences(out.output, R"("op":"c")"), 3) << out.output;
  auto untrusted = tail(tls.flags("other-ca.crt"));
  EXPECT_NE(untrusted.code, 0) << untrusted.output;
  EXPECT_NE(untrusted.output.find("fails verification"), std::string::npos) << untrusted.output;
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

// Rows there before walstream: copied into staging streams in each table's slot, RENAMEd onto the
// streams once all are stored; then changes follow.
TEST(ClusterStream, InitialSnapshotIsRenamedOntoStreamsOnEveryMaster) {
  RedisCluster c;
  Scope s;
  auto tables = spread_tables(c, s);
  std::string sql;
  for (const auto& t : tables) {
    sql += fmt::format("CREATE TABLE {0} (id int PRIMARY KEY, v text); INSERT INTO {0} SELECT g, 'row ' || g FROM "
                       "generate_series(1, 500) g;",
                       t);
  }
  s.sql(sql);
  Walstream w(s.args(c.seed_url()));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); }, 60s)) << w.log();
  walstream::Keys k{s.prefix, s.slot, true};
  for (const auto& t : tables) {
    const auto key = s.stream("public." + t);
    auto entries = xrange(c.master_of_key(key), key);
    ASSERT_EQ(entries.size(), 500u) << key << "\n" << w.log();
    EXPECT_EQ(entries.front().fields.at("op"), "r");
    EXPECT_EQ(entries.front().fields.at("after"), R"({"id":1,"v":"row 1"})");
    EXPECT_EQ(parse_entry_id(entries.back().id).seq, 500u);
    const auto staging = k.staging("public." + t);
    EXPECT_EQ(redis_command(c.master_of_key(staging), {"EXISTS", staging}).at(0), "0");
    const auto registry = k.registry("public." + t);
    EXPECT_EQ(redis_command(c.master_of_key(registry), {"HLEN", registry}).at(0), "1") << registry;
  }
  EXPECT_EQ(redis_command(c.master_of_key(k.snapshot_state()), {"HGET", k.snapshot_state(), "status"}).at(0), "done");
  s.sql(fmt::format("INSERT INTO {} VALUES (501, 'after')", tables[0]));
  const auto key = s.stream("public." + tables[0]);
  ASSERT_TRUE(wait_until([&] { return xlen(c.master_of_key(key), key) == 501; }, 20s)) << w.log();
  EXPECT_EQ(xrange(c.master_of_key(key), key).back().fields.at("op"), "c");
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

// `walstream backfill` on a cluster: its state (the slot's hash slot) is stored only after the rows
// (the table's), and the stream ends with every row once.
TEST(ClusterStream, BackfillWritesEveryRowOnce) {
  RedisCluster c;
  Scope s;
  s.sql("CREATE TABLE acc (id int PRIMARY KEY, v text); INSERT INTO acc SELECT g, 'row ' || g FROM "
        "generate_series(1, 5000) g");
  Walstream w(with(s.args(c.seed_url()), {"--snapshot", "never"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); }, 60s)) << w.log();
  auto req = run_walstream({"backfill", "public.acc", "--pg", s.conninfo, "--slot", s.slot, "--chunk-rows", "500"});
  ASSERT_EQ(req.code, 0) << req.output;
  walstream::Keys k{s.prefix, s.slot, true};
  const int state_master = c.master_of_key(k.backfill());
  ASSERT_TRUE(wait_until(
      [&] {
        auto r = redis_command(state_master, {"HGET", k.backfill(), "status"});
        return !r.empty() && r[0] == "done";
      },
      60s))
      << w.log();
  const auto key = s.stream("public.acc");
  auto entries = xrange(c.master_of_key(key), key);
  ASSERT_EQ(entries.size(), 5000u) << w.log();
  std::set<std::string> keys;
  for (const auto& e : entries) {
    EXPECT_EQ(e.fields.at("op"), "r");
    keys.insert(e.fields.at("key"));
  }
  EXPECT_EQ(keys.size(), 5000u);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

// A running walstream's streams on a cluster: retention trims them on every master, `walstream status`
// says healthy, `walstream tail` prints what is left.
TEST(ClusterStream, RetentionStatusAndTailWhileRunning) {
  RedisCluster::Options o;
  o.extra_args = {"--stream-node-max-entries", "1"};  // XTRIM MINID ~ exact
  RedisCluster c(o);
  Scope s;
  auto tables = spread_tables(c, s);
  create_tables(s, tables);
  Walstream w(with(s.args(c.seed_url()),
                   {"--retention", "acked", "--retention-interval", "0.2", "--retain-for", "2s"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); }, 60s)) << w.log();
  std::vector<std::string> keys;
  for (const auto& t : tables) {
    keys.push_back(s.stream("public." + t));
    s.sql(fmt::format("INSERT INTO {} SELECT generate_series(1, 10)", t));
  }
  ASSERT_TRUE(wait_until([&] { return stored(c, keys) == 10 * static_cast<long>(keys.size()); }, 20s)) << w.log();
  ASSERT_TRUE(wait_until([&] { return stored(c, keys) == 0; }, 30s)) << w.log();  // all older than 2 s
  for (const auto& t : tables) s.sql(fmt::format("INSERT INTO {} VALUES (11)", t));
  ASSERT_TRUE(wait_until([&] { return stored(c, keys) == static_cast<long>(keys.size()) && s.caught_up(); }, 20s))
      << w.log();

  auto status = run_walstream({"status", "--pg", s.conninfo, "--redis", c.seed_url(), "--slot", s.slot, "--publication",
                               s.publication, "--prefix", s.prefix},
                              {}, 60s);
  EXPECT_EQ(status.code, 0) << status.output;
  EXPECT_NE(status.output.find("(Redis Cluster, 3 masters)"), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("\nhealthy\n"), std::string::npos) << status.output;
  std::vector<std::string> args{"tail", "--redis", c.seed_url(), "--prefix", s.prefix, "--from-start", "--count",
                                std::to_string(tables.size()), "--block-ms", "200"};
  for (const auto& t : tables) args.push_back("public." + t);
  auto tail = run_walstream(args, {}, 30s);
  ASSERT_EQ(tail.code, 0) << tail.output;
  std::size_t printed = 0;
  for (std::size_t at = tail.output.find(R"("op":"c")"); at != std::string::npos;
       at = tail.output.find(R"("op":"c")", at + 1)) {
    ++printed;
  }
  EXPECT_EQ(printed, tables.size()) << tail.output;
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

// A shard that lost what PostgreSQL was told is stored: the group's checkpoint below the slot's
// position, or gone while the slot lists it, stops walstream at start with one line; --resnapshot
// starts over (the groups forgotten with the slot's checkpoint).
TEST(ClusterStream, AShardBehindTheSlotIsOneLineAtStart) {
  RedisCluster c;
  Scope s;
  auto tables = spread_tables(c, s, 3);
  create_tables(s, tables);
  {
    Walstream w(s.args(c.seed_url()));
    ASSERT_TRUE(wait_until([&] { return s.streaming(); }, 60s)) << w.log();
    for (const auto& t : tables) s.sql(fmt::format("INSERT INTO {} VALUES (1)", t));
    ASSERT_TRUE(wait_until([&] { return s.caught_up(); }, 20s)) << w.log();
    w.signal(SIGTERM);
    ASSERT_EQ(w.wait(), 0) << w.log();
  }
  walstream::Keys k{s.prefix, s.slot, true};
  const auto key = s.stream("public." + tables[1]);
  const auto cp = k.group_checkpoint(key);
  const int at = c.master_of_key(cp);
  const auto held = redis_command(at, {"HGET", cp, "lsn"}).at(0);
  const auto confirmed =
      query_one(s.conninfo, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '" + s.slot + "'");
  ASSERT_GE(parse_lsn(held), parse_lsn(confirmed));

  redis_command(at, {"HSET", cp, "lsn", "0/1"});
  auto behind = run_walstream(s.args(c.seed_url()), {}, 60s);
  EXPECT_EQ(behind.code, 1) << behind.output;
  EXPECT_NE(behind.output.find(fmt::format("the checkpoint of stream {} (slot '{}') is at 0/1, below the slot's "
                                           "confirmed_flush_lsn {}",
                                           key, s.slot, confirmed)),
            std::string::npos)
      << behind.output;
  redis_command(at, {"DEL", cp});
  auto gone = run_walstream(s.args(c.seed_url()), {}, 60s);
  EXPECT_EQ(gone.code, 1) << gone.output;
  EXPECT_NE(gone.output.find(fmt::format("the checkpoint of stream {} (slot '{}') is gone while the slot lists it", key,
                                         s.slot)),
            std::string::npos)
      << gone.output;

  Walstream again(with(s.args(c.seed_url()), {"--resnapshot"}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); }, 60s)) << again.log();
  s.sql(fmt::format("INSERT INTO {} VALUES (2)", tables[1]));
  ASSERT_TRUE(wait_until([&] { return s.caught_up() && xlen(c.master_of_key(key), key) >= 3; }, 20s)) << again.log();
  again.signal(SIGTERM);
  EXPECT_EQ(again.wait(), 0) << again.log();
}

// Fencing per group: what a successor does when it takes the slot — the main epoch raised, a group's
// epoch set to its own — makes the next chunk to that group refused before it is applied; the
// instance says so, and (the slot free again once its session ends) takes it back under a new epoch.
TEST(ClusterStream, AGroupsEpochMovedFencesItsChunks) {
  RedisCluster c;
  Scope s;
  auto tables = spread_tables(c, s, 3);
  create_tables(s, tables);
  Walstream w(s.args(c.seed_url()));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); }, 60s)) << w.log();
  walstream::Keys k{s.prefix, s.slot, true};
  std::vector<std::string> keys;
  for (const auto& t : tables) keys.push_back(s.stream("public." + t));
  s.sql(fmt::format("INSERT INTO {} VALUES (1)", tables[1]));
  ASSERT_TRUE(wait_until([&] { return xlen(c.master_of_key(keys[1]), keys[1]) == 1; }, 20s)) << w.log();

  // The group's own epoch, as a successor sets it.
  const auto group_epoch = k.group_epoch(keys[1]);
  const int at = c.master_of_key(group_epoch);
  const auto before = redis_command(at, {"GET", group_epoch});
  ASSERT_EQ(before.size(), 1u);
  redis_command(at, {"SET", group_epoch, "999999"});
  s.sql(fmt::format("INSERT INTO {} VALUES (2)", tables[1]));
  ASSERT_TRUE(wait_until([&] { return w.log().find("fenced:") != std::string::npos; }, 15s)) << w.log();
  ASSERT_TRUE(wait_until([&] { return xlen(c.master_of_key(keys[1]), keys[1]) == 2 && s.caught_up(); }, 30s))
      << w.log();
  EXPECT_EQ(xrange(c.master_of_key(keys[1]), keys[1])[1].fields.at("after"), R"({"id":2})");
  EXPECT_NE(redis_command(at, {"GET", group_epoch}).at(0), "999999") << "not taken back under a new epoch";

  // The main epoch, as a successor raises it: the slot's own group is fenced.
  const auto fenced_before = occurrences(w.log(), "fenced:");
  redis_command(c.master_of_key(k.epoch()), {"INCR", k.epoch()});
  s.sql(fmt::format("INSERT INTO {} VALUES (3)", tables[2]));
  ASSERT_TRUE(wait_until([&] { return occurrences(w.log(), "fenced:") > fenced_before; }, 15s)) << w.log();
  ASSERT_TRUE(wait_until([&] { return xlen(c.master_of_key(keys[2]), keys[2]) == 1 && s.caught_up(); }, 30s))
      << w.log();
  EXPECT_EQ(occurrences(w.log(), " ERROR "), 0) << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}
