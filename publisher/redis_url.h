// redis://[user:password@]host:port[/db] -> its parts. Pure.
#pragma once

#include <string>
#include <string_view>

namespace walstream {

struct RedisUrl {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string user;      // empty: the default user
  std::string password;  // empty: no AUTH
  int db = 0;

  // host:port/db without the credentials, for logs.
  std::string display() const;
};

// Throws std::invalid_argument with a one-line reason.
RedisUrl parse_redis_url(std::string_view url);

}  // namespace walstream
