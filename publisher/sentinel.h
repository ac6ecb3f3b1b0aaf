// Redis Sentinel: which node is the master of a redis-sentinel:// URL now. The sentinels are asked
// in the URL's order at every connection, so a reconnection after a failover finds the new master.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "redis_url.h"

namespace walstream {

class RedisClient;

// Asks url.sentinels in turn (SENTINEL GET-MASTER-ADDR-BY-NAME) for url.master_name's address; the
// first one that names it answers. Throws RedisError (transient) with every sentinel's answer when
// none does (all down, or none monitors that name).
RedisEndpoint find_master(const RedisUrl& url, std::chrono::milliseconds timeout = std::chrono::seconds(2));

// What the sentinels say of the master now (SENTINEL MASTER, asked of every sentinel): where it is
// by each that answered, and whether any has a failover of it in progress (only the leader of a
// failover flags it) or sees it down. Throws RedisError (transient) when none answers.
struct SentinelView {
  std::vector<RedisEndpoint> named;  // one per sentinel that answered
  bool failover_in_progress = false;
  bool down = false;  // s_down or o_down
  std::string flags;  // the flags of the first sentinel with a failover or a down flag, for messages
};
SentinelView ask_sentinels(const RedisUrl& url, std::chrono::milliseconds timeout);

// Whether a position acknowledged by `writing_to` may be confirmed, from what the sentinels said
// (`total`: how many the URL lists). Pure.
//   Moved: a majority of the sentinels names another master (moved_to): reconnect there.
//   Hold: the sentinels that did not answer could elect a failover leader among themselves (they are
//         a majority of all), or some that answered name another master, or a failover of it is in
//         progress, or it is seen down.
//   Vouch: otherwise.
struct SentinelJudgement {
  enum class Verdict { Vouch, Hold, Moved } verdict = Verdict::Hold;
  RedisEndpoint moved_to;
  std::string why;  // for Hold and Moved, for the log
};
SentinelJudgement judge_sentinels(const SentinelView& view, const RedisEndpoint& writing_to, std::size_t total);

// A sentinel's answer may be stale (mid-failover): `client`, connected to the address it gave, must
// say ROLE master. Throws RedisError (transient) otherwise: walstream never writes to a replica.
void check_master_role(RedisClient& client, const RedisUrl& url, const RedisEndpoint& node);

}  // namespace walstream
