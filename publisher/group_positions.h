// A Redis Cluster's writer keeps one checkpoint per group (a stream and its companions, keys.h): the
// accounting across groups, pure. Which position PostgreSQL may be told (the minimum over groups of
// what each holds), and whether the groups a slot listed in Redis still hold what PostgreSQL
// confirmed (the start-up check). No I/O; ClusterWriter feeds it (docs/design.md, "Redis Cluster").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace walstream {

class GroupPositions {
 public:
  // A group joins at `floor`: the end of the last transaction handed to the writer before it. Every
  // transaction up to there left it untouched in this session (it would have joined earlier), and
  // what came before the session is covered by the checkpoint it joined with; so it holds everything
  // up to `floor` before it stored anything. Joining twice keeps the first floor.
  void join(const std::string& group, std::uint64_t floor);
  // The group's writer acknowledged (stored, and replicated with --redis-wait) a checkpoint at `lsn`.
  // A position below what was acknowledged already changes nothing. Throws std::logic_error for a
  // group that never joined: its position would otherwise be confirmed on no one's word.
  void acked(const std::string& group, std::uint64_t lsn);
  // What every group holds: the minimum over groups of max(floor, acknowledged); nullopt before any
  // group joined (the caller keeps the slot's own position then).
  std::optional<std::uint64_t> confirmable() const;
  // The group holding the minimum back, for logs ("" without groups).
  std::string slowest() const;
  std::size_t size() const { return groups_.size(); }

 private:
  struct Position {
    std::uint64_t floor = 0;
    std::uint64_t acked = 0;
    std::uint64_t held() const { return floor > acked ? floor : acked; }
  };
  std::unordered_map<std::string, Position> groups_;
};

// One group the slot listed (keys.h: Keys::groups), with its checkpoint as Redis holds it (nullopt:
// the checkpoint key or its `lsn` field is gone).
struct ListedGroup {
  std::string stream;  // the group's stream key
  std::optional<std::uint64_t> checkpoint;
};

// The start-up check on a cluster: every listed group must hold what PostgreSQL confirmed. Returns the
// one line to stop with (naming the first group that does not, the range it lacks and --resnapshot),
// or nullopt when all do. `confirmed` is the slot's confirmed_flush_lsn, read before the checkpoints.
std::optional<std::string> judge_groups(const std::string& slot, std::uint64_t confirmed,
                                        const std::vector<ListedGroup>& listed);

}  // namespace walstream
