// Redis Sentinel: which node is the master of a redis-sentinel:// URL now. The sentinels are asked
// in the URL's order at every connection, so a reconnection after a failover finds the new master.
#pragma once

#include "redis_url.h"

namespace walstream {

class RedisClient;

// Asks url.sentinels in turn (SENTINEL GET-MASTER-ADDR-BY-NAME) for url.master_name's address; the
// first one that names it answers. Throws RedisError (transient) with every sentinel's answer when
// none does (all down, or none monitors that name).
RedisEndpoint find_master(const RedisUrl& url);

// A sentinel's answer may be stale (mid-failover): `client`, connected to the address it gave, must
// say ROLE master. Throws RedisError (transient) otherwise: walstream never writes to a replica.
void check_master_role(RedisClient& client, const RedisUrl& url, const RedisEndpoint& node);

}  // namespace walstream
