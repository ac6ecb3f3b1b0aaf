#include "slot_store.h"

#include <fmt/format.h>

namespace walstream {

SlotStore::SlotStore(const RedisUrl& url, Keys keys) : redis_(connect_redis(url)), keys_(std::move(keys)) {
  keys_.cluster = redis_->is_cluster();
}

void SlotStore::check_eviction_policy() {
  // Every master of a cluster: each holds some of the streams and checkpoints.
  for (const auto& master : redis_->masters()) {
    auto r = redis_->command_on(master, {"CONFIG", "GET", "maxmemory-policy"});
    if (r.is_error() || !r.is_array()) continue;
    auto values = r.strings();
    if (values.size() == 2 && values[1].rfind("allkeys-", 0) == 0) {
      auto who = redis_->is_cluster() ? fmt::format("Redis at {}:{}", master.host, master.port) : std::string("Redis");
      throw RedisError(RedisError::Kind::Fatal,
                       fmt::format("{} has maxmemory-policy {}: it may evict walstream's streams and checkpoint "
                                   "without a word when memory runs out; set maxmemory-policy noeviction (walstream "
                                   "then waits and retries while Redis refuses writes for lack of memory)",
                                   who, values[1]));
    }
  }
}

std::optional<SlotStore::Checkpoint> SlotStore::checkpoint() {
  const auto key = keys_.checkpoint();
  auto fields = redis_->checked(key, {"HMGET", key, "lsn", "creating"}).optional_strings();
  fields.resize(2);
  const auto& lsn = fields[0];
  const auto& creating = fields[1];
  if (!lsn && !creating) return std::nullopt;
  Checkpoint c;
  c.creating = creating.has_value();
  if (lsn) {
    c.lsn = parse_lsn_text(*lsn);
    if (!c.lsn) {
      throw RedisError(RedisError::Kind::Fatal,
                       fmt::format("{} field lsn holds '{}', not an LSN: it was not written by walstream",
                                   keys_.checkpoint(), *lsn));
    }
  }
  return c;
}

void SlotStore::set_checkpoint(std::uint64_t lsn) {
  redis_->transaction(keys_.checkpoint(), {{"HSET", keys_.checkpoint(), "lsn", format_lsn_text(lsn)},
                                           {"HDEL", keys_.checkpoint(), "creating"}});
}

void SlotStore::mark_creating() { redis_->checked(keys_.checkpoint(), {"HSET", keys_.checkpoint(), "creating", "1"}); }

void SlotStore::forget_checkpoint() {
  // On a cluster the groups' checkpoints go too: a new slot starts above them, and they would be
  // taken for shards that lost data.
  if (keys_.cluster) {
    for (const auto& stream : redis_->checked(keys_.groups(), {"SMEMBERS", keys_.groups()}).strings()) {
      const auto key = keys_.group_checkpoint(stream);
      redis_->checked(key, {"DEL", key});
    }
    redis_->checked(keys_.groups(), {"DEL", keys_.groups()});
  }
  redis_->checked(keys_.checkpoint(), {"DEL", keys_.checkpoint()});
}

std::string SlotStore::snapshot_status() {
  auto r = redis_->checked(keys_.snapshot_state(), {"HGET", keys_.snapshot_state(), "status"});
  return r.is_nil() ? "" : std::string(r.str());
}

void SlotStore::set_snapshot_status(const std::string& status, const std::string& consistent_point) {
  const auto key = keys_.snapshot_state();
  if (consistent_point.empty()) {
    redis_->checked(key, {"HSET", key, "status", status});
  } else {
    redis_->checked(key, {"HSET", key, "status", status, "consistent_point", consistent_point});
  }
}

void SlotStore::finish_snapshot(std::uint64_t consistent_point) {
  // On a cluster both keys carry the slot's tag (keys.h): one hash slot, one MULTI/EXEC.
  redis_->transaction(keys_.checkpoint(), {{"HSET", keys_.snapshot_state(), "status", "done"},
                                           {"HSET", keys_.checkpoint(), "lsn", format_lsn_text(consistent_point)},
                                           {"HDEL", keys_.checkpoint(), "creating"}});
}

void SlotStore::forget_snapshot() { redis_->checked(keys_.snapshot_state(), {"DEL", keys_.snapshot_state()}); }

std::string SlotStore::open_staging(const std::string& qualified) {
  auto staging = keys_.staging(qualified);
  redis_->checked(staging, {"DEL", staging});
  redis_->checked(keys_.staging_set(), {"SADD", keys_.staging_set(), staging});
  return staging;
}

void SlotStore::discard_staging() {
  for (const auto& staging : redis_->checked(keys_.staging_set(), {"SMEMBERS", keys_.staging_set()}).strings()) {
    redis_->checked(staging, {"DEL", staging});
  }
  redis_->checked(keys_.staging_set(), {"DEL", keys_.staging_set()});
}

std::size_t SlotStore::publish_staging(ChangeWriter& writer, const WaitUntil& wait_until) {
  auto stagings = redis_->checked(keys_.staging_set(), {"SMEMBERS", keys_.staging_set()}).strings();
  for (const auto& staging : stagings) {
    auto named = keys_.stream_of_staging(staging);
    if (!named) {
      throw RedisError(RedisError::Kind::Fatal,
                       fmt::format("{} lists '{}', which is not a staging stream of prefix '{}'", keys_.staging_set(),
                                   staging, keys_.prefix));
    }
    const std::string& target = *named;
    if (redis_->checked(staging, {"EXISTS", staging}).integer() == 0) continue;  // published before a crash
    if (redis_->checked(target, {"EXISTS", target}).integer() == 0) {
      // The usual case, a new stream: subscribers see the whole table appear at once. (On a cluster
      // the staging key carries the stream's tag: one slot, as RENAME requires.)
      redis_->checked(staging, {"RENAME", staging, target});
      continue;
    }
    // The stream holds entries of an earlier slot: append after them, resuming by high-water mark.
    auto stream = writer.stream(target);
    ensure_hwm(writer, stream, wait_until);
    std::string start = "-";
    for (;;) {
      auto batch = redis_->checked(staging, {"XRANGE", staging, start, "+", "COUNT", "1000"}).entries();
      if (batch.empty()) break;
      std::vector<std::pair<std::string_view, std::string_view>> fields;
      for (const auto& entry : batch) {
        fields.assign(entry.fields.begin(), entry.fields.end());
        auto id = parse_stream_id(entry.id);
        if (!id) throw RedisError(RedisError::Kind::Fatal, fmt::format("bad entry ID {} in {}", entry.id, staging));
        writer.add_entry(stream, *id, fields);
        send_if_full(writer, wait_until);
        start = "(" + entry.id;
      }
      drain(writer, wait_until);
    }
    redis_->checked(staging, {"DEL", staging});
  }
  redis_->checked(keys_.staging_set(), {"DEL", keys_.staging_set()});
  return stagings.size();
}

}  // namespace walstream
