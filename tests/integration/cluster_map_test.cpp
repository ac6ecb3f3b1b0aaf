// Redis Cluster's key space against a real cluster (3 masters + 3 replicas, cluster_harness.h):
// walstream's key_slot, SlotMap and parse_redirect (publisher/cluster_slots.h) say what the servers
// do, before and after a slot migration, mid-migration (ASK) and after failovers. The tests share one
// cluster and run in order; each reads the cluster's state as it is, not as the previous one left it.
#include <gtest/gtest.h>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cluster_harness.h"
#include "cluster_slots.h"

using namespace harness;
using namespace std::chrono_literals;
using walstream::key_slot;
using walstream::parse_redirect;
using walstream::Redirect;
using walstream::RedisEndpoint;
using walstream::SlotMap;

namespace {

using ReplyPtr = std::unique_ptr<redisReply, void (*)(void*)>;

// One connection to one node, whose error replies (MOVED, ASK) are read, not thrown.
class Node {
 public:
  explicit Node(int port) : port_(port), ctx_(redisConnect("127.0.0.1", port), redisFree) {
    if (!ctx_ || ctx_->err) throw std::runtime_error(fmt::format("cannot connect to 127.0.0.1:{}", port));
    timeval tv{5, 0};
    redisSetTimeout(ctx_.get(), tv);
  }
  ReplyPtr call(const std::vector<std::string>& argv) {
    append(argv);
    return next();
  }
  void append(const std::vector<std::string>& argv) {
    std::vector<const char*> args;
    std::vector<std::size_t> lens;
    for (const auto& a : argv) {
      args.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(argv.size()), args.data(), lens.data()) != REDIS_OK) {
      throw std::runtime_error("redisAppendCommandArgv failed");
    }
  }
  ReplyPtr next() {
    void* r = nullptr;
    if (redisGetReply(ctx_.get(), &r) != REDIS_OK || !r) {
      throw std::runtime_error(fmt::format("no reply from 127.0.0.1:{}", port_));
    }
    return ReplyPtr(static_cast<redisReply*>(r), freeReplyObject);
  }
  // The reply's text ("OK", a value, or an error's text); "(nil)" for nil.
  std::string text(const std::vector<std::string>& argv) {
    auto r = call(argv);
    if (r->type == REDIS_REPLY_NIL) return "(nil)";
    if (r->type == REDIS_REPLY_INTEGER) return std::to_string(r->integer);
    return std::string(r->str ? r->str : "", r->len);
  }
  int port() const { return port_; }

 private:
  int port_;
  std::unique_ptr<redisContext, void (*)(redisContext*)> ctx_;
};

RedisEndpoint at(int port) { return {"127.0.0.1", port}; }

SlotMap live_map(int port) {
  Node n(port);
  auto r = n.call({"CLUSTER", "SLOTS"});
  return SlotMap::from_cluster_slots(walstream::to_reply_tree(*r));
}

// ~1000 keys of every kind walstream and its users may name.
std::vector<std::string> varied_keys() {
  std::vector<std::string> keys = {"", "walstream:public.users", "walstream:{public.users}:staging",
                                   "walstream:__offsets", "{user1000}.following", "{user1000}.followers",
                                   "foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}", "a}b", "{a{b}x", "a{b", "{}",
                                   "}{", "{", "}", "{}{}", "{{}}", "x{y}z", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"};
  const std::vector<std::string> utf8 = {"h\xC3\xA9llo", "\xD0\xBA\xD0\xBB\xD1\x8E\xD1\x87",  // héllo, ключ
                                         "\xE8\xA1\xA8", "\xF0\x9F\x98\x80"};                  // 表, 😀
  for (int i = 0; i < 100; ++i) {
    keys.push_back(fmt::format("walstream:public.t{}", i));
    keys.push_back(fmt::format("walstream:{{public.t{}}}:snapshot", i));
    keys.push_back(fmt::format("{{user{}}}.following", i));
    keys.push_back(fmt::format("foo{{}}{{bar{}}}", i));  // empty first tag
    keys.push_back(fmt::format("{}{{{}}}", utf8[i % utf8.size()], i));
    keys.push_back(fmt::format("{{{}}}:{}", utf8[(i + 1) % utf8.size()], i));
  }
  std::mt19937 rng(12);  // fixed: the same keys every run
  const std::string alphabet = "{}{}ab:._-0\xC3\xA9";
  for (int i = 0; i < 380; ++i) {
    std::string k;
    int len = static_cast<int>(rng() % 16);
    for (int j = 0; j < len; ++j) {
      // Half from a brace-heavy alphabet, half any byte (NUL included).
      k += (rng() % 2) ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng() % 256);
    }
    keys.push_back(k);
  }
  return keys;
}

}  // namespace

class ClusterMap : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { cluster_ = new RedisCluster(); }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  static RedisCluster& cluster() { return *cluster_; }
  static RedisCluster* cluster_;
};
RedisCluster* ClusterMap::cluster_ = nullptr;

TEST_F(ClusterMap, StartsThreeMastersWithAReplicaEach) {
  std::cout << "cluster ready in " << cluster().startup_time().count() << " ms" << std::endl;
  EXPECT_LT(cluster().startup_time(), 20s);  // aim: < 5 s (CI); this bound only catches a hang
  auto nodes = cluster().nodes();
  ASSERT_EQ(nodes.size(), 6u);
  std::set<int> masters, followed;
  std::set<pid_t> pids;
  for (const auto& n : nodes) {
    EXPECT_TRUE(n.running);
    pids.insert(n.pid);
    if (n.role == "master") masters.insert(n.port);
    if (n.role == "replica") followed.insert(n.master_port);
  }
  EXPECT_EQ(pids.size(), 6u);
  EXPECT_EQ(masters.size(), 3u);
  EXPECT_EQ(followed, masters);  // each master has its replica
  auto ports = cluster().master_ports();
  EXPECT_EQ(std::set<int>(ports.begin(), ports.end()), masters);
  EXPECT_EQ(cluster().seed_url(), fmt::format("redis://127.0.0.1:{}", ports.front()));
  EXPECT_TRUE(cluster().ready());
}

TEST_F(ClusterMap, KeySlotIsClusterKeyslot) {
  auto keys = varied_keys();
  ASSERT_GE(keys.size(), 1000u);
  Node n(cluster().master_ports().front());
  for (const auto& k : keys) n.append({"CLUSTER", "KEYSLOT", k});
  int mismatches = 0;
  for (const auto& k : keys) {
    auto r = n.next();
    ASSERT_EQ(r->type, REDIS_REPLY_INTEGER);
    if (r->integer != key_slot(k) && ++mismatches <= 10) {
      ADD_FAILURE() << "key '" << k << "': server " << r->integer << ", key_slot " << key_slot(k);
    }
  }
  EXPECT_EQ(mismatches, 0);
  // A hash tag from hash_tag_for puts another key where the server puts the first.
  for (const std::string k : {"walstream:public.users", "{user1000}.following", "a{b", "foo{{bar}}zap"}) {
    auto other = walstream::hash_tag_for(k) + ":staging";
    EXPECT_EQ(cluster().slot_of(other), cluster().slot_of(k)) << k;
  }
}

TEST_F(ClusterMap, SlotMapNamesTheMasterThatAcceptsEachKey) {
  auto masters = cluster().master_ports();
  ASSERT_EQ(masters.size(), 3u);
  for (int port : masters) {  // every master says the same
    auto map = live_map(port);
    EXPECT_TRUE(map.covers_all());
    auto named = map.masters();
    std::vector<int> named_ports;
    for (const auto& e : named) named_ports.push_back(e.port);
    EXPECT_EQ(std::set<int>(named_ports.begin(), named_ports.end()), std::set<int>(masters.begin(), masters.end()));
    EXPECT_EQ(named.size(), 3u);
    for (std::uint16_t slot : {0, 5460, 5461, 10922, 10923, 16383}) {
      EXPECT_EQ(map.master_of(slot), at(cluster().master_of_slot(slot))) << slot;
    }
  }
  auto map = live_map(masters.front());
  std::vector<std::unique_ptr<Node>> conns;
  for (int port : masters) conns.push_back(std::make_unique<Node>(port));
  auto replicas = cluster().replica_ports();
  ASSERT_FALSE(replicas.empty());
  Node replica(replicas.front());
  std::set<int> used;
  for (int i = 0; i < 300; ++i) {
    auto key = fmt::format("walstream:public.t{}", i);
    auto owner = map.master_of_key(key);
    ASSERT_TRUE(owner);
    used.insert(owner->port);
    for (auto& c : conns) {
      auto answer = c->text({"SET", key, "v"});
      if (c->port() == owner->port) {
        EXPECT_EQ(answer, "OK") << key << " on " << c->port();
      } else {
        EXPECT_EQ(parse_redirect(answer), (Redirect{Redirect::Kind::Moved, key_slot(key), *owner}))
            << key << " on " << c->port() << ": " << answer;
      }
    }
    // A replica (no READONLY) sends every write to the slot's master.
    EXPECT_EQ(parse_redirect(replica.text({"SET", key, "v"})),
              (Redirect{Redirect::Kind::Moved, key_slot(key), *owner}));
  }
  EXPECT_EQ(used.size(), 3u);  // the keys were spread over every master
}

TEST_F(ClusterMap, AfterAMigrationTheOldOwnerAnswersMoved) {
  const std::string tag = "{public.orders}";
  const auto slot = key_slot(tag);
  const int from = cluster().master_of_slot(slot);
  int to = 0;
  for (int port : cluster().master_ports()) {
    if (port != from) to = port;
  }
  Node source(from);
  for (int i = 0; i < 250; ++i) ASSERT_EQ(source.text({"SET", fmt::format("walstream:{}:{}", tag, i), "x"}), "OK");
  cluster().migrate_slot(slot, from, to);
  EXPECT_EQ(cluster().master_of_slot(slot), to);
  Node target(to);
  EXPECT_EQ(target.text({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}), "250");
  EXPECT_EQ(source.text({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}), "0");
  auto key = "walstream:" + tag + ":7";
  EXPECT_EQ(parse_redirect(source.text({"GET", key})), (Redirect{Redirect::Kind::Moved, slot, at(to)}));
  EXPECT_EQ(target.text({"GET", key}), "x");
  for (int port : cluster().master_ports()) {
    auto map = live_map(port);
    EXPECT_TRUE(map.covers_all()) << port;
    EXPECT_EQ(map.master_of(slot), at(to)) << port;
    EXPECT_EQ(map.master_of(slot == 0 ? 1 : slot - 1), at(from)) << port;  // its neighbours stayed
    EXPECT_EQ(map.masters().size(), 3u);
  }
}

TEST_F(ClusterMap, MidMigrationAMissingKeyAnswersAsk) {
  const std::string tag = "{public.items}";
  const auto slot = key_slot(tag);
  const int from = cluster().master_of_slot(slot);
  int to = 0;
  for (int port : cluster().master_ports()) {
    if (port != from) to = port;
  }
  Node source(from), target(to);
  for (int i = 0; i < 30; ++i) ASSERT_EQ(source.text({"SET", fmt::format("{}:{}", tag, i), std::to_string(i)}), "OK");
  cluster().begin_migration(slot, from, to);
  EXPECT_EQ(cluster().migrate_keys(slot, from, to, 10), 10u);
  auto counted = std::stoi(source.text({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}));
  EXPECT_EQ(counted, 20);
  const Redirect ask{Redirect::Kind::Ask, slot, at(to)};
  // Never there, or already moved: the source sends the client to the target with ASK.
  EXPECT_EQ(parse_redirect(source.text({"GET", tag + ":missing"})), ask);
  EXPECT_EQ(parse_redirect(source.text({"SET", tag + ":new", "n"})), ask);
  int moved = 0, served = 0;
  for (int i = 0; i < 30; ++i) {
    auto key = fmt::format("{}:{}", tag, i);
    auto answer = source.text({"GET", key});
    if (auto r = parse_redirect(answer)) {
      EXPECT_EQ(*r, ask) << key;
      // The target serves it after ASKING, and only then: without, it still names the source.
      EXPECT_EQ(parse_redirect(target.text({"GET", key})), (Redirect{Redirect::Kind::Moved, slot, at(from)}));
      EXPECT_EQ(target.text({"ASKING"}), "OK");
      EXPECT_EQ(target.text({"GET", key}), std::to_string(i));
      ++moved;
    } else {
      EXPECT_EQ(answer, std::to_string(i)) << key;  // not moved yet: the source still serves it
      ++served;
    }
  }
  EXPECT_EQ(moved, 10);
  EXPECT_EQ(served, 20);
  EXPECT_EQ(cluster().master_of_slot(slot), from);  // the slot is still the source's until the end
  cluster().finish_migration(slot, from, to);
  EXPECT_EQ(cluster().master_of_slot(slot), to);
  EXPECT_EQ(target.text({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}), "30");
  EXPECT_EQ(parse_redirect(source.text({"GET", tag + ":missing"})), (Redirect{Redirect::Kind::Moved, slot, at(to)}));
}

TEST_F(ClusterMap, FailoverSwapsRoles) {
  auto nodes = cluster().nodes();
  auto replica = std::find_if(nodes.begin(), nodes.end(), [](const ClusterNode& n) { return n.role == "replica"; });
  ASSERT_NE(replica, nodes.end());
  const int new_master = replica->port, old_master = replica->master_port;
  // A key the old master serves, written before the failover.
  std::string key;
  for (int i = 0; key.empty(); ++i) {
    auto k = fmt::format("walstream:public.f{}", i);
    if (cluster().master_of_key(k) == old_master) key = k;
  }
  Node(old_master).text({"SET", key, "before"});
  cluster().failover(new_master);
  for (const auto& n : cluster().nodes()) {
    if (n.port == new_master) {
      EXPECT_EQ(n.role, "master");
    }
    if (n.port == old_master) {
      EXPECT_EQ(n.role, "replica");
      EXPECT_EQ(n.master_port, new_master);
    }
  }
  auto map = live_map(new_master);
  EXPECT_TRUE(map.covers_all());
  EXPECT_EQ(map.master_of_key(key), at(new_master));
  auto masters = map.masters();
  EXPECT_EQ(std::count(masters.begin(), masters.end(), at(old_master)), 0);
  EXPECT_EQ(Node(new_master).text({"GET", key}), "before");
  EXPECT_EQ(parse_redirect(Node(old_master).text({"SET", key, "after"})),
            (Redirect{Redirect::Kind::Moved, key_slot(key), at(new_master)}));
}

TEST_F(ClusterMap, AKilledMasterIsReplacedByItsReplica) {
  auto masters = cluster().master_ports();
  const int victim = masters.back();
  std::string key;
  for (int i = 0; key.empty(); ++i) {
    auto k = fmt::format("walstream:public.k{}", i);
    if (cluster().master_of_key(k) == victim) key = k;
  }
  Node v(victim);
  EXPECT_EQ(v.text({"SET", key, "kept"}), "OK");
  EXPECT_EQ(v.text({"WAIT", "1", "5000"}), "1");  // on the replica before the kill
  const int promoted = cluster().kill_master(victim);
  EXPECT_NE(promoted, victim);
  auto map = live_map(promoted);
  EXPECT_TRUE(map.covers_all());
  EXPECT_EQ(map.master_of_key(key), at(promoted));
  EXPECT_EQ(map.masters().size(), 3u);
  EXPECT_EQ(Node(promoted).text({"GET", key}), "kept");
  // Back on its port, the old master rejoins as a replica of the one promoted.
  cluster().restart_node(victim);
  for (const auto& n : cluster().nodes()) {
    if (n.port == victim) {
      EXPECT_EQ(n.role, "replica");
      EXPECT_EQ(n.master_port, promoted);
    }
  }
  EXPECT_EQ(cluster().master_ports().size(), 3u);
}

// The cluster over TLS (--tls-cluster yes: bus and replication too), through Options: created by
// redis-cli over TLS, and a TLS client is given the nodes' TLS ports while a plain one gets plain ports.
TEST(ClusterOverTls, StartsAndAnswersTlsClientsWithTlsPorts) {
  struct TempDir {
    std::string path = shell("mktemp -d /tmp/walstream-cluster-tls-XXXXXX");
    TempDir() { path.erase(path.find_last_not_of("\r\n") + 1); }
    ~TempDir() {
      try {
        shell("rm -rf " + path);
      } catch (...) {
      }
    }
  } temp;
  const std::string& dir = temp.path;
  shell(fmt::format("cd {} && openssl req -x509 -newkey rsa:2048 -nodes -keyout node.key -out node.crt -days 2 "
                    "-subj '/CN=127.0.0.1' -addext subjectAltName=IP:127.0.0.1",
                    dir));
  std::vector<int> tls_ports;
  for (int i = 0; i < 6; ++i) tls_ports.push_back(free_port());
  RedisCluster::Options options;
  options.extra_args = {"--tls-cert-file", dir + "/node.crt", "--tls-key-file", dir + "/node.key",
                        "--tls-ca-cert-file", dir + "/node.crt", "--tls-cluster", "yes", "--tls-replication", "yes",
                        "--tls-auth-clients", "optional"};
  options.node_args = [&](int node) {
    return std::vector<std::string>{"--tls-port", std::to_string(tls_ports.at(static_cast<std::size_t>(node)))};
  };
  options.create_port = [&](int node, int) { return tls_ports.at(static_cast<std::size_t>(node)); };
  options.cli_args = {"--tls", "--cacert", dir + "/node.crt"};
  RedisCluster cluster(options);
  std::cout << "TLS cluster ready in " << cluster.startup_time().count() << " ms" << std::endl;
  auto masters = cluster.master_ports();
  ASSERT_EQ(masters.size(), 3u);
  ASSERT_EQ(cluster.replica_ports().size(), 3u);
  // Plain: plain ports (the harness's own view, and SlotMap from CLUSTER SLOTS on the plain port).
  auto plain = live_map(masters.front());
  EXPECT_TRUE(plain.covers_all());
  for (const auto& m : plain.masters()) {
    EXPECT_NE(std::find(masters.begin(), masters.end(), m.port), masters.end()) << m.port;
  }
  // TLS: every master's TLS port, and a key set over TLS on the master serving it.
  auto tls_of = [&](int plain_port) {
    for (std::size_t i = 0; i < tls_ports.size(); ++i) {
      if (cluster.nodes().at(i).port == plain_port) return tls_ports[i];
    }
    return 0;
  };
  auto cli = fmt::format("redis-cli --tls --cacert {}/node.crt -h 127.0.0.1 -p {} ", dir, tls_of(masters.front()));
  auto slots = shell(cli + "CLUSTER SLOTS");
  for (int m : masters) EXPECT_NE(slots.find(fmt::format("\n{}\n", tls_of(m))), std::string::npos) << slots;
  auto owner = cluster.master_of_key("walstream:public.users");
  auto set = shell(fmt::format("redis-cli --tls --cacert {}/node.crt -h 127.0.0.1 -p {} SET walstream:public.users x",
                               dir, tls_of(owner)));
  EXPECT_EQ(set, "OK\n");
}
