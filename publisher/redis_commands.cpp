#include "redis_commands.h"

#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include "cluster_client.h"
#include "redis_client.h"
#include "redis_error.h"

namespace walstream {

void throw_refusal(const std::string& where, const std::vector<std::string>& argv, std::string_view error) {
  throw RedisError::refused(fmt::format("Redis at {} refused {}: {}", where, argv.empty() ? "" : argv[0], error),
                            error);
}

void check_exec(const std::string& where, const std::vector<std::vector<std::string>>& commands,
                const RedisReply& exec) {
  const redisReply* r = exec.raw();
  if (r->type != REDIS_REPLY_ARRAY || r->elements != commands.size()) {
    throw RedisError(RedisError::Kind::Fatal, fmt::format("Redis at {}: odd EXEC reply", where));
  }
  for (std::size_t i = 0; i < r->elements; ++i) {
    const redisReply* e = r->element[i];
    if (e->type == REDIS_REPLY_ERROR) throw_refusal(where, commands[i], std::string_view(e->str, e->len));
  }
}

RedisReply RedisCommands::checked(std::string_view key, const std::vector<std::string>& argv) {
  auto r = command(key, argv);
  if (r.is_error()) throw_refusal(describe(), argv, r.str());
  return r;
}

RedisReply RedisCommands::checked_on(const RedisEndpoint& master, const std::vector<std::string>& argv) {
  auto r = command_on(master, argv);
  if (r.is_error()) throw_refusal(describe(), argv, r.str());
  return r;
}

std::unique_ptr<RedisCommands> connect_redis(const RedisUrl& url, std::chrono::milliseconds timeout) {
  if (url.via_sentinel()) {
    // RedisClient refuses a cluster node behind sentinels: Sentinel and Cluster do not go together.
    return std::make_unique<RedisClient>(url, timeout);
  }
  // The first seed that answers says what this is.
  std::string answers;
  for (const auto& node : url.seed_nodes()) {
    std::unique_ptr<RedisClient> client;
    try {
      // Database 0 first: a cluster node refuses SELECT, and should be told apart from a refusal.
      auto probe = url.at(node);
      probe.db = 0;
      client = std::make_unique<RedisClient>(probe, timeout, true);
      auto info = client->command({"INFO", "cluster"});
      bool cluster = !info.is_error() && info.str().find("cluster_enabled:1") != std::string_view::npos;
      if (!cluster) {
        if (!url.seeds.empty()) {
          throw RedisError(RedisError::Kind::Fatal,
                           fmt::format("the Redis URL names several nodes, the seeds of a Redis Cluster, but {} is "
                                       "not a cluster node (cluster_enabled:0)",
                                       client->display()));
        }
        if (url.db != 0) client = std::make_unique<RedisClient>(url.at(node), timeout, true);
        return client;
      }
      if (url.db != 0) {
        throw RedisError(RedisError::Kind::Fatal,
                         fmt::format("Redis at {} is a Redis Cluster node, and a cluster has database 0 only: drop "
                                     "'/{}' from the Redis URL",
                                     client->display(), url.db));
      }
      client.reset();
      return std::make_unique<ClusterClient>(url, timeout);
    } catch (const RedisError& e) {
      if (!e.transient() || url.seeds.empty()) throw;  // one node: its own words
      answers += fmt::format("; {}", e.what());
    }
  }
  throw RedisError(RedisError::Kind::Transient,
                   fmt::format("no Redis node of {} answers{}", url.display(), answers));
}

}  // namespace walstream
