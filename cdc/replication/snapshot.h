// The slot's life cycle with its initial snapshot: create the slot exporting a snapshot, copy every
// published table under it into staging streams as `r` records, then publish them, so that a
// table's stream replayed in ID order reproduces the table with no gap and no duplicate.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "catalog.h"
#include "config.h"
#include "pg_conn.h"
#include "redis_client.h"
#include "stream_writer.h"
#include "writer_flow.h"

namespace walstream {

class SlotKeeper {
 public:
  SlotKeeper(const Config& config, Catalog& catalog, StreamWriter& writer, WaitUntil wait_until);

  // Makes sure the slot exists and any snapshot it owes is complete before streaming starts:
  // an interrupted copy is discarded (staging streams deleted, slot dropped) and redone under a new
  // slot; an interrupted publication is finished. `repl` is the replication connection that will
  // then START_REPLICATION (the exported snapshot lives as long as it stays idle).
  void prepare(PgConnection& repl);
  // The slot's confirmed_flush_lsn as PostgreSQL has it now.
  std::uint64_t confirmed_flush();

 private:
  std::string state_key() const { return config_.prefix + "snapshot:" + config_.slot; }
  std::string staging_set() const { return state_key() + ":staging"; }
  PgConnection& sql();
  bool slot_exists();
  void drop_slot();
  void discard(RedisClient& redis);
  void copy(RedisClient& redis, const std::string& snapshot_name, std::uint64_t consistent_point);
  void publish(RedisClient& redis);

  const Config& config_;
  Catalog& catalog_;
  StreamWriter& writer_;
  WaitUntil wait_until_;
  std::optional<PgConnection> sql_;  // slot look-ups, opened on first use
};

}  // namespace walstream
