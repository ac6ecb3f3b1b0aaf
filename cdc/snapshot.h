// The slot's life cycle with its initial snapshot: create the slot exporting a snapshot, copy every
// published table under it into staging streams as `r` records, then publish them, so that a
// table's stream replayed in ID order reproduces the table with no gap and no duplicate.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "catalog.h"
#include "config.h"
#include "pg_conn.h"
#include "redis_client.h"
#include "stream_writer.h"

namespace walstream {

class SlotKeeper {
 public:
  using WaitUntil = std::function<void(const std::function<bool()>&)>;

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
  bool slot_exists();
  void drop_slot();
  void discard(RedisClient& redis);
  void copy(RedisClient& redis, const std::string& snapshot_name, std::uint64_t consistent_point);
  void publish(RedisClient& redis);
  void drain_writer();

  const Config& config_;
  Catalog& catalog_;
  StreamWriter& writer_;
  WaitUntil wait_until_;
};

}  // namespace walstream
