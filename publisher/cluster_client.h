// A blocking client for a Redis Cluster, for the synchronous jobs (snapshot state, retention, status,
// tail): one RedisClient per master, each command sent to the master serving its key's slot, MOVED
// followed (the slot map read again) and ASK followed (ASKING, then that command alone on the target).
// The streaming writer does not use it. A building block of issue 12's cluster support (docs/design.md,
// "Redis Cluster: the plan"); walstream itself still refuses a cluster node at connection.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cluster_slots.h"
#include "redis_client.h"
#include "redis_url.h"

namespace walstream {

class ClusterClient {
 public:
  // Reads the slot map from `seed` (CLUSTER SLOTS). Throws RedisError: Transient when no node
  // answers; Fatal when the seed is not a cluster node or the cluster does not serve every slot.
  explicit ClusterClient(const RedisUrl& seed, std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // `argv` on the master serving `key`'s slot (every key of the command must share it). An error reply
  // is returned as is, except MOVED (map read again, sent again) and ASK (ASKING + the command on the
  // node named), at most kMaxRedirects times; then RedisError (transient).
  RedisReply command(std::string_view key, const std::vector<std::string>& argv);
  // The same on one given master, for commands without a key (SCAN, INFO, WAIT).
  RedisReply command_on(const RedisEndpoint& master, const std::vector<std::string>& argv);

  const SlotMap& slots() const { return slots_; }
  std::vector<RedisEndpoint> masters() const { return slots_.masters(); }
  // Reads CLUSTER SLOTS again, from any node that answers (the seed first).
  void refresh();
  // Redirections followed so far (for tests and logs).
  long long moved() const { return moved_; }
  long long asked() const { return asked_; }

  static constexpr int kMaxRedirects = 5;

 private:
  RedisClient& client(const RedisEndpoint& node);

  RedisUrl seed_;
  std::chrono::milliseconds timeout_;
  SlotMap slots_;
  std::map<std::pair<std::string, int>, std::unique_ptr<RedisClient>> clients_;
  long long moved_ = 0, asked_ = 0;
};

}  // namespace walstream
