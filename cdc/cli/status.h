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
#include "units.h"

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

// Gathers, prints the report on `out` and one line per problem on `err`. Returns 0 when healthy, 1 when
// behind or broken (a server that cannot be reached is one of the problems).
int status(const StatusOptions& options, std::ostream& out, std::ostream& err);

}  // namespace walstream
