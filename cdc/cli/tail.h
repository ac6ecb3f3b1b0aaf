// `walstream tail`: follow walstream's streams (XREAD, or XREADGROUP with XACK) and print each entry
// as one JSON line on stdout: a table's records in the record contract's form, events, messages and any
// other stream with all their fields. Reads Redis only; its writes are a consumer group's bookkeeping.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "redis_url.h"
#include "stream_id.h"

namespace walstream {

struct TailOptions {
  enum class Start { New, Beginning, After };

  RedisUrl redis;
  std::string prefix = "walstream:";
  // The streams, all read together: at least one in all.
  std::vector<std::string> tables;    // schema.table: the records of <prefix><schema>.<table>
  std::vector<std::string> events;    // aggregate types: the events of <prefix>events:<aggregate type>
  std::vector<std::string> messages;  // message prefixes: the logical messages of <prefix>messages:<prefix>
  // Stream keys as they are. One under the prefix that names no events, messages or transactions
  // stream holds records (a table's stream) and prints like `tables`; any other prints its fields.
  std::vector<std::string> streams;
  std::string group;                // empty: plain XREAD, no group
  std::string consumer;             // required with a group
  // Where reading starts: without a group, for this run; with one, only when the group is created.
  Start start = Start::New;
  StreamId from_id;  // Start::After: entries after this ID
  std::uint64_t count = 0;  // stop after printing this many records; 0: until SIGTERM/SIGINT
  std::chrono::milliseconds block{1000};  // longest XREAD BLOCK, and so the longest wait for a stop
};

// Connects (throwing RedisError when Redis cannot be reached or refuses, so a start-up problem is one
// line), then prints records until `count` or a stop signal: returns 0. Later Redis outages are
// retried with backoff; a refusal that retrying cannot fix (NOGROUP, WRONGTYPE…) logs one line and
// returns 1, as does a stdout that cannot be written.
int tail(const TailOptions& options);

}  // namespace walstream
