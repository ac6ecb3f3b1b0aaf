// What Redis keeps about a slot besides its streams: the checkpoint (how far Redis holds the change
// feed) and the initial snapshot's state and staging streams. Redis only; the decisions are the
// caller's (cdc/replication/snapshot.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "keys.h"
#include "redis_client.h"
#include "redis_commands.h"
#include "stream_writer.h"
#include "writer_flow.h"

namespace walstream {

class SlotStore {
 public:
  // Connects to one Redis, the master behind Sentinel, or a Redis Cluster (connect_redis); on a
  // cluster the keys take the cluster layout (keys.h), whatever `keys.cluster` said.
  SlotStore(const RedisUrl& url, Keys keys);
  const Keys& keys() const { return keys_; }
  bool cluster() const { return keys_.cluster; }
  RedisCommands& redis() { return *redis_; }

  // Throws (fatal) when Redis may evict keys without a word (maxmemory-policy allkeys-*): a stream or
  // the checkpoint evicted is data lost silently. A Redis that hides CONFIG passes.
  void check_eviction_policy();

  // --- checkpoint ---
  struct Checkpoint {
    std::optional<std::uint64_t> lsn;  // end of the last transaction Redis holds
    bool creating = false;             // set before the slot is created, so a crash in between is known
  };
  // nullopt: no checkpoint key at all.
  std::optional<Checkpoint> checkpoint();
  void set_checkpoint(std::uint64_t lsn);
  void mark_creating();
  void forget_checkpoint();

  // --- the initial snapshot ---
  std::string snapshot_status();  // "" when none
  void set_snapshot_status(const std::string& status, const std::string& consistent_point = {});
  void forget_snapshot();
  // Snapshot `done` and the checkpoint at the consistent point, in one MULTI/EXEC: a Redis (or a
  // replica) never holds the one without the other.
  void finish_snapshot(std::uint64_t consistent_point);
  // A staging stream for a table, empty and listed (so a crash leaves a trace to clean up).
  std::string open_staging(const std::string& qualified);
  // Deletes the staging streams of an interrupted copy.
  void discard_staging();
  // Publishes every staging stream onto its stream: RENAME when the stream does not exist (the whole
  // table appears at once), else appended by XADD through `writer` with the replay filter, so a crash
  // while publishing resumes. Returns the number of tables.
  std::size_t publish_staging(ChangeWriter& writer, const WaitUntil& wait_until);

 private:
  std::unique_ptr<RedisCommands> redis_;
  Keys keys_;
};

}  // namespace walstream
