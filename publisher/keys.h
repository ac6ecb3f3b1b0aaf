// Every Redis key walstream owns, named in one place: streams, schema registry, snapshot state and
// staging, checkpoints. `qualified` is a table's unambiguous qualified name (schema/).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cluster_slots.h"

namespace walstream {

// SCAN's MATCH is a glob: the prefix's own *?[]\ must match only themselves (every stream under a
// prefix: glob_escape(prefix) + "*").
inline std::string glob_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// On one Redis (and behind Sentinel) the names are the ones walstream always used. On a Redis Cluster
// (`cluster`) what must share a MULTI/EXEC or a RENAME with a stream carries the stream's hash tag
// (group_tag), and what belongs to the slot as a whole carries `{<prefix><slot>}` (slot_tag): a
// stream's registry, staging stream, checkpoint and epoch are in the stream's hash slot; the snapshot
// state, its staging set, the backfill state, the slot's main checkpoint and epoch, and the list of
// groups are in the replication slot's. Stream keys themselves never change: subscribers read
// `walstream:public.users` on a cluster too. Names a key cannot be tagged with (a '}' without a
// valid tag) throw std::invalid_argument on a cluster (hash_tag_for).
struct Keys {
  std::string prefix;    // default "walstream:"
  std::string slot;      // the replication slot whose position these keys record
  bool cluster = false;  // a Redis Cluster: companions carry their stream's hash tag

  // The stream subscribers read: <prefix><schema>.<table>.
  std::string stream(std::string_view qualified) const { return prefix + std::string(qualified); }
  // Schema registry hash: field = version id, value = the version's JSON.
  std::string registry(std::string_view qualified) const { return prefix + "schema:" + companion(qualified); }
  // Where the initial snapshot copies a table before it is published onto stream() (RENAME on a
  // cluster needs both in one slot).
  std::string staging(std::string_view qualified) const { return prefix + "staging:" + companion(qualified); }
  std::string staging_prefix() const { return prefix + "staging:"; }
  // The stream a staging key is published onto, or nullopt for a key that staging() does not make.
  std::optional<std::string> stream_of_staging(std::string_view staging_key) const {
    auto marker = staging_prefix();
    if (staging_key.substr(0, marker.size()) != marker) return std::nullopt;
    auto rest = staging_key.substr(marker.size());
    if (!cluster) return stream(rest);
    // group_tag's two forms: "{<stream>}" (no '}' inside), or "{tag}<stream>".
    auto close = rest.find('}');
    if (rest.empty() || rest.front() != '{' || close == std::string_view::npos) return std::nullopt;
    if (close + 1 == rest.size()) return std::string(rest.substr(1, close - 1));
    return std::string(rest.substr(close + 1));
  }
  // Snapshot state hash (status, consistent_point) and the set of its staging streams.
  std::string snapshot_state() const { return prefix + "snapshot:" + slot_part(); }
  std::string staging_set() const { return snapshot_state() + ":staging"; }
  // Logical messages (pg_logical_emit_message) of one message prefix.
  std::string messages(std::string_view message_prefix) const {
    return prefix + "messages:" + std::string(message_prefix);
  }
  // Domain events of one aggregate type, from outbox tables; `_invalid` for rows that are not events.
  std::string events(std::string_view aggregate_type) const {
    return prefix + "events:" + std::string(aggregate_type);
  }
  // One marker entry per committed transaction that published anything (--transactions).
  std::string transactions() const { return prefix + "transactions"; }
  // The active instance's epoch (INCR when it takes the slot); every chunk checks it (fencing).
  std::string epoch() const { return prefix + "epoch:" + slot_part(); }
  // Checkpoint hash: `lsn` = end of the last transaction stored, written in the same MULTI/EXEC as
  // the entries it covers. On a single Redis the only one; on a cluster the slot's main checkpoint
  // (its snapshot and creation state), beside one per group (group_checkpoint).
  std::string checkpoint() const { return prefix + "checkpoint:" + slot_part(); }
  // Backfill state (cdc/replication/backfill.h): the request being served, where it is, and the queue;
  // written in the same MULTI/EXEC as the rows it accounts for.
  std::string backfill() const { return prefix + "backfill:" + slot_part(); }

  // --- a cluster's groups: a stream and what must be atomic with it, in the stream's hash slot ---
  // "{<stream key>}", or when the stream key has a tag of its own "{tag}<stream key>" (the tag alone
  // would name every stream of a tagged prefix alike). Unique per stream; in the stream's slot.
  static std::string group_tag(std::string_view stream_key) {
    auto tag = hash_tag_for(stream_key);
    if (hash_tag(stream_key)) tag += stream_key;
    return tag;
  }
  // "{<prefix><slot>}" (the prefix's own tag when it has one): the slot-wide keys' slot.
  std::string slot_tag() const { return group_tag(prefix + slot); }
  // The checkpoint and epoch of the group of `stream_key` (a stream's full key).
  std::string group_checkpoint(std::string_view stream_key) const {
    return prefix + "checkpoint:" + slot + ":" + group_tag(stream_key);
  }
  std::string group_epoch(std::string_view stream_key) const {
    return prefix + "epoch:" + slot + ":" + group_tag(stream_key);
  }
  // Set of the stream keys whose groups hold a checkpoint of this slot (checked at every start).
  std::string groups() const { return prefix + "groups:" + slot_tag(); }

 private:
  // A stream's companion names it by its qualified table name on one Redis, by its group tag on a
  // cluster.
  std::string companion(std::string_view qualified) const {
    return cluster ? group_tag(stream(qualified)) : std::string(qualified);
  }
  std::string slot_part() const { return cluster ? slot_tag() : slot; }
};

}  // namespace walstream
