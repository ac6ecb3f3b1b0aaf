// The exactly-once accounting, pure: what each chunk covers, which position an answer from Redis
// releases, the replay filter, and where a full chunk is cut. No I/O: StreamWriter feeds it events.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stream_id.h"

namespace walstream {

class Ledger {
 public:
  using Handle = std::size_t;
  static constexpr Handle kNoStream = static_cast<Handle>(-1);  // a registry/checkpoint HSET, not an entry

  // --- the replay filter ---------------------------------------------------------------------------
  // IDs are <commit_lsn>-<seq>, so a stream's last ID can never be above the server's WAL position.
  void raise_wal_limit(std::uint64_t lsn) {
    if (lsn > wal_limit_) wal_limit_ = lsn;
  }
  std::uint64_t wal_limit() const { return wal_limit_; }
  Handle add_stream();
  bool hwm_known(Handle h) const { return streams_[h].known; }
  // Records a stream's last ID (XINFO's last-generated-id). False when walstream cannot have
  // written it (above the WAL position): the caller must stop, or it would skip real changes.
  bool set_hwm(Handle h, StreamId last);
  StreamId hwm(Handle h) const { return streams_[h].hwm; }
  // True: write it. False: it is at or below the stream's last ID, already stored (a replay).
  bool admit(Handle h, StreamId id);

  struct ReplayRun {
    std::uint64_t entries = 0;
    std::uint64_t first_lsn = 0, last_lsn = 0;  // commit LSNs of the first and last skipped entry
  };
  // The replays skipped since the last call, if any (for the log); with ended_only, only once an
  // entry was written after them (a run of replays is logged once, not per transaction).
  std::optional<ReplayRun> take_replays(bool ended_only = false);
  std::uint64_t replays_skipped() const { return replays_total_; }

  // --- the chunk being built --------------------------------------------------------------------------
  // A transaction begins; `offset` is where its first command would start in the chunk's bytes.
  void begin(std::size_t offset);
  // `bytes`: the command's size; entries (not registry or checkpoint writes) fill a chunk.
  // `fingerprint`: a hash of the entry's `lsn` field, to tell our own entry from a foreign one that
  // has the same ID.
  void command(Handle stream, StreamId id, std::size_t bytes = 0, std::uint32_t fingerprint = 0);
  // Every entry of the transaction ending at end_lsn has been added.
  void commit(std::uint64_t end_lsn);
  // A position with nothing to write (the WAL end a keepalive reports while nothing waits): it still
  // needs a checkpoint in Redis before it may be confirmed.
  void advance(std::uint64_t lsn);
  bool in_transaction() const { return in_txn_; }
  std::size_t building_commands() const { return building_.commands.size(); }
  // A chunk is full at this many entries or entry bytes: a transaction within both appears whole.
  bool full(std::size_t max_entries, std::size_t max_entry_bytes) const {
    return building_.entries >= max_entries || building_.entry_bytes >= max_entry_bytes;
  }

  struct Cut {
    std::size_t commands = 0;  // the first this many commands go
    std::size_t bytes = 0;     // …which end at this byte offset (0: all bytes)
    bool carry = false;        // the rest (the open transaction's start) opens the next chunk
  };
  // What leaves when the chunk is sent. At a transaction boundary: everything. Full in the middle of
  // a transaction that began inside this chunk after others: up to that transaction's start, so that
  // it appears whole in the next chunk. Full with only that transaction: all of it (a transaction
  // larger than a chunk streams through in pieces).
  Cut plan_cut() const;
  // The checkpoint the chunk being sent must carry (the end of the last transaction it completes, or
  // a newer position with nothing to write), or 0 when it completes none and nothing moved.
  std::uint64_t next_checkpoint() const;
  // The planned part (plus its checkpoint HSET, when one) is in flight now; the rest stays.
  void sent(const Cut& cut, std::uint64_t checkpoint);
  // A graceful stop: the open transaction's commands in the chunk being built are dropped (PostgreSQL
  // resends it whole). Returns the byte offset to keep, or nullopt when the chunk is kept as it is.
  std::optional<std::size_t> drop_open_transaction();

  // --- the chunk in flight --------------------------------------------------------------------------
  bool in_flight() const { return inflight_.has_value(); }
  // MULTI's reply, then one per queued command (+QUEUED, or an error while queueing).
  void queued(bool refused, std::string_view error);
  // Replies expected before EXEC's: MULTI + one per command.
  std::size_t queued_expected() const { return inflight_->commands.size() + 1; }
  std::size_t queued_seen() const { return inflight_->replies; }

  struct Outcome {
    enum class Kind { Stored, Transient, Fatal, Conflict } kind = Kind::Stored;
    std::string message;  // for Transient/Fatal; for Conflict, the error text
    Handle stream = kNoStream;  // Fatal/Conflict: where (the first refused command)
    StreamId id;                // …and which ID
    bool registry = false;      // Fatal: a registry/checkpoint write was refused
    // Conflict: every stream refused as "equal or smaller", with its first refused ID (the writer
    // tells an earlier connection's late write from a foreign one, stream by stream).
    struct Conflict {
      Handle stream;
      StreamId id;
      std::uint32_t fingerprint;
      bool operator==(const Conflict&) const = default;
    };
    std::vector<Conflict> conflicts;
  };
  // EXEC's reply: `exec_error` when EXEC itself failed (an error or nil), else one entry per command:
  // nullopt stored, else the error text. Stored: the chunk's checkpoint is in Redis.
  Outcome executed(std::optional<std::string_view> exec_error,
                   const std::vector<std::optional<std::string_view>>& results);
  // After a stored chunk, with --redis-wait: WAIT's count. True when enough replicas have it: the
  // chunk's checkpoint is released and the chunk leaves flight; false: WAIT again.
  bool waited(long long replicas, long long wanted);
  // --redis-wait without holding the pipeline: the stored chunk leaves flight at once (the next one
  // may go to the master) and its checkpoint is returned; it is confirmed only by replicated().
  std::uint64_t release_stored();
  // A WAIT counted enough replicas for everything written before it, up to this checkpoint.
  void replicated(std::uint64_t checkpoint) { acked_ = std::max(acked_, checkpoint); }

  // --- positions ---
  // Nothing is taken over from the checkpoint Redis holds at the start of a session: what it covers
  // is confirmed only by a checkpoint this session writes (and WAITs for), after PostgreSQL resent
  // it. A checkpoint applied by an EXEC whose entries partly failed, or not yet on a replica, is
  // therefore never confirmed on its word.
  // The end of the last transaction whose entries and checkpoint Redis stored (and replicated, with
  // --redis-wait): what may be confirmed to PostgreSQL.
  std::uint64_t acked() const { return acked_; }
  // The last checkpoint Redis stored (maybe not yet replicated).
  std::uint64_t stored() const { return stored_; }
  // A position waits for a checkpoint that no chunk will carry (nothing else to write).
  // The newest checkpoint sent in a chunk (0: none yet in this session).
  std::uint64_t checkpoint_sent() const { return checkpoint_sent_; }
  bool checkpoint_due() const { return pending_ > checkpoint_sent_ && building_.commands.empty() && !in_txn_; }
  std::uint64_t entries_written() const { return entries_written_; }

 private:
  struct StreamState {
    StreamId hwm;
    bool known = false;
  };
  struct Command {
    Handle stream;
    StreamId id;
    std::size_t bytes = 0;
    std::uint32_t fingerprint = 0;
  };
  struct Chunk {
    std::vector<Command> commands;
    std::size_t entries = 0, entry_bytes = 0;
    std::size_t txn_entries = 0, txn_entry_bytes = 0;  // of the open transaction, in this chunk
    std::uint64_t checkpoint = 0;
    // The open transaction's first command in this chunk, and its byte offset; npos: not in it.
    std::size_t txn_start = static_cast<std::size_t>(-1);
    std::size_t txn_offset = 0;
    // Replies so far (in flight).
    std::size_t replies = 0;
    std::string first_error;
    Handle first_error_stream = kNoStream;
    StreamId first_error_id;
    bool multi_refused = false;          // MULTI itself got an error: the commands ran one by one
    bool refused_outside_multi = false;  // …and one of them was refused
    bool hole = false;                   // …and a later one was stored after it
    bool stored = false;                 // EXEC succeeded; waiting for replicas
  };

  std::vector<StreamState> streams_;
  std::uint64_t wal_limit_ = 0;
  ReplayRun replays_;
  bool replays_ended_ = false;
  std::uint64_t replays_total_ = 0;

  Chunk building_;
  std::optional<Chunk> inflight_;
  bool in_txn_ = false;

  std::uint64_t pending_ = 0;          // newest position received (commit end, idle WAL end)
  std::uint64_t checkpoint_sent_ = 0;  // newest checkpoint sent in a chunk
  std::uint64_t stored_ = 0;
  std::uint64_t acked_ = 0;
  std::uint64_t entries_written_ = 0;
};

}  // namespace walstream
