// A blocking Redis connection for the few synchronous jobs: snapshot bookkeeping, `walstream tail` and
// `status`, the writer's handshake. Over RedisSocket (TCP or TLS); hiredis's reader parses the replies.
// The streaming path uses StreamWriter (non-blocking, pipelined) instead.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "redis_commands.h"
#include "redis_error.h"
#include "redis_url.h"

#include "redis_socket.h"
#include "resp_buffer.h"

struct redisReader;
struct redisReply;

namespace walstream {

// One stream entry as XRANGE/XREAD return it.
struct StreamEntry {
  std::string id;
  std::vector<std::pair<std::string, std::string>> fields;
};

// An owned reply, read through helpers so that callers need no hiredis types.
class RedisReply {
 public:
  explicit RedisReply(redisReply* r);
  bool is_nil() const;
  bool is_error() const;
  bool is_array() const;
  std::string_view str() const;  // string, status or error text
  long long integer() const;
  std::size_t size() const;  // array length
  // The elements of an array of strings (SMEMBERS, KEYS…).
  std::vector<std::string> strings() const;
  // The same with nil elements as nullopt (HMGET).
  std::vector<std::optional<std::string>> optional_strings() const;
  // The entries of an XRANGE reply.
  std::vector<StreamEntry> entries() const;
  // The streams of an XREAD/XREADGROUP reply: (stream key, entries); empty on a nil (timeout) reply.
  std::vector<std::pair<std::string, std::vector<StreamEntry>>> streams() const;
  const redisReply* raw() const { return reply_.get(); }

 private:
  struct Deleter {
    void operator()(redisReply* r) const;
  };
  std::unique_ptr<redisReply, Deleter> reply_;
};

class RedisClient final : public RedisCommands {
 public:
  // Connects, AUTHs, SELECTs; throws RedisError. timeout 0 means block forever on reads. With
  // sentinels in the URL, asks them for the master first and checks its ROLE (sentinel.h).
  // A cluster node is refused (Fatal) unless `cluster_node` (ClusterClient's and ClusterWriter's
  // connections); so is a URL with several nodes.
  explicit RedisClient(const RedisUrl& url, std::chrono::milliseconds timeout = std::chrono::seconds(10),
                       bool cluster_node = false);
  ~RedisClient() override;
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Sends one command and returns its reply; an error reply is returned, not thrown, so callers
  // can tell "no such key" from a refusal. A lost connection throws RedisError (transient).
  RedisReply command(const std::vector<std::string>& argv);
  // Same, but an error reply throws RedisError (retryable ones as transient).
  RedisReply checked(const std::vector<std::string>& argv);
  // Sets the read timeout (0: none) for blocking reads such as XREAD BLOCK.
  void set_timeout(std::chrono::milliseconds timeout) override;

  // RedisCommands: one node holds every key.
  using RedisCommands::checked;
  RedisReply command(std::string_view, const std::vector<std::string>& argv) override { return command(argv); }
  RedisReply transaction(std::string_view key, const std::vector<std::vector<std::string>>& commands) override;
  std::vector<RedisEndpoint> masters() override { return {node()}; }
  RedisReply command_on(const RedisEndpoint&, const std::vector<std::string>& argv) override { return command(argv); }
  bool is_cluster() const override { return false; }
  std::string describe() const override { return display(); }
  // Hands the connected, authenticated socket over (StreamWriter drives it without blocking). Only
  // between commands: every reply was read.
  std::unique_ptr<RedisSocket> release();
  // The node connected to, for messages ("127.0.0.1:6379/0", "master 'm' at 127.0.0.1:6380/0").
  const std::string& display() const;
  // The node connected to (through sentinels: the master they named).
  RedisEndpoint node() const { return {url_.host, url_.port}; }

 private:
  void open();
  RedisReply exchange(const std::vector<std::string>& argv);
  bool cluster_node_ = false;
  std::string display_;
  RedisUrl url_;  // the node connected to (resolved when through sentinels)
  std::chrono::milliseconds timeout_;
  std::unique_ptr<RedisSocket> socket_;
  std::unique_ptr<redisReader, void (*)(redisReader*)> reader_;
  RespBuffer out_;
};

}  // namespace walstream
