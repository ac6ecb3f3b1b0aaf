#include "redis_url.h"

#include <fmt/format.h>

#include <charconv>
#include <stdexcept>
#include <tuple>

namespace walstream {
namespace {

int parse_int(std::string_view s, int lo, int hi, const char* what) {
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) {
    throw std::invalid_argument(fmt::format("invalid {} '{}' in Redis URL", what, s));
  }
  return v;
}

// Credentials may carry reserved characters percent-encoded (RFC 3986).
std::string percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    int v = 0;
    auto [p, ec] = i + 3 <= s.size() ? std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16)
                                     : std::from_chars_result{s.data(), std::errc::invalid_argument};
    if (ec != std::errc() || p != s.data() + i + 3) throw std::invalid_argument("invalid percent-escape in Redis URL");
    out.push_back(static_cast<char>(v));
    i += 2;
  }
  return out;
}


// host[:port] or [v6][:port].
RedisEndpoint parse_endpoint(std::string_view hostport) {
  RedisEndpoint out{"127.0.0.1", 6379};
  if (!hostport.empty() && hostport.front() == '[') {
    auto close = hostport.find(']');
    if (close == std::string_view::npos) throw std::invalid_argument("unterminated [IPv6] host in Redis URL");
    out.host = std::string(hostport.substr(1, close - 1));
    hostport = hostport.substr(close + 1);
    if (!hostport.empty()) {
      if (hostport.front() != ':') throw std::invalid_argument("invalid host in Redis URL");
      out.port = parse_int(hostport.substr(1), 1, 65535, "port");
    }
  } else if (auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
    out.host = std::string(hostport.substr(0, colon));
    out.port = parse_int(hostport.substr(colon + 1), 1, 65535, "port");
  } else if (!hostport.empty()) {
    out.host = std::string(hostport);
  }
  if (out.host.empty()) throw std::invalid_argument("missing host in Redis URL");
  return out;
}

std::string endpoint_text(const std::string& host, int port) {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

}  // namespace

std::string RedisUrl::display() const {
  if (via_sentinel()) {
    std::string list;
    for (const auto& s : sentinels) {
      if (!list.empty()) list += ',';
      list += endpoint_text(s.host, s.port);
    }
    return fmt::format("{} via sentinel {}/{}", master_name, list, db);
  }
  if (!seeds.empty()) {
    std::string list;
    for (const auto& s : seeds) {
      if (!list.empty()) list += ',';
      list += endpoint_text(s.host, s.port);
    }
    return fmt::format("{}/{}", list, db);
  }
  return fmt::format("{}/{}", endpoint_text(host, port), db);
}

RedisUrl RedisUrl::at(const RedisEndpoint& node, bool with_credentials) const {
  RedisUrl out = *this;
  out.sentinels.clear();
  out.master_name.clear();
  out.seeds.clear();
  out.host = node.host;
  out.port = node.port;
  if (!with_credentials) {
    out.user.clear();
    out.password.clear();
    out.db = 0;
  }
  return out;
}

RedisUrl parse_redis_url(std::string_view url) {
  RedisUrl out;
  std::string_view rest;
  bool sentinel = false;
  for (auto [scheme, tls, via_sentinel] : {std::tuple{std::string_view("redis://"), false, false},
                                           std::tuple{std::string_view("rediss://"), true, false},
                                           std::tuple{std::string_view("redis-sentinel://"), false, true},
                                           std::tuple{std::string_view("rediss-sentinel://"), true, true}}) {
    if (url.substr(0, scheme.size()) == scheme) {
      rest = url.substr(scheme.size());
      out.tls = tls;
      sentinel = via_sentinel;
      break;
    }
  }
  if (rest.data() == nullptr) {
    throw std::invalid_argument(
        "Redis URL must start with redis://, rediss:// (TLS), redis-sentinel:// or rediss-sentinel://");
  }
  if (sentinel) {
    auto hash = rest.find('#');
    if (hash == std::string_view::npos || hash + 1 == rest.size()) {
      throw std::invalid_argument("a redis-sentinel:// URL names its master after '#' (…#mymaster)");
    }
    out.master_name = percent_decode(rest.substr(hash + 1));
    rest = rest.substr(0, hash);
  } else if (rest.find('#') != std::string_view::npos) {
    throw std::invalid_argument("'#master-name' belongs to redis-sentinel:// URLs");
  }
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view cred = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (auto colon = cred.find(':'); colon != std::string_view::npos) {
      out.user = percent_decode(cred.substr(0, colon));
      out.password = percent_decode(cred.substr(colon + 1));
    } else {
      out.password = percent_decode(cred);  // redis://secret@host: a password alone, as redis-cli reads it
    }
  }
  std::string_view hostport = rest;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) out.db = parse_int(db, 0, 1 << 20, "database number");
  }
  if (hostport.empty()) throw std::invalid_argument("missing host in Redis URL");
  const char* what = sentinel ? "sentinel" : "node";
  std::vector<RedisEndpoint> nodes;
  while (!hostport.empty()) {
    auto comma = hostport.find(',');
    auto one = hostport.substr(0, comma);
    if (one.empty()) throw std::invalid_argument(fmt::format("empty {} address in Redis URL", what));
    auto node = parse_endpoint(one);
    bool no_port = one.find(':') == std::string_view::npos || (one.front() == '[' && one.back() == ']');
    if (sentinel && no_port) node.port = 26379;
    nodes.push_back(node);
    hostport = comma == std::string_view::npos ? std::string_view() : hostport.substr(comma + 1);
    if (comma != std::string_view::npos && hostport.empty()) {
      throw std::invalid_argument(fmt::format("empty {} address in Redis URL", what));
    }
  }
  if (sentinel) {
    out.sentinels = std::move(nodes);
    return out;
  }
  out.host = nodes.front().host;
  out.port = nodes.front().port;
  if (nodes.size() > 1) {
    // Several nodes: seeds of a cluster, which has one database only.
    if (out.db != 0) {
      throw std::invalid_argument("a Redis URL with several nodes names a Redis Cluster, which has database 0 only");
    }
    out.seeds = std::move(nodes);
  }
  return out;
}

}  // namespace walstream
