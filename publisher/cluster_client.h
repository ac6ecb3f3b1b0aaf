// A blocking client for a Redis Cluster, for the synchronous jobs (snapshot state, retention, status,
// tail): one RedisClient per master, each command sent to the master serving its key's slot, MOVED
// followed (the slot map read again) and ASK followed (ASKING, then that command alone on the target).
// The streaming writer does not use it (docs/design.md, "Redis Cluster").
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cluster_slots.h"
#include "redis_client.h"
#include "redis_commands.h"
#include "redis_url.h"

namespace walstream {

class ClusterClient final : public RedisCommands {
 public:
  // Reads the slot map from the first of `seed`'s nodes (its seeds, or host:port) that answers
  // (CLUSTER SLOTS). Throws RedisError: Transient when no node answers or the cluster does not serve
  // every slot; Fatal when a seed is not a cluster node.
  explicit ClusterClient(const RedisUrl& seed, std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // `argv` on the master serving `key`'s slot (every key of the command must share it). An error reply
  // is returned as is, except MOVED (map read again, sent again) and ASK (ASKING + the command on the
  // node named), at most kMaxRedirects times; then RedisError (transient).
  RedisReply command(std::string_view key, const std::vector<std::string>& argv) override;
  // MULTI/…/EXEC on the master of `key`'s slot; a MOVED or ASK while queueing discards it and sends it
  // whole where it was redirected (ASKING before MULTI holds for the whole transaction).
  RedisReply transaction(std::string_view key, const std::vector<std::vector<std::string>>& commands) override;
  // The same on one given master, for commands without a key (SCAN, INFO, WAIT).
  RedisReply command_on(const RedisEndpoint& master, const std::vector<std::string>& argv) override;

  const SlotMap& slots() const { return slots_; }
  std::vector<RedisEndpoint> masters() override { return slots_.masters(); }
  bool is_cluster() const override { return true; }
  std::string describe() const override;
  void set_timeout(std::chrono::milliseconds timeout) override;
  // Reads CLUSTER SLOTS again, from any node that answers (the seed first).
  void refresh();
  // Redirections followed so far (for tests and logs).
  long long moved() const { return moved_; }
  long long asked() const { return asked_; }

  static constexpr int kMaxRedirects = 5;

 private:
  RedisClient& client(const RedisEndpoint& node);
  // After a MOVED (the map read again) or an ASK (the importing node, once): where to send next.
  void follow(const Redirect& redirect, std::string_view key, std::optional<RedisEndpoint>& node, bool& asking);

  RedisUrl seed_;
  std::chrono::milliseconds timeout_;
  SlotMap slots_;
  std::map<std::pair<std::string, int>, std::unique_ptr<RedisClient>> clients_;
  long long moved_ = 0, asked_ = 0;
};

}  // namespace walstream
