// A Redis Cluster for integration tests: 3 masters + 3 replicas of Debian's redis-server on free
// loopback ports, each in its own folder under /tmp (harness::Redis), made into a cluster by
// `redis-cli --cluster create … --cluster-replicas 1`, killed, reaped and removed when destroyed.
// Its view of the cluster (who serves which slot, who replicates whom) comes from the servers'
// own CLUSTER NODES, parsed here independently of walstream's cluster_slots.h.
// Every wait is bounded; a wait that runs out throws with what the nodes said.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "harness.h"

namespace harness {

struct ClusterNode {
  int port = 0;
  pid_t pid = -1;
  bool running = false;
  std::string role;     // "master" or "replica" in its own CLUSTER NODES; "down" when not running
  int master_port = 0;  // a replica's master
  std::string id;       // CLUSTER MYID
};

class RedisCluster {
 public:
  struct Options {
    // Appended to every node's arguments, after the cluster's own (e.g. TLS: "--tls-cluster", "yes", …).
    // The plain port stays on: the harness talks to the nodes through it.
    std::vector<std::string> extra_args;
    // Per node (0..5), after extra_args: what differs from node to node (its own "--tls-port", free_port()).
    std::function<std::vector<std::string>(int node)> node_args;
    // Given to `redis-cli --cluster create` before the addresses (e.g. "--tls", "--cacert", …).
    std::vector<std::string> cli_args;
    // The port of node `node` (plain port `port`) that redis-cli is given: with --tls-cluster yes, its TLS port.
    std::function<int(int node, int port)> create_port;
    std::chrono::milliseconds ready_timeout = std::chrono::seconds(30);
  };

  // Starts the nodes and the cluster; returns once ready() (throws otherwise).
  RedisCluster();
  explicit RedisCluster(Options options);
  ~RedisCluster();
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  // How long the constructor took to a ready cluster.
  std::chrono::milliseconds startup_time() const { return startup_time_; }

  // redis://127.0.0.1:<port> of a running master.
  std::string seed_url() const;
  std::vector<ClusterNode> nodes() const;
  std::vector<int> master_ports() const;  // running masters serving slots, in slot order
  std::vector<int> replica_ports() const;
  Redis& node(int port);  // throws for a port that is not one of ours

  // The master serving a slot, or a key (its slot from the server's CLUSTER KEYSLOT), in the agreed view.
  int master_of_slot(std::uint16_t slot) const;
  int master_of_key(const std::string& key) const;
  std::uint16_t slot_of(const std::string& key) const;  // CLUSTER KEYSLOT
  std::string node_id(int port) const;                  // CLUSTER MYID

  // Every running node says cluster_state:ok, they all see the same masters serving the same slots
  // (all 16384) and the same replicas of them, and every running replica is in sync with its master.
  bool ready() const;
  // Waits for ready(); throws with each node's CLUSTER NODES when it does not come.
  void wait_ready(std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;

  // CLUSTER FAILOVER on a replica: returns once it is the master of its old master's slots (the old
  // master now its replica, in sync) and the cluster is ready.
  void failover(int replica_port);
  // SIGKILL (reaped) of a master: returns the port of the replica promoted in its place, once the
  // other nodes are ready. The killed node stays down until restart_node().
  int kill_master(int port);
  // Starts a node that was killed again, on its port with its nodes.conf and AOF; it rejoins (a
  // failed-over master comes back as a replica). Returns once ready().
  void restart_node(int port);

  // Moves a slot and its keys: CLUSTER SETSLOT IMPORTING on `to`, MIGRATING on `from`, MIGRATE of the
  // keys in batches, SETSLOT NODE on both and the other masters; returns once every node agrees.
  void migrate_slot(std::uint16_t slot, int from_port, int to_port);
  // The same in steps, so that a test can act mid-migration (ASK): IMPORTING + MIGRATING only…
  void begin_migration(std::uint16_t slot, int from_port, int to_port);
  // …up to max_keys keys moved (MIGRATE, batches of 100); returns how many were moved…
  std::size_t migrate_keys(std::uint16_t slot, int from_port, int to_port, std::size_t max_keys = SIZE_MAX);
  // …and the rest moved, SETSLOT NODE, wait for agreement.
  void finish_migration(std::uint16_t slot, int from_port, int to_port);

  // Each running node's CLUSTER NODES, for failure messages.
  std::string describe() const;

 private:
  void start_nodes(const Options& options);
  void create(const Options& options);
  std::vector<std::unique_ptr<Redis>> nodes_;
  std::chrono::milliseconds startup_time_{0};
};

}  // namespace harness
