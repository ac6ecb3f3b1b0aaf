#include "sentinel.h"

#include <fmt/format.h>

#include <map>
#include <mutex>

#include "log.h"
#include "redis_client.h"

namespace walstream {
namespace {

// The master each sentinel URL (its sentinels and name) led to last in this process, so that a
// failover is logged once, when a connection first reaches the new master.
void note_master(const RedisUrl& url, const RedisEndpoint& node) {
  static std::mutex mutex;
  static std::map<std::string, RedisEndpoint> last;
  const auto where = fmt::format("{}:{}", node.host, node.port);
  std::lock_guard lock(mutex);
  auto [it, fresh] = last.try_emplace(url.display(), node);
  if (fresh) {
    log::debug("Redis Sentinel: master '{}' is at {}", url.master_name, where);
  } else if (it->second != node) {
    log::info("Redis Sentinel: master '{}' is at {} now (was {}:{}): a failover", url.master_name, where,
              it->second.host, it->second.port);
    it->second = node;
  }
}

}  // namespace

RedisEndpoint find_master(const RedisUrl& url, std::chrono::milliseconds timeout) {
  std::string answers;
  for (const auto& sentinel : url.sentinels) {
    const auto at = url.at(sentinel, false);
    try {
      RedisClient client(at, timeout);
      auto r = client.command({"SENTINEL", "GET-MASTER-ADDR-BY-NAME", url.master_name});
      if (r.is_array() && r.size() == 2) {
        auto parts = r.strings();
        return RedisEndpoint{parts[0], std::stoi(parts[1])};
      }
      answers += fmt::format("; {}: {}", at.display(), r.is_error() ? std::string(r.str()) : "does not know it");
    } catch (const RedisError& e) {
      answers += fmt::format("; {}: {}", at.display(), e.what());
    } catch (const std::exception& e) {
      answers += fmt::format("; {}: unexpected answer ({})", at.display(), e.what());
    }
  }
  throw RedisError(RedisError::Kind::Transient,
                   fmt::format("no sentinel named the master '{}'{}", url.master_name, answers));
}

SentinelView ask_sentinels(const RedisUrl& url, std::chrono::milliseconds timeout) {
  SentinelView view;
  std::string answers;
  for (const auto& sentinel : url.sentinels) {
    const auto at = url.at(sentinel, false);
    try {
      RedisClient client(at, timeout);
      auto r = client.command({"SENTINEL", "MASTER", url.master_name});
      if (!r.is_array()) {
        answers += fmt::format("; {}: {}", at.display(), r.is_error() ? std::string(r.str()) : "does not know it");
        continue;
      }
      auto fields = r.strings();
      std::string ip, port, flags;
      for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
        if (fields[i] == "ip") ip = fields[i + 1];
        if (fields[i] == "port") port = fields[i + 1];
        if (fields[i] == "flags") flags = fields[i + 1];
      }
      if (ip.empty() || port.empty()) throw std::invalid_argument("no ip or port");
      view.named.push_back(RedisEndpoint{ip, std::stoi(port)});
      const bool failing_over = flags.find("failover_in_progress") != std::string::npos;
      const bool down = flags.find("s_down") != std::string::npos || flags.find("o_down") != std::string::npos;
      if ((failing_over || down) && view.flags.empty()) view.flags = fmt::format("{} says {}", at.display(), flags);
      view.failover_in_progress |= failing_over;
      view.down |= down;
    } catch (const RedisError& e) {
      answers += fmt::format("; {}: {}", at.display(), e.what());
    } catch (const std::exception& e) {
      answers += fmt::format("; {}: unexpected answer ({})", at.display(), e.what());
    }
  }
  if (view.named.empty()) {
    throw RedisError(RedisError::Kind::Transient,
                     fmt::format("no sentinel described the master '{}'{}", url.master_name, answers));
  }
  return view;
}

SentinelJudgement judge_sentinels(const SentinelView& view, const RedisEndpoint& writing_to, std::size_t total) {
  SentinelJudgement j;
  const std::size_t majority = total / 2 + 1;
  std::size_t here = 0;
  std::map<std::pair<std::string, int>, std::size_t> elsewhere;
  for (const auto& named : view.named) {
    if (named == writing_to) {
      ++here;
    } else {
      ++elsewhere[{named.host, named.port}];
    }
  }
  for (const auto& [node, count] : elsewhere) {
    if (count >= majority) {
      j.verdict = SentinelJudgement::Verdict::Moved;
      j.moved_to = RedisEndpoint{node.first, node.second};
      j.why = fmt::format("{} of {} sentinels name {}:{} as the master", count, total, node.first, node.second);
      return j;
    }
  }
  if (!elsewhere.empty() || total - std::min(total, view.named.size()) >= majority) {
    j.why = fmt::format("{} of {} sentinel(s) answered, {} naming this session's master", view.named.size(), total,
                        here);
    return j;
  }
  if (view.failover_in_progress || view.down) {
    j.why = fmt::format("{} ({})", view.failover_in_progress ? "a failover is in progress" : "the master is seen down",
                        view.flags);
    return j;
  }
  j.verdict = SentinelJudgement::Verdict::Vouch;
  return j;
}

void check_master_role(RedisClient& client, const RedisUrl& url, const RedisEndpoint& node) {
  auto r = client.command({"ROLE"});
  if (r.is_array() && r.size() > 0) {
    auto role = r.strings().front();
    if (role == "master") {
      note_master(url, node);
      return;
    }
    throw RedisError(RedisError::Kind::Transient,
                     fmt::format("the sentinels named {}:{} as master '{}', but it is a {} (a failover in progress?)",
                                 node.host, node.port, url.master_name, role));
  }
  throw RedisError(RedisError::Kind::Transient,
                   fmt::format("{}:{} (named master '{}' by the sentinels) did not answer ROLE: {}", node.host,
                               node.port, url.master_name, r.is_error() ? std::string(r.str()) : "no role"));
}

}  // namespace walstream
