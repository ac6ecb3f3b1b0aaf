// The writer on a Redis Cluster: one StreamWriter per group (a stream and what must be atomic with it,
// keys.h) on a connection to the master serving the group's slot, plus one for the slot's own group
// (the main checkpoint, snapshot and backfill state). Every transaction's commit goes to every group,
// so each group's checkpoint covers every transaction up to it; PostgreSQL is told the minimum over
// groups (GroupPositions). A transaction is atomic per stream (one MULTI/EXEC per group), not across
// tables: CROSSSLOT forbids it. A MOVED or ASK in a chunk ends the session (transient): the next one
// reads the slot map again. docs/design.md, "Redis Cluster".
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "change_writer.h"
#include "cluster_client.h"
#include "group_positions.h"
#include "keys.h"
#include "stream_writer.h"

namespace walstream {

class ClusterWriter final : public ChangeWriter {
 public:
  // `writer`: the options every group's StreamWriter gets (its url the cluster's seeds; checkpoint_key
  // is each group's own). `keys` in the cluster layout. Connects to the slot's group's master.
  ClusterWriter(StreamWriter::Options writer, Keys keys);
  ~ClusterWriter() override;

  // How to wait for Redis (the session's loop): a transaction that writes slot-wide state waits at its
  // commit until every other group stored it (below).
  void set_wait_until(std::function<void(const std::function<bool()>&)> wait_until) {
    wait_until_ = std::move(wait_until);
  }
  // The start-up check (after the main one): every group the slot lists must hold what PostgreSQL
  // confirmed, else RedisError (fatal) with one line. Then every listed group joins, so that its
  // checkpoint follows the slot's position from now on; a group this slot never wrote to joins later
  // with its checkpoint at `confirmed`.
  void check_groups(std::uint64_t confirmed);
  std::size_t groups() const { return groups_.size(); }
  // Every node of the slot map as last read (masters, then replicas), for the next session's seeds.
  std::vector<RedisEndpoint> nodes() const;

  void poll_fds(std::vector<pollfd>& fds) const override;
  void on_poll(const pollfd* fds, std::size_t n) override;
  void service() override;
  std::string display() const override;
  RedisEndpoint master() const override;

  void raise_wal_limit(std::uint64_t lsn) override;
  Handle stream(std::string_view key) override;
  bool hwm_known(Handle h) const override { return writer(h).hwm_known(handles_[h].inner); }
  const std::string& key(Handle h) const override { return writer(h).key(handles_[h].inner); }
  void request_hwm(Handle h) override { writer(h).request_hwm(handles_[h].inner); }
  void begin_transaction() override;
  bool add_entry(Handle h, StreamId id, Fields fields) override {
    return writer(h).add_entry(handles_[h].inner, id, fields);
  }
  void add_hset(std::string_view key, std::string_view field, std::string_view value) override;
  void mark_commit(std::uint64_t end_lsn) override;
  void mark_idle(std::uint64_t lsn) override;
  void drop_open_transaction() override;

  bool chunk_empty() const override;
  bool chunk_full() const override;
  bool in_flight() const override;
  bool waits_pending() const override;
  void fence(std::string key, std::uint64_t epoch) override;
  bool checkpoint_due() const override;
  void send_chunk() override;

  std::uint64_t acked_lsn() const override;
  std::uint64_t entries_written() const override;
  std::uint64_t replays_skipped() const override;
  std::optional<Ledger::ReplayRun> take_replays(bool ended_only = false) override;
  std::optional<long long> take_wait_shortfall() override;
  std::uint64_t wait_shortfalls() const override;

 private:
  struct Group {
    std::string tag;     // Keys::group_tag of its stream (the slot's group: Keys::slot_tag)
    std::string stream;  // its stream key ("" for the slot's group)
    std::unique_ptr<StreamWriter> writer;
  };
  struct Ref {
    std::size_t group;
    Handle inner;
  };
  StreamWriter& writer(Handle h) const { return *groups_[handles_[h].group].writer; }
  // The group a stream key belongs to (a staging stream: its table's), joined when new.
  std::size_t group_of_stream(const std::string& stream);
  std::size_t join(const std::string& stream, bool listed);
  std::unique_ptr<StreamWriter> open(std::string_view key, std::string checkpoint_key);

  StreamWriter::Options options_;
  Keys keys_;
  ClusterClient redis_;  // the slot map, and the blocking writes of a group joining
  std::vector<Group> groups_;  // [0]: the slot's own
  std::unordered_map<std::string, std::size_t> by_tag_;
  std::unordered_set<std::string> fresh_;  // groups unlisted when they joined in this session
  std::vector<Ref> handles_;
  std::unordered_map<std::string, Handle> handle_index_;
  mutable GroupPositions positions_;
  std::uint64_t confirmed_ = 0;
  std::uint64_t wal_limit_ = 0;
  std::uint64_t handed_ = 0;  // the newest position handed to every group (commit end, idle WAL end)
  bool in_txn_ = false;
  // The open transaction wrote slot-wide state (the backfill's, the snapshot's) into the slot's group.
  // That state says what the other groups hold (a backfill's `after`: these rows are stored), so it
  // must never be stored before them: the slot's group holds its chunk until the commit, and the commit
  // waits until every other group stored (and replicated) the transaction.
  bool slot_state_pending_ = false;
  std::function<void(const std::function<bool()>&)> wait_until_;
  std::string epoch_key_;  // the main epoch (empty: not fenced yet)
  std::uint64_t epoch_ = 0;
};

}  // namespace walstream
