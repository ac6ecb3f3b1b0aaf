// Every Redis key walstream owns, named in one place: streams, schema registry, snapshot state and
// staging, checkpoints. `qualified` is a table's unambiguous qualified name (schema/).
#pragma once

#include <string>
#include <string_view>

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

struct Keys {
  std::string prefix;  // default "walstream:"
  std::string slot;    // the replication slot whose position these keys record

  // The stream subscribers read: <prefix><schema>.<table>.
  std::string stream(std::string_view qualified) const { return prefix + std::string(qualified); }
  // Schema registry hash: field = version id, value = the version's JSON.
  std::string registry(std::string_view qualified) const { return prefix + "schema:" + std::string(qualified); }
  // Where the initial snapshot copies a table before it is published onto stream().
  std::string staging(std::string_view qualified) const { return prefix + "staging:" + std::string(qualified); }
  std::string staging_prefix() const { return prefix + "staging:"; }
  // Snapshot state hash (status, consistent_point) and the set of its staging streams.
  std::string snapshot_state() const { return prefix + "snapshot:" + slot; }
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
  std::string epoch() const { return prefix + "epoch:" + slot; }
  // Checkpoint hash: `lsn` = end of the last transaction stored, written in the same MULTI/EXEC as
  // the entries it covers. On a single Redis one key; see docs/design.md for the cluster layout.
  std::string checkpoint() const { return prefix + "checkpoint:" + slot; }
  // Backfill state (cdc/replication/backfill.h): the request being served, where it is, and the queue;
  // written in the same MULTI/EXEC as the rows it accounts for.
  std::string backfill() const { return prefix + "backfill:" + slot; }
};

}  // namespace walstream
