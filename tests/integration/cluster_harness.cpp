#include "cluster_harness.h"

#include <algorithm>
#include <optional>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

namespace harness {
namespace {

constexpr int kNodes = 6;
constexpr auto kWait = std::chrono::seconds(30);  // failover, promotion, migration: each bounded so

// One line of CLUSTER NODES: <id> <ip:port@cport[,hostname]> <flags> <master id|-> <ping> <pong>
// <epoch> <link> <slot>…; a slot is "n", "a-b", or "[n->-id]" / "[n-<-id]" (migrating / importing).
struct NodeLine {
  std::string id;
  int port = 0;
  std::vector<std::string> flags;
  std::string master_id;
  std::vector<std::pair<int, int>> slots;
  bool has(const std::string& flag) const { return std::find(flags.begin(), flags.end(), flag) != flags.end(); }
};

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(text);
  while (std::getline(in, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::vector<NodeLine> parse_cluster_nodes(const std::string& text) {
  std::vector<NodeLine> out;
  for (auto line : split(text, '\n')) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto f = split(line, ' ');
    if (f.size() < 8) throw std::runtime_error("unexpected CLUSTER NODES line: " + line);
    NodeLine n;
    n.id = f[0];
    auto address = f[1].substr(0, f[1].find('@'));
    n.port = std::stoi(address.substr(address.rfind(':') + 1));
    n.flags = split(f[2], ',');
    n.master_id = f[3] == "-" ? "" : f[3];
    for (std::size_t i = 8; i < f.size(); ++i) {
      if (f[i].front() == '[') continue;  // a migration in progress: the slot is still the owner's
      auto dash = f[i].find('-');
      int first = std::stoi(f[i].substr(0, dash));
      int last = dash == std::string::npos ? first : std::stoi(f[i].substr(dash + 1));
      n.slots.emplace_back(first, last);
    }
    out.push_back(std::move(n));
  }
  return out;
}

std::vector<NodeLine> cluster_nodes(int port) {
  return parse_cluster_nodes(redis_command(port, {"CLUSTER", "NODES"}).at(0));
}

// What one node believes: which master (port) serves which slots, which replica follows which master.
// Nodes flagged failing, in handshake or without an address are left out.
struct View {
  std::map<int, std::vector<std::pair<int, int>>> serving;
  std::map<int, int> replica_of;
  bool operator==(const View&) const = default;

  int slots() const {
    int n = 0;
    for (const auto& [port, ranges] : serving) {
      for (auto [a, b] : ranges) n += b - a + 1;
    }
    return n;
  }
  std::optional<int> master_of(int slot) const {
    for (const auto& [port, ranges] : serving) {
      for (auto [a, b] : ranges) {
        if (a <= slot && slot <= b) return port;
      }
    }
    return std::nullopt;
  }
  std::vector<int> masters_in_slot_order() const {
    std::vector<std::pair<int, int>> first;  // (first slot, port)
    for (const auto& [port, ranges] : serving) {
      if (!ranges.empty()) first.emplace_back(ranges.front().first, port);
    }
    std::sort(first.begin(), first.end());
    std::vector<int> out;
    for (auto [slot, port] : first) out.push_back(port);
    return out;
  }
};

View view_of(const std::vector<NodeLine>& lines) {
  std::map<std::string, int> port_of;
  for (const auto& n : lines) port_of[n.id] = n.port;
  View v;
  for (const auto& n : lines) {
    if (n.has("fail") || n.has("fail?") || n.has("handshake") || n.has("noaddr")) continue;
    if (n.has("master") && !n.slots.empty()) {
      auto ranges = n.slots;
      std::sort(ranges.begin(), ranges.end());
      v.serving[n.port] = ranges;
    } else if (n.has("slave") && port_of.count(n.master_id)) {
      v.replica_of[n.port] = port_of[n.master_id];
    }
  }
  return v;
}

const NodeLine* myself(const std::vector<NodeLine>& lines) {
  for (const auto& n : lines) {
    if (n.has("myself")) return &n;
  }
  return nullptr;
}

// The replica on `port` is connected to its master and done synchronising.
bool replica_linked(int port) {
  auto text = redis_command(port, {"INFO", "replication"}).at(0);
  return text.find("role:slave") != std::string::npos && text.find("master_link_status:up") != std::string::npos &&
         text.find("master_sync_in_progress:0") != std::string::npos;
}

// How many replicas the master on `port` lists online. (INFO's ports are not compared: with
// --tls-replication they are the TLS ports, while the harness knows the nodes by their plain ones.)
int online_replicas(int port) {
  auto text = redis_command(port, {"INFO", "replication"}).at(0);
  int n = 0;
  for (auto at = text.find(",state=online,"); at != std::string::npos; at = text.find(",state=online,", at + 1)) ++n;
  return n;
}

}  // namespace

RedisCluster::RedisCluster() : RedisCluster(Options{}) {}

RedisCluster::RedisCluster(Options options) {
  auto started = std::chrono::steady_clock::now();
  start_nodes(options);
  create(options);
  wait_ready(options.ready_timeout);
  startup_time_ = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
}

RedisCluster::~RedisCluster() {
  // A kill, not a shutdown: nothing of the cluster is worth keeping. ~Redis removes the folders.
  for (auto& n : nodes_) {
    try {
      n->crash();
    } catch (...) {
    }
  }
}

void RedisCluster::start_nodes(const Options& options) {
  for (int i = 0; i < kNodes; ++i) {
    auto node = std::make_unique<Redis>();
    // The bus port is one of ours too: by default it is port + 10000, which may fall into the kernel's
    // ephemeral range, where any outgoing connection (the harness makes many) can hold it.
    node->extra_args = {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000", "--cluster-port", std::to_string(free_port())};
    node->extra_args.insert(node->extra_args.end(), options.extra_args.begin(), options.extra_args.end());
    if (options.node_args) {
      auto more = options.node_args(i);
      node->extra_args.insert(node->extra_args.end(), more.begin(), more.end());
    }
    node->start(true);  // --appendonly yes --appendfsync always --save '' (harness::Redis)
    nodes_.push_back(std::move(node));
  }
}

void RedisCluster::create(const Options& options) {
  std::string command = "redis-cli --cluster create";
  for (const auto& a : options.cli_args) command += " '" + a + "'";
  for (int i = 0; i < kNodes; ++i) {
    int port = nodes_[static_cast<std::size_t>(i)]->port();
    command += fmt::format(" 127.0.0.1:{}", options.create_port ? options.create_port(i, port) : port);
  }
  command += " --cluster-replicas 1 --cluster-yes";
  shell(command);
}

Redis& RedisCluster::node(int port) {
  for (auto& n : nodes_) {
    if (n->port() == port) return *n;
  }
  throw std::invalid_argument(fmt::format("port {} is not a node of this cluster", port));
}

std::string RedisCluster::seed_url() const {
  auto masters = master_ports();
  if (masters.empty()) throw std::runtime_error("no running master");
  return fmt::format("redis://127.0.0.1:{}", masters.front());
}

std::vector<ClusterNode> RedisCluster::nodes() const {
  std::vector<ClusterNode> out;
  for (const auto& n : nodes_) {
    ClusterNode c;
    c.port = n->port();
    c.pid = n->pid();
    c.running = n->running();
    c.role = "down";
    if (c.running) {
      auto lines = cluster_nodes(c.port);
      const auto* me = myself(lines);
      if (!me) throw std::runtime_error(fmt::format("node {} has no 'myself' line", c.port));
      c.id = me->id;
      c.role = me->has("slave") ? "replica" : "master";
      for (const auto& l : lines) {
        if (me->has("slave") && l.id == me->master_id) c.master_port = l.port;
      }
    }
    out.push_back(c);
  }
  return out;
}

std::vector<int> RedisCluster::master_ports() const {
  for (const auto& n : nodes_) {
    if (n->running()) return view_of(cluster_nodes(n->port())).masters_in_slot_order();
  }
  return {};
}

std::vector<int> RedisCluster::replica_ports() const {
  std::vector<int> out;
  for (const auto& n : nodes()) {
    if (n.role == "replica") out.push_back(n.port);
  }
  return out;
}

int RedisCluster::master_of_slot(std::uint16_t slot) const {
  for (const auto& n : nodes_) {
    if (!n->running()) continue;
    auto master = view_of(cluster_nodes(n->port())).master_of(slot);
    if (!master) throw std::runtime_error(fmt::format("no master serves slot {}:\n{}", slot, describe()));
    return *master;
  }
  throw std::runtime_error("no running node");
}

std::uint16_t RedisCluster::slot_of(const std::string& key) const {
  for (const auto& n : nodes_) {
    if (!n->running()) continue;
    return static_cast<std::uint16_t>(std::stoi(redis_command(n->port(), {"CLUSTER", "KEYSLOT", key}).at(0)));
  }
  throw std::runtime_error("no running node");
}

int RedisCluster::master_of_key(const std::string& key) const { return master_of_slot(slot_of(key)); }

std::string RedisCluster::node_id(int port) const { return redis_command(port, {"CLUSTER", "MYID"}).at(0); }

bool RedisCluster::ready() const {
  try {
    std::vector<int> running;
    for (const auto& n : nodes_) {
      if (n->running()) running.push_back(n->port());
    }
    if (running.empty()) return false;
    std::optional<View> agreed;
    for (int port : running) {
      auto info = redis_command(port, {"CLUSTER", "INFO"}).at(0);
      if (info.find("cluster_state:ok") == std::string::npos) return false;
      auto lines = cluster_nodes(port);
      auto v = view_of(lines);
      if (agreed && !(v == *agreed)) return false;
      agreed = v;
      // Its own role is the one the others see.
      const auto* me = myself(lines);
      if (!me) return false;
      if (me->has("slave") != (v.replica_of.count(port) == 1)) return false;
    }
    if (agreed->slots() != 16384) return false;
    // Only running nodes serve slots or replicate, and every replica is in sync.
    for (const auto& [port, ranges] : agreed->serving) {
      if (std::find(running.begin(), running.end(), port) == running.end()) return false;
    }
    std::map<int, int> replicas_of;  // master -> its replicas
    for (const auto& [replica, master] : agreed->replica_of) {
      if (std::find(running.begin(), running.end(), replica) == running.end()) return false;
      if (!agreed->serving.count(master) || !replica_linked(replica)) return false;
      ++replicas_of[master];
    }
    for (const auto& [master, ranges] : agreed->serving) {
      if (online_replicas(master) != replicas_of[master]) return false;
    }
    return true;
  } catch (const std::exception&) {
    return false;  // a node restarting, or loading its AOF
  }
}

void RedisCluster::wait_ready(std::chrono::milliseconds timeout) const {
  if (!wait_until([&] { return ready(); }, timeout)) {
    throw std::runtime_error(fmt::format("the cluster is not ready after {} ms:\n{}", timeout.count(), describe()));
  }
}

std::string RedisCluster::describe() const {
  std::string out;
  for (const auto& n : nodes_) {
    if (!n->running()) {
      out += fmt::format("node {}: down\n", n->port());
      continue;
    }
    try {
      auto info = redis_command(n->port(), {"CLUSTER", "INFO"}).at(0);
      auto at = info.find("cluster_state:");
      out += fmt::format("node {} ({}):\n{}", n->port(), info.substr(at, info.find('\r', at) - at),
                         redis_command(n->port(), {"CLUSTER", "NODES"}).at(0));
    } catch (const std::exception& e) {
      out += fmt::format("node {}: {}\n", n->port(), e.what());
    }
  }
  return out;
}

void RedisCluster::failover(int replica_port) {
  auto before = nodes();
  auto it = std::find_if(before.begin(), before.end(), [&](const ClusterNode& n) { return n.port == replica_port; });
  if (it == before.end() || it->role != "replica") {
    throw std::invalid_argument(fmt::format("node {} is not a replica", replica_port));
  }
  const int old_master = it->master_port;
  redis_command(replica_port, {"CLUSTER", "FAILOVER"});
  bool done = wait_until(
      [&] {
        try {
          auto v = view_of(cluster_nodes(replica_port));
          return v.serving.count(replica_port) && v.replica_of.count(old_master) &&
                 v.replica_of.at(old_master) == replica_port && ready();
        } catch (const std::exception&) {
          return false;
        }
      },
      kWait);
  if (!done) throw std::runtime_error(fmt::format("failover to {} did not complete:\n{}", replica_port, describe()));
}

int RedisCluster::kill_master(int port) {
  auto before = nodes();
  int replica = 0;
  for (const auto& n : before) {
    if (n.role == "replica" && n.master_port == port) replica = n.port;
  }
  if (replica == 0) throw std::invalid_argument(fmt::format("node {} is not a master with a replica", port));
  node(port).crash();
  bool done = wait_until(
      [&] {
        try {
          auto v = view_of(cluster_nodes(replica));
          return v.serving.count(replica) && !v.serving.count(port) && ready();
        } catch (const std::exception&) {
          return false;
        }
      },
      kWait);
  if (!done) throw std::runtime_error(fmt::format("no replica of {} was promoted:\n{}", port, describe()));
  return replica;
}

void RedisCluster::restart_node(int port) {
  node(port).start(true);
  wait_ready(kWait);
}

void RedisCluster::begin_migration(std::uint16_t slot, int from_port, int to_port) {
  const auto s = std::to_string(slot);
  redis_command(to_port, {"CLUSTER", "SETSLOT", s, "IMPORTING", node_id(from_port)});
  redis_command(from_port, {"CLUSTER", "SETSLOT", s, "MIGRATING", node_id(to_port)});
}

std::size_t RedisCluster::migrate_keys(std::uint16_t slot, int from_port, int to_port, std::size_t max_keys) {
  constexpr std::size_t kBatch = 100;
  std::size_t moved = 0;
  auto deadline = std::chrono::steady_clock::now() + kWait;
  while (moved < max_keys) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error(fmt::format("slot {}: keys still moving after {} s", slot, kWait.count()));
    }
    auto count = std::min(kBatch, max_keys - moved);
    auto keys = redis_command(from_port, {"CLUSTER", "GETKEYSINSLOT", std::to_string(slot), std::to_string(count)});
    if (keys.empty()) break;
    std::vector<std::string> argv = {"MIGRATE", "127.0.0.1", std::to_string(to_port), "", "0", "10000", "KEYS"};
    argv.insert(argv.end(), keys.begin(), keys.end());
    redis_command(from_port, argv);
    moved += keys.size();
  }
  return moved;
}

void RedisCluster::finish_migration(std::uint16_t slot, int from_port, int to_port) {
  migrate_keys(slot, from_port, to_port);
  const auto s = std::to_string(slot);
  const auto to_id = node_id(to_port);
  // The importing node first (it takes the slot, with a new epoch), then the old owner, then the others.
  redis_command(to_port, {"CLUSTER", "SETSLOT", s, "NODE", to_id});
  redis_command(from_port, {"CLUSTER", "SETSLOT", s, "NODE", to_id});
  for (int port : master_ports()) {
    if (port != to_port && port != from_port) redis_command(port, {"CLUSTER", "SETSLOT", s, "NODE", to_id});
  }
  bool done = wait_until(
      [&] {
        try {
          return master_of_slot(slot) == to_port && ready();
        } catch (const std::exception&) {
          return false;
        }
      },
      kWait);
  if (!done) {
    throw std::runtime_error(fmt::format("slot {} not agreed on {} after migration:\n{}", slot, to_port, describe()));
  }
}

void RedisCluster::migrate_slot(std::uint16_t slot, int from_port, int to_port) {
  begin_migration(slot, from_port, to_port);
  finish_migration(slot, from_port, to_port);
}

}  // namespace harness
