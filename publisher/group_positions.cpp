#include "group_positions.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "stream_id.h"

namespace walstream {

void GroupPositions::join(const std::string& group, std::uint64_t floor) {
  groups_.try_emplace(group, Position{floor, 0});
}

void GroupPositions::acked(const std::string& group, std::uint64_t lsn) {
  auto it = groups_.find(group);
  if (it == groups_.end()) throw std::logic_error("GroupPositions: an acknowledgement for a group that never joined");
  it->second.acked = std::max(it->second.acked, lsn);
}

std::optional<std::uint64_t> GroupPositions::confirmable() const {
  std::optional<std::uint64_t> out;
  for (const auto& [name, p] : groups_) {
    if (!out || p.held() < *out) out = p.held();
  }
  return out;
}

std::string GroupPositions::slowest() const {
  const std::string* out = nullptr;
  std::uint64_t least = 0;
  for (const auto& [name, p] : groups_) {
    // Ties go to the smallest name, so that logs do not depend on the hash map's order.
    if (!out || p.held() < least || (p.held() == least && name < *out)) {
      out = &name;
      least = p.held();
    }
  }
  return out ? *out : std::string();
}

std::optional<std::string> judge_groups(const std::string& slot, std::uint64_t confirmed,
                                        const std::vector<ListedGroup>& listed) {
  for (const auto& g : listed) {
    if (!g.checkpoint) {
      return fmt::format("Redis Cluster: the checkpoint of stream {} (slot '{}') is gone while the slot lists it: the "
                         "shard serving it lost entries up to {} (a failover to a replica that lacked them, a restart "
                         "without persistence); start with --resnapshot to read every table again",
                         g.stream, slot, format_lsn_text(confirmed));
    }
    if (*g.checkpoint < confirmed) {
      return fmt::format("Redis Cluster: the checkpoint of stream {} (slot '{}') is at {}, below the slot's "
                         "confirmed_flush_lsn {}: the shard serving it lost the entries in ({}, {}]; start with "
                         "--resnapshot to read every table again",
                         g.stream, slot, format_lsn_text(*g.checkpoint), format_lsn_text(confirmed),
                         format_lsn_text(*g.checkpoint), format_lsn_text(confirmed));
    }
  }
  return std::nullopt;
}

}  // namespace walstream
