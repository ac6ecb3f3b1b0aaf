// What the blocking jobs (checkpoint and snapshot state, backfill state, the epoch, retention, `tail`,
// `status`) ask of Redis, the same for one Redis (or the master behind Sentinel) and a Redis Cluster:
// a command goes to the node holding its key, a keyless one (SCAN, CONFIG) to a given master.
// RedisClient and ClusterClient implement it; connect_redis() picks one. The streaming writer does not
// use it.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "redis_url.h"

namespace walstream {

class RedisReply;

class RedisCommands {
 public:
  virtual ~RedisCommands() = default;

  // `argv` on the node holding `key` (on a cluster every key of argv must share its hash slot). An
  // error reply is returned, not thrown; a lost connection throws RedisError (transient).
  virtual RedisReply command(std::string_view key, const std::vector<std::string>& argv) = 0;
  // The same, an error reply thrown as RedisError (retryable ones transient).
  RedisReply checked(std::string_view key, const std::vector<std::string>& argv);
  // MULTI, `commands`, EXEC on the node holding `key` (every key of every command in its hash slot):
  // applied whole, or RedisError. Returns EXEC's reply.
  virtual RedisReply transaction(std::string_view key, const std::vector<std::vector<std::string>>& commands) = 0;

  // The masters, in a stable order (one Redis: itself), for keyless commands that every shard must
  // answer (SCAN, CONFIG GET).
  virtual std::vector<RedisEndpoint> masters() = 0;
  virtual RedisReply command_on(const RedisEndpoint& master, const std::vector<std::string>& argv) = 0;
  RedisReply checked_on(const RedisEndpoint& master, const std::vector<std::string>& argv);

  virtual bool is_cluster() const = 0;
  // For messages: "127.0.0.1:6379/0", "master 'm' at …", "Redis Cluster via 127.0.0.1:7000,…".
  virtual std::string describe() const = 0;
  // The read timeout (0: none) for blocking reads such as XREAD BLOCK.
  virtual void set_timeout(std::chrono::milliseconds timeout) = 0;
};

// Connects to what `url` names: one Redis, the master behind its sentinels, or a Redis Cluster,
// recognised by `INFO cluster` (cluster_enabled:1) on the first seed node that answers. A URL with
// several nodes must name a cluster; a cluster behind Sentinel, or with a database other than 0,
// is refused. Throws RedisError (transient when no node answers, fatal for what cannot work).
std::unique_ptr<RedisCommands> connect_redis(const RedisUrl& url,
                                             std::chrono::milliseconds timeout = std::chrono::seconds(10));

// An error reply as RedisError: retryable ones (is_retryable_redis_error) transient, the rest fatal.
[[noreturn]] void throw_refusal(const std::string& where, const std::vector<std::string>& argv, std::string_view error);
// EXEC's reply: throws for the first command that failed while running (EXEC does not roll back).
void check_exec(const std::string& where, const std::vector<std::vector<std::string>>& commands,
                const RedisReply& exec);

}  // namespace walstream
