#include "cluster_writer.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "stream_id.h"

namespace walstream {

ClusterWriter::ClusterWriter(StreamWriter::Options writer, Keys keys)
    : options_(std::move(writer)), keys_(std::move(keys)), redis_(options_.url) {
  keys_.cluster = true;
  const auto tag = keys_.slot_tag();
  groups_.push_back(Group{tag, "", open(tag, keys_.checkpoint())});
  by_tag_.emplace(tag, 0);
  // The slot's own group sees every commit from the start: nothing of this session is held below 0.
  positions_.join(tag, 0);
}

ClusterWriter::~ClusterWriter() = default;

std::unique_ptr<StreamWriter> ClusterWriter::open(std::string_view key, std::string checkpoint_key) {
  auto master = redis_.slots().master_of_key(key);
  if (!master) {
    redis_.refresh();
    master = redis_.slots().master_of_key(key);
  }
  if (!master) {
    throw RedisError(RedisError::Kind::Transient, fmt::format("Redis Cluster: no master serves the slot of '{}'", key));
  }
  auto o = options_;
  o.url = options_.url.at(*master);
  o.cluster_node = true;
  o.checkpoint_key = std::move(checkpoint_key);
  auto w = std::make_unique<StreamWriter>(std::move(o));
  w->raise_wal_limit(wal_limit_);
  return w;
}

// In this order, each step blocking: a checkpoint for a group the slot never wrote to (it holds
// everything up to the confirmed position: nothing of it was ever confirmed unwritten), the group
// listed, its epoch raised to this instance's and the main epoch read back. A crash between the first
// two leaves an unlisted checkpoint (harmless); listed first, a crash would leave a listed group
// without one, taken for a lost shard at the next start. A predecessor that lists a group after this
// instance read the list finds the main epoch moved here.
std::size_t ClusterWriter::join(const std::string& stream, bool listed) {
  const auto tag = Keys::group_tag(stream);
  const auto checkpoint = keys_.group_checkpoint(stream);
  // Before the start-up check (the snapshot, publishing staging streams) a group may be listed
  // without having joined yet: its checkpoint is what the check must judge, never overwritten.
  if (!listed) listed = redis_.checked(keys_.groups(), {"SISMEMBER", keys_.groups(), stream}).integer() == 1;
  if (!listed) {
    redis_.checked(checkpoint, {"HSET", checkpoint, "lsn", format_lsn_text(confirmed_)});
    redis_.checked(keys_.groups(), {"SADD", keys_.groups(), stream});
    fresh_.insert(tag);
  }
  auto w = open(stream, checkpoint);
  if (!epoch_key_.empty()) {
    const auto epoch_key = keys_.group_epoch(stream);
    redis_.checked(epoch_key, {"SET", epoch_key, std::to_string(epoch_)});
    auto now = redis_.checked(epoch_key_, {"GET", epoch_key_});
    if (now.is_nil() || now.str() != std::to_string(epoch_)) {
      throw RedisError(RedisError::Kind::Fenced,
                       fmt::format("fenced: the epoch moved from {} while stream {} joined: another walstream took "
                                   "the slot over; writing nothing more",
                                   epoch_, stream));
    }
    w->fence(epoch_key, epoch_);
  }
  if (in_txn_) w->begin_transaction();
  // Every transaction handed over before it left it untouched (it would have joined then).
  positions_.join(tag, handed_);
  groups_.push_back(Group{tag, stream, std::move(w)});
  by_tag_.emplace(tag, groups_.size() - 1);
  return groups_.size() - 1;
}

std::size_t ClusterWriter::group_of_stream(const std::string& stream) {
  auto target = keys_.stream_of_staging(stream);
  const std::string& owner = target ? *target : stream;
  auto tag = Keys::group_tag(owner);
  if (auto it = by_tag_.find(tag); it != by_tag_.end()) return it->second;
  return join(owner, false);
}

void ClusterWriter::check_groups(std::uint64_t confirmed) {
  confirmed_ = confirmed;
  auto listed = redis_.checked(keys_.groups(), {"SMEMBERS", keys_.groups()}).strings();
  std::sort(listed.begin(), listed.end());
  std::vector<ListedGroup> found;
  for (const auto& stream : listed) {
    const auto checkpoint = keys_.group_checkpoint(stream);
    auto r = redis_.checked(checkpoint, {"HGET", checkpoint, "lsn"});
    ListedGroup g{stream, std::nullopt};
    if (!r.is_nil()) {
      g.checkpoint = parse_lsn_text(r.str());
      if (!g.checkpoint) {
        throw RedisError(RedisError::Kind::Fatal, fmt::format("{} field lsn holds '{}', not an LSN: it was not "
                                                              "written by walstream",
                                                              checkpoint, r.str()));
      }
    }
    found.push_back(std::move(g));
  }
  // Groups that joined in this session (the snapshot's, before the slot's position was known) were
  // unlisted then: they hold everything up to the position vacuously, and say so now, so that a crash
  // before their first checkpoint is not taken for a lost shard. Nothing is in flight: the snapshot
  // drained.
  std::erase_if(found, [&](const ListedGroup& g) {
    if (!fresh_.contains(Keys::group_tag(g.stream))) return false;
    if (!g.checkpoint || *g.checkpoint < confirmed) {
      const auto checkpoint = keys_.group_checkpoint(g.stream);
      redis_.checked(checkpoint, {"HSET", checkpoint, "lsn", format_lsn_text(confirmed)});
    }
    return true;
  });
  if (auto line = judge_groups(keys_.slot, confirmed, found)) throw RedisError(RedisError::Kind::Fatal, *line);
  for (const auto& stream : listed) {
    if (!by_tag_.contains(Keys::group_tag(stream))) join(stream, true);
  }
}

std::vector<RedisEndpoint> ClusterWriter::nodes() const {
  auto out = redis_.slots().masters();
  for (const auto& r : redis_.slots().ranges()) {
    for (const auto& n : r.replicas) {
      if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
    }
  }
  return out;
}

void ClusterWriter::poll_fds(std::vector<pollfd>& fds) const {
  for (const auto& g : groups_) g.writer->poll_fds(fds);
}

void ClusterWriter::on_poll(const pollfd* fds, std::size_t n) {
  // One socket per group, in the order poll_fds gave them (groups joined meanwhile come last).
  for (std::size_t i = 0; i < groups_.size() && i < n; ++i) groups_[i].writer->on_poll(fds + i, 1);
}

void ClusterWriter::service() {
  for (auto& g : groups_) g.writer->service();
}

std::string ClusterWriter::display() const { return redis_.describe(); }

RedisEndpoint ClusterWriter::master() const {
  throw std::logic_error("ClusterWriter::master: a Redis Cluster has a master per shard");
}

void ClusterWriter::raise_wal_limit(std::uint64_t lsn) {
  wal_limit_ = std::max(wal_limit_, lsn);
  for (auto& g : groups_) g.writer->raise_wal_limit(lsn);
}

ChangeWriter::Handle ClusterWriter::stream(std::string_view key) {
  std::string k(key);
  if (auto it = handle_index_.find(k); it != handle_index_.end()) return it->second;
  auto g = group_of_stream(k);
  Handle h = handles_.size();
  handles_.push_back(Ref{g, groups_[g].writer->stream(key)});
  handle_index_.emplace(std::move(k), h);
  return h;
}

void ClusterWriter::begin_transaction() {
  in_txn_ = true;
  for (auto& g : groups_) g.writer->begin_transaction();
}

// A companion goes with its stream's group: the registry and staging keys carry the group's tag after
// their kind (keys.h), the slot-wide keys are the slot's group's.
void ClusterWriter::add_hset(std::string_view key, std::string_view field, std::string_view value) {
  std::size_t g = 0;
  const auto registry = keys_.prefix + "schema:";
  if (key == keys_.snapshot_state() || key == keys_.backfill() || key == keys_.checkpoint()) {
    g = 0;
  } else if (key.substr(0, registry.size()) == registry) {
    auto it = by_tag_.find(std::string(key.substr(registry.size())));
    if (it == by_tag_.end()) {
      throw std::logic_error(fmt::format("ClusterWriter: registry write {} before its stream", key));
    }
    g = it->second;
  } else {
    throw std::logic_error(fmt::format("ClusterWriter: no group for the hash {}", key));
  }
  if (g == 0 && in_txn_ && key != keys_.checkpoint()) slot_state_pending_ = true;
  groups_[g].writer->add_hset(key, field, value);
}

void ClusterWriter::mark_commit(std::uint64_t end_lsn) {
  for (std::size_t i = 1; i < groups_.size(); ++i) groups_[i].writer->mark_commit(end_lsn);
  if (slot_state_pending_) {
    if (!wait_until_) throw std::logic_error("ClusterWriter: slot-wide state written without a way to wait");
    // Every other group stores the transaction (its entries and a checkpoint at its end) first.
    auto others_hold = [&] {
      for (std::size_t i = 1; i < groups_.size(); ++i) {
        auto& w = *groups_[i].writer;
        if (w.acked_lsn() >= end_lsn) continue;
        if (!w.in_flight() && (!w.chunk_empty() || w.checkpoint_due())) w.send_chunk();
        return false;
      }
      return true;
    };
    wait_until_(others_hold);
    slot_state_pending_ = false;
  }
  groups_[0].writer->mark_commit(end_lsn);
  in_txn_ = false;
  handed_ = std::max(handed_, end_lsn);
}

void ClusterWriter::mark_idle(std::uint64_t lsn) {
  for (auto& g : groups_) g.writer->mark_idle(lsn);
  handed_ = std::max(handed_, lsn);
}

void ClusterWriter::drop_open_transaction() {
  for (auto& g : groups_) g.writer->drop_open_transaction();
  in_txn_ = false;
  slot_state_pending_ = false;
}

bool ClusterWriter::chunk_empty() const {
  return std::all_of(groups_.begin(), groups_.end(), [](const Group& g) { return g.writer->chunk_empty(); });
}
bool ClusterWriter::chunk_full() const {
  return std::any_of(groups_.begin(), groups_.end(), [](const Group& g) { return g.writer->chunk_full(); });
}
bool ClusterWriter::in_flight() const {
  return std::any_of(groups_.begin(), groups_.end(), [](const Group& g) { return g.writer->in_flight(); });
}
bool ClusterWriter::waits_pending() const {
  return std::any_of(groups_.begin(), groups_.end(), [](const Group& g) { return g.writer->waits_pending(); });
}
bool ClusterWriter::checkpoint_due() const {
  return std::any_of(groups_.begin(), groups_.end(), [](const Group& g) { return g.writer->checkpoint_due(); });
}

// The session took the slot (its INCR of the main epoch): every group this slot lists gets that epoch
// before anything more is written, so a paused predecessor's late chunk to any group is refused.
void ClusterWriter::fence(std::string key, std::uint64_t epoch) {
  epoch_key_ = std::move(key);
  epoch_ = epoch;
  groups_[0].writer->fence(epoch_key_, epoch);
  for (const auto& stream : redis_.checked(keys_.groups(), {"SMEMBERS", keys_.groups()}).strings()) {
    const auto epoch_key = keys_.group_epoch(stream);
    redis_.checked(epoch_key, {"SET", epoch_key, std::to_string(epoch)});
  }
  for (std::size_t i = 1; i < groups_.size(); ++i) {
    const auto epoch_key = keys_.group_epoch(groups_[i].stream);
    redis_.checked(epoch_key, {"SET", epoch_key, std::to_string(epoch)});
    groups_[i].writer->fence(epoch_key, epoch);
  }
}

void ClusterWriter::send_chunk() {
  for (std::size_t i = 0; i < groups_.size(); ++i) {
    if (i == 0 && slot_state_pending_) continue;  // held until the commit (mark_commit)
    auto& w = *groups_[i].writer;
    if (!w.in_flight() && (!w.chunk_empty() || w.checkpoint_due())) w.send_chunk();
  }
}

std::uint64_t ClusterWriter::acked_lsn() const {
  for (const auto& g : groups_) positions_.acked(g.tag, g.writer->acked_lsn());
  return positions_.confirmable().value_or(0);
}

std::uint64_t ClusterWriter::entries_written() const {
  std::uint64_t n = 0;
  for (const auto& g : groups_) n += g.writer->entries_written();
  return n;
}

std::uint64_t ClusterWriter::replays_skipped() const {
  std::uint64_t n = 0;
  for (const auto& g : groups_) n += g.writer->replays_skipped();
  return n;
}

std::optional<Ledger::ReplayRun> ClusterWriter::take_replays(bool ended_only) {
  std::optional<Ledger::ReplayRun> out;
  for (auto& g : groups_) {
    auto r = g.writer->take_replays(ended_only);
    if (!r) continue;
    if (!out) {
      out = r;
      continue;
    }
    out->entries += r->entries;
    out->first_lsn = std::min(out->first_lsn, r->first_lsn);
    out->last_lsn = std::max(out->last_lsn, r->last_lsn);
  }
  return out;
}

std::optional<long long> ClusterWriter::take_wait_shortfall() {
  std::optional<long long> out;
  for (auto& g : groups_) {
    auto r = g.writer->take_wait_shortfall();
    if (r && (!out || *r < *out)) out = r;
  }
  return out;
}

std::uint64_t ClusterWriter::wait_shortfalls() const {
  std::uint64_t n = 0;
  for (const auto& g : groups_) n += g.writer->wait_shortfalls();
  return n;
}

}  // namespace walstream
