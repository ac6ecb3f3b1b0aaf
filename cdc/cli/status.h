// `walstream status`: the whole picture from PostgreSQL and Redis alone, whether walstream runs or not:
// the slot (holder, confirmed position, lag, wal_status), the publication and its tables, the Redis
// checkpoint, every stream under the prefix with its consumer groups, and the snapshot state. Reads
// only; prints a table (or one JSON document) on stdout and each problem found as one line on stderr.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>

#include "redis_url.h"

namespace walstream {

struct StatusOptions {
  std::string pg;  // libpq conninfo or URI; empty: libpq's PG* variables
  RedisUrl redis;
  std::string slot = "walstream";
  std::string publication = "walstream";
  std::string prefix = "walstream:";
  std::uint64_t lag_warn = std::uint64_t{1} << 30;  // bytes of WAL the slot may be behind before it is a problem
  bool json = false;
};

// "1073741824", "64MB", "1GB", "512kB", "2GiB" -> bytes (k/M/G/T are powers of 1024, as in PostgreSQL's
// settings; an optional B or iB). nullopt when the text is no such size, or is zero.
std::optional<std::uint64_t> parse_byte_size(std::string_view text);

// Gathers, prints the report on `out` and one line per problem on `err`. Returns 0 when healthy, 1 when
// behind or broken (a server that cannot be reached is one of the problems).
int status(const StatusOptions& options, std::ostream& out, std::ostream& err);

}  // namespace walstream
