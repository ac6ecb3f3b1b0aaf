// Redis URLs -> their parts. Pure.
//   redis://[user:password@]host:port[/db]             one Redis
//   redis://[user:password@]host:port,host:port…[/db]  seeds of a Redis Cluster (any one will do)
//   rediss://…                                          the same over TLS
//   redis-sentinel://[user:password@]host:port[,host:port…][/db]#master-name
//   rediss-sentinel://…                                 the same, sentinels and master over TLS
// (Lettuce's forms.) The credentials and db are the master's; the sentinels are asked without them.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace walstream {

// --redis-tls-*: where the certificates are. Verification of the server's certificate and host name
// is on unless `insecure` (tests only).
struct RedisTls {
  std::string ca_file;    // CA bundle the server's certificate must chain to (empty: the system's)
  std::string cert_file;  // client certificate, for servers that require one (tls-auth-clients yes)
  std::string key_file;   // its private key
  bool insecure = false;  // --redis-tls-insecure: no certificate or host-name check
};

struct RedisEndpoint {
  std::string host;
  int port = 0;
  bool operator==(const RedisEndpoint&) const = default;
};

struct RedisUrl {
  std::string host = "127.0.0.1";  // unused with sentinels: they name the master at each connection
  int port = 6379;
  std::string user;      // empty: the default user
  std::string password;  // empty: no AUTH
  int db = 0;
  bool tls = false;      // rediss:// or rediss-sentinel://
  RedisTls tls_files;
  std::vector<RedisEndpoint> sentinels;  // redis-sentinel://: asked for the master's address
  // redis://h1:p1,h2:p2: every node named, host:port being the first; empty with one node. Only a
  // Redis Cluster has several: its slot map is asked from each in turn until one answers.
  std::vector<RedisEndpoint> seeds;
  std::string master_name;               // …named after '#'

  bool via_sentinel() const { return !sentinels.empty(); }
  // Every node to try first: the seeds, or host:port alone.
  std::vector<RedisEndpoint> seed_nodes() const {
    return seeds.empty() ? std::vector<RedisEndpoint>{{host, port}} : seeds;
  }
  // host:port/db without the credentials, for logs; with sentinels "mymaster via sentinel h:p,h:p/0";
  // with seeds "h1:p1,h2:p2/0".
  std::string display() const;
  // The same URL pointing at one node directly (a sentinel, the master once resolved, a cluster
  // node): no sentinels nor seeds, the same TLS settings; `with_credentials` false for a sentinel.
  RedisUrl at(const RedisEndpoint& node, bool with_credentials = true) const;
};

// Throws std::invalid_argument with a one-line reason.
RedisUrl parse_redis_url(std::string_view url);

}  // namespace walstream
