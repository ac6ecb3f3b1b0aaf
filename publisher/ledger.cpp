#include "ledger.h"

#include <algorithm>

#include "redis_error.h"

namespace walstream {
namespace {

constexpr std::size_t kNone = static_cast<std::size_t>(-1);

}  // namespace

Ledger::Handle Ledger::add_stream() {
  streams_.push_back({});
  return streams_.size() - 1;
}

bool Ledger::set_hwm(Handle h, StreamId last) {
  streams_[h].hwm = last;
  streams_[h].known = true;
  return wal_limit_ == 0 || last.ms <= wal_limit_;
}

bool Ledger::admit(Handle h, StreamId id) {
  if (id > streams_[h].hwm) {
    if (replays_.entries > 0) replays_ended_ = true;
    return true;
  }
  // The server resends from confirmed_flush_lsn; entries at or below the stream's last ID are replays.
  if (replays_.entries++ == 0) replays_.first_lsn = id.ms;
  replays_.last_lsn = id.ms;
  ++replays_total_;
  return false;
}

std::optional<Ledger::ReplayRun> Ledger::take_replays(bool ended_only) {
  if (replays_.entries == 0 || (ended_only && !replays_ended_)) return std::nullopt;
  auto run = replays_;
  replays_ = {};
  replays_ended_ = false;
  return run;
}

void Ledger::begin(std::size_t offset) {
  in_txn_ = true;
  building_.txn_start = building_.commands.size();
  building_.txn_offset = building_.commands.empty() ? 0 : offset;
  building_.txn_entries = 0;
  building_.txn_entry_bytes = 0;
}

void Ledger::command(Handle stream, StreamId id, std::size_t bytes, std::uint32_t fingerprint) {
  building_.commands.push_back({stream, id, bytes, fingerprint});
  if (stream == kNoStream) return;
  ++building_.entries;
  building_.entry_bytes += bytes;
  if (in_txn_) {
    ++building_.txn_entries;
    building_.txn_entry_bytes += bytes;
  }
}

void Ledger::commit(std::uint64_t end_lsn) {
  in_txn_ = false;
  building_.txn_start = kNone;
  // With nothing in the chunk (all replays, no published table, or its last entries already in
  // flight) the position still needs a checkpoint before it may be confirmed.
  pending_ = std::max(pending_, end_lsn);
}

void Ledger::advance(std::uint64_t lsn) { pending_ = std::max(pending_, lsn); }

Ledger::Cut Ledger::plan_cut() const {
  const auto& b = building_;
  if (in_txn_ && b.txn_start != kNone && b.txn_start > 0 && b.txn_start < b.commands.size()) {
    return Cut{b.txn_start, b.txn_offset, true};
  }
  return Cut{b.commands.size(), 0, false};
}

std::uint64_t Ledger::next_checkpoint() const {
  // Every transaction completed so far is either in this part or already stored (one chunk in
  // flight at a time), so the newest completed position is safe to record; with a cut, the open
  // transaction (after every completed one) is not in this part.
  return pending_ > checkpoint_sent_ ? pending_ : 0;
}

void Ledger::sent(const Cut& cut, std::uint64_t checkpoint) {
  Chunk c;
  c.commands.assign(building_.commands.begin(), building_.commands.begin() + static_cast<std::ptrdiff_t>(cut.commands));
  if (checkpoint) c.commands.push_back({kNoStream, {}});
  c.checkpoint = checkpoint;
  checkpoint_sent_ = std::max(checkpoint_sent_, checkpoint);

  Chunk rest;
  rest.commands.assign(building_.commands.begin() + static_cast<std::ptrdiff_t>(cut.commands), building_.commands.end());
  // The carried transaction now opens the chunk; a transaction sent in pieces has its start behind.
  rest.txn_start = cut.carry ? 0 : kNone;
  if (cut.carry) {
    rest.entries = rest.txn_entries = building_.txn_entries;
    rest.entry_bytes = rest.txn_entry_bytes = building_.txn_entry_bytes;
  }
  building_ = std::move(rest);
  inflight_ = std::move(c);
}

std::optional<std::size_t> Ledger::drop_open_transaction() {
  if (!in_txn_) return std::nullopt;
  in_txn_ = false;
  std::size_t keep_bytes = 0;
  if (building_.txn_start != kNone) {
    building_.commands.resize(building_.txn_start);
    keep_bytes = building_.commands.empty() ? 0 : building_.txn_offset;
    building_.entries -= building_.txn_entries;
    building_.entry_bytes -= building_.txn_entry_bytes;
  } else {
    building_.commands.clear();  // all of it belongs to a transaction begun in an earlier chunk
    building_.entries = building_.entry_bytes = 0;
  }
  building_.txn_entries = building_.txn_entry_bytes = 0;
  building_.txn_start = kNone;
  return keep_bytes;
}

void Ledger::queued(bool refused, std::string_view error) {
  auto& c = *inflight_;
  std::size_t step = c.replies++;
  if (step == 0 && refused) c.multi_refused = true;
  if (step > 0 && c.multi_refused) {
    // Without MULTI the commands ran one by one. Stored-then-refused leaves a prefix, which the
    // replay filter handles; refused-then-stored leaves a hole it would step over.
    if (refused) {
      c.refused_outside_multi = true;
    } else if (c.refused_outside_multi) {
      c.hole = true;
    }
  }
  if (refused && c.first_error.empty()) {
    c.first_error = std::string(error);
    if (step > 0) {
      c.first_error_stream = c.commands[step - 1].stream;
      c.first_error_id = c.commands[step - 1].id;
    }
  }
}

Ledger::Outcome Ledger::executed(std::optional<std::string_view> exec_error,
                                 const std::vector<std::optional<std::string_view>>& results) {
  auto& c = *inflight_;
  Outcome out;
  auto fail = [&](std::string message, bool retryable_check) {
    out.kind = retryable_check && is_retryable_redis_error(message) ? Outcome::Kind::Transient : Outcome::Kind::Fatal;
    out.message = std::move(message);
    out.stream = c.first_error_stream;
    out.id = c.first_error_id;
    return out;
  };
  if (c.hole) {
    return fail("Redis refused MULTI (" + c.first_error +
                    ") and then stored some of the chunk's writes after refusing others: a stream may have a hole; "
                    "check the streams before restarting",
                false);
  }
  if (c.multi_refused && c.refused_outside_multi) return fail(c.first_error, true);
  if (!c.multi_refused) {
    if (exec_error) {
      std::string msg = c.first_error.empty() ? std::string(*exec_error) : c.first_error;
      // Refusals decided at EXEC time (OOM once the queued commands are in, READONLY after a
      // failover) arrive wrapped: classify what is inside.
      constexpr std::string_view wrapped = "EXECABORT Transaction discarded because of: ";
      if (msg.rfind(wrapped, 0) == 0) msg.erase(0, wrapped.size());
      return fail(msg, true);
    }
    if (results.size() != c.commands.size()) {
      out.kind = Outcome::Kind::Fatal;
      out.message = "unexpected reply to EXEC";
      return out;
    }
    // MULTI/EXEC does not roll back a command that fails as it runs: the others were applied. Look
    // at every refusal: one that is not a conflict is fatal; conflicts are listed per stream.
    bool refused = false;
    for (std::size_t i = 0; i < results.size(); ++i) {
      if (!results[i]) continue;
      const auto& cmd = c.commands[i];
      bool conflict = cmd.stream != kNoStream && results[i]->find("equal or smaller") != std::string_view::npos;
      if (!refused || (out.kind == Outcome::Kind::Conflict && !conflict)) {
        out.message = std::string(*results[i]);
        out.stream = cmd.stream;
        out.id = cmd.id;
        out.registry = cmd.stream == kNoStream;
        out.kind = conflict ? Outcome::Kind::Conflict : Outcome::Kind::Fatal;
      }
      refused = true;
      if (conflict) {
        bool listed = false;
        for (const auto& c : out.conflicts) listed = listed || c.stream == cmd.stream;
        if (!listed) out.conflicts.push_back({cmd.stream, cmd.id, cmd.fingerprint});
      }
    }
    if (refused) return out;
  }
  // Stored (atomically, or without MULTI one by one and every one of them).
  c.stored = true;
  for (const auto& cmd : c.commands) {
    if (cmd.stream != kNoStream) ++entries_written_;
  }
  stored_ = std::max(stored_, c.checkpoint);
  return out;
}

std::uint64_t Ledger::release_stored() {
  if (!inflight_ || !inflight_->stored) return 0;
  auto checkpoint = inflight_->checkpoint;
  inflight_.reset();
  return checkpoint;
}

bool Ledger::waited(long long replicas, long long wanted) {
  if (!inflight_ || !inflight_->stored || replicas < wanted) return false;
  acked_ = std::max(acked_, inflight_->checkpoint);
  inflight_.reset();
  return true;
}

}  // namespace walstream
