// Everything `walstream run` is told, after parsing and validation.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "redis_url.h"
#include "units.h"
#include "retention.h"

namespace walstream {

enum class SnapshotMode { Initial, Never };

// The columns of an outbox table (Debezium's names by default); every other column is a header.
struct OutboxColumns {
  std::string id = "id";
  std::string aggregate_type = "aggregatetype";
  std::string aggregate_id = "aggregateid";
  std::string type = "type";
  std::string payload = "payload";
};

struct Config {
  std::string pg;  // libpq conninfo or URI; empty means libpq's PG* variables
  RedisUrl redis;
  bool redis_cluster = false;  // found at start (connect_redis): the cluster key layout and ClusterWriter
  std::string slot = "walstream";
  std::string publication = "walstream";
  // (schema, table) of a publication walstream creates (empty schema: the search path); empty = all
  std::vector<std::pair<std::string, std::string>> tables;
  std::string prefix = "walstream:";
  SnapshotMode snapshot = SnapshotMode::Initial;  // when walstream creates the slot
  std::optional<std::uint64_t> maxlen;
  std::chrono::milliseconds status_interval{10'000};
  std::chrono::milliseconds max_backoff{30'000};
  std::chrono::milliseconds shutdown_timeout{30'000};
  int redis_wait = 0;  // replicas that must have a chunk before its position is confirmed (WAIT)
  std::chrono::milliseconds redis_wait_timeout{1000};
  bool resnapshot = false;  // drop the slot and republish every table's rows (Redis lost data)
  bool adopt_slot = false;  // a slot made outside walstream, with no checkpoint yet: start from its position
  bool messages = true;                       // logical messages (pg_logical_emit_message)…
  std::vector<std::string> message_prefixes;  // …of these prefixes only (empty: all)
  bool transactions = false;                  // a marker entry per transaction on <prefix>transactions
  std::vector<std::string> outbox_tables;     // qualified names (schema/relation_cache.h) of outbox tables
  OutboxColumns outbox_columns;
  LagWarn lag_warn;  // the WAL guard's thresholds (wal_guard.h)
  bool backfill_new_tables = true;  // a table added to the publication while streaming is backfilled
  std::string metrics_listen;  // HOST:PORT of the metrics endpoint (the CLI serves it); empty: off
  std::optional<RetentionOptions> retention;  // --retention acked
};

// What outlives one session. The two start-up decisions an operator asks for once are honoured at the
// first start of the process and cleared once acted on, so that a reconnect never redoes them (an
// adoption at a reconnect would accept a Redis that lost data).
struct RunState {
  bool resnapshot = false;
  bool adopt_slot = false;
  bool streamed = false;  // a session started replication (this instance was active)
  // A Redis Cluster's nodes (masters and replicas) as the last session's slot map named them: seeds
  // for the next one besides the URL's, so that a session ending because a seed's master died can
  // find the cluster again through the replica that took over.
  std::vector<RedisEndpoint> cluster_nodes;
};

}  // namespace walstream
