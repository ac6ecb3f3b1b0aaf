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
#include "keys.h"
#include "slot_store.h"
#include "stream_writer.h"
#include "writer_flow.h"

namespace walstream {

// Fills table.columns (relid, schema and name set) as `publication` sends them and describes them like a
// Relation message; returns the quoted column list for a SELECT or COPY of them.
std::string describe_columns(PgConnection& conn, Catalog& catalog, const std::string& publication, TableInfo& table);

class SlotKeeper {
 public:
  // pg_try_advisory_lock(kSetupLockClass, hashtext(slot)): one instance sets the slot up at a time.
  static constexpr long kSetupLockClass = 0x57414c53;  // "WALS"

  // `once` (--resnapshot, --adopt-slot) is cleared once acted on, so a reconnect does not redo it.
  SlotKeeper(const Config& config, Catalog& catalog, ChangeWriter& writer, WaitUntil wait_until, RunState& once);

  // One instance at a time (a PostgreSQL advisory lock; a second one is told the slot is in use and
  // becomes a standby). Makes sure the slot exists, that Redis holds what the slot says is stored, and that any snapshot
  // it owes is complete before streaming starts: an interrupted copy is discarded (staging streams
  // deleted, slot dropped) and redone under a new slot; an interrupted publication is finished.
  // `repl` is the replication connection that will then START_REPLICATION (the exported snapshot
  // lives as long as it stays idle). Returns the checkpoint Redis holds. Throws ConfigError when
  // Redis is behind the slot or the slot was dropped under a checkpoint.
  std::uint64_t prepare(PgConnection& repl);
  // The slot's confirmed_flush_lsn as PostgreSQL has it now.
  std::uint64_t confirmed_flush();

 private:
  struct SlotState {
    std::uint64_t confirmed = 0;  // confirmed_flush_lsn (0: none yet)
    std::string wal_status;       // '' when unknown
  };
  Keys keys() const { return Keys{config_.prefix, config_.slot, config_.redis_cluster}; }
  PgConnection& sql();
  void lock_setup();
  void unlock_setup();
  std::uint64_t prepare_locked(PgConnection& repl, SlotStore& store);
  std::optional<SlotState> slot_state();  // nullopt: no such slot
  void drop_slot();
  std::uint64_t create(PgConnection& repl, SlotStore& store, bool snapshot);
  std::uint64_t redo(PgConnection& repl, SlotStore& store);
  std::uint64_t verify(SlotStore& store, const std::optional<SlotStore::Checkpoint>& checkpoint,
                       const SlotState& slot);
  void copy(SlotStore& store, const std::string& snapshot_name, std::uint64_t consistent_point);

  const Config& config_;
  Catalog& catalog_;
  ChangeWriter& writer_;
  WaitUntil wait_until_;
  RunState& once_;
  std::optional<PgConnection> sql_;  // slot look-ups, opened on first use
};

}  // namespace walstream
