// `walstream tail`: follow walstream's streams (XREAD, or XREADGROUP with XACK) and print each record
// as one JSON line on stdout. Reads Redis only; its writes are a consumer group's bookkeeping.
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
  std::vector<std::string> tables;  // schema.table, one stream each
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
