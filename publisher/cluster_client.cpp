#include "cluster_client.h"

#include <fmt/format.h>

#include <stdexcept>

namespace walstream {

ClusterClient::ClusterClient(const RedisUrl& seed, std::chrono::milliseconds timeout) : seed_(seed), timeout_(timeout) {
  refresh();
}

RedisClient& ClusterClient::client(const RedisEndpoint& node) {
  auto& c = clients_[{node.host, node.port}];
  if (!c) c = std::make_unique<RedisClient>(seed_.at(node), timeout_, true);
  return *c;
}

std::string ClusterClient::describe() const { return fmt::format("Redis Cluster via {}", seed_.display()); }

void ClusterClient::set_timeout(std::chrono::milliseconds timeout) {
  timeout_ = timeout;
  for (auto& [node, c] : clients_) c->set_timeout(timeout);
}

void ClusterClient::refresh() {
  std::vector<RedisEndpoint> candidates = seed_.seed_nodes();
  for (const auto& m : slots_.masters()) candidates.push_back(m);
  std::string answers;
  for (const auto& node : candidates) {
    try {
      auto& c = client(node);
      auto r = c.command({"CLUSTER", "SLOTS"});
      if (r.is_error()) {
        // Not a cluster node ("ERR This instance has cluster support disabled"): nothing to retry.
        // Any other refusal (NOAUTH, BUSY, LOADING…): the next node may answer.
        if (r.str().find("cluster support disabled") != std::string_view::npos) {
          throw RedisError(RedisError::Kind::Fatal,
                           fmt::format("Redis at {} is not a cluster node: CLUSTER SLOTS answered {}", c.display(),
                                       r.str()));
        }
        throw RedisError(RedisError::Kind::Transient, fmt::format("CLUSTER SLOTS refused: {}", r.str()));
      }
      auto map = SlotMap::from_cluster_slots(to_reply_tree(r), node.host);
      if (!map.covers_all()) {
        throw RedisError(RedisError::Kind::Transient,
                         fmt::format("the Redis Cluster at {} does not serve every slot (CLUSTER SLOTS)", c.display()));
      }
      slots_ = std::move(map);
      return;
    } catch (const RedisError& e) {
      if (e.kind() == RedisError::Kind::Fatal) throw;
      clients_.erase({node.host, node.port});
      answers += fmt::format("; {}:{}: {}", node.host, node.port, e.what());
    } catch (const std::invalid_argument& e) {
      answers += fmt::format("; {}:{}: {}", node.host, node.port, e.what());
    }
  }
  throw RedisError(RedisError::Kind::Transient, fmt::format("no Redis Cluster node gave its slot map{}", answers));
}

RedisReply ClusterClient::command_on(const RedisEndpoint& master, const std::vector<std::string>& argv) {
  try {
    return client(master).command(argv);
  } catch (const RedisError&) {
    clients_.erase({master.host, master.port});  // reconnect next time
    throw;
  }
}

void ClusterClient::follow(const Redirect& redirect, std::string_view key, std::optional<RedisEndpoint>& node,
                           bool& asking) {
  RedisEndpoint target = redirect.endpoint;
  if (target.host.empty()) target.host = node->host;
  if (redirect.kind == Redirect::Kind::Moved) {
    // The slot has a new master for good (a migration finished, a failover): read the map again.
    ++moved_;
    asking = false;
    refresh();
    node = slots_.master_of_key(key);
    if (!node || *node != target) node = target;  // the map may lag the node's own word
  } else {
    ++asked_;
    asking = true;  // for the next command (or transaction) only, on the importing node
    node = target;
  }
}

RedisReply ClusterClient::command(std::string_view key, const std::vector<std::string>& argv) {
  auto node = slots_.master_of_key(key);
  bool asking = false;
  for (int attempt = 0; attempt <= kMaxRedirects; ++attempt) {
    if (!node) {
      refresh();
      node = slots_.master_of_key(key);
      if (!node) break;
    }
    RedisReply r = [&] {
      if (!asking) return command_on(*node, argv);
      // ASKING holds for the next command on that connection only.
      auto ok = command_on(*node, {"ASKING"});
      if (ok.is_error()) return ok;
      return command_on(*node, argv);
    }();
    if (!r.is_error()) return r;
    auto redirect = parse_redirect(r.str());
    if (!redirect) return r;
    follow(*redirect, key, node, asking);
  }
  throw RedisError(RedisError::Kind::Transient,
                   fmt::format("Redis Cluster: {} for key '{}' was redirected more than {} times", argv.empty() ? "" : argv[0],
                               key, kMaxRedirects));
}

RedisReply ClusterClient::transaction(std::string_view key, const std::vector<std::vector<std::string>>& commands) {
  auto node = slots_.master_of_key(key);
  bool asking = false;
  for (int attempt = 0; attempt <= kMaxRedirects; ++attempt) {
    if (!node) {
      refresh();
      node = slots_.master_of_key(key);
      if (!node) break;
    }
    auto where = fmt::format("{}:{}", node->host, node->port);
    // Inside MULTI the ASKING flag stays until EXEC: the whole transaction runs on the importing node.
    if (asking) {
      auto ok = command_on(*node, {"ASKING"});
      if (ok.is_error()) throw_refusal(where, {"ASKING"}, ok.str());
    }
    auto multi = command_on(*node, {"MULTI"});
    if (multi.is_error()) throw_refusal(where, {"MULTI"}, multi.str());
    std::optional<Redirect> redirect;
    for (const auto& c : commands) {
      auto queued = command_on(*node, c);
      if (!queued.is_error()) continue;
      command_on(*node, {"DISCARD"});
      redirect = parse_redirect(queued.str());
      // A command of another slot is redirected too: that is this transaction's mistake, not a move.
      if (!redirect || redirect->slot != key_slot(key)) throw_refusal(where, c, queued.str());
      break;
    }
    if (!redirect) {
      auto exec = command_on(*node, {"EXEC"});
      if (exec.is_error()) throw_refusal(where, {"EXEC"}, exec.str());
      if (exec.is_nil()) throw RedisError(RedisError::Kind::Transient, fmt::format("Redis at {}: EXEC aborted", where));
      check_exec(where, commands, exec);
      return exec;
    }
    follow(*redirect, key, node, asking);
  }
  throw RedisError(RedisError::Kind::Transient,
                   fmt::format("Redis Cluster: a transaction on key '{}' was redirected more than {} times", key,
                               kMaxRedirects));
}

}  // namespace walstream
